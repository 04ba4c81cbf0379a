"""The models: a registry of video INRs built from shared layers."""

from tnerv.models import nerv  # noqa: F401  (registers the model)
from tnerv.models.base import ModelConfig, VideoINR, config_to_dict
from tnerv.models.registry import (
    Preset,
    create_model,
    list_models,
    list_presets,
    load_preset,
    make_config,
    model_class,
)

__all__ = [
    "ModelConfig",
    "Preset",
    "VideoINR",
    "config_to_dict",
    "create_model",
    "list_models",
    "list_presets",
    "load_preset",
    "make_config",
    "model_class",
]
