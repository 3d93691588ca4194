"""Warnings for flags that would silently do nothing, or do harm, in the combination given.

Each function returns ``warning:`` texts; the command prints them before any work starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from stenod.formats import ResponseFormat, SubtitleOptions

SUBTITLE_FORMATS: frozenset[ResponseFormat] = frozenset({"srt", "vtt", "tsv"})


def threads_warning(threads: int | None, cores: int, *, flag: str = "--threads") -> str | None:
    """More threads than cores only adds contention (docs/BENCHMARKS.md)."""
    if threads and threads > cores:
        return (f"{flag} {threads} is more than the {cores} core(s) this process may use; extra threads only "
                f"compete for them (0 chooses)")
    return None


def no_effect_warnings(
    formats: Sequence[ResponseFormat],
    *,
    word_timestamps: bool,
    subtitles: SubtitleOptions,
    vad: bool | None,
    vad_flags: Sequence[str],
    no_timestamps: bool,
    detect_language: bool,
    decoding_flags: Sequence[str],
) -> list[str]:
    """Flags that change nothing for these formats and options."""
    out: list[str] = []
    shown = set(formats)
    if detect_language:
        given = [*decoding_flags, *vad_flags] + (["--word-timestamps"] if word_timestamps else [])
        if given:
            out.append(f"{', '.join(given)} ha{'s' if len(given) == 1 else 've'} no effect with --detect-language "
                       "(it only identifies the language)")
        return out
    if word_timestamps and "verbose_json" not in shown and not (subtitles.splits_segments and shown & SUBTITLE_FORMATS):
        out.append(f"--word-timestamps has no effect on {','.join(_names(formats))}: word times appear in "
                   "verbose_json, or use --word-cues / --max-len for word-timed subtitles")
    subtitle_flags = [name for name, on in (
        ("--max-line-width", subtitles.max_line_width is not None),
        ("--max-line-count", subtitles.max_line_count is not None),
        ("--max-len", subtitles.max_cue_chars is not None),
        ("--word-cues", subtitles.word_cues),
    ) if on]
    if subtitle_flags and not shown & SUBTITLE_FORMATS:
        out.append(f"{', '.join(subtitle_flags)} only shape srt, vtt and tsv cues; no effect on "
                   f"{','.join(_names(formats))}")
    if vad is False and vad_flags:
        out.append(f"{', '.join(vad_flags)} ha{'s' if len(vad_flags) == 1 else 've'} no effect with --no-vad")
    if no_timestamps and shown & SUBTITLE_FORMATS:
        out.append("--no-timestamps: subtitles get one cue per decoding window (30 s), with no finer times")
    return out


def _names(formats: Sequence[ResponseFormat]) -> list[str]:
    return ["txt" if f == "text" else f for f in formats]
