"""whisper.cpp's command-line habits, read the way a whisper.cpp user means them.

whisper.cpp's ``whisper-cli`` takes single-dash multi-letter flags (``-osrt``, ``-tr``, ``-ml 1``,
``-of name``). Click would read ``-osrt`` as ``-o srt`` (an output folder named ``srt``) and
``-tr`` as ``-t r``; so before parsing, ``stenod transcribe``'s arguments are rewritten to the
equivalent stenod flags, and one ``note:`` line says how they were read. Flags with no
equivalent get an error that says what to use instead. Units follow whisper.cpp: ``-ot`` and
``-d`` are milliseconds (stenod's ``--offset`` / ``--duration`` are seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stenod.errors import UnsupportedParameterError

WHISPER_CPP_FORMATS: dict[str, str] = {
    "-otxt": "txt", "--output-txt": "txt",
    "-osrt": "srt", "--output-srt": "srt",
    "-ovtt": "vtt", "--output-vtt": "vtt",
    "-oj": "verbose_json", "--output-json": "verbose_json",
    "-ojf": "verbose_json", "--output-json-full": "verbose_json",
}
"""whisper.cpp output flags -> stenod format (its JSON carries segments and times: verbose_json)."""

RENAMED_WITH_VALUE: dict[str, str] = {
    "-f": "",  # the file itself: whisper.cpp's -f FILE (stenod's own -f FORMAT is kept, see below)
    "--file": "",
    "-of": "--output-file", "--output-file": "--output-file",
    "-ml": "--max-len", "--max-len": "--max-len",
    "-bs": "--beam-size",
    "-tp": "--temperature",
    "-tpi": "--temperature-increment", "--temperature-inc": "--temperature-increment",
    "-lpt": "--logprob-threshold", "--logprob-thold": "--logprob-threshold",
    "-nth": "--no-speech-threshold", "--no-speech-thold": "--no-speech-threshold",
    "-vt": "--vad-threshold",
    "-vsd": "--vad-min-silence-ms", "--vad-min-silence-duration-ms": "--vad-min-silence-ms",
    "-vp": "--vad-speech-pad-ms",
    "--prompt": "--initial-prompt",
}
MILLISECONDS_TO_SECONDS: dict[str, str] = {"-ot": "--offset", "--offset-t": "--offset", "-d": "--duration"}
RENAMED_FLAGS: dict[str, list[str]] = {
    "-tr": ["--task", "translate"], "--translate": ["--task", "translate"],
    "-nt": ["--no-timestamps"],
    "-nf": ["--temperature-increment", "0"], "--no-fallback": ["--temperature-increment", "0"],
    "-dl": ["--detect-language"],
    "-di": ["--diarize"],
    "-ng": ["--device", "cpu"], "--no-gpu": ["--device", "cpu"],
}
IGNORED_FLAGS: dict[str, str] = {
    "-np": "stenod prints only transcripts on stdout already",
    "--no-prints": "stenod prints only transcripts on stdout already",
    "-pp": "stenod shows a progress bar on a terminal for files over 30 s",
    "--print-progress": "stenod shows a progress bar on a terminal for files over 30 s",
    "-sow": "cues are always cut at word boundaries",
    "--split-on-word": "cues are always cut at word boundaries",
}
NO_EQUIVALENT: dict[str, str] = {
    "-ocsv": "--format tsv", "--output-csv": "--format tsv",
    "-olrc": "--format srt or vtt", "--output-lrc": "--format srt or vtt",
    "-owts": "--format srt", "--output-words": "--format srt with --word-cues",
    "-et": "--compression-ratio-threshold", "--entropy-thold": "--compression-ratio-threshold",
    "-bo": "--beam-size", "--best-of": "--beam-size",
    "-on": "--offset (seconds)", "--offset-n": "--offset (seconds)",
    "-wt": "--word-timestamps", "--word-thold": "--word-timestamps",
    "-p": "--threads", "--processors": "--threads",
}
"""whisper.cpp flags stenod has no direct equivalent for -> what to use instead."""

STENOD_FORMAT_NAMES = {"txt", "text", "json", "verbose_json", "srt", "vtt", "tsv"}


@dataclass
class Translation:
    args: list[str]
    read_as: list[str] = field(default_factory=list)
    """``"-osrt -> --format srt"`` per rewritten flag, for the one note line."""
    ignored: list[str] = field(default_factory=list)


def _is_format_list(value: str) -> bool:
    return bool(value) and all(part.strip().lower() in STENOD_FORMAT_NAMES for part in value.split(","))


def translate_whisper_cpp_args(args: list[str]) -> Translation:
    """Rewrite whisper.cpp flags in ``stenod transcribe``'s arguments (the command name excluded).

    Raises:
        UnsupportedParameterError: a whisper.cpp flag with no stenod equivalent, or a bad value
            for a millisecond flag; the message says what to use.
    """
    out: list[str] = []
    formats: list[str] = []
    t = Translation(out)
    i = 0
    while i < len(args):
        arg = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if arg == "--":
            out.extend(args[i:])
            break
        if arg in WHISPER_CPP_FORMATS:
            formats.append(WHISPER_CPP_FORMATS[arg])
            t.read_as.append(f"{arg} -> --format {WHISPER_CPP_FORMATS[arg]}")
        elif arg in ("-f", "--file") and value is not None and not (arg == "-f" and _is_format_list(value)):
            out.append(value)  # whisper.cpp's -f FILE; stenod's -f FORMAT (e.g. -f srt) stays as it is
            t.read_as.append(f"{arg} {value} -> {value}")
            i += 1
        elif arg in RENAMED_WITH_VALUE and arg not in ("-f", "--file") and arg != RENAMED_WITH_VALUE[arg] and value is not None:
            out += [RENAMED_WITH_VALUE[arg], value]
            t.read_as.append(f"{arg} {value} -> {RENAMED_WITH_VALUE[arg]} {value}")
            i += 1
        elif arg in MILLISECONDS_TO_SECONDS and value is not None and _is_int(value):
            seconds = f"{int(value) / 1000:g}"
            out += [MILLISECONDS_TO_SECONDS[arg], seconds]
            t.read_as.append(f"{arg} {value} (ms) -> {MILLISECONDS_TO_SECONDS[arg]} {seconds}")
            i += 1
        elif arg in RENAMED_FLAGS:
            out += RENAMED_FLAGS[arg]
            t.read_as.append(f"{arg} -> {' '.join(RENAMED_FLAGS[arg])}")
        elif arg in IGNORED_FLAGS:
            t.ignored.append(f"{arg} ({IGNORED_FLAGS[arg]})")
        elif arg in NO_EQUIVALENT:
            raise UnsupportedParameterError(
                f"{arg} is a whisper.cpp flag stenod has no equivalent for; did you mean {NO_EQUIVALENT[arg]}?",
                param=arg)
        else:
            out.append(arg)
        i += 1
    if formats:
        out += ["--format", ",".join(dict.fromkeys(formats))]
    return t


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def rewrite_transcribe_args(args: list[str], note: Callable[[str], None]) -> list[str]:
    """``args`` of the whole ``stenod`` command line with ``transcribe``'s whisper.cpp flags
    rewritten (and one note about it); other commands' arguments are returned unchanged."""
    if "transcribe" not in args:
        return args
    at = args.index("transcribe")
    translation = translate_whisper_cpp_args(args[at + 1:])
    if translation.read_as:
        note("read whisper.cpp flags as: " + "; ".join(translation.read_as))
    if translation.ignored:
        note("ignored whisper.cpp flags: " + "; ".join(translation.ignored))
    return [*args[: at + 1], *translation.args]
