"""What the app holds for its lifetime, reachable from routes through dependencies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stenod.api.auth import Authenticator
from stenod.api.ratelimit import RateLimits
from stenod.observability.metrics import Metrics
from stenod.scheduler.model_manager import ModelManager
from stenod.scheduler.slots import SlotScheduler
from stenod.service.server_transcription import TranscriptionService
from stenod.settings import Settings


@dataclass
class AppState:
    settings: Settings
    manager: ModelManager
    scheduler: SlotScheduler
    metrics: Metrics
    service: TranscriptionService
    auth: Authenticator
    limits: RateLimits
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    preloading: bool = False
    load_error: str | None = None
    """Why preloading the default model failed, shown by /health."""
    jobs: Any = None
    """The job system (:class:`stenod.jobs.runtime.JobsRuntime`) once started; ``None`` when
    disabled or unavailable."""
    jobs_error: str | None = None
    """Why the job system could not start (the job API answers 503 with it)."""
