"""Inference engines behind one protocol; see :mod:`stenod.engines.base`."""

from stenod.engines.base import (
    CancelledError,
    Engine,
    EngineConfig,
    EngineInfo,
    LanguageDetection,
    ProgressCallback,
    SegmentCallback,
    TranscriptionOptions,
    temperature_schedule,
)
from stenod.engines.factory import CpuPlan, cpu_count, create_engine, plan_cpu

__all__ = [
    "CancelledError",
    "CpuPlan",
    "Engine",
    "EngineConfig",
    "EngineInfo",
    "LanguageDetection",
    "ProgressCallback",
    "SegmentCallback",
    "TranscriptionOptions",
    "cpu_count",
    "create_engine",
    "plan_cpu",
    "temperature_schedule",
]
