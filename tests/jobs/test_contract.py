"""One contract for the job API, run against the embedded default (in-process workers, SQLite,
local folder) and the production stack (Celery on Redis, PostgreSQL, S3 on moto's server), each
as real processes. Both must behave the same for every test here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stenod.jobs.webhooks import verify
from tests.conftest import CORPUS, JFK, JFK_TEXT
from tests.jobs.receiver import Receiver
from tests.jobs.stack import API_KEYS, LONG_AUDIO, WEBHOOK_SECRET, JobStack, job_stack
from tests.synth import repeated_speech
from tests.wer_utils import normalize

MONO = CORPUS / "ljspeech-lj001" / "audio" / "LJ001-0003.wav"


@pytest.fixture(scope="module", params=["in-process", "celery-redis"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          cache_dir: Path) -> Iterator[JobStack]:
    # The session's S3 server (nothing here stops it); only the Celery stack uses S3.
    moto = request.getfixturevalue("s3_server") if request.param == "celery-redis" else None
    with job_stack(request.param, tmp_path_factory.mktemp(request.param), cache_dir, moto=moto) as js:
        yield js


@pytest.fixture(autouse=True)
def _clean_up_jobs(stack: JobStack) -> Iterator[None]:
    """Delete the jobs a test left queued or running, so the next one does not queue behind them
    (one worker). Finished ones cost nothing and stay (each key's lists belong to one test)."""
    yield
    for key in API_KEYS:
        listed = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(key), params={"limit": 100}, timeout=30)
        for job in listed.json()["data"]:
            if job["status"] in ("queued", "processing"):
                httpx.delete(f"{stack.url}/v1/jobs/{job['id']}", headers=stack.headers(key), timeout=30)


def test_a_job_completes_and_its_result_comes_in_every_format(stack: JobStack) -> None:
    response = stack.submit(JFK, **{"timestamp_granularities[]": "word", "language": "en"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["object"] == "transcription.job" and job["status"] == "queued" and job["model"] == "tiny.en"
    for name in ("id", "progress", "created_at", "started_at", "completed_at", "language", "duration", "error",
                 "attempts"):
        assert name in job
    done = stack.wait(job["id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 1.0 and done["attempts"] == 1 and done["language"] == "en"
    assert done["duration"] == pytest.approx(11.0, abs=0.1)
    assert done["started_at"] >= done["created_at"] and done["completed_at"] >= done["started_at"]
    base = f"{stack.url}/v1/jobs/{job['id']}/result"
    as_json = httpx.get(base, headers=stack.headers(), timeout=30)
    assert as_json.status_code == 200 and normalize(as_json.json()["text"]) == normalize(JFK_TEXT)
    verbose = httpx.get(base, params={"response_format": "verbose_json"}, headers=stack.headers(), timeout=30).json()
    assert verbose["words"] and verbose["segments"]
    srt = httpx.get(base, params={"response_format": "srt"}, headers=stack.headers(), timeout=30)
    assert srt.text.startswith("1\n00:00:00,000 --> ") and "application/x-subrip" in srt.headers["content-type"]
    vtt = httpx.get(base, params={"response_format": "vtt"}, headers=stack.headers(), timeout=30)
    assert vtt.text.startswith("WEBVTT")
    text = httpx.get(base, params={"response_format": "text"}, headers=stack.headers(), timeout=30)
    assert "ask not what your country can do for you" in text.text.lower()
    bad = httpx.get(base, params={"response_format": "docx"}, headers=stack.headers(), timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"


BAD_INPUTS: dict[str, tuple[dict[str, str], bytes | None]] = {
    "not audio": ({}, b"this is a text file, not audio\n" * 20),
    "empty file": ({}, b""),
    "unknown language": ({"language": "xx"}, None),
    "bad response_format": ({"response_format": "docx"}, None),
    "temperature out of range": ({"temperature": "3"}, None),
    "granularities without verbose_json": ({"response_format": "json", "timestamp_granularities[]": "word"}, None),
    "model not offered": ({"model": "/etc/passwd"}, None),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_the_synchronous_routes_error_and_queues_nothing(stack: JobStack, case: str,
                                                                        tmp_path: Path) -> None:
    fields, content = BAD_INPUTS[case]
    path = JFK
    if content is not None:
        path = tmp_path / "upload.wav"
        path.write_bytes(content)
    key = API_KEYS[7]
    with path.open("rb") as f:
        sync = httpx.post(f"{stack.url}/v1/audio/transcriptions", files={"file": (path.name, f)}, data=fields,
                          headers=stack.headers(key), timeout=60)
    job = stack.submit(path, key=key, **fields)
    assert 400 <= sync.status_code < 500, sync.text
    assert job.status_code == sync.status_code, (job.text, sync.text)
    assert job.json()["error"]["code"] == sync.json()["error"]["code"]
    assert set(job.json()["error"]) == {"message", "type", "param", "code"}
    listed = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(key), timeout=30).json()
    assert listed["data"] == []


def test_diarize_on_mono_audio_is_refused_before_queueing(stack: JobStack) -> None:
    response = stack.submit(MONO, key=API_KEYS[7], diarize="true")
    assert response.status_code == 400 and response.json()["error"]["param"] == "diarize", response.text
    listed = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(API_KEYS[7]), timeout=30).json()
    assert listed["data"] == []


def test_idempotency_key_returns_the_same_job(stack: JobStack) -> None:
    key = f"idem-{time.time_ns()}"
    first = stack.submit(JFK, headers={"Idempotency-Key": key})
    again = stack.submit(JFK, headers={"Idempotency-Key": key})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other_tenant = stack.submit(JFK, key=API_KEYS[1], headers={"Idempotency-Key": key})
    assert other_tenant.status_code == 202 and other_tenant.json()["id"] != first.json()["id"]
    changed = stack.submit(JFK, headers={"Idempotency-Key": key}, language="de")
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_key_reused"


def test_jobs_are_invisible_to_other_tenants(stack: JobStack) -> None:
    owner, intruder = API_KEYS[2], API_KEYS[3]
    job = stack.submit(JFK, key=owner).json()
    for method, suffix in (("GET", ""), ("GET", "/result"), ("POST", "/cancel"), ("DELETE", "")):
        response = httpx.request(method, f"{stack.url}/v1/jobs/{job['id']}{suffix}", headers=stack.headers(intruder),
                                 timeout=30)
        assert response.status_code == 404, (method, suffix, response.text)
        assert response.json()["error"]["code"] == "job_not_found"
    listed = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(intruder), params={"after": job["id"]},
                       timeout=30).json()
    assert listed == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    assert httpx.get(f"{stack.url}/v1/jobs/{job['id']}", timeout=30).status_code == 401
    mine = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(owner), timeout=30).json()
    assert [j["id"] for j in mine["data"]] == [job["id"]]


def test_list_is_newest_first_with_cursor_pagination(stack: JobStack) -> None:
    key = API_KEYS[4]
    ids = [stack.submit(JFK, key=key).json()["id"] for _ in range(3)]
    page1 = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(key), params={"limit": 2}, timeout=30).json()
    assert page1["object"] == "list" and page1["has_more"] is True
    assert [j["id"] for j in page1["data"]] == ids[::-1][:2]
    page2 = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(key),
                      params={"limit": 2, "after": page1["last_id"]}, timeout=30).json()
    assert [j["id"] for j in page2["data"]] == [ids[0]] and page2["has_more"] is False
    bad = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(key), params={"status": "weird"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
    stack.wait(ids[0], key=key)
    done = httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(key), params={"status": "completed"},
                     timeout=30).json()
    assert ids[0] in [j["id"] for j in done["data"]] and all(j["status"] == "completed" for j in done["data"])


def test_cancel_queued_never_runs_and_cancel_running_stops_it(stack: JobStack, tmp_path: Path) -> None:
    key = API_KEYS[5]
    # Four times the long file: still running when the cancel arrives, on a fast host too (the
    # file alone took tiny.en about 3 s there).
    running = stack.submit(repeated_speech(tmp_path / "long.flac", LONG_AUDIO, 4), key=key).json()
    waiting = stack.submit(JFK, key=key).json()
    # One worker: the long job runs (progress moves from decoded audio time), the short one waits.
    seen = stack.wait(running["id"], ("processing",), key=key, predicate=lambda j: 0 < j["progress"] < 1)
    assert 0 < seen["progress"] < 1
    health = httpx.get(f"{stack.url}/health", timeout=30).json()["jobs"]
    assert health["queue_depth"] >= 1 and health["workers"]
    queued = stack.get(waiting["id"], key=key).json()
    assert queued["status"] == "queued"
    cancelled = httpx.post(f"{stack.url}/v1/jobs/{waiting['id']}/cancel", headers=stack.headers(key), timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stopping = httpx.post(f"{stack.url}/v1/jobs/{running['id']}/cancel", headers=stack.headers(key), timeout=30)
    assert stopping.status_code == 200
    stopped = stack.wait(running["id"], key=key, timeout_s=60)
    assert stopped["status"] == "cancelled" and stopped["progress"] < 1
    result = httpx.get(f"{stack.url}/v1/jobs/{running['id']}/result", headers=stack.headers(key), timeout=30)
    assert result.status_code == 409
    time.sleep(2)  # the worker is free now; the cancelled job must still never start
    never = stack.get(waiting["id"], key=key).json()
    assert never["status"] == "cancelled" and never["started_at"] is None and never["attempts"] == 0


def test_result_is_409_until_completed_and_delete_removes_everything(stack: JobStack) -> None:
    job = stack.submit(JFK).json()
    early = httpx.get(f"{stack.url}/v1/jobs/{job['id']}/result", headers=stack.headers(), timeout=30)
    if early.status_code != 200:  # a fast worker may already be done
        assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_completed"
    stack.wait(job["id"])
    assert stack.blob_keys(f"results/{job['id']}") and len(stack.blob_keys("audio")) >= 1
    audio_before = set(stack.blob_keys("audio"))
    deleted = httpx.delete(f"{stack.url}/v1/jobs/{job['id']}", headers=stack.headers(), timeout=30)
    assert deleted.status_code == 204
    assert stack.get(job["id"]).status_code == 404
    assert httpx.get(f"{stack.url}/v1/jobs/{job['id']}/result", headers=stack.headers(), timeout=30).status_code == 404
    assert stack.blob_keys(f"results/{job['id']}") == []
    assert len(set(stack.blob_keys("audio"))) == len(audio_before) - 1
    again = httpx.delete(f"{stack.url}/v1/jobs/{job['id']}", headers=stack.headers(), timeout=30)
    assert again.status_code == 404


def test_webhook_is_signed_and_retried_until_the_receiver_accepts(stack: JobStack) -> None:
    receiver = Receiver(fail_first=2).start()
    try:
        job = stack.submit(JFK, webhook_url=f"{receiver.url}/hook").json()
        stack.wait(job["id"], predicate=lambda j: (j["webhook"] or {}).get("status") in ("delivered", "failed"),
                   timeout_s=120)
        final = stack.get(job["id"]).json()
    finally:
        receiver.stop()
    assert final["webhook"]["status"] == "delivered"
    attempts = final["webhook"]["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 500, 200] and [a["attempt"] for a in attempts] == [1, 2, 3]
    assert len(receiver.received) == 3
    for delivery in receiver.received:
        assert json.loads(delivery.body) == {"id": job["id"], "status": "completed"}
        assert verify(WEBHOOK_SECRET, delivery.headers, delivery.body)
        assert not verify("whsec_d3Jvbmctc2VjcmV0", delivery.headers, delivery.body)
    assert len({d.headers["webhook-id"] for d in receiver.received}) == 1  # one message, retried


@pytest.mark.parametrize("target", [
    "http://127.0.0.2:9/hook",          # loopback outside the allow-list
    "http://10.1.2.3/hook",             # private
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[::1]/hook",
    "http://[fd00:ec2::254]/",
    "http://100.64.0.1/",               # carrier-grade NAT
    "ftp://example.com/x",
    "http://user:pw@example.com/",
])
def test_private_and_odd_targets_are_refused_before_queueing(stack: JobStack, target: str) -> None:
    key = API_KEYS[6]
    hook = stack.submit(JFK, key=key, webhook_url=target)
    assert hook.status_code == 400 and hook.json()["error"]["code"] == "url_not_allowed"
    assert hook.json()["error"]["param"] == "webhook_url"
    audio = httpx.post(f"{stack.url}/v1/jobs", json={"audio_url": target}, headers=stack.headers(key), timeout=30)
    assert audio.status_code == 400 and audio.json()["error"]["code"] == "url_not_allowed"
    assert httpx.get(f"{stack.url}/v1/jobs", headers=stack.headers(key), timeout=30).json()["data"] == []


def test_audio_url_is_fetched_and_redirects_are_checked(stack: JobStack) -> None:
    receiver = Receiver(serve_file=JFK, redirect_to="http://127.0.0.2:9/audio").start()
    try:
        ok = httpx.post(f"{stack.url}/v1/jobs", json={"audio_url": f"{receiver.url}/audio", "language": "en"},
                        headers=stack.headers(), timeout=60)
        assert ok.status_code == 202, ok.text
        redirected = httpx.post(f"{stack.url}/v1/jobs", json={"audio_url": f"{receiver.url}/redirect"},
                                headers=stack.headers(), timeout=60)
        missing = httpx.post(f"{stack.url}/v1/jobs", json={"audio_url": f"{receiver.url}/nothing"},
                             headers=stack.headers(), timeout=60)
        unknown_field = httpx.post(f"{stack.url}/v1/jobs", json={"audio_url": f"{receiver.url}/audio", "x": 1},
                                   headers=stack.headers(), timeout=60)
    finally:
        receiver.stop()
    assert redirected.status_code == 400 and redirected.json()["error"]["code"] == "url_not_allowed"
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "audio_url_unavailable"
    assert unknown_field.status_code == 400
    done = stack.wait(ok.json()["id"])
    assert done["status"] == "completed" and done["duration"] == pytest.approx(11.0, abs=0.1)
