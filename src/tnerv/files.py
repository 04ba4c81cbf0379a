"""Writing files atomically: to a temporary name beside the target, then renamed over it, so that a
crash or a full disk never leaves half a file where a good one was."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tnerv.errors import TnervError


def write_with(path: str | Path, write: Callable[[str], None]) -> Path:
    """Calls `write(temporary_path)`, then renames the temporary file over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Writes bytes (or UTF-8 text) to `path` atomically."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return write_with(path, lambda tmp: Path(tmp).write_bytes(raw))


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Writes JSON (indented) to `path` atomically."""
    return write_atomic(path, json.dumps(data, indent=2))


def check_output(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """Refuses an output path whose suffix is not one of `suffixes` ("" for a folder) or whose
    parent folder does not exist, before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise TnervError(f"cannot write {path}: the output must be {what}")
    if not path.parent.is_dir():
        raise TnervError(f"cannot write {path}: the folder {path.parent} does not exist")
    return path
