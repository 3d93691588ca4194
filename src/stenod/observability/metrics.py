"""Prometheus metrics. Each app gets its own registry, so tests can run several apps in one
process and read exact values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
AUDIO_DURATION_BUCKETS_S = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "stenod_requests_total", "Transcription requests by outcome.",
            ["endpoint", "model", "language", "status"], registry=r,
        )
        self.errors = Counter(
            "stenod_errors_total", "Failed requests by error code.",
            ["endpoint", "model", "language", "status", "code"], registry=r,
        )
        self.latency = Histogram(
            "stenod_request_duration_seconds", "Wall time of a transcription request, queueing included.",
            ["endpoint", "model"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.queue_wait = Histogram(
            "stenod_queue_wait_seconds", "Time a request waited for an inference slot.",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.audio_duration = Histogram(
            "stenod_audio_duration_seconds", "Duration of transcribed audio.",
            ["model"], buckets=AUDIO_DURATION_BUCKETS_S, registry=r,
        )
        self.realtime_factor = Histogram(
            "stenod_realtime_factor", "Inference seconds per audio second (lower is faster).",
            ["model"], buckets=RTF_BUCKETS, registry=r,
        )
        self.audio_seconds = Counter(
            "stenod_audio_seconds_total", "Audio seconds transcribed.", ["model"], registry=r,
        )
        self.queue_depth = Gauge("stenod_queue_depth", "Requests waiting for a slot.", registry=r)
        self.slots_in_use = Gauge("stenod_slots_in_use", "Inference slots busy.", registry=r)
        self.slots_total = Gauge("stenod_slots_total", "Inference slots configured.", registry=r)
        self.models_loaded = Gauge("stenod_models_loaded", "Models currently in memory.", registry=r)
        # Per device of engines with device workers (the torch engine): memory and load.
        device_labels = ["model", "device"]
        self.device_memory_used = Gauge(
            "stenod_device_memory_used_bytes", "Device memory allocated by the engine.", device_labels, registry=r)
        self.device_memory_total = Gauge(
            "stenod_device_memory_total_bytes", "Device memory on the card.", device_labels, registry=r)
        self.device_queued_windows = Gauge(
            "stenod_device_queued_windows", "30 s windows waiting for the device's batch worker.", device_labels, registry=r)
        self.device_windows = Gauge(
            "stenod_device_windows", "Windows decoded on the device since the model loaded.", device_labels, registry=r)
        self.device_busy_seconds = Gauge(
            "stenod_device_busy_seconds", "Seconds the device's batch worker spent decoding since load.", device_labels, registry=r)
        self.connections_refused = Counter(
            "stenod_connections_refused_total",
            "Connections closed by a connection limit (header_timeout, body_timeout, max_connections, "
            "max_connections_per_client).", ["reason"], registry=r,
        )
        self.model_load_seconds = Histogram(
            "stenod_model_load_seconds", "Time to load a model.", ["model"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120), registry=r,
        )
        # No model label: the alert needs "loads are failing", and a label must never carry a
        # client-supplied name.
        self.model_load_failures = Counter(
            "stenod_model_load_failures_total",
            "Model loads that failed: weights found but not loadable, or the default model missing.",
            registry=r,
        )
        # Durable jobs, read from the job store and the broker when /metrics is scraped. The same on
        # every API replica (they share the store): aggregate with max(), not sum().
        self.jobs = Gauge(
            "stenod_jobs", "Jobs in the job store by status (queued, processing).", ["status"], registry=r,
        )
        self.jobs_queue_depth = Gauge(
            "stenod_jobs_queue_depth", "Jobs waiting for a worker (broker messages, or queued jobs in-process).",
            registry=r,
        )
        self.jobs_workers = Gauge(
            "stenod_jobs_workers", "Jobs the workers that reported in the last minute can run at once "
            "(the sum of their concurrency).", registry=r,
        )
        self.jobs_store_up = Gauge(
            "stenod_jobs_store_up", "1 when the job store answered this scrape, 0 when it did not.", registry=r,
        )
        self.default_model_loaded = Gauge(
            "stenod_default_model_loaded", "1 when the default model is in memory and serving.", registry=r,
        )

    def observe_device(self, model: str, stats: dict[str, object]) -> None:
        """Set the per-device gauges from one entry of an engine's ``device_stats()`` (model and
        device names come from the server's configuration, never from a client)."""
        labels = (model, str(stats.get("device", "")))
        self.device_queued_windows.labels(*labels).set(float(stats.get("queued_windows", 0)))  # type: ignore[arg-type]
        self.device_windows.labels(*labels).set(float(stats.get("windows", 0)))  # type: ignore[arg-type]
        self.device_busy_seconds.labels(*labels).set(float(stats.get("busy_s", 0.0)))  # type: ignore[arg-type]
        if "memory_allocated_mb" in stats:
            self.device_memory_used.labels(*labels).set(float(stats["memory_allocated_mb"]) * 2**20)  # type: ignore[arg-type]
            self.device_memory_total.labels(*labels).set(float(stats["memory_total_mb"]) * 2**20)  # type: ignore[arg-type]
