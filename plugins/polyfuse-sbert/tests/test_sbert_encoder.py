import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import polyfuse_sbert.plugin
from polyfuse.errors import PolyfuseError
from polyfuse.feature_cache import CachedEncoder, FeatureCache
from polyfuse_sbert.encoder import SbertEncoder, load_sentence_transformer
from polyfuse_sbert.plugin import SbertConfig


def test_registered_as_sbert_without_importing_torch(make_registry):
    registry = make_registry(polyfuse_sbert.plugin, installed=False)
    assert registry.get("encoders", "sbert").distribution == "test-plugin"
    probe = subprocess.run([sys.executable, "-c", "import sys, polyfuse_sbert.plugin;"
                            "print([m for m in ('torch', 'sentence_transformers') if m in sys.modules])"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "[]", probe.stderr


def test_bundled_model_gives_real_sentence_embeddings(bundled_encoder):
    emb = bundled_encoder(("go to the red ball", "go to the red box", "the stock market fell sharply"))
    assert emb.shape == (3, bundled_encoder.output_dim) == (3, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4), "normalised by default"
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > 0.5 and unrelated < 0.2 and similar > unrelated + 0.4


def test_accepts_numpy_text_arrays_and_refuses_non_strings(bundled_encoder):
    from_array = bundled_encoder(np.array(["open the door", "pick up the key"], dtype=object))
    from_tuple = bundled_encoder(("open the door", "pick up the key"))
    assert torch.allclose(from_array, from_tuple)
    with pytest.raises(ValueError, match=r"modality 'input': sample 1 is a int \(3\), not a string"):
        bundled_encoder(["fine", 3])


def test_empty_string_is_encoded(bundled_encoder):
    emb = bundled_encoder(["", "go"])
    assert torch.isfinite(emb).all() and emb.shape == (2, 384)


def test_long_texts_are_truncated_and_counted(bundled_encoder):
    before = bundled_encoder.truncated_texts
    with pytest.warns(UserWarning, match="truncated") if before == 0 else _nothing():
        emb = bundled_encoder(["word " * 1000, "short"])
    assert emb.shape == (2, 384)
    assert bundled_encoder.truncated_texts == before + 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_frozen_encoder_has_no_gradients_and_a_stable_identity(bundled_encoder):
    assert not bundled_encoder.trainable
    assert not any(p.requires_grad for p in bundled_encoder.parameters())
    bundled_encoder.train()
    assert not any(module.training for module in bundled_encoder.model.modules()), \
        "a frozen encoder stays in eval mode"
    assert bundled_encoder.identity() == bundled_encoder.identity()
    assert bundled_encoder.identity().startswith("sbert:all-MiniLM-L6-v2")


def test_cached_features_follow_changed_weights(bundled_encoder):
    """A loaded checkpoint or a tuned copy must get its own features, never those of the weights it replaced."""
    texts = ["go to the red ball"]
    store = FeatureCache(memory_items=10)
    original = bundled_encoder(texts)
    assert torch.equal(CachedEncoder(bundled_encoder, store)(texts), original)
    encoder = copy.deepcopy(bundled_encoder)  # a copy: the session's encoder keeps its weights
    cached = CachedEncoder(encoder, store)
    assert torch.equal(cached(texts), original)
    bias = "0.model.encoder.layer.5.output.LayerNorm.bias"
    state = encoder.model.state_dict()
    encoder.model.load_state_dict({**state, bias: state[bias] + 0.5})
    changed = cached(texts)
    assert not torch.allclose(changed, original, atol=1e-3)
    assert torch.allclose(changed, encoder(texts)) and cached.stats.misses == 1


def test_identity_hashes_the_weights_again_only_after_they_change(bundled_encoder, monkeypatch):
    import polyfuse_sbert.encoder

    hashed = []
    digest = polyfuse_sbert.encoder.weights_digest
    monkeypatch.setattr(polyfuse_sbert.encoder, "weights_digest", lambda module: hashed.append(1) or digest(module))
    encoder = copy.deepcopy(bundled_encoder)
    first = encoder.identity()
    assert encoder.identity() == first and len(hashed) == 1
    with torch.no_grad():
        next(encoder.parameters()).mul_(2)
    assert encoder.identity() != first and len(hashed) == 2


def test_fine_tuning_sends_gradients_through_the_transformer():
    encoder = SbertEncoder.from_config(SbertConfig(trainable=True, max_seq_length=16))
    assert encoder.trainable and encoder.model.training
    encoder(["go to the red ball", "open the door"]).sum().backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert grads and sum(g is not None and g.abs().sum() > 0 for g in grads) > len(grads) // 2
    with pytest.raises(NotImplementedError):
        encoder.identity()


def test_unloadable_model_names_the_local_option():
    with pytest.raises(PolyfuseError, match="give a local model folder in params.model"):
        load_sentence_transformer("/no/such/model-folder")


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError):
        SbertConfig(batch_size=0)
    with pytest.raises(ValidationError):
        SbertConfig(normalise=True)
