"""The `tnerv` command. It parses arguments and calls the library; errors become one line and exit 2."""

from __future__ import annotations

import os
import sys

from tnerv.allocator import keep_large_buffers
from tnerv.cli.parser import build_parser
from tnerv.errors import TnervError

__all__ = ["build_parser", "main"]


# Options whose value may start with "-" (a frame range such as -3:2): argparse would read the value as
# an option, so it is glued to its option ("--frames=-3:2") and reaches the option's own check.
_DASH_VALUE_OPTIONS = ("--frames",)


def _glue_dash_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for token in argv:
        if out and out[-1] in _DASH_VALUE_OPTIONS and token.startswith("-") and token[1:2].isdigit():
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs one command; user errors print `tnerv: error: ...` and exit 2."""
    argv = _glue_dash_values(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
    except SystemExit as exc:  # --help (0), or a bad command line already reported in one line (2)
        return int(exc.code or 0)
    keep_large_buffers()
    try:
        return args.func(args)
    except TnervError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message quotes
        print(f"tnerv: error: {message}", file=sys.stderr)
    except BrokenPipeError:  # the reader stopped early (`tnerv models | head`): not an error of tnerv's
        # Python flushes stdout again at exit, into the closed pipe; point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # unwritable output, full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"tnerv: error: {exc.strerror or exc}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("tnerv: interrupted (the last checkpoint is intact; continue with --resume)", file=sys.stderr)
        return 130
    return 2
