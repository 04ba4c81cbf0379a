"""Parameter counts of a model config by component, from shapes alone (the meta device), and the
split between the transmitted components."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tnerv.models.base import ENCODER


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Builds modules on the meta device without running their weight initialisers: counting
    parameters needs shapes only, and initialising meta tensors costs most of a build's time."""
    skipped = {name: getattr(nn.init, name) for name in _INITIALISERS}
    try:
        for name in skipped:
            setattr(nn.init, name, _no_init)
        with torch.device("meta"):
            yield
    finally:
        for name, function in skipped.items():
            setattr(nn.init, name, function)


_INITIALISERS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_",
    "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_",
)


def _no_init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def transmitted_size(model: str, config: Any) -> dict[str, int]:
    """Parameter counts by component of a model config, built on the meta device (no memory, fast).
    Counts are remembered per config: the size solvers ask again for configs they have built before
    (widths are integers, so many scale factors give the same config)."""
    return _remembered_counts(model, config, with_encoder=True)


def transmitted_parts(model: str, config: Any) -> dict[str, int]:
    """The transmitted counts alone (decoder, grids, embeddings, transmitted; encoder 0), from the
    decoder side: what the size solvers ask for, built several times faster than the whole model."""
    return _remembered_counts(model, config, with_encoder=False)


def _remembered_counts(model: str, config: Any, with_encoder: bool) -> dict[str, int]:
    from tnerv.models.registry import create_decoder, create_model

    key = (model, with_encoder, repr(config))
    if key not in _SIZES:
        if len(_SIZES) >= _MAX_REMEMBERED:
            _SIZES.clear()
        with shapes_only():
            built = create_model(model, config) if with_encoder else create_decoder(model, config)
            _SIZES[key] = built.parameter_counts()
    return dict(_SIZES[key])


def transmitted_shapes(model: str, config: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor a decoder of this config is rebuilt from: its shape and component (meta device)."""
    from tnerv.models.registry import create_decoder

    with shapes_only():
        decoder = create_decoder(model, config)
    state = decoder.state_dict()
    return {k: (tuple(v.shape), decoder.component_of(k)) for k, v in state.items() if decoder.component_of(k) != ENCODER}


_SIZES: dict[tuple[str, bool, str], dict[str, int]] = {}
_MAX_REMEMBERED = 10_000


SPLIT_COMPONENTS = ("decoder", "grids", "embeddings")


def split_of(counts: dict[str, int]) -> dict[str, float]:
    """Each transmitted component's fraction of the transmitted total (decoder, grids, embeddings)."""
    total = counts["transmitted"] or 1
    return {k: counts[k] / total for k in SPLIT_COMPONENTS}


def format_split(counts: dict[str, int]) -> str:
    """The split as "D/G/E %", e.g. "60/16/24"."""
    return "/".join(f"{100 * v:.0f}" for v in split_of(counts).values())
