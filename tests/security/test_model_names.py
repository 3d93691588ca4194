"""A client's ``model`` is untrusted text: only names the server offers are served, everything else
gets one 404 that says nothing about the file system, never a 500, and never a metrics label."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from stenod.models import resolve_model_or_raise
from tests.conftest import JFK, JFK_TEXT
from tests.security.inprocess import assert_error, make_app, request, upload
from tests.wer_utils import normalize

ATTACKS = [
    "/etc/passwd",
    "/root",
    "/nonexistent/dir",
    "/proc/self/environ",
    "/proc/self/mem",
    "/dev/zero",
    "x" * 300,
    "/" + "a" * 5000,
    "../../../../etc/passwd",
    "./tiny.en",
    "~/.ssh/id_rsa",
    "C:\\Windows\\win.ini",
    "tiny.en\x00/etc/passwd",
    "..",
    "org/repo",
    "Systran/faster-whisper-small",
    "small",
    "large-v3",
    "ggml-base.bin",
    "base%2F..%2F..%2Fetc%2Fpasswd",
]
LEAKS = ("magic", "folder", "exist", "permission", "directory", "denied", "errno", "input/output", "offline")


def _skeleton(message: str) -> str:
    """The message with the echoed name taken out: must be the same for every unknown name."""
    return re.sub(r"unknown model '.*'; ", "unknown model <name>; ", message, flags=re.DOTALL)


def test_every_unknown_name_gets_the_same_404_revealing_nothing(cache_dir: Path) -> None:
    app = make_app(cache_dir)
    skeletons = set()
    for name in ATTACKS:
        response = upload(app, b"not even audio", model=name)
        error = assert_error(response, 404, "model_not_found")
        assert error["param"] == "model"
        message = error["message"]
        assert not any(word in _skeleton(message).lower() for word in LEAKS), (name, message)
        assert len(message) < 200, message
        skeletons.add(_skeleton(message))
    assert skeletons == {"unknown model <name>; this server offers base, tiny.en; GET /v1/models lists them all"}
    # /v1/models/{id} answers the same way
    for name in ("/etc/passwd", "x" * 300, "small"):
        assert_error(request(app, "GET", f"/v1/models/{name}"), 404, "model_not_found")


def test_a_real_model_file_outside_the_offer_is_indistinguishable(cache_dir: Path, tmp_path: Path) -> None:
    # The oracle: a file that *is* a ggml model, a model folder, and nothing at all must look alike.
    ggml = tmp_path / "ggml-honeypot.bin"
    ggml.write_bytes(b"lmgg" + b"\x00" * 64)
    tiny = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True).path
    app = make_app(cache_dir)
    messages = {
        _skeleton(assert_error(upload(app, b"x", model=str(p)), 404, "model_not_found")["message"])
        for p in (ggml, tiny, tmp_path / "missing")
    }
    assert len(messages) == 1


def test_paths_allowed_by_the_operator_still_never_500(cache_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.bin"
    os.mkfifo(fifo)  # opening it for reading would block forever
    app = make_app(cache_dir, model={"allow_request_paths": True})
    for name in ("/proc/self/mem", "/" + "a" * 300, "/" + "a/" * 3000, "/etc/passwd", "/root", str(fifo), "/dev/zero"):
        response = upload(app, JFK.read_bytes(), filename="jfk.flac", model=name)
        assert response.status_code in (400, 404), (name, response.status_code, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_allowed_path_and_model_folder_are_served(cache_dir: Path, tmp_path: Path) -> None:
    tiny = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True).path
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "my-tiny").symlink_to(tiny, target_is_directory=True)
    (folder / "notes.txt").write_text("not a model")
    app = make_app(cache_dir, model={"name": "base", "model_dirs": [folder], "served": ["tiny.en"]})
    listed = {m["id"] for m in request(app, "GET", "/v1/models").json()["data"]}
    assert {"my-tiny", "tiny.en", "base"} <= listed and "notes.txt" not in listed

    response = upload(app, JFK.read_bytes(), filename="jfk.flac", model="my-tiny")
    assert response.status_code == 200, response.text
    assert normalize(response.json()["text"]) == normalize(JFK_TEXT)
    # Entry names only: no way out of the folder, no way to name files that are not models.
    for name in ("notes.txt", "../models/my-tiny", "my-tiny/../my-tiny", str(folder / "my-tiny")):
        assert_error(upload(app, b"x", model=name), 404, "model_not_found")


def test_hub_names_need_the_operator_setting(cache_dir: Path) -> None:
    # Offline here, so even when allowed a hub name cannot download: it must still be a clean 404.
    allowed = make_app(cache_dir, model={"allow_request_downloads": True})
    error = assert_error(upload(allowed, JFK.read_bytes(), filename="jfk.flac", model="Systran/faster-whisper-small"), 404)
    assert error["code"] == "model_not_found"


def test_metrics_label_unknown_models_as_one_value(cache_dir: Path) -> None:
    app = make_app(cache_dir, model={"allow_request_paths": True})
    for i in range(40):
        upload(app, b"x", model=f"/tmp/nope-{i}/model.bin")
        upload(app, b"x", model=f"attacker-{i}")
    text = request(app, "GET", "/metrics").text
    models = set(re.findall(r'model="([^"]*)"', text))
    assert models == {"other"}, models
    assert "attacker" not in text and "nope" not in text


@pytest.mark.parametrize("keys", [{}, {"api_keys": ["user-key"]}])
def test_load_without_an_admin_key_is_refused(cache_dir: Path, keys: dict[str, list[str]]) -> None:
    app = make_app(cache_dir, server=keys)
    headers = {"Authorization": "Bearer user-key"} if keys else {}
    error = assert_error(request(app, "POST", "/load", data={"model": "base"}, headers=headers), 403, "permission_denied")
    assert "admin" in error["message"]
    assert request(app, "GET", "/health").json()["default_model"] == "tiny.en"


def test_load_with_wrong_or_missing_key_is_401_with_www_authenticate(cache_dir: Path) -> None:
    app = make_app(cache_dir, server={"api_keys": ["user-key"], "admin_api_keys": ["admin-key"]})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = request(app, "POST", "/load", data={"model": "base"}, headers=headers)
        assert_error(response, 401, "invalid_api_key")
        assert response.headers["www-authenticate"].startswith("Bearer")
    response = upload(app, b"x", model="tiny.en")
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")


def test_admin_key_loads_and_is_also_an_api_key(cache_dir: Path) -> None:
    app = make_app(cache_dir, server={"api_keys": ["user-key"], "admin_api_keys": ["admin-key"]})
    admin = {"Authorization": "Bearer admin-key"}
    response = request(app, "POST", "/load", data={"model": "tiny.en"}, headers=admin)
    assert response.status_code == 200, response.text
    response = upload(app, JFK.read_bytes(), filename="jfk.flac", headers=admin, model="whisper-1")
    assert response.status_code == 200, response.text
