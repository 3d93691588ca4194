"""The job database going away under a running API server (PostgreSQL restarting, a failover, a
network cut): every request that needs it gets a 503 in the API's error shape with Retry-After,
never a 500; nothing is half-written; and the server recovers by itself when the database is back.

The outage is real: the server reaches the machine's PostgreSQL through a TCP proxy in this
process, and the test cuts every connection and refuses new ones, then lets them through again.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import sqlalchemy as sa

from stenod.storage.key_store import KeyStore
from stenod.storage.sql import create_db_engine, migrate
from tests.api.fakes import FakeEngines, app_client, fake_settings
from tests.conftest import JFK
from tests.services import postgres_database

KEY = "sk-outage-test"


class TcpProxy:
    """127.0.0.1:<port> -> target; ``cut()`` drops every connection and refuses new ones (the
    listening socket closes: connection refused), ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        try:  # wakes the thread blocked in accept(); close() alone would leave the port listening
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def database_behind_proxy() -> Iterator[tuple[str, TcpProxy]]:
    """(URL through the proxy, proxy) for a fresh database, migrated through a direct connection."""
    with postgres_database() as url:
        direct = create_db_engine(url, data_dir=Path("."))
        migrate(direct)
        direct.dispose()
        proxy = TcpProxy(("127.0.0.1", sa.make_url(url).port or 5432))
        try:
            yield url.replace(f":{sa.make_url(url).port or 5432}/", f":{proxy.port}/"), proxy
        finally:
            proxy.cut()


def _audio_blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()] if (data_dir / "blobs").exists() else []


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert int(response.headers["Retry-After"]) >= 1


def test_a_database_outage_is_a_503_and_the_server_recovers(
    database_behind_proxy: tuple[str, TcpProxy], cache_dir: Path, tmp_path: Path
) -> None:
    url, proxy = database_behind_proxy
    settings = fake_settings(cache_dir, tmp_path, server={"api_keys": [KEY]},
                             jobs={"enabled": True, "database_url": url, "workers": 0})
    auth = {"Authorization": f"Bearer {KEY}"}

    async def scenario() -> None:
        with anyio.fail_after(120):
            await outage_and_back()

    async def outage_and_back() -> None:
        async with app_client(settings, FakeEngines()) as (client, _):
            async def submit() -> httpx.Response:
                return await client.post("/v1/jobs", files={"file": ("jfk.flac", JFK.read_bytes())}, headers=auth)

            first = await submit()
            assert first.status_code == 202, first.text
            job_id = first.json()["id"]
            blobs_before = _audio_blobs(tmp_path / "jobs")

            proxy.cut()
            _assert_unavailable(await submit())
            _assert_unavailable(await client.get(f"/v1/jobs/{job_id}", headers=auth))
            _assert_unavailable(await client.get("/v1/jobs", headers=auth))
            assert _audio_blobs(tmp_path / "jobs") == blobs_before  # the refused upload left no audio behind
            assert (await client.get("/health")).status_code in (200, 503)  # answers, never hangs or 500s

            proxy.restore()
            back = await client.get(f"/v1/jobs/{job_id}", headers=auth)
            assert back.status_code == 200, back.text
            listed = (await client.get("/v1/jobs", headers=auth)).json()["data"]
            assert [j["id"] for j in listed] == [job_id]  # nothing half-written, nothing lost
            again = await submit()
            assert again.status_code == 202, again.text

    anyio.run(scenario)


def test_stored_keys_during_a_database_outage_get_503_not_401_or_500(
    database_behind_proxy: tuple[str, TcpProxy], cache_dir: Path, tmp_path: Path
) -> None:
    """With keys in the database, an outage must not look like a bad key (401) to the client."""
    url, proxy = database_behind_proxy
    engine = create_db_engine(url, data_dir=Path("."))
    _, secret = KeyStore(engine).create("outage")
    settings = fake_settings(cache_dir, tmp_path, server={"key_store": True, "protect_metrics": True},
                             jobs={"enabled": True, "database_url": url, "workers": 0})
    auth = {"Authorization": f"Bearer {secret}"}

    async def scenario() -> None:
        async with app_client(settings, FakeEngines()) as (client, _):
            assert (await client.get("/v1/models", headers=auth)).status_code == 200
            proxy.cut()
            _assert_unavailable(await client.get("/v1/models", headers=auth))
            _assert_unavailable(await client.get("/metrics", headers=auth))  # the middleware's key check too
            proxy.restore()
            assert (await client.get("/v1/models", headers=auth)).status_code == 200

    try:
        anyio.run(scenario)
    finally:
        engine.dispose()
