"""Job pieces without servers: retention sweep, egress policy, webhook signatures, job params.
Real SQLite and a real folder; no model is loaded."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from stenod.errors import JobNotFoundError, UnsafeURLError
from stenod.jobs.inprocess import InProcessQueue
from stenod.jobs.sweeper import sweep_once
from stenod.jobs.webhooks import sign, verify
from stenod.service.egress import EgressPolicy, check_url_or_raise
from stenod.service.jobs import JobParams, JobService
from stenod.settings import JobsSettings
from stenod.storage.blobs import LocalBlobStore, check_key_or_raise
from stenod.storage.job_store import JobStore
from stenod.storage.sql import create_db_engine, migrate
from tests.conftest import JFK


@pytest.fixture
def service(tmp_path: Path) -> JobService:
    engine = create_db_engine("", data_dir=tmp_path)
    migrate(engine)
    return JobService(store=JobStore(engine), blobs=LocalBlobStore(tmp_path / "blobs"), queue=InProcessQueue(),
                      settings=JobsSettings(data_dir=tmp_path, retention_s=3600), max_duration_s=3600)


def test_retention_sweep_deletes_expired_jobs_with_their_audio_and_results(service: JobService) -> None:
    with JFK.open("rb") as f:
        old, _ = service.submit(f, JobParams(model="tiny.en"), tenant_id="t", model="tiny.en",
                                idempotency_key=None, webhook_url=None)
    service.blobs.put_bytes(f"results/{old.id}/1-abc.json", b"{}")
    with JFK.open("rb") as f:
        young, _ = service.submit(f, JobParams(model="tiny.en"), tenant_id="t", model="tiny.en",
                                  idempotency_key=None, webhook_url=None)
    assert len(service.blobs.list("audio")) == 2
    # An hour and a bit later the first job has expired; the second was created "later".
    report = sweep_once(service, republish=False, now=old.expires_at + 1)
    assert report.expired >= 1
    with pytest.raises(JobNotFoundError):
        service.get_or_raise(old.id, tenant_id="t")
    assert service.blobs.list(f"results/{old.id}") == []
    assert old.audio_key not in service.blobs.list("audio")
    if young.expires_at > old.expires_at + 1:
        assert service.get_or_raise(young.id, tenant_id="t").id == young.id
    assert sweep_once(service, republish=False, now=time.time()).expired == 0


def test_a_running_job_is_not_swept_from_under_its_worker(service: JobService) -> None:
    with JFK.open("rb") as f:
        job, _ = service.submit(f, JobParams(model="tiny.en"), tenant_id="t", model="tiny.en",
                                idempotency_key=None, webhook_url=None)
    service.store.claim(job.id, worker_id="w", lease_s=60, max_attempts=3)
    sweep_once(service, republish=False, now=job.expires_at + 1)
    assert service.get_or_raise(job.id, tenant_id="t").status == "processing"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.8.8", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.1.1",
    "0.0.0.0", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "::ffff:127.0.0.1", "224.0.0.1", "240.0.0.1",
])
def test_internal_addresses_are_refused(address: str) -> None:
    assert not EgressPolicy().address_allowed(ipaddress.ip_address(address))


def test_public_addresses_pass_and_an_allow_list_opens_a_range() -> None:
    policy = EgressPolicy.from_strings(["127.0.0.1/32", "10.20.0.0/16"])
    assert EgressPolicy().address_allowed(ipaddress.ip_address("93.184.215.14"))
    assert policy.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("10.20.3.4"))
    assert not policy.address_allowed(ipaddress.ip_address("127.0.0.2"))
    assert not policy.address_allowed(ipaddress.ip_address("10.21.0.1"))
    with pytest.raises(ValueError):
        EgressPolicy.from_strings(["not-a-network"])


def test_names_are_checked_after_dns_resolution_and_pinned() -> None:
    with pytest.raises(UnsafeURLError, match="resolves to a loopback"):
        check_url_or_raise("http://localhost:8080/hook", EgressPolicy(), param="webhook_url")
    checked = check_url_or_raise("https://localhost:8443/a?b=1", EgressPolicy.from_strings(["127.0.0.0/8", "::1/128"]),
                                 param="webhook_url")
    url, headers, extensions = checked.pinned()
    assert url.startswith(("https://127.0.0.1:8443/a?b=1", "https://[::1]:8443/a?b=1"))
    assert headers == {"Host": "localhost:8443"} and extensions == {"sni_hostname": "localhost"}
    for bad in ("file:///etc/passwd", "gopher://x", "http://", "http://a b/", "x" * 3000):
        with pytest.raises(UnsafeURLError):
            check_url_or_raise(bad, EgressPolicy(), param="audio_url")


def test_webhook_signature_matches_the_standard_webhooks_example() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": f"v1,bm90LXRoaXM= {signature}"}
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(secret, {**headers, "webhook-timestamp": "1614265331"}, body)


def test_blob_keys_cannot_leave_the_store(tmp_path: Path) -> None:
    for key in ("../x", "a/../../x", "/etc/passwd", "a//b", ".hidden", "a/./b", "a b"):
        with pytest.raises(ValueError):
            check_key_or_raise(key)
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError):
        store.put_bytes("../escape", b"x")
    assert not (tmp_path / "escape").exists()


def test_job_params_round_trip_and_ignore_unknown_keys() -> None:
    params = JobParams(model="base", task="translate", language=None, prompt="Hi", temperature=0.4,
                       word_timestamps=True, diarize=False)
    assert JobParams.from_dict({**params.to_dict(), "future_field": 1}) == params


def test_a_webhook_whose_deliverer_was_lost_is_resumed_by_the_sweep(tmp_path: Path) -> None:
    engine = create_db_engine("", data_dir=tmp_path)
    migrate(engine)
    notified: list[str] = []
    service = JobService(store=JobStore(engine), blobs=LocalBlobStore(tmp_path / "blobs"), queue=InProcessQueue(),
                         settings=JobsSettings(data_dir=tmp_path), max_duration_s=3600, on_final=notified.append)
    with JFK.open("rb") as f:
        job, _ = service.submit(f, JobParams(model="tiny.en"), tenant_id="t", model="tiny.en",
                                idempotency_key=None, webhook_url="https://example.com/hook")
    claim = service.store.claim(job.id, worker_id="w", lease_s=60, max_attempts=3)
    assert claim.token is not None
    service.store.finish(job.id, claim.token, status="failed", retention_s=3600, error_message="x")
    assert sweep_once(service, republish=False, now=time.time()).webhooks_resumed == 0  # a deliverer may be on it
    later = time.time() + 1200  # past the idle threshold (about 11 min), before retention (1 h)
    assert sweep_once(service, republish=False, now=later).webhooks_resumed == 1 and notified == [job.id]
    service.store.record_webhook_attempt(job.id, {"attempt": 1}, status="delivered", now=later)
    assert sweep_once(service, republish=False, now=later + 1200).webhooks_resumed == 0
