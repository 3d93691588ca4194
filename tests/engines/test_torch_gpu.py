"""The torch engine on CUDA (marked ``gpu``: deselected by default, run on a GPU machine with
``pytest -m gpu tests/engines/test_torch_gpu.py``). Speed is measured by benchmarks/torch_gpu.py.

The GPU machine has neither the bundled model packages nor PyAV: ``STENOD_GPU_MODEL`` names a
transformers folder (``stenod models convert base --to hf``) to use instead of the bundled base,
and ``STENOD_TEST_AUDIO_NPZ`` a folder of the corpus sets as 16-bit npz (as benchmarks/torch_gpu.py
reads them) to take the JFK clip from instead of decoding the flac."""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from stenod.engines import TranscriptionOptions
from stenod.engines.base import EngineConfig
from tests.conftest import JFK

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

from stenod.engines.torch_whisper.devices import parse_devices_or_raise  # noqa: E402
from stenod.engines.torch_whisper.engine import TorchWhisperEngine  # noqa: E402

GREEDY = TranscriptionOptions(language="en", temperature=(0.0,), vad=False)


def normalize(text: str) -> str:
    """Lower-case words without punctuation (jiwer, behind tests.wer_utils, is not on the GPU machine)."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    npz = os.environ.get("STENOD_TEST_AUDIO_NPZ")
    if npz:
        with np.load(Path(npz) / "en-misc-short.npz") as data:
            return data["jfk"].astype(np.float32) / 32767.0
    from stenod.audio import decode_audio

    return decode_audio(JFK).samples


@pytest.fixture(scope="module", autouse=True)
def _needs_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("marked gpu but no CUDA device is visible")


def _engine(cache_dir: Path, device: str, compute_type: str, **kwargs: object) -> TorchWhisperEngine:
    path = os.environ.get("STENOD_GPU_MODEL")
    if not path:
        from stenod.models import resolve_model_or_raise

        path = str(resolve_model_or_raise("base", cache_dir=cache_dir, offline=True).path)
    return TorchWhisperEngine(EngineConfig("base", path, True, device=device, compute_type=compute_type), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_half_precision_on_cuda_matches_float32_on_cpu(cache_dir: Path, compute_type: str, jfk: np.ndarray) -> None:
    cpu = _engine(cache_dir, "cpu", "float32")
    gpu = _engine(cache_dir, "cuda", compute_type)
    try:
        assert normalize(gpu.transcribe(jfk, GREEDY).text) == normalize(cpu.transcribe(jfk, GREEDY).text)
        stats = gpu.device_stats()[0]
        assert stats["device"] == "cuda:0" and stats["memory_allocated_mb"] > 100
    finally:
        cpu.close()
        gpu.close()


def test_every_gpu_gets_a_worker_and_calls_spread(cache_dir: Path, jfk: np.ndarray) -> None:
    devices = parse_devices_or_raise("all")
    assert devices == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    engine = _engine(cache_dir, "all", "float16")
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


def test_long_batches_fit_and_release_memory(cache_dir: Path, jfk: np.ndarray) -> None:
    engine = _engine(cache_dir, "cuda", "float16")
    audio = np.tile(jfk, 30)  # 5.5 min: 11+ windows in one batch
    try:
        result = engine.transcribe(audio, GREEDY)
        assert normalize(result.text).count("ask not what your country") >= 25
    finally:
        engine.close()


def test_cuda_graphs_decode_what_the_general_loop_decodes(cache_dir: Path, jfk: np.ndarray) -> None:
    """Greedy batches replayed as CUDA graphs (the default on CUDA) against the general loop, on
    batches of several sizes (buckets, rows leaving the batch) with and without timestamps."""
    graphs = _engine(cache_dir, "cuda", "float16", max_rows=8)
    general = _engine(cache_dir, "cuda", "float16", max_rows=8, static_decoding=False)
    rng = np.random.default_rng(1)
    clips = [jfk[: int(len(jfk) * f)] for f in (1.0, 0.8, 0.6, 0.45)] + [np.tile(jfk, 3)]
    clips.append(rng.standard_normal(16000 * 5).astype(np.float32) * 0.01)  # near-silence
    try:
        static = graphs._devices[0].decoder.static
        assert static is not None and static.graphs
        for without_timestamps in (False, True):
            opts = TranscriptionOptions(language="en", temperature=(0.0,), vad=False, without_timestamps=without_timestamps)
            texts = []
            for engine in (graphs, general):
                with ThreadPoolExecutor(len(clips)) as pool:
                    texts.append([normalize(t.text) for t in pool.map(lambda a, e=engine, o=opts: e.transcribe(a, o), clips)])
            assert texts[0] == texts[1]
            assert "ask not what your country" in texts[0][0]
    finally:
        graphs.close()
        general.close()


def test_fixed_decoding_buffers_fit_the_free_memory() -> None:
    """``base`` gets all 128 rows of fixed buffers on any GPU; a request for more rows than a
    quarter of the free memory holds is cut to what fits (larger batches take the general loop)."""
    from stenod.engines.torch_whisper.engine import STATIC_MEMORY_SHARE, _static_rows
    from stenod.engines.torch_whisper.model import ModelDimensions

    base = ModelDimensions(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6)
    large = ModelDimensions(128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 32)
    device = torch.device("cuda")
    assert _static_rows(base, device, torch.float16, 128) == 128
    free, _total = torch.cuda.mem_get_info(device)
    per_row = 32 * 2 * (1500 + 2 * 448) * 1280 * 2
    assert _static_rows(large, device, torch.float16, 10**6) == int(free * STATIC_MEMORY_SHARE) // per_row
