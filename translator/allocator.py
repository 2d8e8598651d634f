"""Keep freed host memory in the process so large CPU tensors do not page-fault on every step.

glibc serves allocations above its mmap threshold (at most 32 MiB) with a fresh `mmap` and
unmaps them on free. A training step on CPU allocates and frees several tensors of
tokens x vocabulary floats (~160 MB at 4,096 tokens and 10k pieces: logits, log-probabilities,
their gradients), so every step faults in and zeroes that memory again, page by page. Serving
everything from the heap and never trimming it makes freed blocks reusable: ~30% more
training tokens/s for the default model on this project's 2-core CPU (docs/results.md).
The cost is that the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks instead of returning them to the OS; False if not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
