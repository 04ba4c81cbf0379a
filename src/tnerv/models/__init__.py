"""The models: a registry of video INRs built from shared layers."""

from tnerv.models import nerv  # noqa: F401  (registers the model)
from tnerv.models import cnerv  # noqa: F401  (registers the model)
from tnerv.models import dnerv  # noqa: F401  (registers the model)
from tnerv.models import enerv  # noqa: F401  (registers the model)
from tnerv.models import ffnerv  # noqa: F401  (registers the model)
from tnerv.models import hnerv  # noqa: F401  (registers the model)
from tnerv.models import hinerv  # noqa: F401  (registers the model)
from tnerv.models import tnerv  # noqa: F401  (registers the model)
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
