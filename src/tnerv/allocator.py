"""glibc's malloc settings for tnerv's work (docs/dependencies.md): large convolution buffers come from the
heap and stay there when freed, instead of being mmap-ed, returned to the system and faulted in again on
every pass. The Makefile sets them through the environment; `tnerv` sets them itself where the
environment does not. They change speed only, never results."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# Buffers below this come from the heap, not mmap; free heap memory below this is not returned to the system.
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30
# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_large_buffers() -> bool:
    """Sets MMAP_THRESHOLD and TRIM_THRESHOLD through glibc's mallopt unless the environment sets either
    (the user's choice stands); whether they were set. Measured on T-NeRV's pass over 64 bikes frames at
    272x640 (2 cores): 19.4-22.0 s the first pass and 11.9-15.0 s the second, as with the environment's
    settings (18.6-19.6 s, 11.6-13.9 s), against 32.8-36.2 s and 21.9-22.1 s with glibc's defaults."""
    if any(name in os.environ for name in _ENVIRONMENT):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators have no such settings
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
