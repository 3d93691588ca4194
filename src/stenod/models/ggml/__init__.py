"""Convert a CTranslate2 Whisper model folder into a whisper.cpp ggml model file.

Why this exists: stenod ships Whisper weights as CTranslate2 folders (for faster-whisper), but the
whisper.cpp engine needs the legacy ggml file that ``models/convert-pt-to-ggml.py`` writes. Rather
than shipping a second copy of every model (or depending on torch + the openai repo to re-convert),
we derive the ggml file from the CTranslate2 folder with numpy alone.

Pipeline (each step is a small function in one module of this package):

1. ``read_ct2_model`` (:mod:`.ct2`) parses CTranslate2's ``model.bin`` (binary versions 2..6) into
   numpy arrays, rejecting anything that is truncated, garbled or not a ``WhisperSpec`` with a
   ``GgmlConversionError`` that names the file.
2. ``whisper_hparams_from_ct2`` (:mod:`.ct2`) + ``_openai_tensors`` (:mod:`.convert`) rename
   CTranslate2 variables to the OpenAI checkpoint names whisper.cpp looks up, un-fusing q/k/v
   (self-attention) and k/v (cross-attention) and dropping CTranslate2's all-zero key bias
   (whisper.cpp has no key bias tensor).
3. ``mel_filters`` (:mod:`.assets`) recomputes librosa's Slaney mel filterbank (what whisper's
   mel_filters.npz holds); ``load_vocabulary_bytes`` turns the GPT-2 byte-level vocabulary back
   into raw bytes.
4. The writer (:mod:`.convert`) emits the ggml layout (magic, hparams, filters, vocab, tensors) in
   f16 or quantized to q8_0 / q5_0 exactly like whisper.cpp's ``quantize`` tool (ggml's ``*_ref``
   quantizers, :mod:`.quantize`).
5. ``validate_ggml_file`` (:mod:`.validate`) re-parses the result (headers only) and checks every
   tensor's type, shape and byte size against what whisper.cpp will expect (the layout in
   :mod:`.format`), and that the sizes add up to the file length, so a broken file never reaches
   whisper.cpp (which aborts the process on bad input).

CLI: ``stenod models convert SRC [--quantize f16|q8_0|q5_0] [--output OUT_FILE]``.
"""

from __future__ import annotations

from stenod.models.ggml.assets import load_vocabulary_bytes, mel_filters, sinusoids
from stenod.models.ggml.convert import convert_ct2_to_ggml
from stenod.models.ggml.ct2 import read_ct2_model, whisper_hparams_from_ct2
from stenod.models.ggml.format import GGML_FILE_MAGIC, GgmlConversionError, QuantizeType, WhisperHparams
from stenod.models.ggml.quantize import dequantize_q5_0, dequantize_q8_0, quantize_q5_0, quantize_q8_0
from stenod.models.ggml.validate import GgmlFileInfo, GgmlTensorInfo, validate_ggml_file

__all__ = [
    "GGML_FILE_MAGIC",
    "GgmlConversionError",
    "GgmlFileInfo",
    "GgmlTensorInfo",
    "QuantizeType",
    "WhisperHparams",
    "convert_ct2_to_ggml",
    "dequantize_q5_0",
    "dequantize_q8_0",
    "load_vocabulary_bytes",
    "mel_filters",
    "quantize_q5_0",
    "quantize_q8_0",
    "read_ct2_model",
    "sinusoids",
    "validate_ggml_file",
    "whisper_hparams_from_ct2",
]
