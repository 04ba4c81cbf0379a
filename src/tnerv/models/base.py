"""The contract every video INR in tnerv follows, so that training, codec and benchmarks never
branch on model names."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tnerv.errors import TnervError, short_repr
from tnerv.models.card import ModelCard

# The parts of a model. Transmitted components are what a decoder needs and count in its size.
TRANSMITTED_COMPONENTS = ("decoder", "grids", "embeddings")
ENCODER = "encoder"
# Frames per batch when a model encodes or decodes on its own (embeddings, the training buffer).
INTERNAL_BATCH = 8

FrameSource = Callable[[Tensor], Tensor]
"""Maps frame indices (B,) to frames (B, 3, H, W) float in [0, 1]; content-adaptive models need it."""

PassProgress = Callable[[int, int], None]
"""Told (frames done, frames in all) after each chunk of a pass that a model makes over the video before training."""


@dataclass(frozen=True)
class TrainingStage:
    """A part of a fit with an optimiser of its own (fresh moments) and its own learning-rate schedule:
    the first stage follows the training config's warm-up and schedule over its own steps, each later
    one the same schedule without warm-up, its rate scaled by `lr_scale` (HiNeRV's pruning and
    quantisation-aware fine-tuning). A fit has one stage unless the model says otherwise."""

    name: str
    epochs: int
    lr_scale: float = 1.0


@dataclass
class ModelConfig:
    """Fields every model has: the geometry of the video it represents."""

    height: int = 720
    width: int = 1280
    num_frames: int = 600

    def follow_frames(self, reference: ModelConfig, given: Collection[str]) -> ModelConfig:
        """This config, moved from `reference` to another frame size and count (`strides.with_geometry`),
        with its own fields that follow them changed in the reference's relation, except the fields
        `given` explicitly (a setting's geometry). The base config has none."""
        return self


def config_from_dict(cls: type[ModelConfig], values: dict[str, Any], model: str = "") -> ModelConfig:
    """Builds a config dataclass from plain data (TOML, JSON), rejecting unknown fields by name."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TnervError(
            f"unknown config field {unknown[0]!r} for model {model or cls.__name__} "
            f"(known fields: {', '.join(sorted(known))})"
        )
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k]) for k, v in values.items()})


# Bounds that no real config comes near, so that a config from an untrusted file (or a typo) is
# refused before anything is built: counts of layers (blocks, stages; published configs have at
# most 7), any other number, the length of a list or a name.
MAX_LAYER_COUNT = 64
MAX_FIELD_VALUE = 1 << 24
MAX_LIST_LENGTH = 64
# Integer fields that may be negative: FFNeRV/T-NeRV's aggregation window (frame offsets) and block
# indices counted from the end.
SIGNED_FIELDS = frozenset({"window", "flow_head_block", "fusion_block"})


def check_config(config: ModelConfig, model: str = "") -> None:
    """Refuses a config field of the wrong type or out of all reason (TnervError naming the field)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        problem = _field_problem(f.name, value, hints[f.name])
        if problem:
            raise TnervError(f"config field {f.name!r} of {model or type(config).__name__}: {problem}")


def _field_problem(name: str, value: Any, hint: Any) -> str | None:
    if not _matches(value, hint):
        return f"{short_repr(value)} is not of type {_hint_name(hint)}"
    numbers = [v for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, int | float)]
    if any(abs(v) > MAX_FIELD_VALUE for v in numbers):
        return f"at most {MAX_FIELD_VALUE:,} in size, got {short_repr(value)}"
    if name in ("height", "width", "num_frames") and value < 1:
        return f"must be at least 1, got {value}"
    if name not in SIGNED_FIELDS and any(v < 0 for v in numbers):
        return f"must not be negative, got {short_repr(value)}"
    if name.endswith(("blocks", "stages")) and any(v > MAX_LAYER_COUNT for v in numbers):
        return f"at most {MAX_LAYER_COUNT} layers, got {short_repr(value)}"
    return None


def _matches(value: Any, hint: Any) -> bool:
    """Whether plain data fits a config field's type hint (int, float, bool, str, tuples, unions)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str) and len(value) <= MAX_LIST_LENGTH
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple) or len(value) > MAX_LIST_LENGTH:
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    return False


def _hint_name(hint: Any) -> str:
    return str(hint).replace("<class '", "").replace("'>", "").replace("typing.", "")


def _coerce(value: Any, hint: Any) -> Any:
    """TOML and JSON give lists where configs hold tuples; convert so configs compare equal."""
    if isinstance(value, list):
        return tuple(_coerce(v, None) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and hint is float:
        return float(value)
    if isinstance(hint, types.UnionType) and float in hint.__args__ and isinstance(value, int):
        return float(value) if int not in hint.__args__ else value
    return value


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Plain, JSON-serialisable data for a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


class VideoINR(nn.Module):
    """Base class of every model: maps frame indices (and, for content-adaptive models, frames)
    to reconstructed frames."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    card: ClassVar[ModelCard]  # its label, colour, marker and paper-scale preset (every model has one)
    # Content-adaptive models (HNeRV, DNeRV, T-NeRV) read the frames through an encoder.
    needs_frames: ClassVar[bool] = False
    # Parameter-name prefixes of each component; anything unlisted belongs to the decoder.
    component_prefixes: ClassVar[dict[str, tuple[str, ...]]] = {}
    # The model's reference training recipe; fields of tnerv.train.TrainConfig.
    train_defaults: ClassVar[dict[str, Any]] = {}
    # Transmitted tensors that the model computes rather than learns directly (e.g. frame embeddings
    # from an encoder); they pass through `latent()` so that compression can quantise them.
    latent_names: ClassVar[tuple[str, ...]] = ()
    # How `tnerv encode` compresses the model: "post-training" (n-bit quantisation per component, then
    # entropy coding) or "entropy-constrained" (learned quantisers and densities, rate in the loss).
    compression: ClassVar[str] = "post-training"
    post_training_bits: ClassVar[dict[str, int]] = {"decoder": 8, "grids": 8, "embeddings": 8}
    post_training_prune: ClassVar[float] = 0.0  # fraction of decoder weights pruned by magnitude
    post_training_qat: ClassVar[bool] = False  # quantisation-aware fine-tuning in the last epochs
    # Parameter-name prefixes that magnitude pruning leaves alone besides grids and embeddings (HiNeRV's
    # positional encoders, as its code has it).
    pruning_excludes: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> VideoINR:
        # The constructor's arguments, kept for `fresh_copy` (tnerv.train.fit replays a build's draws).
        model = super().__new__(cls)
        model.__dict__["_built_with"] = (args, kwargs)
        return model

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def fresh_copy(self, num_frames: int | None = None) -> VideoINR:
        """A new, untrained model built as this one was (same class and arguments; a wrapped model is
        rebuilt first, as it was): its construction draws the same random numbers this one's did. With
        `num_frames`, its config is for that many frames instead (a short trial on a few frames)."""
        args, kwargs = self.__dict__["_built_with"]

        def rebuilt(value: Any) -> Any:
            if isinstance(value, VideoINR):
                return value.fresh_copy(num_frames)
            if num_frames is not None and isinstance(value, ModelConfig):
                return dataclasses.replace(value, num_frames=num_frames)
            return value

        return type(self)(*map(rebuilt, args), **{k: rebuilt(v) for k, v in kwargs.items()})

    def normalized_time(self, frame_idx: Tensor) -> Tensor:
        """Frame index to t = i / N, the convention of NeRV, HNeRV and FFNeRV, used by every model."""
        return frame_idx.float() / self.config.num_frames

    def forward(self, frame_idx: Tensor, frames: Tensor | None = None) -> dict[str, Tensor]:
        """Returns at least {"output": (B, 3, H, W) in [0, 1]} for a batch of frame indices."""
        raise NotImplementedError

    def training_loss(
        self, outputs: dict[str, Tensor], target: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        """The training objective; models with auxiliary outputs weight them in here."""
        return loss_fn(outputs["output"], target)

    def attach_video(self, frames: FrameSource) -> None:
        """Called by `fit` before training starts or resumes, with the video being fitted (models
        whose encoders read other frames than the batch's keep a reference)."""

    def on_fit_start(self, frame_idx: Tensor, frames: FrameSource, progress: PassProgress | None = None) -> None:
        """Called once before the first epoch (models with state derived from the video use it); a pass over
        the video tells `progress` after each chunk."""

    def after_step(self, frame_idx: Tensor, outputs: dict[str, Tensor]) -> None:
        """Called after each optimiser step (models with per-frame buffers update them here)."""

    def training_items(self) -> int:
        """Training items per frame that one epoch visits: 1 (whole frames), or the patches of a model
        trained on patches. With more than one, the training forward pass receives item indices
        (frame * training_items() + item) and returns that item's output, and `training_target` its target."""
        return 1

    def training_target(self, items: Tensor, frames: FrameSource) -> Tensor:
        """The targets of a batch of training items (models with `training_items() > 1` define it)."""
        raise NotImplementedError(f"{type(self).__name__} trains on whole frames")

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based) of `epochs` (schedules that follow progress use it)."""

    def on_step_start(self, step: int, steps: int) -> None:
        """Called before each training step (0-based, counted over the whole fit) of the `steps` planned."""

    def training_stages(self, epochs: int) -> list[TrainingStage]:
        """The stages a fit of `epochs` epochs goes through, in order (their epochs sum to `epochs`)."""
        return [TrainingStage("main", epochs)]

    def channel_layout(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape per-channel quantisation sees a transmitted tensor of `shape` in (its axes are the
        channels it may choose): its own, or the layout of the model's official code where that differs."""
        return shape

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser: "params", and optionally "lr_scale" (multiplies the
        learning rate) and "scheduled" (False: no warm-up or decay for this group)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def latent(self, name: str, value: Tensor) -> Tensor:
        """Passes a computed transmitted tensor (one of `latent_names`) through the compression hook
        that entropy-constrained training installs; the identity otherwise."""
        hook = self.__dict__.get("latent_hook")
        return value if hook is None else hook(name, value)

    @torch.no_grad()
    def reconstruct(
        self, frame_idx: Tensor, frames: FrameSource | None, batch_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yields (indices, frames) for the given indices in batches; the evaluation forward pass."""
        frame_idx = frame_idx.to(next(self.parameters()).device)  # indices may come from the CPU
        for start in range(0, len(frame_idx), batch_size):
            idx = frame_idx[start : start + batch_size]
            inputs = frames(idx) if self.needs_frames and frames is not None else None
            yield idx, self(idx, inputs)["output"].clamp(0, 1)

    def prepare_export(self, frames: FrameSource) -> None:
        """Called before `transmitted_state` is exported (content-adaptive models encode their frames)."""

    def transmitted_state(self) -> dict[str, Tensor]:
        """Everything a decoder needs (parameters and persistent buffers outside the encoder side).

        Content-adaptive models override this to compute and include their frame embeddings."""
        return {k: v for k, v in self.state_dict().items() if self.component_of(k) != ENCODER}

    @classmethod
    def build_decoder(cls, config: ModelConfig) -> VideoINR:
        """The module `from_transmitted` loads its state into (untrained; no encoder where one exists)."""
        return cls(config)

    @classmethod
    def from_transmitted(cls, config: ModelConfig, state: dict[str, Tensor]) -> VideoINR:
        """A decoder rebuilt from its config and transmitted state alone; `reconstruct` needs no frames."""
        model = cls.build_decoder(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if model.component_of(k) != ENCODER]  # training-only buffers
        if missing or unexpected:
            raise RuntimeError(f"transmitted state of {cls.name}: missing {missing}, unexpected {unexpected}")
        return model.eval()

    @classmethod
    def apply_ablations(cls, config: ModelConfig, names: list[str]) -> ModelConfig:
        """The config with named ablations applied (T-NeRV's E1-E5, D1-D3); other models have none."""
        raise TnervError(f"model {cls.name!r} has no ablations (T-NeRV has E1-E5 and D1-D3)")

    @classmethod
    def ablate_at_budget(
        cls, config: ModelConfig, names: list[str], budget: int, tolerance: float
    ) -> tuple[ModelConfig, int, dict[str, tuple[Any, Any]]]:
        """The ablations applied to a config already at `budget`, re-sized to stay at it: the config,
        its size and the widths changed ({field: (before, after)}); other models have no ablations."""
        raise TnervError(f"model {cls.name!r} has no ablations (T-NeRV has E1-E5 and D1-D3)")

    @classmethod
    def scale_widths(cls, config: ModelConfig, factor: float) -> ModelConfig:
        """The config with its size knob turned by `factor` (1 = unchanged; larger = more parameters),
        keeping its split between components: the hook `tnerv.models.scaling.solve_for_budget` bisects on."""
        raise NotImplementedError(f"{cls.__name__} does not define scale_widths")

    def component_of(self, param_name: str) -> str:
        """Which component ("decoder", "grids", "embeddings" or "encoder") a parameter or buffer is part of.

        "encoder" covers everything that is not transmitted (encoders, training-only buffers)."""
        for component, prefixes in self.component_prefixes.items():
            if param_name.startswith(prefixes):
                return component
        return "decoder"

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts by component, plus "transmitted" (the model size) and "total"."""
        counts = {c: 0 for c in (*TRANSMITTED_COMPONENTS, ENCODER)}
        for name, param in self.named_parameters():
            counts[self.component_of(name)] += param.numel()
        counts["transmitted"] = sum(counts[c] for c in TRANSMITTED_COMPONENTS)
        counts["total"] = counts["transmitted"] + counts[ENCODER]
        return counts
