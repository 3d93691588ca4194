"""Accuracy on the shared corpus with the bundled models (real weights, real audio).

Thresholds sit a little above what ``base`` (greedy, int8, CPU) measures here, so a regression in
decoding, resampling or options shows up while run-to-run noise does not.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stenod.audio.decode import decode_audio
from stenod.engines import TranscriptionOptions
from tests.conftest import JFK, JFK_TEXT, corpus_set
from tests.wer_utils import normalize, wer

pytestmark = pytest.mark.accuracy

GREEDY = TranscriptionOptions(language="en", beam_size=1)


def _set_wer(engine: object, name: str) -> float:
    audio_dir, refs = corpus_set(name)
    hyps: list[str] = []
    for stem in refs:
        (path,) = audio_dir.glob(f"{stem}.*")
        hyps.append(engine.transcribe(decode_audio(path).samples, GREEDY).text)  # type: ignore[attr-defined]
    return wer(list(refs.values()), hyps)


@pytest.mark.parametrize(
    ("corpus", "max_wer"),
    [("librispeech-clean100-a", 0.07), ("ljspeech-lj001", 0.085)],
)
def test_base_corpus_wer(
    base_engine: object, corpus: str, max_wer: float, record_property: Callable[[str, object], None]
) -> None:
    assert base_engine.info().compute_type == "int8"  # type: ignore[attr-defined]
    rate = _set_wer(base_engine, corpus)
    record_property("wer", rate)
    print(f"\nWER base {corpus}: {rate:.2%}")
    assert rate <= max_wer


@pytest.mark.parametrize("engine_fixture", ["base_engine", "tiny_engine"])
def test_jfk_exact_after_normalization(request: pytest.FixtureRequest, engine_fixture: str) -> None:
    engine = request.getfixturevalue(engine_fixture)
    transcript = engine.transcribe(decode_audio(JFK).samples, GREEDY)
    assert normalize(transcript.text) == normalize(JFK_TEXT)


def test_translate_german_to_english(base_engine: object) -> None:
    # "For the best views of Hong Kong, leave the island and go to the Kowloon waterfront opposite."
    audio_dir, _ = corpus_set("multilingual-fleurs")
    samples = decode_audio(audio_dir / "fleurs-de-000.ogg").samples
    transcript = base_engine.transcribe(samples, TranscriptionOptions(task="translate"))  # type: ignore[attr-defined]
    words = set(normalize(transcript.text).split())
    assert transcript.task == "translate"
    assert {"hong", "kong", "island"} <= words, transcript.text
    assert not words & {"die", "und", "sie", "der", "insel"}, transcript.text


def test_language_detection_fleurs(base_engine: object) -> None:
    audio_dir, _ = corpus_set("multilingual-fleurs")
    expected = dict(
        line.split("\t", 1)
        for line in (audio_dir.parent / "languages.tsv").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    clips = {stem: lang for stem, lang in expected.items() if lang in ("de", "fr", "es", "pt")}
    assert len(clips) == 40
    detected = {
        stem: base_engine.detect_language(decode_audio(audio_dir / f"{stem}.ogg").samples).language  # type: ignore[attr-defined]
        for stem in clips
    }
    wrong = {stem: (clips[stem], got) for stem, got in detected.items() if got != clips[stem]}
    assert not wrong
