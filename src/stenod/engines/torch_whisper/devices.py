"""Which torch devices and dtype the engine runs on: ``cpu``, ``cuda``, ``cuda:N``, a comma list
of CUDA devices (one batching worker per device), or ``all`` (every visible GPU)."""

from __future__ import annotations

import torch

from stenod.errors import UnsupportedParameterError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def cuda_usable() -> bool:
    """A CUDA device exists and answers (a driver/runtime mismatch shows up as False, not a crash)."""
    try:
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            return False
        torch.cuda.mem_get_info(0)
        return True
    except Exception:  # any CUDA init failure means "no usable GPU"
        return False


def parse_devices_or_raise(spec: str) -> list[str]:
    """Expand a device spec into torch device names.

    Raises:
        UnsupportedParameterError: a CUDA device is asked for and none is usable, or the index
            is out of range, or the spec is not understood.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return ["cuda:0"] if cuda_usable() else ["cpu"]
    if spec == "cpu":
        return ["cpu"]
    wants_cuda = spec == "all" or spec.startswith("cuda")
    if not wants_cuda:
        raise UnsupportedParameterError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N, cuda:0,cuda:1 or all", param="device")
    if not cuda_usable():
        raise UnsupportedParameterError(
            f"device {spec!r} asked for, but no usable CUDA GPU is visible to torch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto",
            param="device",
        )
    count = torch.cuda.device_count()
    if spec in ("all", "cuda"):
        return [f"cuda:{i}" for i in range(count)] if spec == "all" else ["cuda:0"]
    names: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if part == "cuda":
            part = "cuda:0"
        index_text = part.removeprefix("cuda:")
        if not part.startswith("cuda:") or not index_text.isdigit():
            raise UnsupportedParameterError(f"bad device {part!r} in {spec!r}; use cuda:N", param="device")
        if int(index_text) >= count:
            raise UnsupportedParameterError(f"device {part!r} does not exist: {count} CUDA device(s) visible", param="device")
        if part not in names:
            names.append(part)
    return names


def torch_dtype(compute_type: str, device: str) -> torch.dtype:
    """``auto``: float16 on CUDA, float32 on the CPU (half precision on CPUs is slow or missing).

    Raises:
        UnsupportedParameterError: a compute type the torch engine has no kernels for (int8).
    """
    if compute_type in ("auto", "default"):
        return torch.float16 if device.startswith("cuda") else torch.float32
    if compute_type not in DTYPES:
        raise UnsupportedParameterError(
            f"the torch engine computes in float16, bfloat16 or float32, not {compute_type!r}", param="compute_type"
        )
    return DTYPES[compute_type]
