"""What the rest of tnerv knows of a model by its name: how the benches show it and which preset is
its paper-scale config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Display:
    """How a method is shown: its name in tables and figures, its colour and its marker."""

    label: str  # as the paper's tables spell it
    colour: str  # a matplotlib colour, the method's own in every figure
    marker: str  # a matplotlib marker, likewise its own


@dataclass(frozen=True)
class ModelCard(Display):
    """A model's facts beyond its architecture, kept on its class (`card`) in its model file, so that
    adding a model touches that file and its presets only."""

    reference_preset: str  # its paper-scale config, which the settings rescale (tnerv.models.budget.setting_config)
    # Content-aware models (supplementary C.2): the per-frame embeddings' shape follows the frame size
    # alone and the settings give the decoder what they leave of the budget, instead of keeping the split.
    content_aware: bool = False
