"""The torch engine on CUDA (marked ``gpu``: deselected by default, run on a GPU machine with
``pytest -m gpu tests/engines/test_torch_gpu.py``). Speed is measured by benchmarks/torch_gpu.py."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from stenod.audio import decode_audio
from stenod.engines import TranscriptionOptions
from stenod.engines.base import EngineConfig
from stenod.models import resolve_model_or_raise
from tests.conftest import JFK
from tests.wer_utils import normalize

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

from stenod.engines.torch_whisper.devices import parse_devices_or_raise  # noqa: E402
from stenod.engines.torch_whisper.engine import TorchWhisperEngine  # noqa: E402

GREEDY = TranscriptionOptions(language="en", temperature=(0.0,), vad=False)


@pytest.fixture(scope="module", autouse=True)
def _needs_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("marked gpu but no CUDA device is visible")


def _engine(cache_dir: Path, device: str, compute_type: str) -> TorchWhisperEngine:
    model = resolve_model_or_raise("base", cache_dir=cache_dir, offline=True)
    return TorchWhisperEngine(EngineConfig("base", str(model.path), True, device=device, compute_type=compute_type))


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_half_precision_on_cuda_matches_float32_on_cpu(cache_dir: Path, compute_type: str) -> None:
    jfk = decode_audio(JFK).samples
    cpu = _engine(cache_dir, "cpu", "float32")
    gpu = _engine(cache_dir, "cuda", compute_type)
    try:
        assert normalize(gpu.transcribe(jfk, GREEDY).text) == normalize(cpu.transcribe(jfk, GREEDY).text)
        stats = gpu.device_stats()[0]
        assert stats["device"] == "cuda:0" and stats["memory_allocated_mb"] > 100
    finally:
        cpu.close()
        gpu.close()


def test_every_gpu_gets_a_worker_and_calls_spread(cache_dir: Path) -> None:
    devices = parse_devices_or_raise("all")
    assert devices == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    engine = _engine(cache_dir, "all", "float16")
    jfk = decode_audio(JFK).samples
    try:
        threads = [threading.Thread(target=engine.transcribe, args=(jfk, GREEDY)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = engine.device_stats()
        assert len(stats) == len(devices) and sum(int(s["windows"]) for s in stats) >= 16
        if len(devices) > 1:
            assert all(int(s["windows"]) > 0 for s in stats)
    finally:
        engine.close()


def test_long_batches_fit_and_release_memory(cache_dir: Path) -> None:
    engine = _engine(cache_dir, "cuda", "float16")
    audio = np.tile(decode_audio(JFK).samples, 30)  # 5.5 min: 11+ windows in one batch
    try:
        result = engine.transcribe(audio, GREEDY)
        assert normalize(result.text).count("ask not what your country") >= 25
    finally:
        engine.close()
