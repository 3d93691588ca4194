"""Long-form coverage on recordings built from corpus clips (issue 11), real models and audio.

Each recording is short clips joined with pauses of 0.3-3 s and, in some, stretches of silence
and white noise. For each: WER at most 1.2x the WER of the same clips transcribed one by one, no
words in the silence and noise, every segment within 1 s of the clips it transcribes, every clip
transcribed. The default run uses a few files; ``-m slow`` sweeps many files and pause lengths.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stenod.bench.longform import LongRecording, build_recording, corpus_clips
from stenod.bench.wer import wer
from stenod.decoding import transcribe_with_coverage
from stenod.decoding.coverage import WINDOWS_PER_BATCH
from stenod.engines import TranscriptionOptions
from stenod.engines.base import WindowGroup
from stenod.service.transcription import transcribe_source
from stenod.transcript import Transcript
from tests.conftest import CORPUS, corpus_set
from tests.engines.test_whisper_cpp import tiny_ggml, wcpp_tiny  # noqa: F401  (session fixtures)
from tests.synth import silence, two_speaker_turns, white_noise

MAX_WER_RATIO = 1.2
TIME_TOLERANCE_S = 1.0


def _clipwise_wer(engine: object, rec: LongRecording, options: TranscriptionOptions) -> float:
    hyps = [engine.transcribe(c.samples, options).text for c in rec.clips]  # type: ignore[attr-defined]
    return wer([c.reference for c in rec.clips], hyps, rec.language)


def _check_placement(transcript: Transcript, rec: LongRecording) -> None:
    segments = [s for s in transcript.segments if s.text.strip()]
    for s in segments:  # times only grow; words inside their segment
        assert s.start <= s.end
        for w in s.words or ():
            assert s.start <= w.start <= w.end <= s.end
    for a, b in itertools.pairwise(segments):
        assert a.end <= b.start, (a, b)
    for s in segments:
        touched = [c for c in rec.clips if s.start < c.end_s + TIME_TOLERANCE_S and s.end > c.start_s - TIME_TOLERANCE_S]
        assert touched, f"segment {s.start}-{s.end} {s.text!r} lies on no clip"
        assert s.start >= touched[0].start_s - TIME_TOLERANCE_S and s.end <= touched[-1].end_s + TIME_TOLERANCE_S, s
    for c in rec.clips:
        assert any(s.start < c.end_s and s.end > c.start_s for s in segments), f"clip {c.stem} at {c.start_s:.1f} s got no text"
    for filler in rec.fillers:
        inside = [s.text for s in segments
                  if min(s.end, filler.end_s - TIME_TOLERANCE_S) > max(s.start, filler.start_s + TIME_TOLERANCE_S)]
        assert not inside, f"text in the {filler.kind} at {filler.start_s:.1f}-{filler.end_s:.1f} s: {inside}"


def _check_recording(engine: object, rec: LongRecording, options: TranscriptionOptions) -> tuple[float, float]:
    transcript = transcribe_with_coverage(engine, rec.audio, options)  # type: ignore[arg-type]
    clipwise = _clipwise_wer(engine, rec, options)
    long_form = wer([rec.reference], [transcript.text], rec.language)
    print(f"\n{rec.name}: {rec.duration_s:.0f} s, clipwise WER {clipwise:.1%}, long-form WER {long_form:.1%}")
    assert long_form <= MAX_WER_RATIO * clipwise, (long_form, clipwise, transcript.text)
    _check_placement(transcript, rec)
    return clipwise, long_form


def test_english_clips_with_pauses_silence_and_noise(tiny_engine: object) -> None:
    clips = corpus_clips(CORPUS / "librispeech-clean100-a", limit=4, skip=20) + corpus_clips(CORPUS / "ljspeech-lj001", limit=4, skip=8)
    rec = build_recording("en-mix", clips, pause_range_s=(0.3, 3.0), filler_every=3, filler_s=8.0, seed=3)
    assert len(rec.fillers) == 2 and {f.kind for f in rec.fillers} == {"silence", "noise"}
    _check_recording(tiny_engine, rec, TranscriptionOptions(language="en"))


class _Overlap:
    """An engine as the coverage check sees it, recording whether two of its calls ever run at
    once. Until they have, a call waits (at most 5 s) for a second one to start, so the answer
    does not depend on how a busy machine schedules the threads: calls made one after another
    never meet, calls made together always do."""

    def __init__(self, engine: object) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._active = 0
        self.peak = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._engine, name)

    def transcribe(self, audio: np.ndarray, options: TranscriptionOptions, **kwargs: object) -> Transcript:
        with self._cond:
            self._active += 1
            self.peak = max(self.peak, self._active)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.peak >= 2, timeout=5.0)
        try:
            return self._engine.transcribe(audio, options, **kwargs)  # type: ignore[attr-defined,no-any-return]
        finally:
            with self._cond:
                self._active -= 1


def _check_librispeech_recording(engine: object, *, clips: int, min_s: float) -> None:
    """LibriSpeech clips with pauses of 0.5-2.5 s through the coverage check, checked against
    their clipwise WER and placement (``_check_recording``)."""
    chosen = corpus_clips(CORPUS / "librispeech-clean100-a", limit=clips, skip=30)
    rec = build_recording(f"en-{clips}-clips", chosen, pause_range_s=(0.5, 2.5), seed=5)
    assert rec.duration_s > min_s
    _check_recording(engine, rec, TranscriptionOptions(language="en"))


def _two_worker_tiny(cache_dir: Path, *, batch_size: int = 1) -> object:
    """tiny.en as the 2-core plan loads it: 2 CTranslate2 workers x 1 thread."""
    from stenod.engines import create_engine
    from stenod.models import resolve_model_or_raise
    from stenod.settings import ModelSettings

    resolved = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True)
    return create_engine(resolved, ModelSettings(name="tiny.en", cache_dir=cache_dir), threads=1, concurrency=2,
                         batch_size=batch_size)


def test_a_long_file_keeps_every_worker_busy_and_every_sentence(cache_dir: Path) -> None:
    # An engine with 2 CTranslate2 workers (the 2-core plan): one long request decodes its
    # first-pass windows two at a time instead of leaving a core idle, and still loses nothing.
    engine = _two_worker_tiny(cache_dir)
    try:
        spy = _Overlap(engine)
        _check_librispeech_recording(spy, clips=6, min_s=60)
        assert spy.peak == 2
    finally:
        engine.close()


class _Groups:
    """An engine as the coverage check sees it, recording the window group of each call."""

    def __init__(self, engine: object) -> None:
        self._engine = engine
        self.groups: list[WindowGroup] = []

    def info(self) -> object:
        return self._engine.info()  # type: ignore[attr-defined]

    def transcribe(self, audio: np.ndarray, options: TranscriptionOptions, **kwargs: object) -> object:
        if options.group is not None:
            self.groups.append(options.group)
        return self._engine.transcribe(audio, options, **kwargs)  # type: ignore[attr-defined]


def test_a_long_files_windows_are_decoded_in_even_batches(cache_dir: Path) -> None:
    # The server's engine on 2 cores batches windows (2 workers, batches of up to 8): a long
    # file's first-pass windows go to it as groups, which it splits evenly over its workers, and
    # the file still loses nothing.
    engine = _two_worker_tiny(cache_dir, batch_size=8)
    try:
        spy = _Groups(engine)
        _check_librispeech_recording(spy, clips=12, min_s=120)
        members = Counter((group.id, group.size) for group in spy.groups)
        assert members and all(count == size for (_, size), count in members.items())  # every member came
        assert all(sorted(g.member for g in spy.groups if g.id == gid) == list(range(size)) for gid, size in members)
        sizes = [size for _, size in members]
        assert max(sizes) <= 2 * WINDOWS_PER_BATCH and max(sizes) - min(sizes) <= 1  # even waves
        batcher = engine._batcher  # type: ignore[attr-defined]
        assert batcher.batches < batcher.items  # windows shared decodes
    finally:
        engine.close()


def test_fleurs_english_half_second_pauses(base_engine: object) -> None:
    # The file of issue 11: base with one pass lost about half the words to loops and skips.
    rec = build_recording("fleurs-en", corpus_clips(CORPUS / "multilingual-fleurs", language="en", limit=10),
                          pause_range_s=(0.5, 0.5))
    _check_recording(base_engine, rec, TranscriptionOptions(language="en"))


@pytest.mark.slow
@pytest.mark.parametrize("language", ["en", "de", "fr", "es", "pt"])
@pytest.mark.parametrize(("pauses", "filler_every"), [((0.3, 0.3), 0), ((0.5, 2.0), 0), ((0.3, 3.0), 3), ((1.0, 3.0), 4)])
def test_fleurs_sweep(base_engine: object, language: str, pauses: tuple[float, float], filler_every: int) -> None:
    clips = corpus_clips(CORPUS / "multilingual-fleurs", language=language, limit=10)
    rec = build_recording(f"fleurs-{language}", clips, language=language, pause_range_s=pauses, filler_every=filler_every,
                          seed=int(pauses[1] * 10) + filler_every)
    _check_recording(base_engine, rec, TranscriptionOptions(language=language))


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["librispeech-clean100-a", "ljspeech-lj001"])
@pytest.mark.parametrize("skip", [0, 12])
@pytest.mark.parametrize(("pauses", "filler_every"), [((0.3, 0.3), 0), ((0.5, 0.5), 0), ((0.3, 3.0), 3)])
def test_english_sweep(base_engine: object, corpus: str, skip: int, pauses: tuple[float, float], filler_every: int) -> None:
    rec = build_recording(corpus, corpus_clips(CORPUS / corpus, limit=12, skip=skip), pause_range_s=pauses,
                          filler_every=filler_every, seed=skip + filler_every)
    _check_recording(base_engine, rec, TranscriptionOptions(language="en"))


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["ljspeech_LJ001-0001_0032_concat", "earnings22_1_4482311_3_62"])
def test_longform_en_keeps_its_wer(base_engine: object, stem: str) -> None:
    # The issue: the shared file keeps or improves its WER against the single pass (the path
    # before issue 11), measured here on the same machine: int8 kernels differ between hosts
    # (the LJ file scored 5.8 % on one and 6.1 % on another with the same code). Half a point
    # (three words) of slack for the temperature fallback's sampling.
    from stenod.audio.decode import decode_audio

    audio_dir, refs = corpus_set("longform-en")
    (path,) = audio_dir.glob(f"{stem}.*")
    audio = decode_audio(path).samples
    options = TranscriptionOptions(language="en")
    transcript = transcribe_with_coverage(base_engine, audio, options)  # type: ignore[arg-type]
    single_pass = base_engine.transcribe(audio, options)  # type: ignore[attr-defined]
    new, old = wer([refs[stem]], [transcript.text]), wer([refs[stem]], [single_pass.text])
    assert new <= old + 0.005, (new, old)


@pytest.mark.parametrize("signal", [silence(60.0), white_noise(60.0, amplitude=0.1)], ids=["silence", "noise"])
def test_sixty_seconds_without_speech_give_no_text(tiny_engine: object, signal: np.ndarray) -> None:
    transcript = transcribe_with_coverage(tiny_engine, signal, TranscriptionOptions())  # type: ignore[arg-type]
    assert transcript.text == ""
    assert transcript.segments == ()


@pytest.fixture(scope="module")
def turns(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, str, str]:
    return two_speaker_turns(tmp_path_factory.mktemp("turns") / "turns.wav")


@pytest.mark.parametrize("engine_fixture", ["tiny_engine", "base_engine"])
def test_two_channel_turns_both_speakers_with_and_without_diarize(
    request: pytest.FixtureRequest, engine_fixture: str, turns: tuple[Path, float, str, str]
) -> None:
    engine = request.getfixturevalue(engine_fixture)
    path, junction_s, text_a, text_b = turns
    plain = transcribe_source(engine, path, TranscriptionOptions(), max_duration_s=3600).transcript
    diarized = transcribe_source(engine, path, TranscriptionOptions(), max_duration_s=3600, diarize=True).transcript
    assert diarized.text == plain.text  # --diarize hears the same mono downmix
    def mid(s: object) -> float:
        return (s.start + s.end) / 2  # type: ignore[attr-defined]

    first = " ".join(s.text for s in plain.segments if mid(s) <= junction_s)
    second = " ".join(s.text for s in plain.segments if mid(s) > junction_s)
    assert wer([text_a], [first]) <= 0.2, plain.segments
    assert wer([text_b], [second]) <= 0.2, plain.segments
    assert {s.speaker for s in diarized.segments if mid(s) > junction_s} == {"SPEAKER 2"}
    assert {s.speaker for s in diarized.segments if mid(s) <= junction_s} == {"SPEAKER 1"}


def test_segments_stream_in_time_order_and_match_the_result(tiny_engine: object) -> None:
    rec = build_recording("lj", corpus_clips(CORPUS / "ljspeech-lj001", limit=5), pause_range_s=(0.5, 2.0), filler_every=2, seed=1)
    streamed: list[object] = []
    progress: list[tuple[float, float]] = []
    transcript = transcribe_with_coverage(
        tiny_engine, rec.audio, TranscriptionOptions(language="en", word_timestamps=True),  # type: ignore[arg-type]
        on_segment=streamed.append, progress=lambda done, total: progress.append((done, total)), cancel=threading.Event(),
    )
    assert tuple(streamed) == transcript.segments
    assert [s.id for s in transcript.segments] == list(range(len(transcript.segments)))
    assert all(s.words for s in transcript.segments)
    assert progress[-1] == (rec.duration_s, rec.duration_s)
    assert all(done < total for done, total in progress[:-1])
    _check_placement(transcript, rec)


def test_no_vad_is_the_engine_alone(tiny_engine: object) -> None:
    rec = build_recording("lj", corpus_clips(CORPUS / "ljspeech-lj001", limit=3), pause_range_s=(0.5, 0.5))
    options = TranscriptionOptions(language="en", vad=False)
    assert transcribe_with_coverage(tiny_engine, rec.audio, options).text == tiny_engine.transcribe(rec.audio, options).text  # type: ignore[arg-type,attr-defined]


def test_whisper_cpp_gets_the_coverage_check(wcpp_tiny: object, turns: tuple[Path, float, str, str]) -> None:
    from stenod.audio.decode import decode_audio

    path, junction_s, text_a, text_b = turns
    transcript = transcribe_with_coverage(wcpp_tiny, decode_audio(path).samples, TranscriptionOptions())  # type: ignore[arg-type]
    assert wer([text_a + " " + text_b], [transcript.text]) <= 0.2, transcript.segments
    assert any((s.start + s.end) / 2 > junction_s for s in transcript.segments)
