"""``polyfuse new-plugin``: writes a ready-to-install plugin distribution from the templates beside this module.

The generated ``polyfuse-NAME`` holds a working component of the chosen kind
(a fuser, an encoder, a reward, an optimizer or a feedback source) registered
lazily (no torch at registration), tests built on :mod:`polyfuse.testing`, a
README and a GitHub Actions workflow. It installs and passes its own tests as
written; ``tests/test_new_plugin.py`` checks that for every kind.

Templates are plain files with ``%%key%%`` placeholders (a syntax Python, TOML,
YAML and GitHub's ``${{ }}`` never use); :data:`LAYOUT` says where each lands.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from polyfuse.errors import PolyfuseError

NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
PLACEHOLDER = re.compile(r"%%(\w+)%%")
MAX_NAME = 40


@dataclass(frozen=True)
class KindTemplate:
    """What differs between kinds: the registry kind, the component's module and class, torch or not."""

    kind: str  # the registry's spelling (``polyfuse list KIND``)
    module: str  # the component's module in the package
    suffix: str  # the component class is ``<Camel><suffix>``
    needs_torch: bool
    description: str
    usage: str  # the pipeline YAML naming the component; %%name%% filled in


KINDS: dict[str, KindTemplate] = {
    "fuser": KindTemplate(
        "fusers", "fuser", "Fuser", True,
        "Gated sum of projected modalities, each gate read from its own modality's features",
        "fuser: {name: %%name%%, params: {hidden_dim: 64}}",
    ),
    "encoder": KindTemplate(
        "encoders", "encoder", "Encoder", True,
        "MLP with layer norm for vector observations (a Box space), inputs clipped",
        "encoders:\n  vector: {name: %%name%%, params: {hidden_sizes: [64], output_dim: 64}}",
    ),
    "reward": KindTemplate(
        "rewards", "reward", "Reward", False,
        "The environment's reward scaled, shifted per step, with a bonus at termination, clipped",
        "reward: {name: %%name%%, params: {scale: 1.0, step_penalty: 0.01, clip: 1.0}}",
    ),
    "optimizer": KindTemplate(
        "optimizers", "optimizer", "", True,
        "REINFORCE with a learned baseline (one policy-gradient step per rollout)",
        "optimizer: {name: %%name%%, params: {learning_rate: 0.003, n_steps: 16}}",
    ),
    "feedback": KindTemplate(
        "feedback", "annotator", "Annotator", False,
        "Simulated annotator: higher return wins beyond a threshold, with mistakes and abstentions",
        "reward:\n  name: preference-model        # pip install polyfuse-feedback\n"
        "  params:\n    feedback: {name: %%name%%, params: {threshold: 0.1, error_rate: 0.1}}",
    ),
}

# (template, where it lands in the distribution); ``kind/`` means the chosen kind's folder.
LAYOUT: tuple[tuple[str, str], ...] = (
    ("common/pyproject.toml.tmpl", "pyproject.toml"),
    ("common/README.md.tmpl", "README.md"),
    ("common/gitignore.tmpl", ".gitignore"),
    ("common/tests.yml.tmpl", ".github/workflows/tests.yml"),
    ("common/__init__.py.tmpl", "src/%%package%%/__init__.py"),
    ("common/py.typed.tmpl", "src/%%package%%/py.typed"),
    ("kind/plugin.py.tmpl", "src/%%package%%/plugin.py"),
    ("kind/component.py.tmpl", "src/%%package%%/%%module%%.py"),
    ("kind/test_component.py.tmpl", "tests/test_%%module%%.py"),
    ("kind/conftest.py.tmpl", "tests/conftest.py"),
    ("common/test_discovery.py.tmpl", "tests/test_discovery.py"),
)


def validate_name(name: str) -> str:
    """The plugin's name as given, or a :class:`PolyfuseError` saying what a valid one looks like."""
    if name.startswith(("polyfuse-", "polyfuse_")):
        raise PolyfuseError(
            f"give the name without the prefix: `polyfuse new-plugin {name[9:]}` writes the distribution {name}"
        )
    if not NAME.match(name):
        fixed = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        hint = f" (e.g. {fixed!r})" if fixed and NAME.match(fixed) and fixed != name else ""
        raise PolyfuseError(
            f"invalid plugin name {name!r}: use lowercase letters and digits, starting with a letter, words "
            f"joined by single '-' or '_'{hint}; it becomes the component's registry name, the distribution "
            f"polyfuse-NAME and the package polyfuse_NAME"
        )
    if len(name) > MAX_NAME:
        raise PolyfuseError(f"plugin name {name!r} is {len(name)} characters long; keep it to {MAX_NAME}")
    return name


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _authors(author: str | None) -> str:
    """``authors = [...]`` for pyproject.toml from ``Name <email>``, ``Name`` or ``<email>``; empty if none."""
    if not author or not author.strip():
        return ""
    match = re.fullmatch(r"\s*(.*?)\s*<([^<>\s]+@[^<>\s]+)>\s*", author)
    fields = []
    if match:
        if match.group(1):
            fields.append(f"name = {_toml_string(match.group(1))}")
        fields.append(f"email = {_toml_string(match.group(2))}")
    else:
        fields.append(f"name = {_toml_string(author.strip())}")
    return "authors = [{" + ", ".join(fields) + "}]\n"


def template_values(name: str, kind: str, author: str | None = None) -> dict[str, str]:
    """Every placeholder's value for the plugin ``name`` of ``kind``."""
    from polyfuse import __version__

    spec = KINDS[kind]
    package = "polyfuse_" + name.replace("-", "_")
    camel = _camel(name)
    dependencies = [f"polyfuse>={__version__}", "numpy"] + (["torch"] if spec.needs_torch else [])
    values = {
        "name": name,
        "distribution": f"polyfuse-{name}",
        "package": package,
        "function": name.replace("-", "_"),
        "Class": camel + spec.suffix,
        "Config": camel + "Config",
        "kind": spec.kind,
        "singular": kind,
        "module": spec.module,
        "description": spec.description,
        "dependencies": ", ".join(f'"{d}"' for d in dependencies),
        "authors": _authors(author),
        "polyfuse_version": __version__,
    }
    values["usage"] = fill(spec.usage, values)
    return values


def fill(text: str, values: dict[str, str], where: str = "template") -> str:
    """``text`` with every ``%%key%%`` replaced; an unknown key is a bug in the templates."""

    def value(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise KeyError(f"{where}: no value for placeholder %%{match.group(1)}%%") from None

    return PLACEHOLDER.sub(value, text)


def _template(path: str, kind: str) -> str | None:
    folder, _, filename = path.partition("/")
    source = resources.files(__package__).joinpath("templates", kind if folder == "kind" else folder, filename)
    return source.read_text(encoding="utf-8") if source.is_file() else None


def render(name: str, kind: str, author: str | None = None) -> dict[str, str]:
    """The generated distribution as ``{relative path: text}``, nothing written."""
    validate_name(name)
    if kind not in KINDS:
        raise PolyfuseError(f"unknown plugin kind {kind!r}; choose one of: {', '.join(KINDS)}")
    values = template_values(name, kind, author)
    files: dict[str, str] = {}
    for template, target in LAYOUT:
        text = _template(template, kind)
        if text is not None:  # a kind may have no file for a slot (conftest.py)
            files[fill(target, values, template)] = fill(text, values, template)
    return files


def generate(name: str, kind: str, output: Path | str = ".", author: str | None = None) -> Path:
    """Write ``polyfuse-NAME`` into ``output``; returns its folder. Refuses to touch an existing one."""
    files = render(name, kind, author)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise PolyfuseError(f"--output {output} is a file, not a folder")
    root = output / f"polyfuse-{name}"
    if root.exists():
        raise PolyfuseError(
            f"{root} already exists; choose another name or --output folder, or remove it first "
            "(new-plugin never overwrites files)"
        )
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def command(args: argparse.Namespace, registry: Any) -> int:
    """``polyfuse new-plugin``: generate, then say what to do next."""
    name = validate_name(args.name)
    spec = KINDS[args.kind]
    if registry is not None and name in registry.names(spec.kind):
        taken = registry.get(spec.kind, name)
        raise PolyfuseError(
            f"the {args.kind} name {name!r} is already taken by {taken.distribution}; two plugins registering "
            "one name leave the second broken, so choose another"
        )
    root = generate(name, args.kind, args.output, args.author)
    print(f"wrote {root} (the {args.kind} {name!r}, package polyfuse_{name.replace('-', '_')})")
    print("next:")
    print(f"  cd {root}")
    print('  pip install -e ".[test]"')
    print("  pytest")
    print(f"  polyfuse list {spec.kind} {name}")
    print("then see README.md there for publishing it and getting it into registry.yaml")
    return 0
