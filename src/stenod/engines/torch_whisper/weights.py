"""Whisper weights for the torch engine, from every format stenod meets, under OpenAI's names.

- a CTranslate2 folder (the bundled models, faster-whisper's hub conversions): converted on load
  with the same tensor mapping as the ggml converter (fused projections split, int8 dequantized);
- a transformers folder (``config.json`` with ``model_type: whisper`` and ``model.safetensors``);
- a whisper.cpp ggml file (f32, f16, q8_0 or q5_0 tensors, dequantized).

:func:`convert_to_hf` writes any of them as a transformers folder (``stenod models convert --to hf``),
so one set of weights serves the CPU engines, this engine and transformers' own pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from stenod.engines.torch_whisper.model import ModelDimensions
from stenod.engines.torch_whisper.tokens import SpecialTokens, WhisperTokenizer
from stenod.errors import ModelLoadError

SAFETENSORS_FILE = "model.safetensors"


# --------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------


def weights_format(path: Path) -> str:
    """``ctranslate2``, ``hf`` or ``ggml`` for a model path, or raise ModelLoadError."""
    if path.is_file():
        with path.open("rb") as f:
            if f.read(4) == b"lmgg":
                return "ggml"
        raise ModelLoadError(f"{path} is not a ggml model file")
    if (path / "model.bin").is_file():
        return "ctranslate2"
    config = path / "config.json"
    if config.is_file() and (path / SAFETENSORS_FILE).is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{config}: unreadable config.json: {exc}") from exc
        if model_type == "whisper":
            return "hf"
        raise ModelLoadError(f"{path} holds a {model_type!r} model, not Whisper")
    raise ModelLoadError(
        f"{path} is not a Whisper model folder: expected CTranslate2 (model.bin) or transformers "
        f"(config.json + {SAFETENSORS_FILE}) files, or a ggml .bin file"
    )


def dims_from_state_dict(sd: Mapping[str, np.ndarray]) -> ModelDimensions:
    """Hyper-parameters from tensor shapes; head counts are not in the shapes and come from
    ``_heads`` (every released Whisper uses 64-dimensional heads)."""
    def count(prefix: str) -> int:
        pattern = re.compile(rf"^{prefix}\.blocks\.(\d+)\.")
        return len({int(m.group(1)) for name in sd if (m := pattern.match(name))})

    conv1 = sd["encoder.conv1.weight"]
    emb = sd["decoder.token_embedding.weight"]
    n_audio_state, n_text_state = int(conv1.shape[0]), int(emb.shape[1])
    return ModelDimensions(
        n_mels=int(conv1.shape[1]),
        n_audio_ctx=int(sd["encoder.positional_embedding"].shape[0]),
        n_audio_state=n_audio_state,
        n_audio_head=n_audio_state // 64,
        n_audio_layer=count("encoder"),
        n_vocab=int(emb.shape[0]),
        n_text_ctx=int(sd["decoder.positional_embedding"].shape[0]),
        n_text_state=n_text_state,
        n_text_head=n_text_state // 64,
        n_text_layer=count("decoder"),
    )


# --------------------------------------------------------------------------------------------------
# Readers: each returns {OpenAI name: float array}
# --------------------------------------------------------------------------------------------------


def read_ct2_state_dict(path: Path) -> dict[str, np.ndarray]:
    from stenod.models.ggml.convert import _openai_tensors
    from stenod.models.ggml.ct2 import read_ct2_model, whisper_hparams_from_ct2
    from stenod.models.ggml.format import GgmlConversionError

    try:
        variables = read_ct2_model(path / "model.bin")
        hp = whisper_hparams_from_ct2(variables, path=path / "model.bin")
        sd = {name: np.asarray(array) for name, array in _openai_tensors(variables, hp, path / "model.bin")}
    except GgmlConversionError as exc:
        raise ModelLoadError(str(exc)) from exc
    for conv in ("conv1", "conv2"):  # the ggml mapping stores conv biases as (n, 1) columns
        sd[f"encoder.{conv}.bias"] = sd[f"encoder.{conv}.bias"].reshape(-1)
    return sd


_HF_LAYER_NAMES = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_HF_TOP_NAMES = {
    "model.encoder.conv1": "encoder.conv1",
    "model.encoder.conv2": "encoder.conv2",
    "model.encoder.embed_positions.weight": "encoder.positional_embedding",
    "model.encoder.layer_norm": "encoder.ln_post",
    "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "model.decoder.embed_positions.weight": "decoder.positional_embedding",
    "model.decoder.layer_norm": "decoder.ln",
}


def _hf_to_openai_name(name: str) -> str | None:
    m = re.match(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$", name)
    if m:
        stack, index, sub, kind = m.groups()
        if sub not in _HF_LAYER_NAMES:
            return None
        return f"{stack}.blocks.{index}.{_HF_LAYER_NAMES[sub]}.{kind}"
    for hf, oai in _HF_TOP_NAMES.items():
        if name == hf:
            return oai
        if name.startswith(hf + "."):
            return oai + name[len(hf) :]
    return None  # proj_out.weight: tied to the token embedding


def _openai_to_hf_name(name: str) -> str:
    m = re.match(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", name)
    if m:
        stack, index, sub, kind = m.groups()
        inverse = {v: k for k, v in _HF_LAYER_NAMES.items()}
        return f"model.{stack}.layers.{index}.{inverse[sub]}.{kind}"
    for hf, oai in _HF_TOP_NAMES.items():
        if name == oai:
            return hf
        if name.startswith(oai + "."):
            return hf + name[len(oai) :]
    raise KeyError(name)


def read_hf_state_dict(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path / SAFETENSORS_FILE))
    except Exception as exc:  # safetensors raises its own error types for truncated or bad headers
        raise ModelLoadError(f"{path / SAFETENSORS_FILE}: cannot read safetensors: {exc}") from exc
    sd: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        oai = _hf_to_openai_name(name)
        if oai is not None:
            sd[oai] = array
    return sd


def read_ggml_state_dict(path: Path) -> dict[str, np.ndarray]:
    from stenod.models.ggml.format import (
        GGML_TYPE_F16,
        GGML_TYPE_F32,
        GGML_TYPE_Q5_0,
        GGML_TYPE_Q8_0,
        GgmlConversionError,
    )
    from stenod.models.ggml.quantize import dequantize_q5_0, dequantize_q8_0
    from stenod.models.ggml.validate import validate_ggml_file

    try:
        info = validate_ggml_file(path)
    except GgmlConversionError as exc:
        raise ModelLoadError(str(exc)) from exc
    sd: dict[str, np.ndarray] = {}
    with path.open("rb") as f:
        for t in info.tensors:
            f.seek(t.data_offset)
            raw = f.read(t.nbytes)
            shape = tuple(reversed(t.ne))
            if t.ggml_type == GGML_TYPE_F32:
                array = np.frombuffer(raw, dtype="<f4").reshape(shape)
            elif t.ggml_type == GGML_TYPE_F16:
                array = np.frombuffer(raw, dtype="<f2").reshape(shape)
            elif t.ggml_type == GGML_TYPE_Q8_0:
                array = dequantize_q8_0(np.frombuffer(raw, dtype=np.uint8), shape)
            elif t.ggml_type == GGML_TYPE_Q5_0:
                array = dequantize_q5_0(np.frombuffer(raw, dtype=np.uint8), shape)
            else:
                raise ModelLoadError(f"{path}: tensor {t.name!r} has type {t.type_name}, which the torch engine cannot read")
            sd[t.name] = array
    for conv in ("conv1", "conv2"):
        sd[f"encoder.{conv}.bias"] = sd[f"encoder.{conv}.bias"].reshape(-1)
    return sd


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """OpenAI-named float arrays from any supported weight format."""
    fmt = weights_format(path)
    if fmt == "ctranslate2":
        return read_ct2_state_dict(path)
    if fmt == "hf":
        return read_hf_state_dict(path)
    return read_ggml_state_dict(path)


# --------------------------------------------------------------------------------------------------
# Token files: every format needs a tokenizer.json next to it (or a bundled one for ggml files)
# --------------------------------------------------------------------------------------------------


def find_tokenizer_json(path: Path, *, multilingual: bool) -> Path:
    """``tokenizer.json`` beside the weights, else the bundled model's one with the same vocabulary
    (ggml files carry token bytes but no BPE merges, so prompts could not be encoded)."""
    folder = path if path.is_dir() else path.parent
    if (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    fallback = _bundled_tokenizer_json(multilingual)
    if fallback is not None:
        return fallback
    raise ModelLoadError(f"no tokenizer.json next to {path}, and no bundled model to borrow one from")


def _bundled_tokenizer_json(multilingual: bool) -> Path | None:
    from stenod.models.bundled import BUNDLED_MODELS, bundled_tokenizer_path

    for name, spec in BUNDLED_MODELS.items():
        if spec.multilingual == multilingual:
            candidate = bundled_tokenizer_path(name)
            if candidate is not None:
                return candidate
    return None


# --------------------------------------------------------------------------------------------------
# transformers folder writer
# --------------------------------------------------------------------------------------------------


def hf_config(
    dims: ModelDimensions, special: SpecialTokens, *, suppress_tokens: list[int], alignment_heads: list[list[int]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """transformers' ``config.json`` and ``generation_config.json`` for these dimensions."""
    ids = {f: getattr(special, f) for f in ("eot", "sot", "translate", "transcribe", "sot_prev", "no_timestamps")}
    multilingual = bool(special.languages)
    begin_suppress = [220, ids["eot"]]
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": dims.n_vocab,
        "num_mel_bins": dims.n_mels,
        "d_model": dims.n_audio_state,
        "encoder_layers": dims.n_audio_layer,
        "encoder_attention_heads": dims.n_audio_head,
        "encoder_ffn_dim": dims.n_audio_state * 4,
        "decoder_layers": dims.n_text_layer,
        "decoder_attention_heads": dims.n_text_head,
        "decoder_ffn_dim": dims.n_text_state * 4,
        "max_source_positions": dims.n_audio_ctx,
        "max_target_positions": dims.n_text_ctx,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": ids["eot"],
        "bos_token_id": ids["eot"],
        "eos_token_id": ids["eot"],
        "decoder_start_token_id": ids["sot"],
        "use_cache": True,
        "torch_dtype": "float16",
        "dtype": "float16",
    }
    generation = {
        "decoder_start_token_id": ids["sot"],
        "bos_token_id": ids["eot"],
        "eos_token_id": ids["eot"],
        "pad_token_id": ids["eot"],
        "max_length": dims.n_text_ctx,
        "begin_suppress_tokens": begin_suppress,
        "suppress_tokens": suppress_tokens,
        "no_timestamps_token_id": ids["no_timestamps"],
        "prev_sot_token_id": ids["sot_prev"],
        "max_initial_timestamp_index": 50,
        "is_multilingual": multilingual,
        "alignment_heads": alignment_heads,
        "return_timestamps": False,
    }
    if multilingual:
        generation["lang_to_id"] = {f"<|{code}|>": tid for code, tid in special.languages.items()}
        generation["task_to_id"] = {"translate": ids["translate"], "transcribe": ids["transcribe"]}
        generation["forced_decoder_ids"] = [[1, None], [2, ids["transcribe"]]]
    else:
        generation["forced_decoder_ids"] = [[1, ids["no_timestamps"]]]
    return config, generation


PREPROCESSOR_CONFIG = {
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 80,
    "sampling_rate": 16000,
    "hop_length": 160,
    "chunk_length": 30,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "processor_class": "WhisperProcessor",
}


def _iter_hf_tensors(sd: Mapping[str, np.ndarray], dtype: np.dtype) -> Iterator[tuple[str, np.ndarray]]:
    for name, array in sd.items():
        yield _openai_to_hf_name(name), np.ascontiguousarray(array, dtype=dtype)
    # transformers' k_proj has no bias either; nothing else to add (proj_out is tied).


def convert_to_hf(src: Path, dst: Path, *, dtype: str = "float16", model_config: Mapping[str, Any] | None = None) -> Path:
    """Write the Whisper at ``src`` (CTranslate2 folder, transformers folder or ggml file) as a
    transformers folder at ``dst``: config.json, generation_config.json, model.safetensors,
    tokenizer.json and tokenizer/preprocessor configs. Written into a temporary sibling folder and
    renamed, so an interrupted conversion leaves nothing half-written under ``dst``.

    Raises:
        ModelLoadError: ``src`` is unreadable, or ``dst`` exists and is not empty.
    """
    from safetensors.numpy import save_file

    if dst.exists() and any(dst.iterdir()):
        raise ModelLoadError(f"{dst} exists and is not empty; choose a new output folder")
    sd = read_state_dict(src)
    dims = dims_from_state_dict(sd)
    multilingual = dims.n_vocab >= 51865
    tokenizer_json = find_tokenizer_json(src, multilingual=multilingual)
    special = WhisperTokenizer(tokenizer_json, multilingual=multilingual).special
    meta = dict(model_config or _ct2_config(src))
    suppress = [int(t) for t in meta.get("suppress_ids", [])]
    heads = [[int(a), int(b)] for a, b in meta.get("alignment_heads", [])]
    config, generation = hf_config(dims, special, suppress_tokens=suppress, alignment_heads=heads)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        np_dtype = np.dtype(np.float16 if dtype == "float16" else np.float32)
        save_file(dict(_iter_hf_tensors(sd, np_dtype)), str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        os.chmod(tmp / SAFETENSORS_FILE, 0o644)
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
        (tmp / "preprocessor_config.json").write_text(
            json.dumps({**PREPROCESSOR_CONFIG, "feature_size": dims.n_mels}, indent=2), encoding="utf-8"
        )
        shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
        endoftext = "<|endoftext|>"
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "WhisperTokenizer",
                    "model_max_length": 1024,
                    "bos_token": endoftext,
                    "eos_token": endoftext,
                    "unk_token": endoftext,
                    "pad_token": endoftext,
                    "add_prefix_space": False,
                    "errors": "replace",
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        (tmp / "stenod_dims.json").write_text(json.dumps(asdict(dims), indent=2), encoding="utf-8")
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _ct2_config(src: Path) -> dict[str, Any]:
    """Suppressed tokens and alignment heads: from the CTranslate2 or transformers config if there
    is one (a ggml file carries neither: then Whisper's defaults apply)."""
    folder = src if src.is_dir() else src.parent
    config = folder / "config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if "suppress_ids" in data:
        return data
    if data.get("model_type") == "whisper":
        gen = folder / "generation_config.json"
        gen_data = json.loads(gen.read_text(encoding="utf-8")) if gen.is_file() else {}
        return {
            "suppress_ids": data.get("suppress_tokens") or gen_data.get("suppress_tokens") or [],
            "alignment_heads": gen_data.get("alignment_heads") or [],
        }
    return {}


def model_metadata(path: Path) -> dict[str, Any]:
    """Suppressed token ids and alignment heads for the weights at ``path`` (may be empty)."""
    return _ct2_config(path)
