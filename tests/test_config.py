"""Pipeline configs: every problem reported at once with its full path, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import Field

import polyfuse
from polyfuse.config import load_pipeline, pipeline_json_schema, validate_pipeline
from polyfuse.errors import ConfigError, PolyfuseError


class StepsConfig(polyfuse.ComponentConfig):
    learning_rate: float = Field(1e-3, gt=0)


class OptimizerPlugin:
    """Stands in for an RL optimizer plugin: config validation only needs its config model."""

    @polyfuse.hookimpl
    def register_optimizers(self, register):
        register("test-rl", lambda config: None, config=StepsConfig, description="for config tests")


@pytest.fixture(scope="module")
def registry():
    from polyfuse.plugins import entry_point_sources
    from polyfuse.registry import Registry
    from polyfuse.testing import plugin_source

    return Registry.load([*entry_point_sources(), plugin_source(OptimizerPlugin())])


def good_config() -> dict:
    return {
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 2},
        "modalities": {"image": {"encoder": {"name": "small-cnn"}}, "question": {"encoder": "vector"}},
        "fuser": {"name": "gated", "params": {"hidden_dim": 32}},
        "optimizer": "test-rl",
    }


def test_good_config_validates_and_fills_defaults(registry) -> None:
    config = validate_pipeline(good_config(), registry)
    assert config.fuser.params == {"hidden_dim": 32, "input_norm": False}, "defaults are filled in"
    assert config.optimizer.params == {"learning_rate": 1e-3}, "defaults are filled in"
    assert config.reward.name == "env", "the environment's reward is the default reward source"
    assert config.modalities["question"].encoder.name == "vector", "a bare name is shorthand for {name: ...}"


def test_every_error_is_reported_with_its_path(registry) -> None:
    data = good_config()
    data["fuser"]["params"]["hidden_dim"] = 0
    data["fuser"]["params"]["hiden"] = 3
    data["optimizer"] = {"name": "test-rl", "params": {"learning_rate": -1}}
    data["modalities"]["image"]["encoder"]["name"] = "smal-cnn"
    with pytest.raises(ConfigError) as info:
        validate_pipeline(data, registry, source="bad.yaml")
    problems = dict(info.value.problems)
    assert problems["fuser.params.hidden_dim"] == "Input should be greater than 0 (got 0)"
    assert problems["fuser.params.hiden"] == "Extra inputs are not permitted"
    assert problems["optimizer.params.learning_rate"].startswith("Input should be greater than 0")
    assert "did you mean 'small-cnn'" in problems["modalities.image.encoder.name"]
    assert str(info.value).startswith("bad.yaml: 4 problems")


def test_structural_errors_have_paths(registry) -> None:
    data = good_config()
    data["env"]["num_envs"] = "many"
    data["trainer"] = {"total_step": 10}
    del data["fuser"]
    with pytest.raises(ConfigError) as info:
        validate_pipeline(data, registry)
    paths = [path for path, _ in info.value.problems]
    assert paths == ["env.num_envs", "fuser", "trainer.total_step"]


def test_unknown_component_of_a_missing_distribution_says_what_to_install() -> None:
    from polyfuse.registry import Registry

    without_ppo = Registry.load(disabled=["polyfuse-ppo"])
    data = good_config()
    data["optimizer"] = "ppo"
    with pytest.raises(ConfigError, match="optimizer.name: no optimizer named 'ppo' is installed; it is provided "
                                          "by polyfuse-ppo: pip install polyfuse-ppo"):
        validate_pipeline(data, without_ppo)


def test_yaml_syntax_errors_name_the_line(tmp_path: Path, registry) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("env:\n  id: [unclosed\nfuser: gated\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line 3, column 6\)"):
        load_pipeline(path, registry)


def test_missing_file_and_non_mapping(tmp_path: Path, registry) -> None:
    with pytest.raises(PolyfuseError, match="config file not found"):
        load_pipeline(tmp_path / "nope.yaml", registry)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_pipeline(tmp_path / "list.yaml", registry)


def test_schema_lists_installed_components_with_their_params(registry) -> None:
    schema = pipeline_json_schema(registry)
    json.dumps(schema)  # serialisable
    fuser_options = schema["properties"]["fuser"]["anyOf"]
    names = {o["properties"]["name"]["const"] for o in fuser_options if o.get("type") == "object"}
    assert {"gated", "tensor", "low-rank"} <= names
    gated = next(o for o in fuser_options if o.get("properties", {}).get("name", {}).get("const") == "gated")
    params = schema["$defs"][gated["properties"]["params"]["$ref"].split("/")[-1]]
    assert params["properties"]["hidden_dim"]["exclusiveMinimum"] == 0
    optimizer_names = {o.get("const") for o in schema["properties"]["optimizer"]["anyOf"]}
    assert "test-rl" in optimizer_names, "plugins' components appear in the schema"


def test_schema_validates_a_good_config_and_rejects_a_bad_one(registry) -> None:
    import jsonschema

    schema = pipeline_json_schema(registry)
    jsonschema.validate(good_config(), schema)
    bad = good_config()
    bad["fuser"]["params"]["hidden_dim"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = yaml.safe_load(yaml.safe_dump(good_config()))
    bad["fuser"] = "no-such-fuser"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# -- YAML within bounds: resource attacks and silent surprises get one clean message --------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_alias_expansion_is_refused_quickly(tmp_path: Path, registry) -> None:
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    assert path.stat().st_size < 1024
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100000 values"):
        load_pipeline(path, registry)
    assert time.perf_counter() - started < 2
    inside_kwargs = yaml.safe_dump(good_config()).replace("num_envs: 2", "num_envs: 2\n  kwargs: {x: *a9}")
    path.write_text(billion_laughs() + inside_kwargs)
    with pytest.raises(ConfigError, match="expands to more than"):
        load_pipeline(path, registry)


def test_a_few_aliases_still_work(tmp_path: Path, registry) -> None:
    path = tmp_path / "anchors.yaml"
    text = yaml.safe_dump(good_config()).replace("hidden_dim: 32", "hidden_dim: &width 32")
    path.write_text(text + "x-notes: {width: *width}\n")
    data = yaml.safe_load(path.read_text())
    data.pop("x-notes")
    assert validate_pipeline(data, registry).fuser.params["hidden_dim"] == 32


def test_duplicate_keys_name_both_lines(tmp_path: Path, registry) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("fuser: gated\nmodalities: {image: {encoder: small-cnn}}\nfuser: concat\noptimizer: test-rl\n")
    with pytest.raises(ConfigError, match="fuser: the key appears twice, at lines 1 and 3"):
        load_pipeline(path, registry)
    path.write_text("fuser: {name: gated, params: {hidden_dim: 3, hidden_dim: 4}}\n")
    with pytest.raises(ConfigError, match="fuser.params.hidden_dim: the key appears twice"):
        load_pipeline(path, registry)


def test_non_utf8_and_deep_nesting_are_clean_errors(tmp_path: Path, registry) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("env: {id: caf\u00e9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text: byte 0xe9 at line 1"):
        load_pipeline(path, registry)
    path.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_pipeline(path, registry)


def test_echoed_values_are_bounded(registry) -> None:
    data = good_config()
    data["fuser"]["params"]["hidden_dim"] = "x" * 5_000_000
    data["modalities"]["image"]["encoder"]["name"] = "y" * 5_000_000
    with pytest.raises(ConfigError) as info:
        validate_pipeline(data, registry)
    assert len(str(info.value)) < 2000
    assert "(5000000 characters)" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_need_a_finite_number(registry, value: float) -> None:
    data = good_config()
    data["optimizer"] = {"name": "test-rl", "params": {"learning_rate": value}}
    data["trainer"] = {"warm_start": {"episodes": 3, "learning_rate": value}}
    with pytest.raises(ConfigError) as info:
        validate_pipeline(data, registry)
    problems = dict(info.value.problems)
    assert problems["optimizer.params.learning_rate"].startswith("needs a finite number")
    assert problems["trainer.warm_start.learning_rate"].startswith("needs a finite number")


# -- declarations that let `validate` check a pipeline without building it ------------------------------------


def test_encoders_declare_the_spaces_they_read() -> None:
    from gymnasium import spaces

    from polyfuse.components import Kind
    from polyfuse.declarations import space_mismatch
    from polyfuse.registry import default_registry

    registry = default_registry()
    image, text, discrete = spaces.Box(0, 255, (8, 8, 1), "uint8"), spaces.Text(8), spaces.Discrete(4)
    reads = {"small-cnn": image, "timm": image, "vector": image, "flatten": image, "onehot": discrete,
             "embedding": discrete, "sbert": text}
    for name, fits in reads.items():
        factory = registry.get(Kind.ENCODER, name).factory
        assert space_mismatch(factory, name, fits) is None, name
        wrong = discrete if fits is text else text
        assert f"{name} reads " in (space_mismatch(factory, name, wrong) or ""), name


def test_optimizer_declarations_match_what_the_optimizers_say() -> None:
    from polyfuse.components import Kind
    from polyfuse.declarations import declared_learns_from
    from polyfuse.registry import default_registry

    registry = default_registry()
    declared = {c.name: declared_learns_from(c.factory) for c in registry.list(Kind.OPTIMIZER)}
    assert declared["dpo"] == "dataset" and declared["dqn"] == declared["ppo"] == declared["a2c"] == "env"
    for name, source in declared.items():
        if source is not None:
            assert registry.create(Kind.OPTIMIZER, name, {}).learns_from == source, name


def test_the_tensor_fusers_declared_check_agrees_with_the_fuser() -> None:
    from polyfuse.components import Kind
    from polyfuse.declarations import modality_mismatch
    from polyfuse.registry import default_registry

    registry = default_registry()
    component = registry.get(Kind.FUSER, "tensor")
    dims = {"image": 8, "question": 8}
    for factor_dim, fits in [(255, True), (256, False)]:
        config = component.config(factor_dim=factor_dim)
        assert (modality_mismatch(component.factory, config, list(dims)) is None) == fits
        if fits:
            registry.create(Kind.FUSER, "tensor", {"factor_dim": factor_dim}, input_dims=dims)
        else:
            with pytest.raises(ValueError, match="outer product"):
                registry.create(Kind.FUSER, "tensor", {"factor_dim": factor_dim}, input_dims=dims)
