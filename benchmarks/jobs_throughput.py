"""End-to-end throughput of the durable job path (Celery on Redis, PostgreSQL job store, S3 blob
store on moto's server, ``stenod worker`` running 2 jobs at once) against the synchronous server
(``POST /v1/audio/transcriptions`` on ``stenod serve`` with two slots), on the same clips of
30 s or more, side by side in one run. Both sides get the same compute: two jobs or slots at once
of one thread each, the same model. The job side's worker layout is ``--layouts
POOL:PROCESSESxJOBS``: the default ``threads:1x2`` is one worker process running 2 jobs over one
model copy (as the synchronous server's 2 slots share one); ``prefork:2x1`` is the earlier layout,
two worker processes with a model copy each. Several layouts (comma-separated) run side by side in
one run, each with its own API server, database, queue and moto, so they can be compared under
the same load.

All set-ups run at the same time (an idle one costs no CPU) and the rounds alternate sync, jobs,
sync, jobs..., so load from neighbours on a shared machine falls on all alike.
Synchronous: a client keeps 4 requests in flight until every clip is done.
Jobs: every clip is submitted at once to ``/v1/jobs``; the clock stops when the client's poll
(one list request every 0.25 s, over one kept-alive connection) has seen every job completed and
fetched its transcript. The ratio jobs/sync wall time is the queueing cost
(upload to the blob store, database rows, broker round trips, download in the worker, result
upload, polling); the target is under 1.05. CPU seconds of every process of each set-up (API
server, workers and their pool processes, moto) are measured around each round too: on a shared,
oversubscribed machine wall time follows the neighbours, CPU time is what the set-up itself spent.
Every process of both set-ups is pinned to the same 2 CPUs on a larger machine (``--cpus``), so
the job path's API server and moto compete with its workers as they would on one host; PostgreSQL
and Redis (shared services) are not pinned and their CPU is not counted.

Needs PostgreSQL and Redis (``bash scripts/services.sh``). Example:

    python benchmarks/jobs_throughput.py --model base --rounds 3 --layouts threads:1x2,prefork:2x1 \
        --output docs/bench/jobs-throughput.json

The clips: the long-form corpus cut into ``--clip-seconds`` pieces (60 s: 5 clips, 297 s of audio
per round); tiny.en is the harshest case for the target (the fixed cost per job weighs most
against the shortest transcription time). ``--max-clips 2 --rounds 1`` is a smoke run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from stenod.audio import decode_audio

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "longform-en" / "audio"
SAMPLE_RATE = 16_000
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Row:
    target: str
    jobs: int
    audio_s: float
    wall_s: float
    throughput: float
    """Audio seconds per wall second."""
    cpu_s: float = 0.0
    """CPU seconds of every process of the set-up."""


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds of these processes and their live children (Celery pool)."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(proc.pid)
            for p in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = p.cpu_times()
                    total += times.user + times.system
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_clips(out: Path, seconds: float) -> list[Path]:
    """Cut the long-form corpus files into clips of ``seconds`` (the last piece of each file is
    kept when it is at least 30 s)."""
    clips: list[Path] = []
    for source in sorted(CORPUS.iterdir()):
        samples = decode_audio(source).samples
        step = int(seconds * SAMPLE_RATE)
        for i, start in enumerate(range(0, len(samples), step)):
            piece = samples[start:start + step]
            if len(piece) < 30 * SAMPLE_RATE:
                continue
            path = out / f"{source.stem}-{i}.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.writeframes((np.clip(piece, -1, 1) * 32767).astype("<i2").tobytes())
            clips.append(path)
    return clips


LOADAVG_START: tuple[float, float, float] = (0.0, 0.0, 0.0)
CPUS: set[int] = set()
"""CPUs every process of both set-ups is pinned to (empty: not pinned); see ``--cpus``."""


def pin() -> None:
    if CPUS:
        os.sched_setaffinity(0, CPUS)  # inherited by the Celery pool processes forked later


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=pin)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(url: str, *, workers: int = 0, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            health = httpx.get(f"{url}/health", timeout=5).json()
            if health["status"] == "ok" and len((health.get("jobs") or {}).get("workers", [])) >= workers:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


def run_sync(client: httpx.Client, url: str, clips: list[Path], *, in_flight: int) -> float:
    def one(path: Path) -> None:
        with path.open("rb") as f:
            r = client.post(f"{url}/v1/audio/transcriptions", files={"file": (path.name, f)}, timeout=900)
        r.raise_for_status()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, clips))
    return time.monotonic() - started


def run_jobs(client: httpx.Client, url: str, clips: list[Path]) -> float:
    started = time.monotonic()
    ids = []
    for path in clips:
        with path.open("rb") as f:
            r = client.post(f"{url}/v1/jobs", files={"file": (path.name, f)}, timeout=120)
        r.raise_for_status()
        ids.append(r.json()["id"])
    pending = set(ids)
    while pending:
        # One list call per poll (not one GET per job): the client's polling is part of the cost
        # measured, and a real client watching many jobs would list them too.
        listed = client.get(f"{url}/v1/jobs", params={"limit": 100}, timeout=30).json()["data"]
        for job in listed:
            if job["id"] in pending and job["status"] == "completed":
                # The transcript is fetched like a real client would (the synchronous side gets it
                # in its response): its read from the blob store is part of the cost.
                result = client.get(f"{url}/v1/jobs/{job['id']}/result", timeout=60)
                result.raise_for_status()
                pending.discard(job["id"])
            elif job["id"] in pending and job["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
        if pending:
            time.sleep(0.25)
    return time.monotonic() - started


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    name = f"stenod_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


STENOD = [sys.executable, "-m", "stenod"]


@dataclass(frozen=True)
class Layout:
    pool: str
    processes: int
    per_process: int

    @property
    def name(self) -> str:
        return f"{self.pool}:{self.processes}x{self.per_process}"

    @property
    def slots(self) -> int:
        return self.processes * self.per_process

    @property
    def reports(self) -> int:
        """Worker records in ``/health``: one per process (prefork: per pool process)."""
        return self.slots if self.pool == "prefork" else self.processes

    def describe(self) -> str:
        return f"{self.pool} pool, {self.processes} worker process(es) x {self.per_process} job(s) x 1 thread"


def parse_layout(text: str) -> Layout:
    pool, _, shape = text.partition(":")
    if pool not in ("threads", "prefork"):
        raise SystemExit(f"--layouts: unknown pool {pool!r} in {text!r}")
    processes, per_process = (int(n) for n in (shape or "1x2").lower().split("x"))
    return Layout(pool, processes, per_process)


@dataclass
class JobsSide:
    layout: Layout
    url: str
    procs: dict[str, subprocess.Popen[bytes]]
    client: httpx.Client | None = None
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    """CPU seconds of each process per round (a worker with its pool processes)."""


def start_jobs_side(stack: contextlib.ExitStack, layout: Layout, model: str, base_env: dict[str, str],
                    tmp: Path) -> JobsSide:
    """API server (no inference) + ``stenod worker`` processes of ``layout``, with a database,
    queue and moto S3 server of their own."""
    tmp.mkdir(parents=True, exist_ok=True)
    db = stack.enter_context(postgres_database())
    moto_port = free_port()
    bucket = "bench-jobs"
    env = {**base_env, "STENOD_JOBS__DATABASE_URL": db, "STENOD_JOBS__BROKER_URL": "redis://127.0.0.1:6379/13",
           "STENOD_JOBS__QUEUE_NAME": f"stenod.bench.{uuid.uuid4().hex[:8]}",
           "STENOD_JOBS__BLOB_URL": f"s3://{bucket}/run", "STENOD_JOBS__S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
           "STENOD_JOBS__DATA_DIR": str(tmp / "jobs-data")}
    procs = {"moto": stack.enter_context(process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                                  "-p", str(moto_port)], env, tmp / "moto.log"))}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", moto_port), timeout=1):
            break
        time.sleep(0.3)
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket=bucket)
    port = free_port()
    procs["api"] = stack.enter_context(process([*STENOD, "serve", "--model", model, "--port", str(port), "--lazy"],
                                               env, tmp / "api.log"))
    for i in range(layout.processes):
        procs[f"worker{i}"] = stack.enter_context(process(
            [*STENOD, "worker", "--model", model, "--pool", layout.pool, "--concurrency", str(layout.per_process),
             "--threads", "1", "--hostname", f"bench{i}-{uuid.uuid4().hex[:4]}@%h"], env, tmp / f"w{i}.log"))
    return JobsSide(layout, f"http://127.0.0.1:{port}", procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--clip-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="Alternating sync/jobs rounds; every round sends every clip to each target.")
    parser.add_argument("--cpus", default="auto",
                        help="Pin both set-ups (servers, workers, moto) to these CPUs, e.g. 0,1; 'auto' = the "
                             "first 2 on a machine with 4 or more, 'none' = no pinning. The same cores on both "
                             "sides: the job path's extra processes must not run on spare cores for free.")
    parser.add_argument("--layouts", default="threads:1x2",
                        help="Job-side set-ups, comma-separated POOL:PROCESSESxJOBS (stenod worker's --pool, "
                             "processes, and --concurrency each; 2 jobs at once in all, like the synchronous "
                             "server's 2 slots), e.g. threads:1x2,prefork:2x1. Each gets its own API server, "
                             "database, moto and queue; rounds run sync then every layout, their order rotating.")
    parser.add_argument("--max-clips", type=int, default=0, help="Use only the first N clips (0 = all; a smoke run).")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--cache-dir", default=os.environ.get("STENOD_MODEL__CACHE_DIR", ""))
    args = parser.parse_args()
    layouts = [parse_layout(text) for text in args.layouts.split(",")]
    global LOADAVG_START
    LOADAVG_START = os.getloadavg()
    if args.cpus == "auto":
        CPUS.update({0, 1} if (os.cpu_count() or 1) >= 4 else set())
    elif args.cpus != "none":
        CPUS.update(int(c) for c in args.cpus.split(","))

    with tempfile.TemporaryDirectory(prefix="stenod-bench-jobs-") as tmp_str, contextlib.ExitStack() as stack:
        tmp = Path(tmp_str)
        clips = make_clips(tmp, args.clip_seconds)
        if args.max_clips:
            clips = clips[:args.max_clips]
        audio_s = sum(wave.open(str(c)).getnframes() / SAMPLE_RATE for c in clips)
        base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "STENOD_LOG__LEVEL": "warning",
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        if args.cache_dir:
            base_env["STENOD_MODEL__CACHE_DIR"] = args.cache_dir

        # Every set-up stays up for the whole run (an idle one costs no CPU), and the rounds
        # alternate, so a neighbour's load on this shared machine hits every side alike.
        # 1. synchronous server: two single-thread slots, job workers off.
        sync_port = free_port()
        env = {**base_env, "STENOD_JOBS__WORKERS": "0", "STENOD_JOBS__DATA_DIR": str(tmp / "sync-data")}
        sync_procs = [stack.enter_context(process([*STENOD, "serve", "--model", args.model, "--port", str(sync_port),
                                                   "--slots", "2", "--threads", "1"], env, tmp / "sync.log"))]
        # 2. jobs, per layout: API server (no inference) + Celery workers, PostgreSQL + Redis + S3 (moto).
        sides = [start_jobs_side(stack, layout, args.model, base_env, tmp / layout.name.replace(":", "-"))
                 for layout in layouts]
        sync_url = f"http://127.0.0.1:{sync_port}"
        wait_ready(sync_url)
        for side in sides:
            # Each worker process reports itself (prefork: each pool process).
            wait_ready(side.url, workers=side.layout.reports)
        # One client per side, its connections kept alive, as any real client (an SDK) does: a
        # new httpx client per call builds an SSL context (about 50 ms of CPU), and polling that
        # way 4 times a second took 8-10 % of a 2-core machine from the workers (the client is
        # neither pinned nor counted), which inflated the job side's wall time.
        sync_client = stack.enter_context(httpx.Client())
        run_sync(sync_client, sync_url, clips[:1], in_flight=1)  # warm-up
        for side in sides:
            side.client = stack.enter_context(httpx.Client())
            # Warm every worker (one job per job slot, at once): each worker process loads its VAD
            # model on its first job, like the sync server's one process on its first request.
            run_jobs(side.client, side.url, clips[:side.layout.slots])
        walls: dict[str, list[float]] = {"sync": []}
        cpus: dict[str, list[float]] = {"sync": []}
        for n in range(args.rounds):
            before = cpu_seconds(sync_procs)
            walls["sync"].append(run_sync(sync_client, sync_url, clips, in_flight=4))
            cpus["sync"].append(cpu_seconds(sync_procs) - before)
            line = f"round {n + 1}: sync {walls['sync'][-1]:.2f} s wall {cpus['sync'][-1]:.1f} s CPU"
            for side in sides[n % len(sides):] + sides[:n % len(sides)]:
                before_parts = {name: cpu_seconds([p]) for name, p in side.procs.items()}
                assert side.client is not None
                side.walls.append(run_jobs(side.client, side.url, clips))
                for name, p in side.procs.items():
                    side.parts.setdefault(name, []).append(cpu_seconds([p]) - before_parts[name])
                side.cpus.append(sum(v[-1] for v in side.parts.values()))
                line += (f"; {side.layout.name} {side.walls[-1]:.2f} s wall {side.cpus[-1]:.1f} s CPU ("
                         + ", ".join(f"{name} {v[-1]:.2f}" for name, v in side.parts.items()) + ")")
            print(line, flush=True)

    total_audio = audio_s * args.rounds
    rows = [Row("sync server (2 slots x 1 thread)", len(clips) * args.rounds, total_audio, sum(walls["sync"]),
                total_audio / sum(walls["sync"]), sum(cpus["sync"]))]
    rows += [Row(f"jobs: Celery+Redis, PostgreSQL, S3 (moto), {side.layout.describe()}", len(clips) * args.rounds,
                 total_audio, sum(side.walls), total_audio / sum(side.walls), sum(side.cpus)) for side in sides]
    print("| target | jobs | audio s | wall s | audio s / s | CPU s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.target} | {r.jobs} | {r.audio_s:.1f} | {r.wall_s:.2f} | {r.throughput:.2f} | {r.cpu_s:.1f} |")
    results = {}
    for side in sides:
        ratio = sum(side.walls) / sum(walls["sync"])
        cpu_ratio = sum(side.cpus) / sum(cpus["sync"])
        per_round = [j / s for s, j in zip(walls["sync"], side.walls, strict=True)]
        per_round_cpu = [j / s for s, j in zip(cpus["sync"], side.cpus, strict=True)]
        print(f"\n{side.layout.name}: jobs / sync wall time {ratio:.3f} (queueing overhead {100 * (ratio - 1):+.1f} %; "
              f"target < +5 %), CPU seconds (all processes of each set-up) {cpu_ratio:.3f}")
        print("  per round wall: " + ", ".join(f"{r:.3f}" for r in per_round))
        print("  per round CPU:  " + ", ".join(f"{r:.3f}" for r in per_round_cpu))
        results[side.layout.name] = {
            "walls_s": side.walls, "cpu_s": side.cpus, "cpu_by_process_s": side.parts,
            "jobs_over_sync": ratio, "jobs_over_sync_per_round": per_round,
            "jobs_over_sync_cpu": cpu_ratio, "jobs_over_sync_cpu_per_round": per_round_cpu,
        }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        first = results[sides[0].layout.name]
        args.output.write_text(json.dumps({
            "model": args.model, "clip_seconds": args.clip_seconds, "rounds": args.rounds,
            "clips": [c.name for c in clips], "rows": [asdict(r) for r in rows],
            "sync": {"walls_s": walls["sync"], "cpu_s": cpus["sync"]},
            # The first layout's figures at the top level, as earlier result files have them.
            "walls_s": {"sync": walls["sync"], "jobs": first["walls_s"]},
            "cpu_s": {"sync": cpus["sync"], "jobs": first["cpu_s"]},
            "jobs_over_sync": first["jobs_over_sync"], "jobs_over_sync_cpu": first["jobs_over_sync_cpu"],
            "layouts": results,
            "host": {"cpus": os.cpu_count(), "pinned_to": sorted(CPUS), "loadavg_start": LOADAVG_START,
                     "loadavg_end": os.getloadavg()},
        }, indent=2))


if __name__ == "__main__":
    main()
