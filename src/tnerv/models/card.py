"""What the rest of tnerv knows of a model by its name: how the benches show it and which preset is
its paper-scale config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Display:
    """How a method is shown: its name in tables and figures, its colour and its marker."""

    label: str  # as the paper's tables spell it
    colour: str  # a matplotlib colour, the method's own in every figure
    marker: str  # a matplotlib marker, likewise its own


@dataclass(frozen=True)
class ModelCard(Display):
    """A model's facts beyond its architecture, kept on its class (`card`) in its model file, so that
    adding a model touches that file, its presets and the import that registers it."""

    reference_preset: str  # its paper-scale config, which the settings rescale (tnerv.models.budget.setting_config)
    # Content-aware models (supplementary C.2): the per-frame embeddings' shape follows the frame size
    # alone and the settings give the decoder what they leave of the budget, instead of keeping the split.
    content_aware: bool = False
    # Where the model departs from a paper setting's common geometry (tnerv.models.settings): per setting,
    # the config fields it takes there (strides, DNeRV's fusion point, HiNeRV's patches), or "preset": a
    # published config that the setting names, used as it is.
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
