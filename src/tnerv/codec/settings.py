"""Typed compression settings: how a model becomes a .tnrv file. One record per method, its defaults
written once here; a run.json stores it (`to_dict`), the model is wrapped by it (`wrap`) and the file's
header carries it, so that `tnerv inspect` can say how a file was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tnerv.errors import TnervError

if TYPE_CHECKING:  # the wrappers import torch; these records and their defaults do not (the CLI reads them)
    from tnerv.codec.wrapper import CompressionWrapper
    from tnerv.models import VideoINR

ENTROPY_CONSTRAINED = "entropy-constrained"
POST_TRAINING = "post-training"
# The compression phase (a rate term, pruning, quantisation-aware fine-tuning) starts after this fraction
# of the epochs: the last 20%.
PHASE_START = 0.8
# The rate weight of entropy-constrained models when none is given: the second of the paper's four
# rate points (0.01, 0.1, 0.5, 1.0), a file near the middle of their range.
DEFAULT_LAMBDA = 0.1


@dataclass(frozen=True)
class EntropyConstrainedSettings:
    """A model trained with a rate term (loss = D + lambda * bpp) from `phase_start` of its epochs on,
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
    weights removed and, with `qat`, quantisation-aware fine-tuning, from `phase_start` of its epochs on."""

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


CompressionSettings = EntropyConstrainedSettings | PostTrainingSettings


def compression_settings(
    model: str, lam: float | None = None, phase_start: float = PHASE_START, init_bits: int = 8, prune: float | None = None
) -> CompressionSettings:
    """The settings of a model's own method: entropy-constrained for models trained that way (lambda
    default DEFAULT_LAMBDA), else post-training quantisation with the model's bits, pruning (default the
    model's) and quantisation-aware fine-tuning."""
    from tnerv.models import model_class

    cls = model_class(model)
    if cls.compression == ENTROPY_CONSTRAINED:
        lam = DEFAULT_LAMBDA if lam is None else lam
        if lam < 0:
            raise TnervError(f"--lambda must be 0 or more, got {lam}")
        if prune:
            raise TnervError(f"{model} is compressed by its rate term; --prune does not apply")
        return EntropyConstrainedSettings(lam, phase_start, init_bits)
    if lam is not None:
        raise TnervError(f"{model} is compressed after training (quantisation + entropy coding); --lambda does not apply")
    prune = cls.post_training_prune if prune is None else prune
    if not 0 <= prune < 1:
        raise TnervError(f"--prune is the fraction of weights removed, in [0, 1); got {prune}")
    return PostTrainingSettings(dict(cls.post_training_bits), prune, cls.post_training_qat, phase_start)


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
    raise TnervError(f"unknown compression method {data.get('method')!r}")
