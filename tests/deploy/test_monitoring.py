"""deploy/monitoring/: the real Prometheus (Debian package) scrapes a live `stenod serve` with the
shipped scrape config and evaluates the shipped alert rules; promtool checks and unit-tests the
rules; every metric named in the rules and the Grafana dashboard exists in the live /metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import ServerProcess, free_port, start_server
from tests.conftest import JFK
from tests.deploy.conftest import DEPLOY, tool_or_skip
from tests.services import ManagedProcess

MONITORING = DEPLOY / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "stenod.json"
# Series Prometheus makes itself, not stenod.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# Grafana's variables, replaced by what Grafana would put there before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    for var in dash["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"]["query"])
        assert match, f"dashboard variable {var['name']}: unexpected query {var['query']}"
        exprs.append(match.group(1))
    out = []
    for expr in exprs:
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        out.append(expr)
    return out


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects, from the real PromQL grammar (promql-parser)."""
    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"selector without a metric name in {expr}"
            names.add(name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[ServerProcess]:
    """A stenod that has served one transcription and refused one bad upload, so every labelled
    series has a sample."""
    server = start_server(tmp_path_factory.mktemp("monitored"), cache_dir, "--model", "tiny.en", "--slots", "1")
    with JFK.open("rb") as f:
        ok = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("jfk.flac", f)}, timeout=120)
    assert ok.status_code == 200, ok.text
    bad = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("x.wav", b"not audio")}, timeout=60)
    assert bad.status_code == 415
    yield server
    server.stop()


SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def live_sample_names(server: ServerProcess) -> set[str]:
    """Series names the live server exports: its samples, plus the series of families it declares
    (# TYPE) that have no sample yet, such as a labelled counter nothing has incremented."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ())}
    return names


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def query(self, expr: str) -> list[dict[str, object]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, live_server: ServerProcess) -> Iterator[Prometheus]:
    binary = tool_or_skip("prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        # The one change: DNS discovery of the compose service becomes the live loopback server.
        assert "dns_sd_configs" in job, job
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{live_server.port}"]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(MONITORING / "alerts.yml", folder / "alerts.yml")
    port = free_port()
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for(lambda: httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200, proc, log_path, "ready")
        yield prom
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for(check: object, proc: subprocess.Popen[bytes], log_path: Path, what: str, timeout_s: float = 90) -> None:
    """Poll ``check`` (a callable returning bool) until true; generous deadline against a hang."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited:\n{log_path.read_text()}"
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.TransportError, KeyError, IndexError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"prometheus: not {what} in {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = tool_or_skip("promtool")
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "alerts-test.yml"]):
        run = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True, text=True)
        assert run.returncode == 0, f"promtool {' '.join(args)}:\n{run.stdout}\n{run.stderr}"
    # Every alert has a unit test that expects it to fire.
    tested = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", (MONITORING / "alerts-test.yml").read_text()))
    assert {str(r["alert"]) for r in alert_rules()} <= tested


def test_every_metric_in_rules_and_dashboard_exists_in_the_live_metrics(live_server: ServerProcess) -> None:
    live = live_sample_names(live_server)
    exprs = [str(r["expr"]) for r in alert_rules()] + dashboard_expressions()
    assert len(exprs) > 20
    named: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        missing = names - live - PROMETHEUS_SERIES
        assert not missing, f"{expr!r} uses {sorted(missing)}, not in the live /metrics"
        named |= names
    # Nothing stenod exports is left off the dashboard and rules.
    text = httpx.get(f"{live_server.url}/metrics", timeout=10).text
    exported = {f.name for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}
    covered = named | {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in named}
    assert exported - covered == set()


def test_prometheus_scrapes_the_live_server_and_evaluates_every_rule(prometheus: Prometheus, live_server: ServerProcess) -> None:
    def scraped() -> bool:
        return bool(prometheus.query('stenod_slots_total{job="stenod-api"}'))

    wait_for(scraped, prometheus.proc, prometheus.log_path, "scraping stenod")
    assert prometheus.query('up{job="stenod-api"}')[0]["value"][1] == "1"  # type: ignore[index]
    assert prometheus.query('stenod_slots_total{job="stenod-api"}')[0]["value"][1] == "1"  # type: ignore[index]
    served = prometheus.query('sum(stenod_requests_total{job="stenod-api"})')[0]["value"][1]  # type: ignore[index]
    assert float(served) == 2  # the transcription and the refused upload
    # Jobs run in-process here (no broker): one worker, the SQLite store reachable, nothing queued.
    assert prometheus.query("stenod_jobs_workers")[0]["value"][1] == "1"  # type: ignore[index]
    assert prometheus.query("stenod_jobs_store_up")[0]["value"][1] == "1"  # type: ignore[index]
    assert prometheus.query("stenod_jobs_queue_depth")[0]["value"][1] == "0"  # type: ignore[index]

    def evaluated() -> bool:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == len(alert_rules()) and all(r["health"] == "ok" for r in rules)

    wait_for(evaluated, prometheus.proc, prometheus.log_path, "evaluating the rules")
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {r["name"] for g in groups for r in g["rules"]} == {r["alert"] for r in alert_rules()}
    # A healthy server fires nothing.
    firing = [r["name"] for g in groups for r in g["rules"] if r["state"] != "inactive"]
    assert firing == []
    # Each dashboard query is accepted by the real query engine.
    for expr in dashboard_expressions():
        prometheus.query(expr)


def test_a_server_that_cannot_load_its_model_is_visible_to_the_alerts(tmp_path: Path, cache_dir: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"junk")
    (broken / "config.json").write_text("{}")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stenod", "serve", "--model", str(broken), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env={**os.environ, "STENOD_MODEL__CACHE_DIR": str(cache_dir), "STENOD_JOBS__DATA_DIR": str(tmp_path / "data")},
    )
    try:
        def failed() -> bool:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            return "stenod_model_load_failures_total 1.0" in text

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if failed():
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "stenod_model_load_failures_total 1.0" in text
        assert "stenod_default_model_loaded 0.0" in text
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 503
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def job_gauges(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (s.name + (f"{{{s.labels['status']}}}" if "status" in s.labels else "")): s.value
        for family in text_string_to_metric_families(text) if family.name.startswith("stenod_jobs")
        for s in family.samples
    }


def test_job_metrics_read_the_broker_and_the_store(tmp_path: Path, cache_dir: Path, s3_server: ManagedProcess) -> None:
    """The production topology (API + PostgreSQL + Redis + S3 on moto) with no worker yet: jobs
    wait and nobody takes them, which is what StenodNoJobWorkers looks for."""
    from tests.jobs.stack import job_stack

    with job_stack("celery-redis", tmp_path, cache_dir, workers=0, moto=s3_server) as stack:
        for _ in range(2):
            assert stack.submit().status_code == 202
        gauges = job_gauges(stack.url)
        assert gauges["stenod_jobs_queue_depth"] == 2  # read from Redis
        assert gauges["stenod_jobs{queued}"] == 2  # read from PostgreSQL
        assert gauges["stenod_jobs_workers"] == 0
        assert gauges["stenod_jobs_store_up"] == 1


@pytest.mark.slow
def test_job_metrics_follow_the_workers(tmp_path: Path, cache_dir: Path, s3_server: ManagedProcess) -> None:
    """Then a real `stenod worker` running two jobs at once drains the queue and is counted as 2."""
    from tests.jobs.stack import job_stack

    with job_stack("celery-redis", tmp_path, cache_dir, workers=0, moto=s3_server) as stack:
        ids = [stack.submit().json()["id"] for _ in range(2)]
        stack.start_worker(concurrency=2)
        stack.wait_for_workers(1)
        for job_id in ids:
            assert stack.wait(job_id)["status"] == "completed"
        gauges = job_gauges(stack.url)
        assert gauges["stenod_jobs_workers"] == 2
        assert gauges["stenod_jobs_queue_depth"] == 0
        assert gauges["stenod_jobs{queued}"] == 0 and gauges["stenod_jobs{processing}"] == 0
