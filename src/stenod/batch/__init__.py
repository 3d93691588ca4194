"""The directory batch pipeline behind ``stenod batch``.

discovery (find recordings) -> pipeline.plan_batch (resume state from the manifest) ->
a runner (local worker processes, one batched process, or a remote server) ->
outputs + manifest per finished file -> summary.
"""

from stenod.batch.client import ServerClient, ServerOptions, ServerRunner
from stenod.batch.discovery import (
    AUDIO_EXTENSIONS,
    SourceFile,
    declared_duration_s,
    discover_audio,
    sniff_audio_container,
)
from stenod.batch.manifest import FileResult, Manifest
from stenod.batch.pipeline import BatchPlan, BatchReporter, BatchRun, StopControl, manifest_path, plan_batch, run_batch
from stenod.batch.pool import InProcessRunner, ProcessPoolRunner, WorkerConfig, choose_workers, local_runner
from stenod.batch.runner import Runner, WorkOutcome
from stenod.batch.summary import BatchSummary, FileEntry, summary_table

__all__ = [
    "AUDIO_EXTENSIONS",
    "BatchPlan",
    "BatchReporter",
    "BatchRun",
    "BatchSummary",
    "FileEntry",
    "FileResult",
    "InProcessRunner",
    "Manifest",
    "ProcessPoolRunner",
    "Runner",
    "ServerClient",
    "ServerOptions",
    "ServerRunner",
    "SourceFile",
    "StopControl",
    "WorkOutcome",
    "WorkerConfig",
    "choose_workers",
    "declared_duration_s",
    "discover_audio",
    "local_runner",
    "manifest_path",
    "plan_batch",
    "run_batch",
    "sniff_audio_container",
    "summary_table",
]
