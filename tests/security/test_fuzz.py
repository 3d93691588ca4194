"""Fuzzing: hypothesis on the decode path (mutated WAV/FLAC/Ogg files and random bytes must decode
or raise one of stenod's own errors, never anything else), schemathesis against the OpenAPI
schema (no input gives a 5xx), and the hostile-upload set of issue 16 against a real server: a
200 requests by default, the full 1,000+ under ``-m slow`` (the hypothesis tests likewise run a
quarter of their examples by default and all of them under ``-m slow``)."""

from __future__ import annotations

import concurrent.futures
import io
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from stenod.audio.chunking import quiet_chunks
from stenod.audio.decode import AudioStream, decode_audio
from stenod.errors import AudioDecodeError, StenodError
from tests.api.conftest import ServerProcess, start_server
from tests.conftest import JFK
from tests.media import write_wav


def _encoded(fmt: str, codec: str, seconds: float = 1.5, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        t = np.arange(int(seconds * rate)) / rate
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _wav(tmp: Path) -> bytes:
    rng = np.random.default_rng(0)
    return write_wav(tmp / "seed.wav", (0.2 * rng.standard_normal(8000)).astype(np.float32)).read_bytes()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    tmp = tmp_path_factory.mktemp("seeds")
    return [_wav(tmp), _encoded("flac", "flac"), _encoded("ogg", "libopus", rate=48_000), JFK.read_bytes()[:60_000]]


def _decode_or_stenod_error(data: bytes) -> None:
    source = io.BytesIO(data)
    source.name = "fuzz.bin"  # type: ignore[attr-defined]
    try:
        audio = decode_audio(source, max_duration_s=600)
    except StenodError:
        return
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1 and len(audio.samples) > 0
    assert np.all(np.isfinite(audio.samples))


mutation = st.lists(st.tuples(st.integers(min_value=0, max_value=2**20), st.integers(min_value=0, max_value=255)),
                    min_size=1, max_size=12)


def default_and_slow(body: Callable[..., None], strategies: dict[str, st.SearchStrategy[Any]], examples: int,
                     slow_examples: int, **kwargs: Any) -> tuple[Callable[..., None], Callable[..., None]]:
    """``body`` as two hypothesis tests with the same strategies and checks: ``examples`` in the
    default suite, the full ``slow_examples`` in a copy marked slow."""
    fast = settings(max_examples=examples, deadline=None, **kwargs)(given(**strategies)(body))
    full = settings(max_examples=slow_examples, deadline=None, **kwargs)(given(**strategies)(body))
    return fast, pytest.mark.slow(full)


def _mutated_audio(seeds: list[bytes], index: int, edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(seeds[index])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _decode_or_stenod_error(bytes(data))


test_mutated_audio_decodes_or_fails_cleanly, test_mutated_audio_full_run = default_and_slow(
    _mutated_audio,
    {"index": st.integers(min_value=0, max_value=3), "edits": mutation, "cut": st.one_of(st.none(), st.integers(0, 2**20))},
    25, 100, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _random_bytes(data: bytes, header: bytes) -> None:
    _decode_or_stenod_error(header + data)


test_random_bytes_behind_real_magic_numbers, test_random_bytes_full_run = default_and_slow(
    _random_bytes,
    {"data": st.binary(max_size=4096),
     "header": st.sampled_from([b"", b"RIFF\xff\xff\xff\xffWAVEfmt ", b"fLaC", b"OggS", b"ID3\x04", b"\x1aE\xdf\xa3",
                                b"\x00\x00\x00\x20ftypM4A "])},
    25, 100)


def _streamed_chunks_join(seconds: float, chunk_s: float, block: int) -> None:
    signal = np.random.default_rng(3).standard_normal(max(1, int(seconds * 16_000))).astype(np.float32)
    blocks = [signal[None, i : i + block] for i in range(0, len(signal), block)]
    chunks = list(quiet_chunks(blocks, chunk_s=chunk_s, search_s=chunk_s / 3))
    assert np.array_equal(np.concatenate([c.pcm for c in chunks], axis=-1)[0], signal)
    assert all(c.pcm.shape[-1] <= int(chunk_s * 16_000) for c in chunks[:-1]) and chunks[-1].last


test_streamed_chunks_always_join_to_the_whole, test_streamed_chunks_full_run = default_and_slow(
    _streamed_chunks_join,
    {"seconds": st.floats(min_value=0.01, max_value=12), "chunk_s": st.floats(min_value=1, max_value=5),
     "block": st.integers(min_value=1, max_value=9000)},
    15, 60)


def test_unknown_codec_is_415_not_500(cache_dir: Path) -> None:
    """Found by the fuzz run above: a WAV whose format tag FFmpeg knows no decoder for has no
    codec context in PyAV, and reading it crashed the request (500)."""
    from tests.security.inprocess import assert_error, make_app, upload

    pcm = np.zeros(16_000, dtype=np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16_000, 32_000, 2, 16)
    wav = (b"RIFF" + struct.pack("<I", 20 + len(fmt) + len(pcm)) + b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
           + b"data" + struct.pack("<I", len(pcm)) + pcm)
    with pytest.raises(AudioDecodeError, match="unknown or unsupported codec"):
        decode_audio(io.BytesIO(wav))
    error = assert_error(upload(make_app(cache_dir), wav, filename="odd.wav", model="whisper-1"), 415, "invalid_audio")
    assert "unsupported codec" in error["message"]


def test_stream_and_whole_decode_agree(seeds: list[bytes]) -> None:
    for data in seeds:
        try:
            whole = decode_audio(io.BytesIO(data))
        except StenodError as exc:  # the cut-off JFK seed: the stream must fail the same way
            with pytest.raises(type(exc)), AudioStream(io.BytesIO(data)) as stream:
                list(stream.blocks())
            continue
        with AudioStream(io.BytesIO(data)) as stream:
            streamed = np.concatenate(list(stream.blocks()), axis=-1)[0]
        assert np.array_equal(whole.samples, streamed)


# -- schemathesis against the OpenAPI schema, in-process -------------------------------------------

def _openapi() -> dict[str, object]:
    """The schema, read at import (schemathesis parametrizes at collection) from an app that is
    never served; the cases run against the real server of ``hostile_server``."""
    import os
    import tempfile

    from stenod.api.app import create_app
    from stenod.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="stenod-fuzz-"))
    cache = Path(os.environ.get("STENOD_TEST_CACHE_DIR") or root / "cache")
    app = create_app(Settings(model={"name": "tiny.en", "cache_dir": cache}, server={"slots": 1, "preload": False},
                              jobs={"data_dir": root / "jobs"}))
    return app.openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error(case, hostile_server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=hostile_server.url, checks=[not_a_server_error], timeout=120)


# -- the hostile-upload set, against a real server -------------------------------------------------

def hostile_uploads(n: int, seed_files: list[bytes]) -> Iterator[dict[str, object]]:
    """Requests a hostile client sends: malformed multipart, wrong fields, corrupt and huge-looking
    audio, odd models, languages and formats."""
    rng = random.Random(16)
    models = ["whisper-1", "/etc/passwd", "/proc/self/mem", "x" * 300, "../../x", "org/repo", "tiny.en\x00", ""]
    formats = ["json", "text", "srt", "vtt", "verbose_json", "xml", "", "json" * 100]
    languages = ["en", "xx", "", "e" * 200, "../", "auto"]
    for i in range(n):
        kind = i % 8
        seed = bytearray(seed_files[i % len(seed_files)])
        for _ in range(rng.randint(0, 20)):
            seed[rng.randrange(len(seed))] = rng.randrange(256)
        data: dict[str, str] = {"model": rng.choice(models), "response_format": rng.choice(formats)}
        if kind == 0:
            yield {"content": bytes(rng.randrange(256) for _ in range(rng.randint(0, 2048))),
                   "headers": {"Content-Type": "multipart/form-data; boundary=zz"}}
        elif kind == 1:
            yield {"files": {"file": ("x.wav", bytes(seed[: rng.randint(0, len(seed))]))}, "data": data}
        elif kind == 2:
            yield {"files": {"file": ("x.wav", b"")}, "data": data}
        elif kind == 3:
            yield {"files": {"nofile": ("x.wav", bytes(seed))}, "data": data}
        elif kind == 4:
            yield {"files": {"file": ("x.flac", bytes(seed))},
                   "data": {**data, "language": rng.choice(languages), "temperature": rng.choice(["-1", "9", "nan", "x"])}}
        elif kind == 5:
            yield {"files": {"file": ("a" * 5000 + ".wav", bytes(seed))}, "data": data}
        elif kind == 6:
            yield {"files": {"file": ("x.wav", bytes(seed))},
                   "data": {**data, "timestamp_granularities[]": rng.choice(["word", "char", ""]), "stream": "maybe"}}
        else:
            yield {"content": b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n" + bytes(seed),
                   "headers": {"Content-Type": "multipart/form-data; boundary=zz"}}


def _run_hostile(srv: ServerProcess, n: int, seed_files: list[bytes]) -> dict[int, int]:
    def send(req: dict[str, object]) -> int:
        endpoint = random.choice(["/v1/audio/transcriptions", "/v1/audio/translations", "/inference"])
        try:
            r = httpx.post(f"{srv.url}{endpoint}", timeout=120, **req)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise AssertionError(f"transport error {exc!r}") from exc
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, hostile_uploads(n, seed_files)))
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("hostile")
    srv = start_server(tmp, cache_dir, "--model", "tiny.en", "--slots", "2", "--queue-size", "64",
                       env={"STENOD_AUDIO__MAX_FILE_MB": "2", "STENOD_AUDIO__MAX_DURATION_S": "120",
                            "STENOD_JOBS__DATA_DIR": str(tmp / "jobs")})
    yield srv
    srv.stop()


def _check_hostile(srv: ServerProcess, n: int, seeds: list[bytes]) -> None:
    counts = _run_hostile(srv, n, seeds)
    assert sum(counts.values()) == n
    assert not [s for s in counts if s >= 500], counts
    assert srv.proc.poll() is None
    health = httpx.get(f"{srv.url}/health", timeout=30)
    assert health.status_code == 200
    metrics = httpx.get(f"{srv.url}/metrics", timeout=30).text
    assert "/etc/passwd" not in metrics and "xxxxxxxx" not in metrics


def test_hostile_uploads_get_clean_4xx(hostile_server: ServerProcess, seeds: list[bytes]) -> None:
    _check_hostile(hostile_server, 200, seeds)


@pytest.mark.slow
def test_hostile_uploads_full_run(hostile_server: ServerProcess, seeds: list[bytes]) -> None:
    _check_hostile(hostile_server, 1200, seeds)
