"""``--model auto``: the largest model that fits free GPU or host memory and is available."""

from __future__ import annotations

from pathlib import Path

from stenod.models import resolve_model_or_raise
from stenod.models.select import GIB, MachineMemory, ranked_candidates


def test_gpu_memory_decides_when_there_is_a_gpu() -> None:
    assert ranked_candidates(MachineMemory(gpu_free_bytes=140 * GIB, host_free_bytes=GIB, cores=2))[0] == "large-v3"
    assert ranked_candidates(MachineMemory(gpu_free_bytes=4 * GIB, host_free_bytes=512 * GIB, cores=64))[0] == "small"
    assert ranked_candidates(MachineMemory(gpu_free_bytes=GIB // 2, host_free_bytes=512 * GIB, cores=64)) == ["base", "tiny"]


def test_host_memory_and_cores_decide_on_the_cpu() -> None:
    assert ranked_candidates(MachineMemory(None, 64 * GIB, 64))[0] == "large-v3"
    assert ranked_candidates(MachineMemory(None, 64 * GIB, 2))[0] == "base"  # too few cores for small
    assert ranked_candidates(MachineMemory(None, 2 * GIB, 16))[0] == "small"


def test_auto_offline_falls_back_to_a_bundled_model(cache_dir: Path) -> None:
    resolved = resolve_model_or_raise("auto", cache_dir=cache_dir, offline=True)
    assert resolved.name in ("base", "tiny.en") and resolved.source == "bundled"
