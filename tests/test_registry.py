"""Look-up by kind and name, wildcards, and errors that say how to fix a wrong name."""

from __future__ import annotations

import pytest
import yaml

from polyfuse.catalogue import load_catalogue, parse_catalogue
from polyfuse.components import Kind
from polyfuse.errors import PolyfuseError, UnknownComponentError
from polyfuse.registry import Registry, parse_kind


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def test_list_with_wildcards_like_timm(registry) -> None:
    assert [c.name for c in registry.list("fusers", "*tensor*")] == ["tensor"]
    assert [c.name for c in registry.list("fusers", "*-rank")] == ["low-rank"]
    names = [c.name for c in registry.list("fusers")]
    assert names == sorted(names) and {"concat", "gated", "attention", "late", "tensor", "low-rank"} <= set(names)
    assert registry.list("fusers", "nothing-matches-*") == []


def test_kinds_are_spelled_as_on_the_command_line(registry) -> None:
    assert parse_kind("fusers") is Kind.FUSER and parse_kind("fuser") is Kind.FUSER
    assert parse_kind("rewards") is Kind.REWARD and parse_kind("optimizers") is Kind.OPTIMIZER
    with pytest.raises(PolyfuseError, match="choose one of: encoders, fusers, rewards, optimizers"):
        parse_kind("fusors")


def test_unknown_name_suggests_close_matches(registry) -> None:
    with pytest.raises(UnknownComponentError, match=r"no fuser named 'gatd' is installed; did you mean 'gated'\?"):
        registry.get("fusers", "gatd")


def test_unknown_name_without_close_match_lists_installed(registry) -> None:
    with pytest.raises(UnknownComponentError, match=r"installed fusers: .*concat.*gated"):
        registry.get("fusers", "qqqqqq")


def test_catalogued_but_not_installed_names_the_distribution() -> None:
    catalogue = parse_catalogue(yaml.safe_load("""
components:
  - {name: mmcnn, kind: fusers, distribution: polyfuse-mmcnn, entry_point: polyfuse_mmcnn.plugin,
     status: planned, description: "Multimodal CNN"}
"""))
    registry = Registry([], {kind: {} for kind in Kind}, catalogue)
    with pytest.raises(UnknownComponentError, match="provided by polyfuse-mmcnn: pip install polyfuse-mmcnn"):
        registry.get("fusers", "mmcnn")
    assert [e.name for e in registry.not_installed("fusers", "mm*")] == ["mmcnn"]


def test_catalogued_but_broken_points_at_the_error() -> None:
    from polyfuse.plugins import PluginInfo

    catalogue = parse_catalogue({"components": [
        {"name": "mmcnn", "kind": "fusers", "distribution": "polyfuse-mmcnn", "entry_point": "x",
         "status": "stable", "description": "d"}]})
    broken = PluginInfo("mmcnn", "polyfuse-mmcnn", "1.0", "x", status="broken",
                        errors=["failed to load: ImportError: no torchaudio"])
    registry = Registry([broken], {kind: {} for kind in Kind}, catalogue)
    with pytest.raises(UnknownComponentError, match="installed but broken .*no torchaudio"):
        registry.get("fusers", "mmcnn")


def test_create_validates_params(registry) -> None:
    from pydantic import ValidationError

    fuser = registry.create("fusers", "gated", {"hidden_dim": 16}, input_dims={"image": 8, "text": 4})
    assert fuser.output_dim == 16
    with pytest.raises(ValidationError):
        registry.create("fusers", "gated", {"hidden_dims": 16}, input_dims={"image": 8})


def test_every_installed_component_is_catalogued(registry) -> None:
    """registry.yaml is the catalogue users browse: nothing installed may be missing or misattributed."""
    catalogue = load_catalogue()
    for component in registry.list():
        entry = catalogue.find(component.kind, component.name)
        assert entry is not None, f"add {component.kind.value} {component.name!r} to registry.yaml"
        assert entry.distribution == component.distribution
        plugin = next(p for p in registry.plugins if p.name == component.plugin)
        assert entry.entry_point == plugin.target


def test_catalogue_entries_are_well_formed() -> None:
    catalogue = load_catalogue()
    seen = set()
    for entry in catalogue.entries:
        assert (entry.kind, entry.name) not in seen, f"duplicate catalogue entry {entry.name}"
        seen.add((entry.kind, entry.name))
        assert entry.status in {"stable", "experimental", "planned"}
        assert entry.description and entry.distribution.startswith("polyfuse")
