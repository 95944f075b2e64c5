"""registry.yaml: every component the project and known third parties provide, installed or not.

The catalogue lets an error for a name that is not installed say which
distribution to ``pip install``, and ``polyfuse list --all`` show what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from polyfuse.components import Kind


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    kind: Kind
    distribution: str
    entry_point: str
    description: str
    status: str

    @property
    def install_command(self) -> str:
        return f"pip install {self.distribution}"


@dataclass(frozen=True)
class Catalogue:
    entries: tuple[CatalogueEntry, ...]

    def find(self, kind: Kind, name: str) -> CatalogueEntry | None:
        return next((e for e in self.entries if e.kind is kind and e.name == name), None)

    def of_kind(self, kind: Kind) -> list[CatalogueEntry]:
        return [e for e in self.entries if e.kind is kind]


def parse_catalogue(data: Any) -> Catalogue:
    """Turn the parsed YAML into entries, failing loudly on a malformed file (it ships with polyfuse)."""
    entries = []
    for raw in data.get("components", []):
        entries.append(
            CatalogueEntry(
                name=raw["name"],
                kind=Kind(raw["kind"]),
                distribution=raw["distribution"],
                entry_point=raw["entry_point"],
                description=raw["description"],
                status=raw["status"],
            )
        )
    return Catalogue(tuple(entries))


@lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    """The catalogue shipped inside the package (a copy of the repository's registry.yaml)."""
    text = resources.files("polyfuse").joinpath("registry.yaml").read_text(encoding="utf-8")
    return parse_catalogue(yaml.safe_load(text))
