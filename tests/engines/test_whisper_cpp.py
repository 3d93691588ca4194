"""whisper.cpp engine on ggml files converted from the bundled CTranslate2 weights.

The ggml files are converted once per session into the session's model cache (the same files
``create_engine`` uses for ``--engine whisper.cpp``). Loading bad files runs in a subprocess: if
validation ever let a file through that whisper.cpp aborts on, the subprocess dies, not pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stenod.audio import decode_audio
from stenod.engines import CancelledError, TranscriptionOptions, temperature_schedule
from stenod.engines.base import EngineConfig
from stenod.errors import UnsupportedParameterError
from tests.conftest import CORPUS, JFK, JFK_TEXT, corpus_set, require_module
from tests.wer_utils import normalize, wer

require_module("_pywhispercpp")

from stenod.engines.whisper_cpp import WhisperCppEngine  # noqa: E402

FLEURS = CORPUS / "multilingual-fleurs" / "audio"
LIBRISPEECH = "librispeech-clean100-a"
WER_SUBSET_FILES = 20
"""Default suite: the first 20 files by name (221 s of audio), for both engines; the full 50-file
set, tiny.en and base, is @slow. Measured here: faster-whisper int8 7.88 %, whisper.cpp q8_0
7.01 % (greedy decoding is deterministic, so this does not flake on one machine)."""
WER_TOLERANCE = 0.01
"""One-sided: whisper.cpp may be better than faster-whisper by any margin, never worse by more than
this. Both engines are also held under anchored absolute limits, so a regression of both at once
still fails."""
SUBSET_WER_LIMIT = {"tiny.en": 0.10, "base": 0.08}
"""Anchored limits on the 20-file subset: measured 7.0-8.1 % (tiny.en) across machines; the limit
leaves room for CPU-dependent int8 kernels, not for a broken decoder."""
FULL_WER_LIMIT = {"tiny.en": 0.09, "base": 0.075}
"""Anchored limits on the full 50-file set: measured tiny.en 6.07-6.65 %, base 4.66-5.62 %."""
THREADS = 1
"""ggml's worker threads spin while they wait; on 2 shared cores one thread is the fast choice."""


def _ggml(name: str, cache_dir: Path) -> Path:
    from stenod.models import resolve_model_or_raise
    from stenod.models.ggml_cache import ensure_ggml_model_or_raise

    resolved = resolve_model_or_raise(name, cache_dir=cache_dir, offline=True)
    return ensure_ggml_model_or_raise(resolved, cache_dir=cache_dir, quantize="q8_0").path


@pytest.fixture(scope="session")
def tiny_ggml(cache_dir: Path) -> Path:
    return _ggml("tiny.en", cache_dir)


@pytest.fixture(scope="session")
def base_ggml(cache_dir: Path) -> Path:
    return _ggml("base", cache_dir)


def _load(path: Path, name: str, *, multilingual: bool, concurrency: int = 1) -> WhisperCppEngine:
    return WhisperCppEngine(EngineConfig(model_name=name, model_path=str(path), multilingual=multilingual,
                                         threads=THREADS, concurrency=concurrency))


@pytest.fixture(scope="session")
def wcpp_tiny(tiny_ggml: Path) -> Iterator[WhisperCppEngine]:
    engine = _load(tiny_ggml, "tiny.en", multilingual=False)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def wcpp_base(base_ggml: Path) -> Iterator[WhisperCppEngine]:
    engine = _load(base_ggml, "base", multilingual=True)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def jfk_audio() -> np.ndarray:
    return decode_audio(JFK).samples


def _audio(path: Path) -> np.ndarray:
    return decode_audio(path).samples


# -- accuracy ---------------------------------------------------------------------------------


def test_info_reports_ggml_weights_and_contexts(wcpp_tiny: WhisperCppEngine, tiny_ggml: Path) -> None:
    info = wcpp_tiny.info()
    assert (info.engine, info.compute_type, info.max_concurrency, info.multilingual) == ("whisper.cpp", "q8_0", 1, False)
    assert info.model_path == str(tiny_ggml)


def test_tiny_en_transcribes_jfk_exactly(wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    transcript = wcpp_tiny.transcribe(jfk_audio, TranscriptionOptions())
    assert normalize(transcript.text) == normalize(JFK_TEXT)
    assert transcript.language == "en" and transcript.duration == pytest.approx(11.0, abs=0.01)
    seg = transcript.segments[0]
    assert seg.text.startswith(" ") and seg.tokens and seg.avg_logprob < 0 and seg.compression_ratio > 0
    assert all(t < 50256 for s in transcript.segments for t in s.tokens)  # text tokens only


def test_base_transcribes_jfk_exactly(wcpp_base: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    transcript = wcpp_base.transcribe(jfk_audio, TranscriptionOptions(language="en"))
    assert normalize(transcript.text) == normalize(JFK_TEXT)


def _wer_pair(fw_engine: object, wcpp: WhisperCppEngine, limit: int | None) -> tuple[float, float]:
    audio_dir, refs = corpus_set(LIBRISPEECH)
    stems = sorted(refs)[:limit] if limit else sorted(refs)
    options = TranscriptionOptions(language="en")
    references, fw_hyps, cpp_hyps = [], [], []
    for stem in stems:
        audio = _audio(next(audio_dir.glob(f"{stem}.*")))
        references.append(refs[stem])
        fw_hyps.append(fw_engine.transcribe(audio, options).text)  # type: ignore[attr-defined]
        cpp_hyps.append(wcpp.transcribe(audio, options).text)
    return wer(references, fw_hyps, "en"), wer(references, cpp_hyps, "en")


def test_tiny_en_wer_matches_faster_whisper_on_subset(tiny_engine: object, wcpp_tiny: WhisperCppEngine) -> None:
    fw, cpp = _wer_pair(tiny_engine, wcpp_tiny, WER_SUBSET_FILES)
    print(f"tiny.en WER on {WER_SUBSET_FILES} files: faster-whisper {fw:.4f}, whisper.cpp q8_0 {cpp:.4f}")
    assert cpp - fw <= WER_TOLERANCE, f"whisper.cpp WER {cpp:.4f} worse than faster-whisper {fw:.4f}"
    assert cpp <= SUBSET_WER_LIMIT["tiny.en"], f"whisper.cpp WER {cpp:.4f}"
    assert fw <= SUBSET_WER_LIMIT["tiny.en"], f"faster-whisper WER {fw:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_wer_matches_faster_whisper_on_full_set(model: str, request: pytest.FixtureRequest) -> None:
    fw_engine = request.getfixturevalue("tiny_engine" if model == "tiny.en" else "base_engine")
    wcpp = request.getfixturevalue("wcpp_tiny" if model == "tiny.en" else "wcpp_base")
    fw, cpp = _wer_pair(fw_engine, wcpp, None)
    print(f"{model} WER on the full set: faster-whisper {fw:.4f}, whisper.cpp q8_0 {cpp:.4f}")
    assert cpp - fw <= WER_TOLERANCE, f"{model}: whisper.cpp WER {cpp:.4f} worse than faster-whisper {fw:.4f}"
    assert max(cpp, fw) <= FULL_WER_LIMIT[model], f"{model}: WER {fw:.4f} / {cpp:.4f}"


# -- languages and translation ----------------------------------------------------------------


def test_detect_language_french(wcpp_base: WhisperCppEngine) -> None:
    detection = wcpp_base.detect_language(_audio(FLEURS / "fleurs-fr-000.ogg"))
    assert detection.language == "fr"
    assert detection.probability > 0.5
    assert next(iter(detection.all_probabilities)) == "fr"  # ranked, most likely first
    assert sum(detection.all_probabilities.values()) == pytest.approx(1.0, abs=0.01)


def test_detected_german_then_translation_is_english(wcpp_base: WhisperCppEngine) -> None:
    """Language detection inside transcribe (German), then translation on the same context."""
    audio = _audio(FLEURS / "fleurs-de-000.ogg")
    german = wcpp_base.transcribe(audio, TranscriptionOptions())
    assert german.language == "de" and german.language_probability > 0.5
    assert {"die", "und", "sie"} & set(normalize(german.text).split())
    # Same context right after a German transcription: whisper.cpp would carry the German text
    # into this call's prompt if the engine did not clear it.
    english = wcpp_base.transcribe(audio, TranscriptionOptions(task="translate"))
    words = set(normalize(english.text).split())
    assert english.task == "translate"
    assert {"the", "island"} <= words, english.text
    assert not {"die", "und", "sie"} & words, english.text


def test_english_only_model_refuses_translate_and_other_languages(wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    with pytest.raises(UnsupportedParameterError, match="English-only"):
        wcpp_tiny.transcribe(jfk_audio, TranscriptionOptions(task="translate"))
    with pytest.raises(UnsupportedParameterError, match="English-only"):
        wcpp_tiny.transcribe(jfk_audio, TranscriptionOptions(language="de"))
    assert wcpp_tiny.detect_language(jfk_audio).language == "en"


# -- timestamps, streaming, options -----------------------------------------------------------


def test_word_timestamps_are_monotonic_and_inside_segments(wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    transcript = wcpp_tiny.transcribe(jfk_audio, TranscriptionOptions(word_timestamps=True))
    words = transcript.words
    assert [normalize(w.word) for w in words if normalize(w.word)] == normalize(JFK_TEXT).split()
    previous_end = 0.0
    for seg in transcript.segments:
        assert seg.words and "".join(w.word for w in seg.words) == seg.text
        for w in seg.words:
            assert seg.start <= w.start <= w.end <= seg.end
            assert w.start >= previous_end
            assert 0.0 <= w.probability <= 1.0
            previous_end = w.end
    fellow = next(w for w in words if w.word.strip() == "fellow")
    assert 0.5 < fellow.start < 2.5  # roughly where it is said


def test_segments_stream_in_order_with_progress(wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    streamed, progress = [], []
    transcript = wcpp_tiny.transcribe(jfk_audio, TranscriptionOptions(), on_segment=streamed.append,
                                      progress=lambda done, total: progress.append((done, total)))
    assert tuple(streamed) == transcript.segments
    assert [s.id for s in streamed] == list(range(len(streamed)))
    assert progress[-1] == (transcript.duration, transcript.duration)
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)


def test_vad_cuts_silence_and_restores_times(wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    padded = np.concatenate([np.zeros(16_000 * 5, dtype=np.float32), jfk_audio])
    transcript = wcpp_tiny.transcribe(padded, TranscriptionOptions(vad=True))
    assert normalize(transcript.text) == normalize(JFK_TEXT)
    assert transcript.segments[0].start >= 4.5  # times are in the original file, silence included
    assert transcript.duration == pytest.approx(16.0, abs=0.01)


def test_empty_and_silent_audio(wcpp_tiny: WhisperCppEngine) -> None:
    empty = wcpp_tiny.transcribe(np.zeros(0, dtype=np.float32), TranscriptionOptions())
    assert (empty.text, empty.segments, empty.duration) == ("", (), 0.0)
    short = wcpp_tiny.transcribe(np.zeros(800, dtype=np.float32), TranscriptionOptions())
    assert short.text == ""


def test_options_map_to_whisper_cpp_params(wcpp_base: WhisperCppEngine) -> None:
    from stenod.engines.whisper_cpp import _CallState

    state = _CallState(None)
    greedy = wcpp_base._params(TranscriptionOptions(temperature=temperature_schedule(0.0)), "de", state)
    assert (greedy.language, greedy.translate, greedy.no_context, greedy.detect_language) == ("de", False, False, False)
    assert greedy.temperature == 0.0 and greedy.temperature_inc == pytest.approx(0.2)
    assert greedy.greedy["best_of"] == 1 and greedy.n_threads == THREADS
    beam = wcpp_base._params(
        TranscriptionOptions(task="translate", beam_size=5, temperature=(0.4,), initial_prompt="Hongkong.",
                             condition_on_previous_text=False, without_timestamps=True, word_timestamps=True),
        "de", state,
    )
    assert beam.beam_search["beam_size"] == 5 and beam.translate and beam.no_context and beam.no_timestamps
    assert beam.token_timestamps and beam.initial_prompt == "Hongkong."
    assert beam.temperature == pytest.approx(0.4) and beam.temperature_inc == 0.0


def test_beam_search_and_initial_prompt(wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    transcript = wcpp_tiny.transcribe(
        jfk_audio, TranscriptionOptions(beam_size=3, initial_prompt="President Kennedy's inaugural address.")
    )
    assert normalize(transcript.text) == normalize(JFK_TEXT)


# -- cancellation and errors in callbacks -----------------------------------------------------


def test_cancel_before_start(wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        wcpp_tiny.transcribe(jfk_audio, TranscriptionOptions(), cancel=cancel)


def test_cancel_stops_a_long_file_early(wcpp_tiny: WhisperCppEngine) -> None:
    long_audio = _audio(sorted((CORPUS / "longform-en" / "audio").iterdir())[0])[: 16_000 * 150]
    cancel = threading.Event()
    streamed = []

    def on_segment(segment: object) -> None:
        streamed.append(segment)
        cancel.set()  # cancel as soon as the first window is decoded

    with pytest.raises(CancelledError):
        wcpp_tiny.transcribe(long_audio, TranscriptionOptions(language="en", vad=False),
                             on_segment=on_segment, cancel=cancel)
    assert 1 <= len(streamed) and max(s.end for s in streamed) <= 30.0  # nothing after the first window
    # The context is usable (and clean) afterwards.
    assert normalize(wcpp_tiny.transcribe(long_audio[: 16_000 * 5], TranscriptionOptions()).text)


def test_exception_in_on_segment_propagates_and_engine_survives(
    wcpp_tiny: WhisperCppEngine, jfk_audio: np.ndarray
) -> None:
    class ClientGone(Exception):
        pass

    def boom(_segment: object) -> None:
        raise ClientGone("stream closed")

    with pytest.raises(ClientGone):
        wcpp_tiny.transcribe(jfk_audio, TranscriptionOptions(), on_segment=boom)
    again = wcpp_tiny.transcribe(jfk_audio[: 16_000 * 3], TranscriptionOptions())
    assert "fellow americans" in normalize(again.text)


# -- concurrency ------------------------------------------------------------------------------


def test_concurrency_uses_one_context_per_slot(tiny_ggml: Path, jfk_audio: np.ndarray) -> None:
    engine = _load(tiny_ggml, "tiny.en", multilingual=False, concurrency=2)
    try:
        assert engine.info().max_concurrency == 2
        results: list[str] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                results.append(engine.transcribe(jfk_audio, TranscriptionOptions()).text)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and len(results) == 2 and results[0] == results[1]
        assert normalize(results[0]) == normalize(JFK_TEXT)
    finally:
        engine.close()
    with pytest.raises(Exception, match="closed"):
        engine.transcribe(jfk_audio, TranscriptionOptions())


# -- bad model files: an error, never a crash --------------------------------------------------

_LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from stenod.engines.base import EngineConfig
    from stenod.engines.whisper_cpp import WhisperCppEngine
    from stenod.errors import ModelLoadError
    out = {}
    for path in sys.argv[1:]:
        try:
            WhisperCppEngine(EngineConfig(model_name="bad", model_path=path, multilingual=False)).close()
            out[path] = ["loaded", ""]
        except ModelLoadError as exc:
            out[path] = ["ModelLoadError", exc.message]
    print(json.dumps(out))
    """
)


def _write_f32_ggml(src_dir: Path, out: Path) -> None:
    """An f32 ggml file that is otherwise valid (the converter itself only writes f16/q8_0/q5_0)."""
    from stenod.models import ggml
    from stenod.models.ggml.convert import _openai_tensors, _write_ggml

    model_bin = src_dir / "model.bin"
    variables = ggml.read_ct2_model(model_bin)
    hp = ggml.whisper_hparams_from_ct2(variables, ftype=0, path=model_bin)
    tokens = ggml.load_vocabulary_bytes(src_dir, hp.n_vocab)
    with out.open("wb") as f:
        _write_ggml(f, hp, ggml.mel_filters(hp.n_mels), tokens, _openai_tensors(variables, hp, model_bin), model_bin)


def test_corrupt_truncated_and_f32_files_fail_to_load_with_an_error(
    tiny_ggml: Path, tmp_path: Path, cache_dir: Path
) -> None:
    from stenod.models import resolve_model_or_raise
    from stenod.models.ggml import validate_ggml_file

    data = tiny_ggml.read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"lmgg" + np.random.default_rng(0).bytes(1 << 20))
    header_only = tmp_path / "header-only.bin"
    header_only.write_bytes(data[:4096])
    bad_tensor = tmp_path / "bad-tensor.bin"
    first = validate_ggml_file(tiny_ggml).tensors[0]
    mangled = bytearray(data)
    mangled[first.data_offset - len(first.name) - 4 * len(first.ne) : first.data_offset - len(first.name)] = (
        b"\x07\x00\x00\x00" * len(first.ne)
    )
    bad_tensor.write_bytes(bytes(mangled))
    f32 = tmp_path / "f32.bin"
    _write_f32_ggml(resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True).path, f32)
    assert validate_ggml_file(f32).weight_type == "f32"
    missing = tmp_path / "missing.bin"
    paths = [truncated, garbage, header_only, bad_tensor, f32, missing]

    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, *map(str, paths)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=120, check=False)
    assert proc.returncode == 0, f"loader process died (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in paths:
        kind, message = results[str(path)]
        assert kind == "ModelLoadError", (path.name, kind)
        assert "\n" not in message and "bad" in message
    assert "truncated" in results[str(truncated)][1]
    assert "f32" in results[str(f32)][1] and "q8_0" in results[str(f32)][1]
    assert "cannot open" in results[str(missing)][1]


# -- factory and cache: --engine whisper.cpp with a bundled CTranslate2 model --------------------


def test_create_engine_converts_bundled_model_once(cache_dir: Path, tiny_ggml: Path, jfk_audio: np.ndarray) -> None:
    from stenod.engines import create_engine
    from stenod.engines.factory import choose_engine
    from stenod.models import resolve_model_or_raise
    from stenod.settings import ModelSettings

    resolved = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True)
    assert resolved.format == "ctranslate2"
    assert choose_engine("whisper.cpp", resolved) == "whisper.cpp"
    mtime = tiny_ggml.stat().st_mtime_ns
    engine = create_engine(resolved, ModelSettings(name="tiny.en", engine="whisper.cpp", cache_dir=cache_dir), threads=1)
    try:
        info = engine.info()
        assert (info.engine, info.model_path, info.compute_type) == ("whisper.cpp", str(tiny_ggml), "q8_0")
        assert tiny_ggml.stat().st_mtime_ns == mtime  # the session's cached file, not converted again
        assert normalize(engine.transcribe(jfk_audio, TranscriptionOptions()).text) == normalize(JFK_TEXT)
    finally:
        engine.close()


def test_invalid_cached_file_is_converted_again(cache_dir: Path, tmp_path: Path) -> None:
    from stenod.models import resolve_model_or_raise
    from stenod.models.ggml import validate_ggml_file
    from stenod.models.ggml_cache import cached_ggml_path, ensure_ggml_model_or_raise

    resolved = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True)
    own_cache = tmp_path / "cache"
    target = cached_ggml_path(resolved, cache_dir=own_cache, quantize="q5_0")
    assert target == own_cache / "ggml" / "tiny.en-q5_0.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"lmgg" + b"\0" * 100)
    started = time.perf_counter()
    out = ensure_ggml_model_or_raise(resolved, cache_dir=own_cache, quantize="q5_0")
    assert out.path == target and out.format == "ggml" and out.multilingual is False
    assert validate_ggml_file(target).weight_type == "q5_0"
    assert time.perf_counter() - started < 60


def test_local_folders_get_distinct_cache_names(tmp_path: Path) -> None:
    from stenod.models.ggml_cache import cached_ggml_path
    from stenod.models.registry import ResolvedModel

    paths = set()
    for parent in ("a", "b"):
        folder = tmp_path / parent / "model"
        folder.mkdir(parents=True)
        (folder / "model.bin").write_bytes(b"x")
        model = ResolvedModel(str(folder), folder, "ctranslate2", "local", True)
        paths.add(cached_ggml_path(model, cache_dir=tmp_path, quantize="q8_0"))
    assert len(paths) == 2 and all(p.name.startswith("model-") and p.name.endswith("-q8_0.bin") for p in paths)
