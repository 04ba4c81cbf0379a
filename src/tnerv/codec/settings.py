"""Typed compression settings: how a model becomes a .tnrv file. One record per method, its defaults
written once here; a run.json stores it (`to_dict`), the model is wrapped by it (`wrap`) and the file's
header carries it, so that `tnerv inspect` can say how a file was made."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from tnerv.errors import TnervError

if TYPE_CHECKING:  # the wrappers import torch; these records and their defaults do not (the CLI reads them)
    from tnerv.codec.wrapper import CompressionWrapper
    from tnerv.models import VideoINR

ENTROPY_CONSTRAINED = "entropy-constrained"
POST_TRAINING = "post-training"
STAGED = "staged"
# The compression phase (a rate term, pruning, quantisation-aware fine-tuning) starts after this share of
# the training steps: the last 20% (`CompressionWrapper.on_step_start`).
PHASE_START = 0.8
# HiNeRV's stages (cfgs/train/hinerv_1920x1080.txt): 300 epochs, then 60 of pruning fine-tuning, then 30 of
# quantisation-aware fine-tuning; tnerv keeps their shares of the epochs a fit is given.
STAGED_PHASE_START = 300 / 390
STAGED_QUANT_SHARE = 30 / 90  # of the epochs after the main stage
# The rate weight of entropy-constrained models when none is given: the second of the paper's four
# rate points (0.01, 0.1, 0.5, 1.0), a file near the middle of their range.
DEFAULT_LAMBDA = 0.1
# A video longer than this is coded in segments of this many frames, one model each, in one file
# (`tnerv.codec.segments`); the paper's videos are 600 frames long.
DEFAULT_SEGMENT_FRAMES = 600


@dataclass(frozen=True)
class EntropyConstrainedSettings:
    """A model trained with a rate term (loss = D + lambda * bpp) from `phase_start` of its steps on,
    its quantisers starting at `init_bits` bits."""

    lam: float = DEFAULT_LAMBDA
    phase_start: float = PHASE_START
    init_bits: int = 8
    method: ClassVar[str] = ENTROPY_CONSTRAINED

    def wrap(self, model: VideoINR) -> CompressionWrapper:
        """The model wrapped for training with these settings."""
        from tnerv.codec.constrained import EntropyConstrained

        return EntropyConstrained(model, self.lam, self.phase_start, self.init_bits)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run.json and a file's header."""
        return {"method": self.method, "lambda": self.lam, "phase_start": self.phase_start, "init_bits": self.init_bits}


@dataclass(frozen=True)
class PostTrainingSettings:
    """A model quantised after training (`bits` per component), with a fraction `prune` of its decoder
    weights removed and, with `qat`, quantisation-aware fine-tuning, from `phase_start` of its steps on."""

    bits: dict[str, int] = field(default_factory=dict)
    prune: float = 0.0
    qat: bool = False
    phase_start: float = PHASE_START
    method: ClassVar[str] = POST_TRAINING

    def wrap(self, model: VideoINR) -> CompressionWrapper:
        """The model wrapped for training with these settings."""
        from tnerv.codec.post_training import QuantizationAware

        return QuantizationAware(model, self.bits, self.prune, self.qat, self.phase_start)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run.json and a file's header."""
        return {"method": self.method, "bits": dict(self.bits), "prune": self.prune, "qat": self.qat,
                "phase_start": self.phase_start}


@dataclass(frozen=True)
class StagedSettings:
    """HiNeRV's compression: after the main stage (the first `phase_start` of the epochs), a fraction `prune`
    of the model's parameters pruned from the decoder's weights (scored by |w| / n^prune_weight, n the
    weights of their tensor) and fine-tuned, then quantisation-aware fine-tuning (the last `quant_share`
    of the epochs after the main stage, at lr_scale times the rate) where a fraction `quant_noise` of every
    weight is replaced by its `bits`-bit per-channel quantisation; a new optimiser and schedule per stage."""

    bits: int = 6
    prune: float = 0.15
    prune_weight: float = 0.5
    quant_noise: float = 0.9
    phase_start: float = STAGED_PHASE_START
    quant_share: float = STAGED_QUANT_SHARE
    quant_lr_scale: float = 0.1
    method: ClassVar[str] = STAGED

    def wrap(self, model: VideoINR) -> CompressionWrapper:
        """The model wrapped for training with these settings."""
        from tnerv.codec.staged import StagedCompression

        return StagedCompression(model, self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run.json and a file's header."""
        return {"method": self.method, **{f.name: getattr(self, f.name) for f in fields(self)}}


CompressionSettings = EntropyConstrainedSettings | PostTrainingSettings | StagedSettings


def compression_settings(
    model: str,
    lam: float | None = None,
    phase_start: float | None = None,
    init_bits: int = 8,
    prune: float | None = None,
) -> CompressionSettings:
    """The settings of a model's own method: entropy-constrained for models trained that way (lambda
    default DEFAULT_LAMBDA), HiNeRV's stages for HiNeRV, else post-training quantisation with the model's
    bits, pruning (default the model's) and quantisation-aware fine-tuning. `phase_start` defaults to the
    method's own (PHASE_START; STAGED_PHASE_START)."""
    from tnerv.models import model_class

    cls = model_class(model)
    if cls.compression == ENTROPY_CONSTRAINED:
        lam = DEFAULT_LAMBDA if lam is None else lam
        if lam < 0:
            raise TnervError(f"--lambda must be 0 or more, got {lam}")
        if prune:
            raise TnervError(f"{model} is compressed by its rate term; --prune does not apply")
        return EntropyConstrainedSettings(lam, PHASE_START if phase_start is None else phase_start, init_bits)
    if lam is not None:
        raise TnervError(f"{model} is compressed after training (quantisation + entropy coding); --lambda does not apply")
    prune = (StagedSettings.prune if cls.compression == STAGED else cls.post_training_prune) if prune is None else prune
    if not 0 <= prune < 1:
        raise TnervError(f"--prune is the fraction of weights removed, in [0, 1); got {prune}")
    if cls.compression == STAGED:
        return StagedSettings(prune=prune, phase_start=STAGED_PHASE_START if phase_start is None else phase_start)
    return PostTrainingSettings(
        dict(cls.post_training_bits), prune, cls.post_training_qat, PHASE_START if phase_start is None else phase_start
    )


def settings_from_dict(data: dict[str, Any] | None) -> CompressionSettings | None:
    """The settings a run.json stores (None: a plain fit); run.json files written before these records
    named an entropy-constrained run's phase start "lambda_start"."""
    if not data:
        return None
    if data.get("method") == ENTROPY_CONSTRAINED:
        phase_start = data.get("phase_start", data.get("lambda_start", PHASE_START))
        return EntropyConstrainedSettings(data["lambda"], phase_start, data.get("init_bits", 8))
    if data.get("method") == POST_TRAINING:
        return PostTrainingSettings(dict(data["bits"]), data["prune"], data["qat"], data.get("phase_start", PHASE_START))
    if data.get("method") == STAGED:
        return StagedSettings(**{f.name: data[f.name] for f in fields(StagedSettings)})
    raise TnervError(f"unknown compression method {data.get('method')!r}")
