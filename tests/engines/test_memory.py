"""Freed memory is reused by the next call (stenod.engines.memory), through the one way in.

Each case runs in a fresh Python process: malloc's settings are per process and must be in force
before threads start. Page faults are counted (``ru_minflt``), not timed: a fault is the kernel
zero-filling a page that malloc had handed back, which is what the setting removes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from stenod.engines.factory import runs_on_cpu
from stenod.engines.memory import keep_freed_memory
from stenod.settings import ModelSettings
from tests.conftest import CORPUS, REPO_ROOT

LJ = CORPUS / "longform-en" / "audio" / "ljspeech_LJ001-0001_0032_concat.flac"

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc settings"
)

THREADS_SCRIPT = """
import ctypes, json, resource, sys, threading
from stenod.engines.factory import runs_on_cpu
from stenod.engines.memory import keep_freed_memory
from stenod.settings import ModelSettings
applied = keep_freed_memory(int(sys.argv[1]))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def touch_and_free(size):  # as CTranslate2 does with a layer's output: allocate, write, free
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)

def work():
    for _ in range(8):
        touch_and_free(64 << 20)  # a batch's attention scores: over mmap's threshold
        touch_and_free(8 << 20)  # from the thread's own arena by default

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

ENGINE_SCRIPT = """
import json, resource, sys
from pathlib import Path
from stenod.audio import decode_audio
from stenod.engines import TranscriptionOptions
from stenod.service import load_engine
from stenod.settings import ModelSettings, Settings

keep, cache, clip = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
settings = Settings(model=ModelSettings(name="tiny.en", cache_dir=cache, offline=True, keep_freed_memory_mb=keep))
engine = load_engine(settings, threads=1)
audio = decode_audio(clip).samples[: 16000 * 28]  # one 28 s window of read speech
options = TranscriptionOptions(language="en")
engine.transcribe(audio, options)  # warm-up: the first call maps what later calls reuse
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
text = engine.transcribe(audio, options).text
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
engine.close()
print(json.dumps({"faults": faults, "text": text}))
"""


def _run(script: str, *args: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_large_buffers_freed_by_worker_threads_are_reused_not_faulted_in_again() -> None:
    kept = _run(THREADS_SCRIPT, "512")
    default = _run(THREADS_SCRIPT, "0")
    assert kept["applied"] is True and default["applied"] is False
    # glibc's defaults: every 64 MB buffer is a new mmap (16 000 faults each, 16 of them), and
    # the 8 MB ones come back after each thread-arena shrink.
    assert int(default["faults"]) > 200_000
    assert int(kept["faults"]) < int(default["faults"]) // 4


def test_an_engine_built_through_the_builder_reuses_its_buffers(cache_dir: Path) -> None:
    kept = _run(ENGINE_SCRIPT, "512", str(cache_dir), str(LJ))
    default = _run(ENGINE_SCRIPT, "0", str(cache_dir), str(LJ))
    assert kept["text"] == default["text"]  # the same decode: only where its buffers come from differs
    assert str(kept["text"]).startswith("Printing, in the only sense with which we are at present")
    # A 28 s window through tiny.en: each encoder layer's attention scores (47 MB) were mapped
    # and zero-filled afresh, about 75 000 faults per call; kept, almost none.
    assert int(default["faults"]) > 50_000
    assert int(kept["faults"]) < int(default["faults"]) // 10


def test_zero_leaves_malloc_alone() -> None:
    assert keep_freed_memory(0) is False


def test_only_cpu_engines_change_the_allocator() -> None:
    assert runs_on_cpu(ModelSettings(device="cpu")) is True
    assert runs_on_cpu(ModelSettings(device="cuda")) is False
    assert runs_on_cpu(ModelSettings(device="cuda:0,cuda:1")) is False
