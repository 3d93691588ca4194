"""The one way in for options and engines (stenod.service.builder): defaults come from settings,
bad per-call values are errors that name the parameter, and the CPU policies hold for every core
count a deployment might have."""

from __future__ import annotations

from pathlib import Path

import pytest

from stenod.engines import plan_cpu, temperature_schedule
from stenod.engines.factory import CPU_BATCH_CLIPS
from stenod.errors import ModelNotFoundError, UnknownLanguageError, UnsupportedParameterError
from stenod.service import (
    SINGLE_CALL_MAX_THREADS,
    build_options,
    parse_task_or_raise,
    prepare_model,
    resolve_model,
    server_cpu_plan,
    single_call_threads,
    threads_per_process,
)
from stenod.settings import ModelSettings, ServerSettings, Settings
from stenod.transcript import Task
from tests.conftest import require_module


def test_options_take_defaults_from_settings() -> None:
    options = build_options(ModelSettings(beam_size=5, vad_min_duration_s=12.0))
    assert options.beam_size == 5 and options.vad_min_duration_s == 12.0
    assert options.language is None and options.task is Task.TRANSCRIBE
    assert options.temperature == temperature_schedule(0.0) and options.initial_prompt is None
    assert options.vad is None and not options.word_timestamps and options.batch_size == 0


def test_per_call_choices_override() -> None:
    options = build_options(
        ModelSettings(), language=" DE ", task="Translate", temperature=0.4, prompt="Hongkong.",
        word_timestamps=True, vad=False, without_timestamps=True, batch_size=8,
    )
    assert options.language == "de" and options.task is Task.TRANSLATE
    assert options.temperature == (0.4, 0.6, 0.8, 1.0)
    assert options.initial_prompt == "Hongkong." and options.word_timestamps and options.vad is False
    assert options.without_timestamps and options.batch_size == 8


@pytest.mark.parametrize("value", [None, "", "auto", "AUTO", "detect"])
def test_language_detection_values(value: str | None) -> None:
    assert build_options(ModelSettings(), language=value).language is None


def test_empty_prompt_means_none() -> None:
    assert build_options(ModelSettings(), prompt="").initial_prompt is None


def test_bad_values_name_the_parameter() -> None:
    with pytest.raises(UnknownLanguageError) as lang:
        build_options(ModelSettings(), language="klingon")
    assert lang.value.param == "language" and lang.value.status_code == 400
    with pytest.raises(UnsupportedParameterError) as task:
        build_options(ModelSettings(), task="summarize")
    assert task.value.param == "task" and "transcribe or translate" in task.value.message
    for bad in (-0.1, 1.01):
        with pytest.raises(UnsupportedParameterError) as temp:
            build_options(ModelSettings(), temperature=bad)
        assert temp.value.param == "temperature"


def test_task_parsing() -> None:
    assert parse_task_or_raise(Task.TRANSLATE) is Task.TRANSLATE
    assert parse_task_or_raise(" transcribe ") is Task.TRANSCRIBE
    assert Task.TRANSLATE == "translate" and str(Task.TRANSCRIBE) == "transcribe"


# -- CPU policies -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cores", "threads", "slots"),
    [(1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 2, 2), (6, 3, 2), (8, 4, 2), (16, 4, 4), (64, 4, 16)],
)
def test_plan_cpu_default_split(cores: int, threads: int, slots: int) -> None:
    """One single-thread slot per core on 1-2 cores; above that cores // 2 threads per slot, at
    most 4, and as many slots as fit (docs/ARCHITECTURE.md, "Why the defaults")."""
    plan = plan_cpu(cores=cores)
    assert (plan.threads, plan.concurrency) == (threads, slots)
    assert plan.threads * plan.concurrency <= cores


def test_plan_cpu_keeps_what_is_given() -> None:
    assert plan_cpu(cores=8, threads=2) == plan_cpu(cores=8, threads=2, concurrency=4)
    assert (plan_cpu(cores=8, concurrency=3).threads, plan_cpu(cores=8, concurrency=3).concurrency) == (2, 3)
    assert (plan_cpu(cores=2, threads=8).threads, plan_cpu(cores=2, threads=8).concurrency) == (8, 1)
    assert (plan_cpu(cores=4, threads=3, concurrency=5).threads, plan_cpu(cores=4, threads=3, concurrency=5).concurrency) == (3, 5)


def test_server_plan_reads_settings() -> None:
    settings = Settings(model=ModelSettings(threads=2), server=ServerSettings(slots=3))
    plan = server_cpu_plan(settings, cores=16)
    assert (plan.threads, plan.concurrency, plan.batch_size, plan.slots) == (2, 3, 1, 3)
    default = server_cpu_plan(Settings(), cores=8)
    assert (default.threads, default.concurrency) == (plan_cpu(cores=8).threads, plan_cpu(cores=8).concurrency)


def test_server_plan_batches_short_clips_on_faster_whisper_cpu() -> None:
    """Default CPU server: batches of CPU_BATCH_CLIPS per worker, a slot for every clip a batch can
    hold; batching off where there is no trimmed path to batch, or when asked."""
    plan = server_cpu_plan(Settings(model=ModelSettings(device="cpu")), cores=2)
    assert (plan.threads, plan.concurrency, plan.batch_size) == (1, 2, CPU_BATCH_CLIPS)
    assert plan.slots == 2 * CPU_BATCH_CLIPS
    for model in (
        ModelSettings(device="cpu", trim_encoder=False),
        ModelSettings(device="cpu", engine="whisper.cpp"),
        ModelSettings(device="cpu", batch_clips=1),
    ):
        assert server_cpu_plan(Settings(model=model), cores=2).slots == 2
    asked = server_cpu_plan(Settings(model=ModelSettings(device="cpu", batch_clips=4), server=ServerSettings(slots=3)), cores=2)
    assert (asked.concurrency, asked.batch_size, asked.slots) == (3, 4, 12)


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (8, 8), (32, SINGLE_CALL_MAX_THREADS)])
def test_single_call_gets_every_core_up_to_the_cap(cores: int, expected: int) -> None:
    assert single_call_threads(ModelSettings(), cores=cores) == expected
    assert single_call_threads(ModelSettings(threads=3), cores=cores) == 3


# -- models ---------------------------------------------------------------------------------------
def test_resolve_defaults_to_the_configured_model(cache_dir: Path) -> None:
    settings = Settings(model=ModelSettings(name="tiny.en", cache_dir=cache_dir, offline=True))
    assert resolve_model(settings).name == "tiny.en"
    assert resolve_model(settings, "base").name == "base"
    with pytest.raises(ModelNotFoundError):
        resolve_model(settings, "no-such-model-anywhere")


def test_prepare_converts_only_for_whisper_cpp(cache_dir: Path) -> None:
    ct2 = Settings(model=ModelSettings(name="tiny.en", cache_dir=cache_dir, offline=True))
    assert prepare_model(ct2).format == "ctranslate2"
    require_module("_pywhispercpp")
    wcpp = Settings(model=ModelSettings(name="tiny.en", engine="whisper.cpp", cache_dir=cache_dir, offline=True))
    prepared = prepare_model(wcpp)
    assert prepared.format == "ggml" and prepared.path.suffix == ".bin" and prepared.name == "tiny.en"
    assert prepare_model(wcpp, prepared) == prepared  # already ggml: nothing to do


@pytest.mark.parametrize(("requested", "processes", "cores", "expected"),
                         [(0, 2, 2, 1), (0, 1, 8, 8), (0, 3, 8, 2), (0, 16, 4, 1), (3, 2, 8, 3)])
def test_threads_per_process(requested: int, processes: int, cores: int, expected: int) -> None:
    assert threads_per_process(requested, processes=processes, cores=cores) == expected
