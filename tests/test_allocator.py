"""tnerv's malloc settings: a freed large buffer stays in the process (no mmap, no trim), as with the
Makefile's environment; the user's environment wins."""

import os
import subprocess
import sys

import pytest

_FREED = r"""
import re, sys
from pathlib import Path
from tnerv.allocator import keep_large_buffers
print(keep_large_buffers() if sys.argv[1] == "set" else None)
def rss():
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) // 1024
before = rss()
buffer = bytearray(64 << 20)  # zero-filled: every page touched
del buffer
print(rss() - before)
"""


def _freed_mib(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _FREED, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux")
def test_a_freed_large_buffer_stays_in_the_process_once_set():
    said, kept = _freed_mib("default")
    assert said == "None" and kept < 8  # glibc's defaults: mmap-ed, and returned when freed
    said, kept = _freed_mib("set")
    assert said == "True" and kept >= 60  # from the heap, and kept there
    said, kept = _freed_mib("set", MALLOC_MMAP_THRESHOLD_="131072")  # the user's setting stands
    assert said == "False" and kept < 8
