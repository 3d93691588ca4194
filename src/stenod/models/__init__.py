"""Model lookup: bundled offline weights, local folders and files, hub names."""

from stenod.models.bundled import BUNDLED_MODELS, BundledModel
from stenod.models.registry import HUB_MODELS, ModelFormat, ResolvedModel, resolve_model_or_raise

__all__ = [
    "BUNDLED_MODELS",
    "HUB_MODELS",
    "BundledModel",
    "ModelFormat",
    "ResolvedModel",
    "resolve_model_or_raise",
]
