"""Model lookup: bundled offline weights, local folders and files, hub names; what ``models list``
shows; CTranslate2 -> ggml conversion and its cache."""

from stenod.models.bundled import BUNDLED_MODELS, BundledModel
from stenod.models.catalog import ModelEntry, list_models, model_entry
from stenod.models.ggml import GgmlConversionError, GgmlFileInfo, QuantizeType, convert_ct2_to_ggml, validate_ggml_file
from stenod.models.ggml_cache import GGML_QUANTIZATIONS, ensure_ggml_model_or_raise, is_ggml_quantization
from stenod.models.registry import HUB_MODELS, ModelFormat, ResolvedModel, resolve_model_or_raise

__all__ = [
    "BUNDLED_MODELS",
    "GGML_QUANTIZATIONS",
    "HUB_MODELS",
    "BundledModel",
    "GgmlConversionError",
    "GgmlFileInfo",
    "ModelEntry",
    "ModelFormat",
    "QuantizeType",
    "ResolvedModel",
    "convert_ct2_to_ggml",
    "ensure_ggml_model_or_raise",
    "is_ggml_quantization",
    "list_models",
    "model_entry",
    "resolve_model_or_raise",
    "validate_ggml_file",
]
