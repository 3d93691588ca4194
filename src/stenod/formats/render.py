"""Transcript renderers.

Shapes follow openai-python's ``Transcription`` / ``TranscriptionVerbose`` types and OpenAI's
subtitle output; tsv follows whisper.cpp (``start\\tend\\ttext`` in integer milliseconds).
Subtitle cues (line width, lines per cue, cue length, word cues; monotonic and non-overlapping)
come from :mod:`stenod.formats.subtitles`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from stenod.formats.subtitles import DEFAULT_SUBTITLES, SubtitleOptions, subtitle_cues
from stenod.languages import language_name
from stenod.transcript import Segment, Transcript

ResponseFormat = Literal["json", "verbose_json", "text", "srt", "vtt", "tsv"]
TimestampGranularity = Literal["segment", "word"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "verbose_json", "text", "srt", "vtt", "tsv")
FORMAT_EXTENSIONS: dict[ResponseFormat, str] = {
    "json": "json",
    "verbose_json": "verbose.json",
    "text": "txt",
    "srt": "srt",
    "vtt": "vtt",
    "tsv": "tsv",
}
MEDIA_TYPES: dict[ResponseFormat, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}


def format_timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = True) -> str:
    """``HH:MM:SS.mmm`` (``,`` for SRT), rounding to whole milliseconds."""
    total_ms = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def render_srt(transcript: Transcript, subtitles: SubtitleOptions = DEFAULT_SUBTITLES) -> str:
    blocks = [
        f"{i}\n{format_timestamp(s, decimal=',')} --> {format_timestamp(e, decimal=',')}\n{text}\n"
        for i, (s, e, text) in enumerate(subtitle_cues(transcript.segments, subtitles), start=1)
    ]
    return "\n".join(blocks)


def render_vtt(transcript: Transcript, subtitles: SubtitleOptions = DEFAULT_SUBTITLES) -> str:
    cues = subtitle_cues(transcript.segments, subtitles)
    blocks = [f"{format_timestamp(s)} --> {format_timestamp(e)}\n{text}\n" for s, e, text in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render_tsv(transcript: Transcript, subtitles: SubtitleOptions = DEFAULT_SUBTITLES) -> str:
    lines = ["start\tend\ttext"]
    for s, e, text in subtitle_cues(transcript.segments, subtitles, wrap=False):
        clean = text.replace("\t", " ").replace("\n", " ")
        lines.append(f"{int(round(s * 1000))}\t{int(round(e * 1000))}\t{clean}")
    return "\n".join(lines) + "\n"


def render_text(transcript: Transcript) -> str:
    if not any(seg.speaker for seg in transcript.segments):
        return transcript.text + "\n" if transcript.text else ""
    # One line per speaker turn, so a conversation reads like a script.
    turns: list[tuple[str | None, list[str]]] = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        if turns and turns[-1][0] == seg.speaker:
            turns[-1][1].append(text)
        else:
            turns.append((seg.speaker, [text]))
    return "".join(f"[{spk or 'SPEAKER ?'}] {' '.join(parts)}\n" for spk, parts in turns)


def to_json_dict(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's ``json`` shape: ``{"text": ...}``; with diarization, also the speaker turns."""
    data: dict[str, Any] = {"text": transcript.text}
    if any(seg.speaker for seg in transcript.segments):
        data["segments"] = [
            {"start": seg.start, "end": seg.end, "speaker": seg.speaker, "text": seg.text.strip()}
            for seg in transcript.segments
        ]
    return data


def to_verbose_json_dict(
    transcript: Transcript, granularities: Sequence[TimestampGranularity] = ("segment",)
) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: task, language name, duration, text, segments and/or words."""
    data: dict[str, Any] = {
        "task": str(transcript.task),
        "language": language_name(transcript.language),
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        data["segments"] = [_segment_dict(seg) for seg in transcript.segments]
    if "word" in granularities:
        data["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end, "probability": w.probability}
            for w in transcript.words
        ]
    return data


def _segment_dict(seg: Segment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": seg.id,
        "seek": seg.seek,
        "start": seg.start,
        "end": seg.end,
        "text": seg.text,
        "tokens": list(seg.tokens),
        "temperature": seg.temperature,
        "avg_logprob": seg.avg_logprob,
        "compression_ratio": seg.compression_ratio,
        "no_speech_prob": seg.no_speech_prob,
    }
    if seg.speaker is not None:
        data["speaker"] = seg.speaker
    return data


def render(
    transcript: Transcript,
    response_format: ResponseFormat,
    *,
    granularities: Sequence[TimestampGranularity] = ("segment",),
    subtitles: SubtitleOptions = DEFAULT_SUBTITLES,
) -> str:
    """Render ``transcript`` as ``response_format``; JSON formats are returned as a string.
    ``subtitles`` shapes the cues of srt, vtt and tsv."""
    if response_format == "json":
        return json.dumps(to_json_dict(transcript), ensure_ascii=False)
    if response_format == "verbose_json":
        return json.dumps(to_verbose_json_dict(transcript, granularities), ensure_ascii=False)
    if response_format == "text":
        return render_text(transcript)
    if response_format == "srt":
        return render_srt(transcript, subtitles)
    if response_format == "vtt":
        return render_vtt(transcript, subtitles)
    if response_format == "tsv":
        return render_tsv(transcript, subtitles)
    raise ValueError(f"unknown response format {response_format!r}")
