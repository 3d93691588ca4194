"""``--model auto``: the largest Whisper that fits the memory this machine has free.

On a usable CUDA GPU (seen through PyTorch, when installed) the free memory of the emptiest GPU
decides, with fp16 weights plus room for large batches; otherwise free host memory decides, with
int8 weights, and the CPU's core count caps the size, because on a few cores a large model is too
slow to be useful however much memory there is. Candidates that are not available (offline and
not cached) are skipped, so offline the choice falls back to the bundled models.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class ModelNeed:
    name: str
    gpu_bytes: int
    """fp16 weights plus batch activations and caches for the torch engine's default batch."""
    host_bytes: int
    """int8 weights plus working memory for faster-whisper on the CPU."""
    min_cores: int
    """Fewer cores than this make the model too slow on the CPU to pick automatically."""


# Largest first. GPU needs: weights (2 bytes/parameter) + ~3x for 128-window batches, rounded up.
CANDIDATES: tuple[ModelNeed, ...] = (
    ModelNeed("large-v3", 12 * GIB, 6 * GIB, 32),
    ModelNeed("turbo", 8 * GIB, 4 * GIB, 16),
    ModelNeed("medium", 7 * GIB, 3 * GIB, 16),
    ModelNeed("small", 3 * GIB, int(1.5 * GIB), 8),
    ModelNeed("base", int(1.5 * GIB), GIB // 2, 1),
    ModelNeed("tiny", GIB, GIB // 4, 1),
)


@dataclass(frozen=True, slots=True)
class MachineMemory:
    gpu_free_bytes: int | None
    """Free memory of the emptiest usable GPU; ``None`` without one."""
    host_free_bytes: int
    cores: int


def nvidia_driver_present() -> bool:
    """An NVIDIA driver is loaded (checked without importing PyTorch, whose import costs seconds
    on every CPU-only start where it is installed)."""
    import ctypes.util

    if Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists():
        return True
    return ctypes.util.find_library("cuda") is not None


def probe_memory() -> MachineMemory:
    """Free GPU memory (through PyTorch, only if installed and a driver is there) and free host memory."""
    import psutil

    gpu: int | None = None
    if importlib.util.find_spec("torch") is not None and nvidia_driver_present():
        try:
            import torch

            if torch.cuda.is_available():
                gpu = max(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
        except Exception:  # a broken CUDA setup means no usable GPU
            gpu = None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return MachineMemory(gpu, int(psutil.virtual_memory().available), max(1, cores))


def ranked_candidates(memory: MachineMemory) -> list[str]:
    """Models that fit, largest first (``base`` and ``tiny`` always end the list)."""
    fits: list[str] = []
    for need in CANDIDATES:
        if memory.gpu_free_bytes is not None:
            ok = need.gpu_bytes <= memory.gpu_free_bytes
        else:
            ok = need.host_bytes <= memory.host_free_bytes and memory.cores >= need.min_cores
        if ok:
            fits.append(need.name)
    for fallback in ("base", "tiny"):
        if fallback not in fits:
            fits.append(fallback)
    return fits
