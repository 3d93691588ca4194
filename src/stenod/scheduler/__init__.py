"""In-process inference scheduling: model lifecycle and bounded inference slots."""

from stenod.scheduler.model_manager import DEFAULT_ALIASES, ModelManager
from stenod.scheduler.slots import SchedulerStats, SlotScheduler

__all__ = ["DEFAULT_ALIASES", "ModelManager", "SchedulerStats", "SlotScheduler"]
