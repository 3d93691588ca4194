"""Test audio in real containers, made with FFmpeg's encoders through PyAV, and synthetic signals.
Plain WAV writers and damaged files are in :mod:`tests.media`; nothing here is stored in the repo."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 16_000


def encode(
    path: Path,
    samples: np.ndarray,
    *,
    codec: str,
    rate: int,
    layout: str = "mono",
    container_format: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode 16 kHz float32 ``samples`` (``(channels, n)``, channels matching ``layout``) with
    FFmpeg's ``codec`` at ``rate`` into ``path``."""
    data = np.ascontiguousarray(np.atleast_2d(samples), dtype=np.float32)
    with av.open(path if hasattr(path, "write") else str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.layout = layout
        ctx = stream.codec_context
        resampler = av.AudioResampler(
            format=ctx.codec.audio_formats[0].name, layout=layout, rate=rate, frame_size=ctx.frame_size or 1024
        )
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
        frame.sample_rate = RATE
        frame.pts = 0
        frame.time_base = Fraction(1, RATE)
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))
    return path


def white_noise(seconds: float, *, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE)) * amplitude).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def two_speaker_call(path: Path) -> tuple[Path, float]:
    """A two-channel "call": speaker A (LJ Speech) on the left with the right channel silent, a 2 s
    pause, then speaker B (a LibriVox reader) on the right only. Returns the WAV and the time
    between the two turns."""
    from stenod.audio.decode import decode_audio
    from tests.conftest import CORPUS
    from tests.media import write_wav

    a = decode_audio(CORPUS / "ljspeech-lj001/audio/LJ001-0002.wav").samples
    b = decode_audio(CORPUS / "en-misc-short/audio/sense_and_sensibility_01_austen_64kb-0880.wav").samples
    lead, gap = silence(0.5), silence(2.0)
    left = np.concatenate([lead, a, gap, np.zeros_like(b)])
    right = np.concatenate([lead, np.zeros_like(a), gap, b])
    junction_s = (len(lead) + len(a) + len(gap) / 2) / RATE
    return write_wav(path, np.stack([left, right], axis=1), channels=2), junction_s


SPEAKER_A_TEXT = "in being comparatively modern"
SPEAKER_B_TEXT = "he was not an ill disposed young man"


def two_speaker_turns(path: Path) -> tuple[Path, float, str, str]:
    """The 22 s two-channel recording of issue 11: one speaker on the left from 0 to about 11 s
    (LJ Speech), then from 11.5 s another on the right (two LibriVox sentences), each channel
    silent while the other speaks. Whisper's single 30 s window used to stop after the first
    speaker. Returns the WAV, the time between the turns and the two references."""
    from stenod.audio.decode import decode_audio
    from tests.conftest import CORPUS, corpus_set
    from tests.media import write_wav

    _, lj_refs = corpus_set("ljspeech-lj001")
    _, misc_refs = corpus_set("en-misc-short")
    misc = CORPUS / "en-misc-short/audio"
    a = decode_audio(CORPUS / "ljspeech-lj001/audio/LJ001-0001.wav").samples
    b1 = decode_audio(misc / "sense_and_sensibility_01_austen_64kb-0870.wav").samples
    b2 = decode_audio(misc / "sense_and_sensibility_01_austen_64kb-0880.wav").samples
    left = np.concatenate([silence(0.6), a])
    left = np.concatenate([left, silence(11.5 - len(left) / RATE)])
    right_speech = np.concatenate([b1, silence(0.4), b2])
    right = np.concatenate([np.zeros_like(left), right_speech])
    left = np.concatenate([left, np.zeros_like(right_speech)])
    text_b = misc_refs["sense_and_sensibility_01_austen_64kb-0870"] + " " + misc_refs["sense_and_sensibility_01_austen_64kb-0880"]
    junction_s = (0.6 * RATE + len(a) + 11.5 * RATE) / 2 / RATE
    return write_wav(path, np.stack([left, right], axis=1), channels=2), junction_s, lj_refs["LJ001-0001"], text_b


def repeated_speech(path: Path, source: Path, times: int) -> Path:
    """``source`` decoded and played ``times`` times back to back, as 16 kHz FLAC: a request that
    keeps a worker busy for seconds even on a fast host (the 237 s corpus file alone took tiny.en
    about 3 s there, too little for tests that must act while it runs)."""
    from stenod.audio.decode import decode_audio

    samples = decode_audio(source).samples
    return encode(path, np.tile(samples, times), codec="flac", rate=RATE)

