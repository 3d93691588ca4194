"""Decoding: every container and rate in the corpus, containers made here with FFmpeg's encoders,
multi-channel downmix, and the errors for input that is not (whole) audio."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import pytest

from stenod.audio.decode import decode_audio, probe_audio
from stenod.engines import TranscriptionOptions
from stenod.errors import AudioDecodeError, AudioTooLongError, EmptyAudioError
from tests.conftest import CORPUS, JFK, JFK_TEXT, skip_or_fail
from tests.media import text_file, truncated_copy, write_wav, zero_length_wav
from tests.synth import encode
from tests.wer_utils import normalize, wer

# One file for each (container, codec, sample rate, channels) the corpus holds.
CORPUS_KINDS = {
    "flac-44k-stereo": CORPUS / "en-misc-short/audio/jfk.flac",
    "flac-16k": CORPUS / "librispeech-clean100-a/audio/1034-121119-0000.flac",
    "wav-16k": CORPUS / "en-misc-short/audio/sense_and_sensibility_01_austen_64kb-0880.wav",
    "wav-22k": CORPUS / "ljspeech-lj001/audio/LJ001-0002.wav",
    "wav-24k": CORPUS / "longform-en/audio/earnings22_1_4482311_3_62.wav",
    "ogg-opus-48k": CORPUS / "multilingual-fleurs/audio/fleurs-de-000.ogg",
}


def test_corpus_kinds_cover_every_container_in_the_corpus() -> None:
    kinds = set()
    for path in CORPUS.glob("*/audio/*"):
        p = probe_audio(path)
        kinds.add((path.suffix, p.codec, p.sample_rate, p.channels))
    covered = set()
    for path in CORPUS_KINDS.values():
        p = probe_audio(path)
        covered.add((path.suffix, p.codec, p.sample_rate, p.channels))
    assert kinds == covered


@pytest.mark.parametrize("path", CORPUS_KINDS.values(), ids=CORPUS_KINDS.keys())
def test_corpus_file_decodes_to_16k_mono(path: Path) -> None:
    probe = probe_audio(path)
    audio = decode_audio(path)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.source_sample_rate == probe.sample_rate
    assert audio.source_channels == probe.channels
    assert probe.duration_s is not None
    assert audio.duration_s == pytest.approx(probe.duration_s, abs=0.05)
    assert 0.002 < float(np.sqrt(np.mean(audio.samples**2))) < 0.5  # speech, not silence or noise
    assert float(np.abs(audio.samples).max()) < 1.5


@pytest.fixture(scope="module")
def jfk_16k() -> np.ndarray:
    return decode_audio(JFK).samples


# (file name, codec, container, encoder rate, layout); what a user uploads from phones, browsers
# and editors. The native vorbis encoder is experimental and stereo-only in FFmpeg.
ENCODED = [
    ("jfk.mp3", "libmp3lame", None, 44_100, "mono"),
    ("jfk.m4a", "aac", "ipod", 44_100, "mono"),
    ("jfk.webm", "libopus", "webm", 48_000, "mono"),
    ("jfk.mp4", "aac", "mp4", 48_000, "stereo"),
    ("jfk-vorbis.ogg", "vorbis", "ogg", 44_100, "stereo"),
    ("jfk-opus.ogg", "libopus", "ogg", 48_000, "mono"),
    ("jfk-8k.wav", "pcm_s16le", "wav", 8_000, "mono"),
    ("jfk-44k.wav", "pcm_s16le", "wav", 44_100, "mono"),
    ("jfk-6ch.flac", "flac", "flac", 48_000, "5.1"),
]


def _channels_for(layout: str, samples: np.ndarray) -> np.ndarray:
    n = av.AudioLayout(layout).nb_channels
    out = np.zeros((n, len(samples)), dtype=np.float32)
    if n == 6:
        out[2] = samples  # 5.1 dialogue lives on the centre channel: a downmix must keep it
    else:
        out[:] = samples
    return out


@pytest.mark.parametrize(("name", "codec", "fmt", "rate", "layout"), ENCODED, ids=[e[0] for e in ENCODED])
def test_encoded_container_decodes_and_transcribes(
    tmp_path: Path, jfk_16k: np.ndarray, tiny_engine: object, name: str, codec: str, fmt: str | None, rate: int, layout: str
) -> None:
    if codec not in av.codecs_available:
        skip_or_fail(f"this FFmpeg build has no {codec} encoder")
    path = encode(
        tmp_path / name, _channels_for(layout, jfk_16k), codec=codec, rate=rate, layout=layout,
        container_format=fmt, options={"strict": "experimental"} if codec == "vorbis" else None,
    )
    probe = probe_audio(path)
    assert probe.sample_rate == rate
    assert probe.channels == av.AudioLayout(layout).nb_channels
    audio = decode_audio(path)
    # AAC and Opus add encoder priming/padding of a few tens of milliseconds.
    assert audio.duration_s == pytest.approx(11.0, abs=0.06)
    transcript = tiny_engine.transcribe(audio.samples, TranscriptionOptions())  # type: ignore[attr-defined]
    if rate < 16_000:
        # Telephone bandwidth (no energy above 4 kHz) costs tiny.en a plural "s": allow one word.
        assert wer([JFK_TEXT], [transcript.text]) <= 1 / 22, transcript.text
    else:
        assert normalize(transcript.text) == normalize(JFK_TEXT)


def test_keep_channels_returns_two_channels_for_stereo() -> None:
    audio = decode_audio(JFK, keep_channels=True)
    assert audio.channels is not None and audio.channels.shape == (2, len(audio.samples))
    # the mono samples are the plain path's downmix (FFmpeg's), so --diarize transcribes the same audio
    np.testing.assert_allclose(audio.samples, decode_audio(JFK).samples, atol=1e-6)


def test_keep_channels_on_mono_gives_none(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "tone.wav", np.sin(np.linspace(0, 800, 16_000)).astype(np.float32) * 0.5)
    assert decode_audio(path, keep_channels=True).channels is None


def test_file_object_source(jfk_16k: np.ndarray) -> None:
    audio = decode_audio(io.BytesIO(JFK.read_bytes()))
    assert len(audio.samples) == len(jfk_16k)


# --- bad input -------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    with pytest.raises(EmptyAudioError, match="empty.wav: file is empty"):
        decode_audio(tmp_path / "empty.wav")


def test_text_file_named_wav(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="notes.wav: not a readable audio file"):
        decode_audio(text_file(tmp_path / "notes.wav"))


def test_truncated_flac(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="half.flac: audio is truncated or corrupt"):
        decode_audio(truncated_copy(JFK, tmp_path / "half.flac"))


def test_truncated_mp3(tmp_path: Path, jfk_16k: np.ndarray) -> None:
    mp3 = encode(tmp_path / "jfk.mp3", jfk_16k, codec="libmp3lame", rate=44_100)
    with pytest.raises(AudioDecodeError, match="half.mp3: audio is truncated or corrupt"):
        decode_audio(truncated_copy(mp3, tmp_path / "half.mp3"))


def test_truncated_wav(tmp_path: Path) -> None:
    # FFmpeg clamps a WAV's data chunk to the bytes present; the RIFF header still tells.
    src = CORPUS / "ljspeech-lj001/audio/LJ001-0001.wav"
    with pytest.raises(AudioDecodeError, match=r"half.wav: audio is truncated or corrupt: the header declares 9.7 s"):
        decode_audio(truncated_copy(src, tmp_path / "half.wav"))
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio(io.BytesIO((tmp_path / "half.wav").read_bytes()))


def test_zero_length_wav(tmp_path: Path) -> None:
    path = zero_length_wav(tmp_path / "zero.wav")
    with pytest.raises(EmptyAudioError, match="zero.wav: audio has no samples"):
        decode_audio(path)


def test_too_long_from_header() -> None:
    with pytest.raises(AudioTooLongError, match=r"audio is 11.0 s long; the limit is 5 s"):
        decode_audio(JFK, max_duration_s=5)


class _Pipe(io.RawIOBase):
    """A write-only, unseekable sink, as when FFmpeg streams to stdout or a socket."""

    def __init__(self) -> None:
        self.data = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        return self.data.write(b)


def test_too_long_without_declared_duration(jfk_16k: np.ndarray) -> None:
    # WebM streamed to a pipe declares no duration; the limit must still hold while decoding.
    pipe = _Pipe()
    encode(pipe, jfk_16k, codec="libopus", rate=48_000, container_format="webm")  # type: ignore[arg-type]
    upload = io.BytesIO(pipe.data.getvalue())
    upload.name = "stream.webm"
    assert probe_audio(upload).duration_s is None
    upload.seek(0)
    with pytest.raises(AudioTooLongError, match="stream.webm: audio is longer than the limit of 5 s"):
        decode_audio(upload, max_duration_s=5)


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="missing.wav: no such file"):
        decode_audio(tmp_path / "missing.wav")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="is a directory"):
        decode_audio(tmp_path)


def test_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "subs.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    with pytest.raises(AudioDecodeError, match="subs.srt: no audio stream"):
        decode_audio(path)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.flac"
    path.write_bytes(JFK.read_bytes())
    path.chmod(0)
    if os.access(path, os.R_OK):  # root ignores file modes: the file is readable, so it decodes
        assert decode_audio(path).duration_s == pytest.approx(11.0, abs=0.01)
    else:
        with pytest.raises(AudioDecodeError, match="locked.flac: permission denied"):
            decode_audio(path)
