"""Read OpenAI's ``verbose_json`` back into a :class:`Transcript`, so a transcript fetched from a
server (``stenod batch --server``) renders locally into every other format."""

from __future__ import annotations

from typing import Any

from stenod.languages import CODES_BY_NAME
from stenod.transcript import Segment, Task, Transcript, Word


def transcript_from_verbose_json(data: dict[str, Any]) -> Transcript:
    """Rebuild a :class:`Transcript` from OpenAI's ``verbose_json`` so every format renders locally."""
    words = [Word(start=float(w["start"]), end=float(w["end"]), word=str(w["word"]),
                  probability=float(w.get("probability", 0.0))) for w in data.get("words") or ()]
    segments = []
    for i, s in enumerate(data.get("segments") or ()):
        start, end = float(s.get("start", 0.0)), float(s.get("end", 0.0))
        seg_words = tuple(w for w in words if start <= w.start < end) if words else None
        segments.append(Segment(
            id=int(s.get("id", i)), seek=int(s.get("seek", 0)), start=start, end=end,
            text=str(s.get("text", "")), tokens=tuple(int(t) for t in s.get("tokens") or ()),
            temperature=float(s.get("temperature") or 0.0), avg_logprob=float(s.get("avg_logprob") or 0.0),
            compression_ratio=float(s.get("compression_ratio") or 0.0),
            no_speech_prob=float(s.get("no_speech_prob") or 0.0), words=seg_words, speaker=s.get("speaker"),
        ))
    language = str(data.get("language") or "")
    return Transcript(
        text=str(data.get("text", "")).strip(),
        language=CODES_BY_NAME.get(language.lower(), language),
        duration=float(data.get("duration") or 0.0),
        segments=tuple(segments),
        task=Task.TRANSLATE if data.get("task") == Task.TRANSLATE else Task.TRANSCRIBE,
    )
