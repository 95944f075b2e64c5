"""The core's small encoders (vector, flatten, onehot, embedding, small-cnn, word-gru), built by name from gymnasium spaces."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces

from polyfuse.builtins.encoders import SmallCNNConfig, VectorConfig
from polyfuse.contracts import check_encoder
from polyfuse.errors import PolyfuseError
from polyfuse.registry import default_registry

torch.set_num_threads(1)


def build(name: str, space, **params):
    encoder = default_registry().create("encoders", name, params, space=space)
    encoder.modality = "obs"
    return encoder


def test_core_registers_its_encoders_like_any_plugin():
    components = {c.name: c for c in default_registry().list("encoders")}
    for name in ("vector", "flatten", "onehot", "embedding", "small-cnn", "word-gru"):
        assert components[name].distribution == "polyfuse"
        assert components[name].plugin == "builtin-encoders"


def test_registration_imports_no_torch():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, polyfuse.builtins.encoders; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("name", "space", "params"),
    [
        ("vector", spaces.Box(np.array([0, -10], np.float32), np.array([255, 10], np.float32)),
         {"hidden_sizes": [8], "output_dim": 5}),
        ("vector", spaces.MultiBinary(4), {}),
        ("flatten", spaces.Box(0, 255, (4, 4, 1), np.uint8), {}),
        ("onehot", spaces.MultiDiscrete([2, 3]), {}),
        ("embedding", spaces.Discrete(5), {"embedding_dim": 3}),
        ("small-cnn", spaces.Box(0, 255, (8, 8, 1), np.uint8), {"channels": [4], "output_dim": 16}),
        ("small-cnn", spaces.Box(0, 10, (7, 7, 3), np.uint8), {"mode": "grid", "cell_embedding_dim": 4}),
        ("word-gru", spaces.Text(12, charset="ab c"), {"embedding_dim": 4, "output_dim": 6}),
    ],
    ids=["vector", "vector-multibinary", "flatten", "onehot", "embedding", "small-cnn", "small-cnn-grid", "word-gru"],
)
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_follows_the_encoder_contract(name, space, params, frozen):
    torch.manual_seed(0)
    encoder = build(name, space, **params).requires_grad_(not frozen)
    space.seed(0)
    check_encoder(encoder, np.stack([space.sample() for _ in range(5)]))


def test_vector_maps_box_bounds_to_minus_one_one():
    space = spaces.Box(np.array([0, -10], np.float32), np.array([255, 10], np.float32))
    encoder = build("vector", space, hidden_sizes=[8], output_dim=5)
    corners = torch.tensor([[255.0, -10.0], [0.0, 10.0]])
    assert torch.allclose(corners * encoder.scale + encoder.shift, torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))


def test_vector_leaves_unbounded_dims_and_flattens():
    space = spaces.Box(np.array([[-np.inf, 0]], np.float32), np.array([[np.inf, 2]], np.float32))
    encoder = build("vector", space, hidden_sizes=[], output_dim=3)
    assert encoder.scale.tolist() == [1.0, 1.0] and encoder.shift.tolist() == [0.0, -1.0]
    assert encoder(np.zeros((2, 1, 2), np.float32)).shape == (2, 3)
    assert build("vector", spaces.MultiBinary(4))(np.ones((3, 4), np.int8)).shape == (3, 64)


def test_flatten_passes_rescaled_values_through_without_parameters():
    encoder = build("flatten", spaces.Box(0, 255, (2, 2, 1), np.uint8))
    assert encoder.output_dim == 4 and not list(encoder.parameters())
    pixels = np.array([[[[0], [255]], [[51], [204]]]], np.uint8)
    assert torch.allclose(encoder(pixels), torch.tensor([[0.0, 1.0, 0.2, 0.8]]))
    raw = build("flatten", spaces.Box(0, 255, (2, 2, 1), np.uint8), rescale=False)
    assert raw(pixels).tolist() == [[0.0, 255.0, 51.0, 204.0]]


def test_vector_errors_name_modality_and_sample():
    encoder = build("vector", spaces.Box(-1, 1, (3,)))
    bad = np.zeros((3, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"modality 'obs': sample 2 contains NaN"):
        encoder(bad)
    with pytest.raises(ValueError, match=r"modality 'obs': expected a batch of shape \(B, 3\), got \(2, 4\)"):
        encoder(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"modality 'obs': expected numbers"):
        encoder(["a", "b"])


def test_onehot_of_discrete_and_multidiscrete_values():
    onehot = build("onehot", spaces.Discrete(4, start=1))
    assert onehot(np.array([1, 4])).tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    assert onehot.output_dim == 4 and not onehot.cacheable, "cheaper to compute than to look up"
    with pytest.raises(ValueError, match=r"modality 'obs': sample 1 holds 5, outside the space"):
        onehot(np.array([2, 5]))
    multi = build("onehot", spaces.MultiDiscrete([2, 3]))
    assert multi(np.array([[1, 2]])).tolist() == [[0, 1, 0, 0, 1]]


def test_embedding_learns_one_vector_per_value():
    embedding = build("embedding", spaces.Discrete(4), embedding_dim=3)
    out = embedding(np.array([1, 1, 3]))
    assert out.shape == (3, 3) and torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])
    out.sum().backward()
    assert embedding.tables[0].weight.grad[[1, 3]].abs().sum() > 0
    assert embedding.tables[0].weight.grad[[0, 2]].abs().sum() == 0
    with pytest.raises(ValueError, match="whole numbers"):
        embedding(np.array([0.5]))


def test_small_cnn_on_digit_scans():
    torch.manual_seed(0)
    digits = build("small-cnn", spaces.Box(0, 255, (8, 8, 1), np.uint8), channels=[4], output_dim=16)
    scans = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    assert digits(scans).shape == (5, 16)
    assert torch.allclose(digits(scans[..., 0]), digits(scans)), "grayscale without a channel axis"
    assert torch.allclose(digits(torch.from_numpy(scans).permute(0, 3, 1, 2) / 255), digits(scans), atol=1e-5)
    with pytest.raises(ValueError, match=r"modality 'obs': expected images of shape \(8, 8, 1\)"):
        digits(np.zeros((3, 9, 9, 1), np.uint8))


def test_small_cnn_embeds_grid_codes_rather_than_scaling_them():
    grid = build("small-cnn", spaces.Box(0, 10, (7, 7, 3), np.uint8), mode="grid", cell_embedding_dim=4)
    assert grid.cells.num_embeddings == 3 * 11, "one table of high + 1 codes per channel"
    cells = np.random.default_rng(1).integers(0, 11, (3, 7, 7, 3), dtype=np.uint8)
    out = grid(cells)
    assert out.shape == (3, grid.output_dim) == (3, 128)
    out.sum().backward()
    assert grid.cells.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"modality 'obs': sample 1 has grid cells that are not whole"):
        grid(np.stack([cells[0], np.full((7, 7, 3), 11, np.uint8)]))


@pytest.mark.parametrize("shape, pool_size", [((7, 7, 3), 4), ((8, 8, 2), 4), ((5, 6, 1), 4), ((7, 7, 3), 3),
                                              ((16, 17, 2), 4), ((7, 7, 3), 1)])
def test_small_cnn_grid_is_autograds_default_path(shape, pool_size):
    """Its own embedding backward and matrix-product pooling (issue 12's speed items) compute what
    nn.Embedding and nn.AdaptiveAvgPool2d compute: same map, features and gradients."""
    from polyfuse.encoders.small_cnn import SmallCNNEncoder

    torch.manual_seed(0)
    encoder = SmallCNNEncoder(shape, [8, 16], 32, pool_size, mode="grid", grid_values=11, cell_embedding_dim=4)
    codes = np.random.default_rng(0).integers(0, 11, (64, *shape)).astype(np.uint8)
    weights = torch.randn(64, 32)

    def gradients(features):
        encoder.zero_grad()
        (features * weights).sum().backward()
        return [p.grad.clone() for p in encoder.parameters()]

    features, feature_map = encoder.forward_spatial(codes)
    assert feature_map.shape == (64, *encoder.feature_map_shape)
    fast = gradients(features)
    indices = torch.from_numpy(codes).long() + encoder.channel_offsets

    def reference_map():  # nn.Embedding's own backward
        return encoder.convs(encoder.cells(indices).flatten(3).permute(0, 3, 1, 2))

    assert torch.equal(feature_map, reference_map())
    same_pooling = gradients(encoder.head(encoder._pool_grid(reference_map())))
    assert all(torch.equal(a, b) for a, b in zip(fast, same_pooling, strict=True)), "embedding: bit-identical"
    reference = encoder.head(encoder.pool(reference_map()))
    torch.testing.assert_close(features, reference, rtol=1e-5, atol=1e-6)
    for got, expected in zip(fast, gradients(reference), strict=True):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_small_cnn_downsamples_larger_images():
    space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    encoder = build("small-cnn", space, channels=[8, 8, 8, 8], pool_size=4)
    strides = [conv.stride[0] for conv in encoder.convs if isinstance(conv, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 1], "64 -> 32 -> 16 -> 8, then stride 1 below 4 x pool_size"
    assert encoder(np.zeros((2, 64, 64, 3), np.uint8)).shape == (2, 128)


@pytest.mark.parametrize(
    ("name", "space", "hint"),
    [
        ("vector", spaces.Discrete(3), "use onehot or embedding"),
        ("flatten", spaces.Text(10), "pip install polyfuse-sbert"),
        ("onehot", spaces.Box(0, 1, (2,)), "a Discrete or 1-D MultiDiscrete space"),
        ("small-cnn", spaces.Text(10), "pip install polyfuse-sbert"),
        ("embedding", spaces.Box(0, 255, (8, 8, 3), np.uint8), "use small-cnn or timm"),
        ("small-cnn", spaces.Text(10), "word-gru \\(built in\\)"),
        ("word-gru", spaces.Box(0, 255, (8, 8, 3), np.uint8), "use small-cnn or timm"),
    ],
)
def test_wrong_space_is_a_clear_error(name, space, hint):
    with pytest.raises(PolyfuseError, match=hint):
        build(name, space)


def test_grid_mode_needs_bounded_codes():
    with pytest.raises(PolyfuseError, match="set grid_values"):
        build("small-cnn", spaces.Box(0, np.inf, (5, 5, 2), np.float32), mode="grid")
    bounded = build("small-cnn", spaces.Box(0, np.inf, (5, 5), np.float32), mode="grid", grid_values=4)
    assert bounded(np.zeros((1, 5, 5))).shape == (1, 128)


def test_configs_reject_bad_values():
    with pytest.raises(ValueError):
        VectorConfig(hidden_sizes=[0])
    with pytest.raises(ValueError):
        SmallCNNConfig(channels=[])
    with pytest.raises(ValueError):
        SmallCNNConfig(mode="pixels")


def test_word_gru_reads_words_in_order_ignoring_case_and_punctuation():
    torch.manual_seed(0)
    encoder = build("word-gru", spaces.Text(40), output_dim=8).eval()
    with torch.no_grad():
        same, plain, swapped = encoder(["Go to the RED ball.", "go to the red ball", "go to the ball red"])
    torch.testing.assert_close(same, plain)
    assert (plain - swapped).abs().max() > 1e-4


def test_word_gru_empty_and_long_texts():
    torch.manual_seed(0)
    encoder = build("word-gru", spaces.Text(40), output_dim=8, max_words=3).eval()
    with torch.no_grad():
        empty, symbols, first_three, longer = encoder(["", "?!", "pick up the", "pick up the key now"])
    assert not empty.any() and not symbols.any()
    torch.testing.assert_close(first_three, longer)


def test_word_gru_hashing_is_stable_across_processes():
    probe = "from polyfuse.encoders.text import tokenize; print(tokenize('go to the red ball', 1024, 64))"
    outputs = {
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1  # Python's own hash() of a str changes with PYTHONHASHSEED; CRC-32 does not


def test_word_gru_reports_collisions():
    torch.manual_seed(0)
    assert build("word-gru", spaces.Text(40)).collisions(["go to the red ball", "pick up a blue key"]) == {}
    crowded = build("word-gru", spaces.Text(40), buckets=1)
    assert crowded.collisions(["red ball", "red"]) == {1: ["ball", "red"]}


def test_word_gru_learns_which_word_decides():
    """Missions differing in one word (the colour) map to different actions after a few Adam steps."""
    torch.manual_seed(0)
    encoder = build("word-gru", spaces.Text(40), embedding_dim=8, output_dim=16)
    head = torch.nn.Linear(16, 3)
    colours = ["red", "green", "blue"]
    missions = [f"go to the {colour} {thing}" for colour in colours for thing in ("ball", "key", "box")]
    labels = torch.tensor([colours.index(m.split()[3]) for m in missions])
    adam = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=0.03)
    for _ in range(150):
        adam.zero_grad()
        torch.nn.functional.cross_entropy(head(encoder(missions)), labels).backward()
        adam.step()
    with torch.no_grad():
        assert (head(encoder(missions)).argmax(1) == labels).all()
