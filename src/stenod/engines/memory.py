"""Freed memory stays in the process for the next call: glibc malloc settings for the CPU engines.

CTranslate2 allocates every layer's activations afresh and frees them after the layer (on CPU it
has no caching allocator). The encoder's attention scores of one 22 s window are 35 MB per layer,
a batch of three windows 106 MB. glibc serves blocks that large with a fresh ``mmap`` and hands
them back with ``munmap`` on free, so the kernel zero-fills every page again on the next touch;
blocks under the mmap threshold land in per-thread arenas, which glibc shrinks again when the
block at their top is freed. Measured on 2 cores (base int8, the 237 s LJ Speech file through the
server's engine): 870 000 page faults per request, 1.6-1.8 of its 8 CPU seconds in the kernel.

With :func:`keep_freed_memory`: one arena for every thread (``M_ARENA_MAX``; the CTranslate2 workers
allocate a few blocks per layer, so there is no lock contention to speak of), no ``mmap`` for large
blocks (``M_MMAP_MAX`` 0: they come from the heap and return to it), and the heap is shrunk only
when more than ``keep_mib`` is free at its top (``M_TRIM_THRESHOLD``). The same request then takes
4 000-14 000 faults (after the server's first long request), under 0.1 s in the kernel, and
3.4-3.5 s of wall time against 4.3-4.6 s, with the same text; the peak resident size was no
higher (885 against 1110 MB in-process over six long requests). docs/ARCHITECTURE.md ("How the
faster-whisper engine spends the CPU") and docs/BENCHMARKS.md have the measurements.

It must run before the process starts its worker threads: a thread that already took an arena of
its own keeps it. The builder (:mod:`stenod.service.builder`) calls it before it loads an engine
or builds a model manager, which every entry point does before its first request; only for
engines on the CPU (on a GPU host the large buffers live on the device, and the host allocator
was measured as it is).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import threading

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

MAX_KEEP_MIB = 2047
"""mallopt takes a C ``int``: 2047 MiB is the largest trim threshold it can express."""

_lock = threading.Lock()
_applied: int | None = None


def keep_freed_memory(keep_mib: int) -> bool:
    """Make freed heap memory reusable by later calls (see the module docstring).

    Args:
        keep_mib: free memory the heap may keep at its top before it is handed back to the OS;
            0 leaves glibc's defaults alone.

    Returns:
        Whether the settings are in force: False with ``keep_mib`` 0, on a C library other than
        glibc (musl, macOS: their allocators behave differently and are left alone), or when
        ``mallopt`` refused. The first call that applies settings wins; later calls with another
        value change nothing (the arenas already exist) and log that.
    """
    global _applied
    if keep_mib <= 0:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    keep = min(keep_mib, MAX_KEEP_MIB)
    with _lock:
        if _applied is not None:
            if _applied != keep:
                logger.info("malloc settings already applied with %d MiB kept; %d MiB ignored", _applied, keep)
            return True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = all(
                libc.mallopt(param, value) == 1
                for param, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, keep * 1024 * 1024))
            )
        except (OSError, AttributeError):
            ok = False
        if ok:
            _applied = keep
        else:
            logger.warning("glibc mallopt refused the engine's memory settings; leaving malloc's defaults")
        return ok
