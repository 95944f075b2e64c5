"""Reading YAML a user wrote, with bounds: a config is a few kilobytes of settings, never a resource attack.

``yaml.safe_load`` refuses arbitrary Python objects, but a 1 KB "billion laughs"
(anchors and aliases, ``*a``, each repeating the last nine times) still expands
into a billion values when the config is validated, a deeply nested list hits
Python's recursion limit, and a repeated key silently wins over the first.
:func:`load_yaml` refuses each with a message naming the config path and line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 16 * 1024 * 1024
"""Larger files are refused before parsing (pipeline configs are a few kilobytes)."""
MAX_DEPTH = 64
"""Nesting deeper than this is refused (configs nest about five levels)."""
MAX_VALUES = 100_000
"""Values after alias expansion; more is refused (it is what validation would walk, value by value)."""
ECHO_LIMIT = 80
"""Characters of a user's value echoed back in a message; the rest is elided."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlProblem(Exception):
    """A file that cannot be read as a config; ``path`` is the config path, ``message`` the cause and fix."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was cut, so messages stay readable."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` bounded: a 5 MB string is shown by its first characters and its length."""
    if isinstance(value, str) and len(value) > limit:
        return shorten(repr(value[:limit]), limit + 2) + f" ({len(value)} characters)"
    if isinstance(value, (list, tuple, dict)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        return shorten(repr(value), limit)
    except RecursionError:  # a self-referencing structure
        return f"<recursive {type(value).__name__}>"


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses nesting deeper than :data:`MAX_DEPTH` (it recurses per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlProblem("", f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1}); "
                                  "a pipeline config nests a few levels: flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def decode(raw: bytes) -> str:
    """UTF-8 text (a BOM is dropped); other encodings are refused with the line of the first bad byte."""
    if len(raw) > MAX_BYTES:
        raise YamlProblem("", f"the file is {len(raw)} bytes; configs over {MAX_BYTES} bytes are refused "
                          "(a pipeline config is a few kilobytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblem("", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line} (offset {exc.start}); "
                          "save the config as UTF-8") from None


def load_yaml(text: str) -> Any:
    """Parse one YAML document safely and within bounds; raises :class:`YamlProblem` or ``yaml.YAMLError``."""
    loader = _BoundedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YamlProblem("", "nested too deeply to parse; flatten the config") from None
        if node is None:
            return None
        check_node(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_node(root: Node) -> None:
    """Refuse duplicate keys and alias expansion past :data:`MAX_VALUES`, walking the expanded tree once."""
    seen = 0
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise YamlProblem(path, f"the config expands to more than {MAX_VALUES} values, each YAML alias ('*name') "
                              "counted as the whole value it repeats; a pipeline config has a few hundred: use fewer "
                              "aliases or values")
        if isinstance(node, SequenceNode):
            stack.extend((child, _join(path, str(i))) for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                    line = key.start_mark.line + 1
                    if (key.tag, key.value) in first_line:
                        raise YamlProblem(_join(path, shorten(key.value)),
                                          f"the key appears twice, at lines {first_line[key.tag, key.value]} and "
                                          f"{line}; the second would silently replace the first: keep one")
                    first_line[key.tag, key.value] = line
                name = key.value if isinstance(key, ScalarNode) else "<key>"
                stack.append((value, _join(path, shorten(str(name)))))
                stack.append((key, path))


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part
