"""Size a deployment from measurements: which model, how many threads per inference slot, how
many slots per machine and how many machines carry a target load within a latency budget.

This replaces rules of thumb ("pick the model by free memory", "threads = cores") with the
numbers ``stenod bench engines`` measured. For each measured configuration (model, engine,
device, compute type, threads ``t``) on a machine with ``cores`` cores:

* ``slots = cores // t`` concurrent calls (one per GPU for CUDA runs), sharing one copy of the
  weights as ``stenod serve`` does;
* ``capacity = min(slots / RTF, cores / cpu_RTF) x utilization`` audio seconds per second per
  machine, where RTF is the measured median wall-clock RTF of one call at a time, cpu_RTF the CPU
  seconds it spent per audio second (slots cannot together use more CPU than the machine has),
  and ``utilization`` (default 0.7) leaves headroom for queueing and for calls slowing each other
  down when every core is busy;
* ``latency = RTF x request_audio_s``: the service time of a typical request when a slot is free;
  it must fit the latency budget;
* ``memory = peak_rss + (slots - 1) x (peak_rss - rss_after_load)``: one copy of the weights plus
  one inference working set per extra slot; it must fit ``max_memory_gb``;
* ``machines = ceil(target / capacity)``, where the target in audio hours per hour equals audio
  seconds per second.

Among configurations that fit, the one with the lowest WER wins; configurations within
``wer_tolerance`` of that WER are treated as equally accurate, and the one needing the fewest
machines is chosen (ties: lower WER, then lower latency, then less memory). Verify the choice with
``stenod bench server`` against a real deployment: that measures concurrency effects directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import get_args

from stenod.bench.schema import EngineBenchResult, EngineRun
from stenod.models.catalog import model_languages
from stenod.settings import ComputeType

DEFAULT_UTILIZATION = 0.7
DEFAULT_WER_TOLERANCE = 0.005
SMALL_SAMPLE_AUDIO_S = 1800.0
"""Below half an hour of measured audio, RTF and especially WER differences are rough: a
1-point WER gap on a few minutes of speech is a handful of words."""


@dataclass(frozen=True, slots=True)
class SizingTarget:
    audio_hours_per_hour: float
    """Load to carry: hours of audio arriving per hour (= audio seconds per second)."""
    latency_budget_s: float
    """Longest acceptable processing time of one request of ``request_audio_s``."""
    request_audio_s: float = 30.0
    cores_per_machine: int = 0
    """0: the cores of the machine that was measured."""
    max_memory_gb: float = 0.0
    """0: the memory of the machine that was measured."""
    utilization: float = DEFAULT_UTILIZATION
    wer_tolerance: float = DEFAULT_WER_TOLERANCE


@dataclass(frozen=True, slots=True)
class Candidate:
    run: EngineRun
    slots: int
    capacity_audio_s_per_s: float
    latency_s: float
    memory_mb: float
    machines: int
    fits: bool
    why_not: str | None = None
    languages: str = "unknown"
    """``en`` (English-only model: no other language, no translation) or ``multilingual (99)``."""

    @property
    def label(self) -> str:
        r = self.run
        return f"{r.model} {r.engine} {r.device}/{r.compute_type} t={r.threads}"


@dataclass(frozen=True, slots=True)
class Recommendation:
    chosen: Candidate | None
    candidates: list[Candidate]
    reasons: list[str] = field(default_factory=list)
    sample: str = ""
    """How much audio the measurements rest on, with a caveat when that is little."""
    serve_command: str | None = None
    """The ``stenod serve`` command line that runs the chosen configuration on one machine."""


def sample_note(result: EngineBenchResult) -> str:
    """``measured on N files, X min of audio (M with references)`` plus a caveat below
    :data:`SMALL_SAMPLE_AUDIO_S`."""
    audio_s = sum(f.audio_s for f in result.files)
    with_refs = sum(1 for f in result.files if f.reference)
    note = (f"measured on {len(result.files)} file(s), {audio_s / 60:.1f} min of audio "
            f"({with_refs} with reference transcripts)")
    if audio_s < SMALL_SAMPLE_AUDIO_S:
        note += ("; that is a small sample: treat WER differences of a point or two as noise and "
                 "re-measure on at least 30 min of your own recordings before buying machines")
    return note


def serve_command_for(candidate: Candidate) -> str:
    """``stenod serve`` flags that reproduce ``candidate`` (model, engine, device, compute type,
    threads per slot, slots)."""
    r = candidate.run
    # whisper.cpp runs report the ggml weight type (q8_0, f16), which is chosen by the model file,
    # not by --compute-type.
    compute = f" --compute-type {r.compute_type}" if r.compute_type in get_args(ComputeType) else ""
    return (f"stenod serve --model {r.model} --engine {r.engine} --device {r.device}{compute} "
            f"--threads {r.threads} --slots {candidate.slots}")


def _candidate(run: EngineRun, target: SizingTarget, cores: int, max_memory_mb: float) -> Candidate:
    assert run.rtf is not None and run.peak_rss_mb is not None
    rtf = run.rtf.median
    slots = 1 if run.device == "cuda" else max(1, cores // run.threads)
    capacity = slots * (1.0 / rtf) if rtf > 0 else math.inf
    if run.device != "cuda" and run.cpu_rtf is not None and run.cpu_rtf.median > 0:
        capacity = min(capacity, cores / run.cpu_rtf.median)
    capacity *= target.utilization
    latency = rtf * target.request_audio_s
    working_set = max(0.0, run.peak_rss_mb - (run.rss_after_load_mb or run.peak_rss_mb))
    memory = run.peak_rss_mb + (slots - 1) * working_set
    machines = max(1, math.ceil(target.audio_hours_per_hour / capacity)) if capacity > 0 else 0
    why_not = None
    if latency > target.latency_budget_s:
        why_not = f"latency {latency:.1f} s > budget {target.latency_budget_s:g} s"
    elif memory > max_memory_mb:
        why_not = f"memory {memory:.0f} MB > {max_memory_mb:.0f} MB"
    elif run.threads > cores and run.device != "cuda":
        why_not = f"{run.threads} threads > {cores} cores"
    return Candidate(run, slots, capacity, latency, memory, machines, why_not is None, why_not,
                     languages=model_languages(run.model))


def recommend(result: EngineBenchResult, target: SizingTarget) -> Recommendation:
    """Pick a configuration for ``target`` from ``result``; see the module docstring for the rule.

    Raises:
        ValueError: the target is not positive, or ``result`` has no successful run.
    """
    if target.audio_hours_per_hour <= 0 or target.latency_budget_s <= 0 or target.request_audio_s <= 0:
        raise ValueError("the target load, latency budget and request length must be positive")
    if not 0 < target.utilization <= 1:
        raise ValueError("utilization must be in (0, 1]")
    cores = target.cores_per_machine or result.host.usable_cores
    max_memory_mb = (target.max_memory_gb or result.host.memory_total_mb / 1024) * 1024
    runs = [r for r in result.runs if r.status == "ok" and r.rtf is not None and r.peak_rss_mb is not None]
    if not runs:
        raise ValueError("the result has no successful configuration to size from")
    candidates = [_candidate(r, target, cores, max_memory_mb) for r in runs]
    sample = sample_note(result)
    reasons = [
        sample,
        f"target {target.audio_hours_per_hour:g} audio hours per hour = {target.audio_hours_per_hour:g} audio s per s; "
        f"requests of {target.request_audio_s:g} s must finish within {target.latency_budget_s:g} s; "
        f"machines of {cores} cores and {max_memory_mb / 1024:.1f} GB; planning at {target.utilization:.0%} utilization",
    ]
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        fastest = min(candidates, key=lambda c: c.latency_s)
        reasons.append(
            f"no measured configuration fits: the fastest, {fastest.label}, takes {fastest.latency_s:.1f} s per "
            f"request ({fastest.why_not}); raise the budget, shorten requests, or measure a faster device"
        )
        return Recommendation(None, candidates, reasons, sample=sample)
    with_wer = [c for c in fitting if c.run.wer is not None]
    if with_wer:
        best_wer = min(c.run.wer for c in with_wer if c.run.wer is not None)
        eligible = [c for c in with_wer if c.run.wer is not None and c.run.wer <= best_wer + target.wer_tolerance]
        reasons.append(
            f"lowest WER among configurations that fit: {100 * best_wer:.1f} %; configurations within "
            f"{100 * target.wer_tolerance:.1f} points of it count as equally accurate: "
            + ", ".join(sorted({c.run.model for c in eligible}))
        )
    else:
        eligible = fitting
        reasons.append("no WER measured (no references): choosing on capacity alone")
    chosen = min(eligible, key=lambda c: (
        c.machines, c.run.wer if c.run.wer is not None else math.inf, c.latency_s, c.memory_mb,
    ))
    r = chosen.run
    assert r.rtf is not None
    reasons.append(
        f"{chosen.label}: RTF {r.rtf.median:.3f} -> one slot does {1 / r.rtf.median:.1f} audio s per s; "
        + (f"CPU {r.cpu_rtf.median:.3f} s per audio s caps a machine at {cores / r.cpu_rtf.median:.1f}; "
           if r.cpu_rtf is not None and r.cpu_rtf.median > 0 and r.device != "cuda" else "")
        + f"{cores} cores / {r.threads} threads = {chosen.slots} slots -> {chosen.capacity_audio_s_per_s:.1f} audio s per s "
        f"per machine at {target.utilization:.0%}; {target.audio_hours_per_hour:g} / {chosen.capacity_audio_s_per_s:.1f} "
        f"-> {chosen.machines} machine(s); request latency about {chosen.latency_s:.1f} s; memory about "
        f"{chosen.memory_mb:.0f} MB per machine"
    )
    if chosen.languages == "en":
        others = sorted({c.run.model for c in fitting if c.languages.startswith("multilingual")})
        spoken = sorted({f.language for f in result.files if f.language and f.language != "en"})
        reasons.append(
            f"{r.model} is English-only: it cannot transcribe other languages (it writes English-sounding "
            f"text instead) nor translate"
            + (f"; the measured files include {', '.join(spoken)}" if spoken else "")
            + (f"; for other languages use {', '.join(others)}" if others else
               "; measure a multilingual model (e.g. base) if you need other languages")
        )
    return Recommendation(chosen, candidates, reasons, sample=sample, serve_command=serve_command_for(chosen))
