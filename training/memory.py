"""Keep freed memory in the process for reuse (``keep_freed_memory``, a top-level key, on by default).

glibc's malloc serves every request above its mmap threshold (at most 32 MB) with a fresh ``mmap``
and hands it back with ``munmap`` when freed. A training step of the copy task (T = 1000, batch 128,
n = 190) makes several tensors of 97 MB (the recurrence's outputs, the readout's gradient of them,
the input map), so every step the kernel maps, faults in and zeroes ~25,000 new pages per tensor:
first touches that cost more than the step's element-wise work (docs/speed.md, "The RNN training
step against its arithmetic floor"). With ``M_MMAP_MAX = 0`` every request comes from the heap, and
with a trim threshold of 2 GB its freed top is kept, so the next step's tensors reuse pages that
are already mapped. It changes where tensors live, not what is computed (torch aligns every CPU
buffer to 64 bytes either way), and the process keeps its peak memory instead of returning it.

PyTorch's CPU tuning guide gets the same by preloading jemalloc or tcmalloc; in a script of your
own, ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment (glibc) or this
function does.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large requests from the heap and keep what is freed; ``True``
    when it took the settings, ``False`` where there is no glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
