"""Errors meant for users: each names the cause and the fix, and the CLI prints it without a traceback."""

from __future__ import annotations


class PolyfuseError(Exception):
    """Base class of every error caused by user input (config, names, files)."""


class UnknownComponentError(PolyfuseError, LookupError):
    """A registry name that no installed plugin provides."""


class ConfigError(PolyfuseError):
    """A pipeline config failed validation; ``problems`` holds every ``(path, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"]
        lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in problems]
        super().__init__("\n".join(lines))
