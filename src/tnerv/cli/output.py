"""Text output shared by commands: a result as text or as --json, parameter counts, the chosen config."""

from __future__ import annotations

import argparse
import json
from typing import Any


def print_result(data: Any, as_json: bool, text: str) -> None:
    """Prints `data` as indented JSON with --json, else `text`."""
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def format_count(n: int) -> str:
    """A parameter count as the tables show it: 0.398M from 100,000 up, else 62,208."""
    return f"{n / 1e6:.3f}M" if n >= 1e5 else f"{n:,}"


def announcer(args: argparse.Namespace) -> Any:
    """Prints what was chosen for the video (one line) before training; --json carries it instead."""
    from tqdm.auto import tqdm  # its write clears and redraws a progress bar on the terminal (segments)

    from tnerv.models.budget import describe_line

    return None if args.json else (lambda info: tqdm.write(describe_line(info)))
