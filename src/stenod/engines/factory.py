"""Pick and build an engine for a resolved model: engine kind, device, compute type and threads.

The CPU defaults come from measurements on the target machines (docs/BENCHMARKS.md): int8 is about
2x faster than float32 at the same WER, and on small core counts one thread per concurrent call
beats sharing all cores in one call, because greedy decoding is latency-bound and scales poorly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

from stenod.engines.base import Engine, EngineConfig
from stenod.errors import ModelLoadError, UnsupportedParameterError
from stenod.models.registry import ResolvedModel
from stenod.settings import ModelSettings

logger = logging.getLogger(__name__)

ENGINE_NAMES = ("faster-whisper", "whisper.cpp", "torch")
CPU_BATCH_CLIPS = 8
"""Short clips per CTranslate2 call in a CPU server: on 2 cores batches of 8 used about 1.4x less
CPU per audio second than one clip per call, 2 and 4 less than that (docs/BENCHMARKS.md, issue 10)."""
GPU_SLOTS_PER_DEVICE = 32
"""Server slots per GPU for the torch engine: its windows batch across calls, so more concurrent
calls mean larger batches, not contention (docs/BENCHMARKS.md, torch engine on an H200)."""


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """How to spread the machine's cores over inference."""

    threads: int
    """Intra-op threads per call."""
    concurrency: int
    """Calls that may run at once (CTranslate2 workers)."""
    batch_size: int = 1
    """Short clips of different requests decoded together in one call (faster-whisper on CPU)."""

    @property
    def slots(self) -> int:
        """Requests a server runs at once: enough for every worker to fill a batch."""
        return self.concurrency * self.batch_size


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def plan_cpu(*, cores: int, threads: int = 0, concurrency: int = 0) -> CpuPlan:
    """Default split of ``cores``: for a single caller (CLI), all cores in one call; for a server,
    one slot per two cores up to 4 threads each, measured best on 2-16 core machines.

    ``threads``/``concurrency`` of 0 mean "choose"; a given value is kept.
    """
    if concurrency <= 0 and threads <= 0:
        threads = 1 if cores <= 2 else min(4, max(1, cores // 2))
        concurrency = max(1, cores // threads)
    elif concurrency <= 0:
        concurrency = max(1, cores // threads)
    elif threads <= 0:
        threads = max(1, cores // concurrency)
    return CpuPlan(threads=threads, concurrency=concurrency)


def torch_cuda_usable() -> bool:
    """PyTorch is installed and sees a working CUDA GPU. Imports torch only where it is installed
    and an NVIDIA driver is loaded, so CPU machines pay nothing for the probe."""
    import importlib.util

    from stenod.models.select import nvidia_driver_present

    if importlib.util.find_spec("torch") is None or not nvidia_driver_present():
        return False
    from stenod.engines.torch_whisper.devices import cuda_usable

    return cuda_usable()


def choose_device(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # a CUDA probe that fails means no usable GPU
        return "cpu"


def runs_on_cpu(settings: ModelSettings) -> bool:
    """Whether engines built from ``settings`` run on the CPU: ``device`` is ``cpu``, or ``auto``
    on a machine where neither CTranslate2 nor PyTorch sees a usable CUDA GPU."""
    if settings.device == "cpu":
        return True
    return settings.device == "auto" and choose_device("auto") == "cpu" and not torch_cuda_usable()


def choose_compute_type(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "int8"


def choose_engine(requested: str, model: ResolvedModel, device: str = "auto") -> str:
    """``auto``: whisper.cpp for ggml files, torch for transformers folders, torch on a usable
    CUDA GPU (CTranslate2's CUDA build needs CUDA 12 libraries that GPU hosts often lack), and
    faster-whisper on the CPU."""
    if requested == "auto":
        if model.format == "ggml" and device in ("auto", "cpu"):
            return "whisper.cpp"
        if model.format == "hf" or (device != "cpu" and torch_cuda_usable()):
            return "torch"
        return "whisper.cpp" if model.format == "ggml" else "faster-whisper"
    if requested != "torch" and model.format == "hf":
        raise UnsupportedParameterError(
            f"{model.path} is a transformers folder; it needs --engine torch (or a CTranslate2 model folder)",
            param="engine",
        )
    if requested == "faster-whisper" and model.format == "ggml":
        raise UnsupportedParameterError(
            f"{model.path} is a ggml file; it needs --engine whisper.cpp (or a CTranslate2 model folder)",
            param="engine",
        )
    # whisper.cpp with a CTranslate2 model is fine: create_engine converts it to a cached ggml file.
    return requested


def prepare_model_or_raise(model: ResolvedModel, settings: ModelSettings) -> ResolvedModel:
    """The weights the chosen engine loads: ``model`` itself, or for whisper.cpp with a CTranslate2
    model, its ggml conversion cached in ``settings.cache_dir/ggml`` (done once; q8_0 for int8
    compute types, f16 for float ones). The one place that decides whether to convert: engine
    creation calls it, and ``stenod bench`` calls it up front so conversion is not timed as loading.

    Raises:
        ModelLoadError: the conversion failed.
        UnsupportedParameterError: the engine cannot run this model format.
    """
    engine_name = choose_engine(settings.engine, model)
    if engine_name != "whisper.cpp" or model.format == "ggml":
        return model
    from stenod.models.ggml_cache import ensure_ggml_model_or_raise, ggml_quantization_for

    compute_type = choose_compute_type(settings.compute_type, choose_device(settings.device))
    return ensure_ggml_model_or_raise(
        model, cache_dir=settings.cache_dir, quantize=ggml_quantization_for(compute_type)
    )


def create_engine(
    model: ResolvedModel,
    settings: ModelSettings,
    *,
    threads: int,
    concurrency: int = 1,
    batch_size: int = 1,
) -> Engine:
    """Build the engine for ``model``. Loading happens here (seconds for large models), after
    :func:`prepare_model_or_raise` (a no-op for prepared weights).

    Most callers want :func:`stenod.service.load_engine`, which also resolves the model name and
    picks threads; this is the layer below it.

    Raises:
        ModelLoadError: the weights could not be loaded (or converted to ggml).
        UnsupportedParameterError: the engine cannot run this model format.
    """
    engine_name = choose_engine(settings.engine, model, settings.device)
    if engine_name == "torch":
        return _create_torch_engine(model, settings, threads=threads, concurrency=concurrency)
    if settings.device not in ("auto", "cpu", "cuda"):
        raise UnsupportedParameterError(
            f"device {settings.device!r} (several GPUs) needs --engine torch", param="device"
        )
    device = choose_device(settings.device)
    config = EngineConfig(
        model_name=model.name,
        model_path=str(model.path),
        multilingual=model.multilingual,
        device=device,
        compute_type=choose_compute_type(settings.compute_type, device),
        threads=threads,
        concurrency=concurrency,
        trim_encoder=settings.trim_encoder,
        parallel_windows=settings.parallel_windows,
        batch_size=batch_size,
        batch_wait_ms=settings.batch_wait_ms,
    )
    if engine_name == "faster-whisper":
        from stenod.engines.faster_whisper import FasterWhisperEngine

        return FasterWhisperEngine(config)
    if engine_name == "whisper.cpp":
        try:  # before any conversion: a missing package should not cost one
            from stenod.engines.whisper_cpp import WhisperCppEngine
        except ImportError as exc:
            raise ModelLoadError(
                "the whisper.cpp engine needs pywhispercpp: pip install 'stenod[whispercpp]'"
            ) from exc
        prepared = prepare_model_or_raise(model, settings)
        return WhisperCppEngine(replace(config, model_path=str(prepared.path)))
    raise UnsupportedParameterError(f"unknown engine {engine_name!r}; choose one of {', '.join(ENGINE_NAMES)}")


def _create_torch_engine(model: ResolvedModel, settings: ModelSettings, *, threads: int, concurrency: int) -> Engine:
    try:
        from stenod.engines.torch_whisper.engine import TorchWhisperEngine
    except ImportError as exc:
        raise ModelLoadError(f"the torch engine needs PyTorch: pip install 'stenod[gpu]' ({exc})") from exc
    config = EngineConfig(
        model_name=model.name,
        model_path=str(model.path),
        multilingual=model.multilingual,
        device=settings.device,
        compute_type=settings.compute_type,
        threads=threads,
        concurrency=concurrency,
    )
    return TorchWhisperEngine(config)


def cpu_batch_clips(settings: ModelSettings, *, slots: int) -> int:
    """Short clips per CTranslate2 call in a server. Explicit slots keep their meaning (requests at
    once, one clip per call) unless ``batch_clips`` is set too; batches exist only on
    faster-whisper's trimmed path."""
    if not settings.trim_encoder or settings.engine not in ("auto", "faster-whisper"):
        return 1
    return settings.batch_clips or (CPU_BATCH_CLIPS if slots <= 0 else 1)


def plan_server_slots(settings: ModelSettings, *, cores: int, slots: int, threads: int) -> CpuPlan:
    """Slots and threads for a server: the CPU plan, except that the torch engine on GPUs gets
    ``GPU_SLOTS_PER_DEVICE`` slots per GPU unless slots are set (its calls batch together)."""
    plan = replace(plan_cpu(cores=cores, threads=threads, concurrency=slots), batch_size=cpu_batch_clips(settings, slots=slots))
    if slots > 0 or settings.engine not in ("auto", "torch") or settings.device == "cpu":
        return plan
    if not torch_cuda_usable():
        return plan
    import torch

    devices = torch.cuda.device_count() if settings.device == "all" else settings.device.count(",") + 1
    return CpuPlan(threads=max(1, threads or 1), concurrency=GPU_SLOTS_PER_DEVICE * devices)
