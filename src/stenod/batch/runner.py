"""The one interface the pipeline drives: submit a file, get a future of its outcome.

Implementations: :class:`~stenod.batch.pool.ProcessPoolRunner` (N local worker processes),
:class:`~stenod.batch.pool.InProcessRunner` (one engine with the batched pipeline) and
:class:`~stenod.batch.client.ServerRunner` (a running stenod server over HTTP).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stenod.transcript import Transcript


@dataclass(frozen=True, slots=True)
class WorkOutcome:
    """One file's outcome as a runner reports it; failures are values, not exceptions."""

    transcript: Transcript | None
    duration_s: float = 0.0
    processing_s: float = 0.0
    error: str | None = None
    fatal: bool = False
    """The runner itself cannot work (the model failed to load in a worker): stop the batch."""

    @classmethod
    def failure(cls, error: str, *, duration_s: float = 0.0, processing_s: float = 0.0, fatal: bool = False) -> WorkOutcome:
        return cls(transcript=None, duration_s=duration_s, processing_s=processing_s, error=error, fatal=fatal)


class Runner(Protocol):
    @property
    def capacity(self) -> int:
        """Files that may be in flight at once; the pipeline never submits more."""
        ...

    @property
    def description(self) -> str:
        """One line for the user: mode, workers, threads, model."""
        ...

    def submit(self, path: Path) -> Future[WorkOutcome]:
        """Start transcribing ``path``. The future may raise when the runner broke (a worker
        process died); it never raises for a bad file."""
        ...

    def shutdown(self, *, abandon: bool) -> None:
        """Release workers. ``abandon``: stop in-flight work now (terminate worker processes,
        cancel requests); otherwise wait for it."""
        ...


def short_error(message: str, path: Path) -> str:
    """Drop a leading ``<path>: `` that decoder messages carry; the batch prints the relative path."""
    for prefix in (f"{path}: ", f"{path.resolve()}: ", f"{path.name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message
