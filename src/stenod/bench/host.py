"""What machine a benchmark ran on: CPU, cores, memory, GPU names, package versions, load."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata

from stenod import __version__
from stenod.bench.schema import HostInfo
from stenod.engines import cpu_count

_PACKAGES = ("faster-whisper", "ctranslate2", "pywhispercpp", "httpx")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """Names of CUDA GPUs: CTranslate2's device count decides whether there is one, ``nvidia-smi``
    names it. Empty when CTranslate2 sees no CUDA device."""
    try:
        import ctranslate2

        count = ctranslate2.get_cuda_device_count()
    except Exception:  # a broken CUDA install means no usable GPU
        count = 0
    if count <= 0:
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [f"cuda:{i}" for i in range(count)]
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [f"cuda:{i}" for i in range(count)]
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names[:count] or [f"cuda:{i}" for i in range(count)]


def _memory_total_mb() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**20


def load_avg_1m() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def host_info(*, gpus: list[str] | None = None) -> HostInfo:
    packages: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return HostInfo(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_model=cpu_model(),
        logical_cores=os.cpu_count() or 1,
        usable_cores=cpu_count(),
        memory_total_mb=round(_memory_total_mb(), 1),
        gpu_names=gpu_names() if gpus is None else gpus,
        stenod_version=__version__,
        packages=packages,
        load_avg_1m=round(load_avg_1m(), 2),
    )
