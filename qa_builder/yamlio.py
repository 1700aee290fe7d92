"""One YAML loader for the package's data files (lexicons, templates, card presets)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import yaml

# libyaml's C parser when PyYAML was built with it: the lexicons load ~10x faster than pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAMLError = yaml.YAMLError


def load_yaml(source: Path | str | IO[str]) -> Any:
    """Parse YAML from a file path, a string of YAML text or an open text stream (plain data only)."""
    if isinstance(source, Path):
        source = source.read_text(encoding="utf-8")
    return yaml.load(source, Loader=_LOADER)
