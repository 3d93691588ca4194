"""End-to-end throughput of the durable job path (Celery on Redis, PostgreSQL job store, S3 blob
store on moto's server, ``stenod worker`` running 2 jobs at once) against the synchronous server
(``POST /v1/audio/transcriptions`` on ``stenod serve`` with two slots), on the same clips of
30 s or more, side by side in one run. Both sides get the same compute: two jobs or slots at once
of one thread each, the same model. The worker layout is ``--workers PROCESSESxJOBS`` on
``--pool``: the default ``1x2`` on ``threads`` is one worker process running 2 jobs over one model
copy (as the synchronous server's 2 slots share one); ``--pool prefork --workers 2x1`` is the
earlier layout, two worker processes with a model copy each.

Both set-ups run at the same time (the idle one costs no CPU) and the rounds alternate sync, jobs,
sync, jobs..., so load from neighbours on a shared machine falls on both alike.
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

    python benchmarks/jobs_throughput.py --model base --rounds 3 --output docs/bench/jobs-throughput.json

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
from dataclasses import asdict, dataclass
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


def cpu_seconds(procs: list[subprocess.Popen[bytes]] | dict[str, subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds of these processes and their live children (Celery pool)."""
    total = 0.0
    for proc in (procs.values() if isinstance(procs, dict) else procs):
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
    parser.add_argument("--pool", default="threads", choices=["threads", "prefork"],
                        help="stenod worker's pool (threads: one model copy per process).")
    parser.add_argument("--workers", default="1x2",
                        help="Worker PROCESSESxJOBS at once each (--concurrency); 2 jobs at once in all, "
                             "like the synchronous server's 2 slots: 1x2 (default) or 2x1.")
    parser.add_argument("--max-clips", type=int, default=0, help="Use only the first N clips (0 = all; a smoke run).")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--cache-dir", default=os.environ.get("STENOD_MODEL__CACHE_DIR", ""))
    args = parser.parse_args()
    processes, per_process = (int(n) for n in args.workers.lower().split("x"))
    global LOADAVG_START
    LOADAVG_START = os.getloadavg()
    if args.cpus == "auto":
        CPUS.update({0, 1} if (os.cpu_count() or 1) >= 4 else set())
    elif args.cpus != "none":
        CPUS.update(int(c) for c in args.cpus.split(","))

    with tempfile.TemporaryDirectory(prefix="stenod-bench-jobs-") as tmp_str, postgres_database() as db, \
            contextlib.ExitStack() as stack:
        tmp = Path(tmp_str)
        clips = make_clips(tmp, args.clip_seconds)
        if args.max_clips:
            clips = clips[:args.max_clips]
        audio_s = sum(wave.open(str(c)).getnframes() / SAMPLE_RATE for c in clips)
        base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "STENOD_LOG__LEVEL": "warning",
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        if args.cache_dir:
            base_env["STENOD_MODEL__CACHE_DIR"] = args.cache_dir
        stenod = [sys.executable, "-m", "stenod"]

        # Both set-ups stay up for the whole run (an idle one costs no CPU), and the rounds
        # alternate, so a neighbour's load on this shared machine hits both sides alike.
        # 1. synchronous server: two single-thread slots, job workers off.
        sync_port = free_port()
        env = {**base_env, "STENOD_JOBS__WORKERS": "0", "STENOD_JOBS__DATA_DIR": str(tmp / "sync-data")}
        sync_procs = [stack.enter_context(process([*stenod, "serve", "--model", args.model, "--port", str(sync_port),
                                                   "--slots", "2", "--threads", "1"], env, tmp / "sync.log"))]
        # 2. jobs: API server (no inference) + 2 Celery workers, PostgreSQL + Redis + S3 (moto).
        moto_port = free_port()
        queue = f"stenod.bench.{uuid.uuid4().hex[:8]}"
        env = {**base_env, "STENOD_JOBS__DATABASE_URL": db, "STENOD_JOBS__BROKER_URL": "redis://127.0.0.1:6379/13",
               "STENOD_JOBS__QUEUE_NAME": queue, "STENOD_JOBS__BLOB_URL": "s3://bench-jobs/run",
               "STENOD_JOBS__S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
               "STENOD_JOBS__DATA_DIR": str(tmp / "jobs-data")}
        jobs_procs = {"moto": stack.enter_context(process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                                           "-p", str(moto_port)], env, tmp / "moto.log"))}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", moto_port), timeout=1):
                break
            time.sleep(0.3)
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="bench-jobs")
        jobs_port = free_port()
        jobs_procs["api"] = stack.enter_context(process([*stenod, "serve", "--model", args.model, "--port",
                                                         str(jobs_port), "--lazy"], env, tmp / "api.log"))
        for i in range(processes):
            jobs_procs[f"worker{i}"] = stack.enter_context(process(
                [*stenod, "worker", "--model", args.model, "--pool", args.pool, "--concurrency", str(per_process),
                 "--threads", "1", "--hostname", f"bench{i}@%h"], env, tmp / f"w{i}.log"))
        sync_url, jobs_url = f"http://127.0.0.1:{sync_port}", f"http://127.0.0.1:{jobs_port}"
        wait_ready(sync_url)
        # Each worker process reports itself (prefork: each pool process).
        wait_ready(jobs_url, workers=processes * (per_process if args.pool == "prefork" else 1))
        # One client per side, its connections kept alive, as any real client (an SDK) does: a
        # new httpx client per call builds an SSL context (about 50 ms of CPU), and polling that
        # way 4 times a second took 8-10 % of a 2-core machine from the workers (the client is
        # neither pinned nor counted), which inflated the job side's wall time.
        sync_client = stack.enter_context(httpx.Client())
        jobs_client = stack.enter_context(httpx.Client())
        run_sync(sync_client, sync_url, clips[:1], in_flight=1)  # warm-up
        # Warm every worker (one job per job slot, at once): each worker process loads its VAD
        # model on its first job, like the sync server's one process on its first request.
        run_jobs(jobs_client, jobs_url, clips[:processes * per_process])
        walls: dict[str, list[float]] = {"sync": [], "jobs": []}
        cpus: dict[str, list[float]] = {"sync": [], "jobs": []}
        # CPU seconds of each process of the job side per round (a worker with its pool processes).
        parts: dict[str, list[float]] = {name: [] for name in jobs_procs}
        for _ in range(args.rounds):
            before = cpu_seconds(sync_procs)
            walls["sync"].append(run_sync(sync_client, sync_url, clips, in_flight=4))
            cpus["sync"].append(cpu_seconds(sync_procs) - before)
            before = cpu_seconds(jobs_procs)
            before_parts = {name: cpu_seconds([p]) for name, p in jobs_procs.items()}
            walls["jobs"].append(run_jobs(jobs_client, jobs_url, clips))
            cpus["jobs"].append(cpu_seconds(jobs_procs) - before)
            for name, p in jobs_procs.items():
                parts[name].append(cpu_seconds([p]) - before_parts[name])
            print(f"round: sync {walls['sync'][-1]:.2f} s wall {cpus['sync'][-1]:.1f} s CPU, "
                  f"jobs {walls['jobs'][-1]:.2f} s wall {cpus['jobs'][-1]:.1f} s CPU ("
                  + ", ".join(f"{name} {v[-1]:.2f}" for name, v in parts.items()) + ")", flush=True)

    total_audio = audio_s * args.rounds
    rows = [
        Row("sync server (2 slots x 1 thread)", len(clips) * args.rounds, total_audio, sum(walls["sync"]),
            total_audio / sum(walls["sync"])),
        Row(f"jobs: Celery+Redis, PostgreSQL, S3 (moto), {args.pool} pool, {processes} worker process(es) x "
            f"{per_process} job(s) x 1 thread", len(clips) * args.rounds, total_audio,
            sum(walls["jobs"]), total_audio / sum(walls["jobs"])),
    ]
    ratio = rows[1].wall_s / rows[0].wall_s
    print("| target | jobs | audio s | wall s | audio s / s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.target} | {r.jobs} | {r.audio_s:.1f} | {r.wall_s:.2f} | {r.throughput:.2f} |")
    print(f"\njobs / sync wall time: {ratio:.3f} (queueing overhead {100 * (ratio - 1):+.1f} %; target < +5 %)")
    cpu_ratio = sum(cpus["jobs"]) / sum(cpus["sync"])
    print(f"jobs / sync CPU seconds (all processes of each set-up): {cpu_ratio:.3f}")
    per_round = [j / s for s, j in zip(walls["sync"], walls["jobs"], strict=True)]
    print("per round jobs/sync wall: " + ", ".join(f"{r:.3f}" for r in per_round))
    per_round_cpu = [j / s for s, j in zip(cpus["sync"], cpus["jobs"], strict=True)]
    print("per round jobs/sync CPU: " + ", ".join(f"{r:.3f}" for r in per_round_cpu))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "model": args.model, "clip_seconds": args.clip_seconds, "rounds": args.rounds,
            "clips": [c.name for c in clips], "rows": [asdict(r) for r in rows], "walls_s": walls,
            "jobs_over_sync": ratio, "jobs_over_sync_per_round": per_round, "cpu_s": cpus,
            "jobs_over_sync_cpu": cpu_ratio, "jobs_over_sync_cpu_per_round": per_round_cpu,
            "jobs_cpu_by_process_s": parts, "worker_pool": args.pool, "workers": args.workers,
            "host": {"cpus": os.cpu_count(), "pinned_to": sorted(CPUS), "loadavg_start": LOADAVG_START,
                     "loadavg_end": os.getloadavg()},
        }, indent=2))


if __name__ == "__main__":
    main()
