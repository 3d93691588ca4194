"""Operational routes: /health (rich status), /ready (for load balancers), /metrics (Prometheus)."""

from __future__ import annotations

import time

import psutil
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stenod import __version__
from stenod.api.deps import State
from stenod.observability.metrics import Metrics

router = APIRouter()


def _status(state: State) -> str:
    if state.draining:
        return "draining"
    if state.preloading:
        return "loading"
    if state.load_error and not state.manager.is_loaded(state.manager.default_name):
        return "error"
    return "ok"


def _jobs_health(state: State) -> dict[str, object] | None:
    if state.jobs is None:
        return {"error": state.jobs_error} if state.jobs_error else None
    try:
        return state.jobs.health()
    except Exception as exc:
        return {"mode": state.jobs.mode, "error": f"job store unreachable ({type(exc).__name__})"}


def _set_job_metrics(m: Metrics, jobs: dict[str, object] | None) -> None:
    """Job gauges from what /health reports (one read of the store and the broker per scrape)."""
    if jobs is None:  # jobs disabled
        return
    if "error" in jobs:
        m.jobs_store_up.set(0)
        return
    m.jobs_store_up.set(1)
    for status in ("queued", "processing"):
        m.jobs.labels(status).set(float(jobs.get(status) or 0))  # type: ignore[arg-type]
    m.jobs_queue_depth.set(float(jobs.get("queue_depth") or 0))  # type: ignore[arg-type]
    workers = jobs.get("workers")
    m.jobs_workers.set(sum(int(w.get("concurrency", 1)) for w in workers) if isinstance(workers, list) else 0)


@router.get("/health")
def health(state: State) -> JSONResponse:
    stats = state.scheduler.stats()
    memory = state.service.memory
    status = _status(state)
    models = state.manager.engine_info()
    default = next((m for m in models if m["default"]), None)
    body = {
        "status": status,
        "version": __version__,
        "uptime_s": round(time.time() - state.started_at, 1),
        "default_model": state.manager.default_name,
        "models": models,
        "engine": default["engine"] if default else None,
        "device": default["device"] if default else None,
        "devices": default.get("devices", []) if default else [],
        "slots": stats.slots,
        "running": stats.running,
        "queued": stats.queued,
        "queue_size": stats.queue_size,
        "completed": stats.completed,
        "avg_latency_s": round(stats.avg_latency_s, 3),
        "memory_rss_bytes": psutil.Process().memory_info().rss,
        "memory_budget_bytes": memory.budget_bytes,
        "memory_reserved_bytes": memory.reserved_bytes,
        "memory_waiting": memory.waiting,
        "error": state.load_error,
        "jobs": _jobs_health(state),
    }
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


@router.get("/ready")
def ready(state: State) -> JSONResponse:
    status = _status(state)
    return JSONResponse({"status": "ready" if status == "ok" else status}, status_code=200 if status == "ok" else 503)


@router.get("/metrics")
def metrics(state: State) -> Response:
    stats = state.scheduler.stats()
    m = state.metrics
    m.queue_depth.set(stats.queued)
    m.slots_in_use.set(stats.running)
    m.slots_total.set(stats.slots)
    m.models_loaded.set(len(state.manager.loaded_names()))
    m.default_model_loaded.set(1 if state.manager.is_loaded(state.manager.default_name) else 0)
    for model in state.manager.engine_info():
        devices = model.get("devices", [])
        for dev in devices if isinstance(devices, list) else []:
            m.observe_device(state.manager.metrics_label(str(model["model"])), dev)
    _set_job_metrics(m, _jobs_health(state))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
