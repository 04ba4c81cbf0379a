"""One training loop for every model: losses, warm-up + cosine schedule, evaluation, atomic
checkpoints and exact resume, a metrics log and a progress bar."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import random
import sys
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tnerv.errors import TnervError
from tnerv.files import write_with
from tnerv.metrics import QualityReport, ms_ssim, ms_ssim_for_loss, psnr, ssim
from tnerv.models.base import PassProgress, TrainingStage, VideoINR
from tnerv.models.execution import FP32, ExecutionPath, candidate_paths, native_bf16
from tnerv.models.layers import at_least_float32
from tnerv.models.nnpack import available as nnpack_available
from tnerv.parallel import broadcast_from_main, init_from_environment, local_rank, rank_and_size, shard, sum_over_ranks
from tnerv.progress import SegmentSteps, step_bar
from tnerv.time_budget import EVAL_PER_PASS, STEP_FORWARDS, Budget, Costs, StepClock, first_eval_seconds, format_duration
from tnerv.video import Padding

CHECKPOINT = "checkpoint.pt"
METRICS_LOG = "metrics.jsonl"


@dataclass
class TrainConfig:
    """How a model is fitted; models override the defaults with their reference recipe."""

    epochs: int = 300
    batch_size: int = 1
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup: float = 0.2  # fraction of all iterations spent warming up linearly
    warmup_start: float = 0.1  # lr factor at the first iteration of the warm-up
    schedule: str = "cosine"  # after the warm-up: one of SCHEDULES (lr_factor)
    final_lr: float = 0.0  # lr factor the cosine ends at ("cosine-full"; HiNeRV's min_lr / lr)
    loss: str = "fusion"  # one of LOSSES: "l2", "fusion" = 0.7 L1 + 0.3 (1 - SSIM), "l1-ms-ssim5" (HiNeRV's)
    grad_clip: float | None = None  # max gradient norm; None = no clipping
    eval_every: int = 10  # epochs between evaluations (PSNR and MS-SSIM over all frames)
    checkpoint_every: int = 10  # epochs between checkpoints (one is always written at the end)
    eval_batch_size: int = 4
    seed: int = 0  # seeds the initial weights (fit_run seeds before building) and the frame order (fit)
    device: str = "auto"  # "auto" = CUDA when present, else the CPU
    precision: str = "fp32"  # one of PRECISIONS; "auto": a fast path if its trial passes (choose_training_path)
    channels_last: bool = False  # convolutions in NHWC (oneDNN/cuDNN's own layout): same arithmetic, faster
    nnpack: bool = False  # CPU float32 convolutions through NNPACK (tnerv.models.nnpack): fewer multiplications
    restart_on_collapse: int = 0  # after a collapse (see fit), start over with the next seed, up to this many times
    time_budget: float | None = None  # seconds the fit may take: its epochs are then planned (tnerv.time_budget)
    recipe_first: bool = False  # with a time budget: keep `epochs` if they take at most an hour here (encode's default)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Builds a config from plain data, naming any unknown field."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TnervError(f"unknown training option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        hints = typing.get_type_hints(cls)
        values = {k: _typed(k, v, hints[k]) for k, v in values.items()}
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Rejects settings that cannot train, with the reason."""
        counts = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_every": self.eval_every,
                  "checkpoint_every": self.checkpoint_every, "eval_batch_size": self.eval_batch_size}
        for name, value in counts.items():
            if value < 1:
                raise TnervError(f"{name} must be at least 1, got {value}")
        if self.loss not in LOSSES:
            raise TnervError(f"unknown loss {self.loss!r}; available: {', '.join(LOSSES)}")
        if self.precision not in PRECISIONS:
            raise TnervError(f"unknown precision {self.precision!r}; available: {', '.join(PRECISIONS)}")
        if not 0 <= self.warmup < 1 or not 0 <= self.warmup_start <= 1 or not 0 <= self.final_lr <= 1:
            raise TnervError("warmup is a fraction of the iterations in [0, 1), warmup_start and final_lr factors "
                             "in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise TnervError(f"unknown schedule {self.schedule!r}; available: {', '.join(SCHEDULES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TnervError(f"the learning rate must be a positive number, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise TnervError(f"betas are two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            raise TnervError("weight_decay must be 0 or more and grad_clip positive (or unset)")
        if self.restart_on_collapse < 0:
            raise TnervError(f"restart_on_collapse must be 0 or more, got {self.restart_on_collapse}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise TnervError(f"the time budget must be a positive number of seconds, got {self.time_budget}")
        if self.precision == "auto" and (self.nnpack or self.channels_last):
            raise TnervError("precision auto chooses the layout and kernels itself: drop nnpack and channels_last")
        if self.nnpack and self.channels_last:
            raise TnervError("nnpack convolutions are NCHW: choose nnpack or channels_last, not both")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run.json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _typed(name: str, value: Any, hint: Any) -> Any:
    """A training option as its field's type (TOML and the CLI give ints for floats, lists for
    tuples); a value of another type is an error that names the option."""
    if typing.get_origin(hint) is tuple:
        numbers = isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
        if not numbers or len(value) != len(typing.get_args(hint)):
            raise TnervError(f"training option {name!r} takes {len(typing.get_args(hint))} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    kinds = typing.get_args(hint) or (hint,)  # float | None -> (float, NoneType)
    if float in kinds and _is_number(value):
        return float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join("unset" if k is type(None) else k.__name__ for k in kinds)
        raise TnervError(f"training option {name!r} takes a {expected} value, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# "bf16": bfloat16 autocast (weights and optimiser in float32); "fp64": weights, frames and optimiser
# in float64, slow, for checks that must not depend on float32 rounding (e.g. that 2 processes give
# the weights of one: float32 kernels round a batch of 1 differently from a batch of 2); "auto": the
# first fast path (bf16 where native, NNPACK on CPUs) whose trial passes, else fp32 (choose_training_path).
PRECISIONS = ("fp32", "bf16", "fp64", "auto")


def fusion_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.7 * L1 + 0.3 * (1 - SSIM), the loss of NeRV, E-NeRV, FFNeRV and T-NeRV."""
    return 0.7 * F.l1_loss(pred, target) + 0.3 * (1 - ssim(at_least_float32(pred), at_least_float32(target)).mean())


def l1_ms_ssim5_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.7 * L1 + 0.3 * (1 - MS-SSIM with a 5x5 window), HiNeRV's loss: 5 scales where the smaller side
    exceeds 64 pixels (the official code asserts it), fewer on smaller frames (`ms_ssim_for_loss`)."""
    pred, target = at_least_float32(pred), at_least_float32(target)
    values = ms_ssim_for_loss(pred, target, 5)
    return 0.7 * F.l1_loss(pred, target) + 0.3 * (1 - values).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": F.mse_loss,
    "fusion": fusion_loss,
    "l1-ms-ssim5": l1_ms_ssim5_loss,
}


# "cosine": after the warm-up, a cosine over the remaining iterations to 0 (NeRV's, HNeRV's, FFNeRV's);
# "cosine-full": a cosine over all iterations to `final_lr` that the warm-up overrides at the start
# (timm's CosineLRScheduler without warmup_prefix, HiNeRV's); "constant".
SCHEDULES = ("cosine", "cosine-full", "constant")


def lr_factor(
    iteration: int, total: int, warmup: float, warmup_start: float, schedule: str = "cosine", final: float = 0.0
) -> float:
    """Linear warm-up from `warmup_start` to 1 over the first `warmup` of iterations, then the schedule
    (SCHEDULES)."""
    warm = int(warmup * total)
    if iteration < warm:
        return warmup_start + (1 - warmup_start) * iteration / warm
    if schedule == "constant":
        return 1.0
    if schedule == "cosine-full":
        return final + 0.5 * (1 - final) * (1 + math.cos(math.pi * iteration / max(1, total)))
    progress = (iteration - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * progress))


def stage_lr_factor(epoch: int, step: int, steps_per_epoch: int, stages: list[TrainingStage], config: TrainConfig) -> float:
    """The learning-rate factor at `step` of `epoch` in a fit of `stages`: within its stage, the config's
    warm-up (first stage only) and schedule over the stage's own steps, times the stage's lr_scale."""
    first = 0
    for index, stage in enumerate(stages):
        if epoch < first + stage.epochs or index == len(stages) - 1:
            break
        first += stage.epochs
    iteration = (epoch - first) * steps_per_epoch + step
    warmup = config.warmup if index == 0 else 0.0
    return stage.lr_scale * lr_factor(
        iteration, stage.epochs * steps_per_epoch, warmup, config.warmup_start, config.schedule, config.final_lr
    )


def pick_device(name: str) -> torch.device:
    """"auto" picks $TNERV_DEVICE if set, else CUDA when available, else the CPU; anything else is
    taken as given."""
    if name == "auto":
        name = os.environ.get("TNERV_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TnervError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TnervError(f"device {name!r} requested but no CUDA GPU is available")
    return device


class VideoFrames:
    """The video on the training device as uint8 (N, 3, H, W); batches become float in [0, 1].

    With `coded_size`, the frames are padded to it (`padding`) for a model whose strides cannot reach
    the video's size; quality is measured on the video's own pixels (`padding.crop`)."""

    def __init__(
        self,
        frames: torch.Tensor,
        device: torch.device,
        coded_size: tuple[int, int] | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.dtype = dtype  # of the frames read
        if frames.dtype != torch.uint8:
            frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
        size = (frames.shape[-2], frames.shape[-1])
        self.padding = Padding(*size, *(coded_size or size))
        self.data = self.padding.pad(frames).to(device)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __call__(self, frame_idx: torch.Tensor) -> torch.Tensor:
        return self.data[frame_idx.to(self.data.device)].to(self.dtype) / 255


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    write_with(path, lambda tmp: torch.save(obj, tmp))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seeds torch, numpy and random so that a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(
    model: VideoINR,
    frames: VideoFrames,
    batch_size: int = 4,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    as_uint8: bool = False,
) -> QualityReport:
    """PSNR and MS-SSIM of the model's evaluation forward pass over every frame, batch by batch;
    `on_batch(indices, decoded)` sees each decoded batch (to write frames, say). With `as_uint8`,
    the output is rounded to 8 bits first: the quality of the frames a decoder writes to disk."""
    was_training = model.training
    model.eval()
    psnrs, ms_ssims, variant = [], [], ""
    idx = torch.arange(len(frames), device=frames.data.device)
    crop = frames.padding.crop  # a padded video is judged on its own pixels
    for batch_idx, out in model.reconstruct(idx, frames, batch_size):
        out, target = crop(out.float()), crop(frames(batch_idx))
        if as_uint8:
            out = torch.round(out * 255) / 255
        psnrs.append(psnr(out, target).cpu())
        result = ms_ssim(out, target)
        ms_ssims.append(result.values.cpu())
        variant = result.variant
        if on_batch:
            on_batch(batch_idx, out)
    model.train(was_training)
    per_frame_psnr, per_frame_ms_ssim = torch.cat(psnrs), torch.cat(ms_ssims)
    return QualityReport(
        psnr=per_frame_psnr.mean().item(),
        ms_ssim=per_frame_ms_ssim.mean().item(),
        ms_ssim_variant=variant,
        per_frame_psnr=per_frame_psnr.tolist(),
        per_frame_ms_ssim=per_frame_ms_ssim.tolist(),
    )


@dataclass
class FitResult:
    """What a fit produced: the final quality, the epochs run and the wall time of this call, whether
    it collapsed (`collapse_verdict`, None if not), the seed of the fit returned and the fits abandoned
    for a collapse before it (`TrainConfig.restart_on_collapse`)."""

    report: QualityReport | None  # None: not evaluated after the last epoch (`fit`'s final_eval)
    epochs: int
    seconds: float
    history: list[dict[str, Any]]
    collapsed: dict[str, Any] | None = None
    seed: int = 0
    restarts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fast_path_check: dict[str, Any] | None = None  # choose_training_path's record, when fit resolved "auto"
    # After the first steps: the predicted seconds of the whole fit, its epochs, the step's seconds, the line said.
    estimate: dict[str, Any] | None = None


# A fit whose PSNR is within this margin of the mean frame's learned nothing but the mean frame
# (official HNeRV, seed 3 on bikes, on one machine of two: 13.73 dB against the mean frame's 13.75); it is
# judged after this fraction of the epochs.
COLLAPSE_MARGIN_DB = 1.0
COLLAPSE_CHECK_AT = 0.25


class _Plan:
    """A fit's epochs and what follows from them (steps, stages, the collapse check); a time budget sets
    the epochs once the first steps are timed, and may lower them later."""

    def __init__(self, model: VideoINR, epochs: int, steps_per_epoch: int):
        self.model, self.steps_per_epoch = model, steps_per_epoch
        self.set(epochs)

    def set(self, epochs: int) -> None:
        """Plans `epochs` epochs."""
        stages = self.model.training_stages(epochs)
        if sum(stage.epochs for stage in stages) != epochs:
            raise TnervError(f"the training stages' epochs {[s.epochs for s in stages]} do not sum to {epochs}")
        self.epochs, self.stages = epochs, stages
        # The epochs at which a stage after the first starts with a fresh optimiser.
        self.stage_starts = list(itertools.accumulate(stage.epochs for stage in stages))[:-1]
        self.total_steps = epochs * self.steps_per_epoch
        self.check_epoch = collapse_check_epoch(epochs)


def collapse_check_epoch(epochs: int) -> int:
    """The epoch after which a fit is checked for a collapse: a quarter of the epochs, rounded up."""
    return max(1, math.ceil(COLLAPSE_CHECK_AT * epochs))


@torch.no_grad()
def mean_frame_psnr(frames: VideoFrames, batch_size: int = 4) -> float:
    """The mean per-frame PSNR of predicting every frame by the clip's per-pixel mean frame, on the
    video's own pixels: what a model that learned only the mean frame scores."""
    crop = frames.padding.crop
    batches = torch.arange(len(frames), device=frames.data.device).split(batch_size)
    total = sum(crop(frames(idx)).double().sum(0) for idx in batches)
    mean = (total / len(frames)).to(frames.dtype)
    per_frame = [psnr(mean.expand_as(target), target).cpu() for target in (crop(frames(i)) for i in batches)]
    return torch.cat(per_frame).mean().item()


def collapse_verdict(epoch: int, model_psnr: float, mean_psnr: float) -> dict[str, Any] | None:
    """{"epoch", "psnr", "mean_frame_psnr"} when the model's PSNR is not COLLAPSE_MARGIN_DB above the
    mean frame's (below it, or NaN, included), else None. A clip that its mean frame reproduces exactly for some frame
    (a still clip, one frame) has an infinite mean-frame PSNR: it cannot be judged and is not flagged."""
    if math.isfinite(mean_psnr) and not model_psnr >= mean_psnr + COLLAPSE_MARGIN_DB:
        return {"epoch": epoch, "psnr": model_psnr, "mean_frame_psnr": mean_psnr}
    return None


@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    """Whatever runs inside leaves the random generators as they were (an evaluation the schedule did
    not ask for must not move the training's draws)."""
    state = _rng_state()
    try:
        yield
    finally:
        _set_rng_state(state)


def _seeded_build(model: VideoINR, seed: int) -> VideoINR:
    """Seeds everything with `seed` and builds a fresh copy of `model`: the generators are then where
    `seed_everything(seed)` followed by building the model leaves them, whatever ran before."""
    seed_everything(seed)
    return model.fresh_copy()


def fit(
    model: VideoINR,
    video: torch.Tensor,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | SegmentSteps = True,
    on_epoch_end: Callable[[int], None] | None = None,
    started: float | None = None,
    reserve_evals: int = 0,
    final_eval: bool = True,
) -> FitResult:
    """Fits `model` to `video` ((N, 3, H, W), uint8 or float in [0, 1]) and returns the final quality.

    With `run_dir`, checkpoints and a metrics log are written there; `resume` continues from the last
    checkpoint exactly (model, optimiser, schedule, RNG state, epoch, and the epochs planned).

    After its first steps (`StepClock.ready`, part of the training) a fit says what its epochs cost here. With
    `config.time_budget`, it plans the epochs that end it within the budget, counted from `started`
    (time.time(); default: now) and leaving `reserve_evals` evaluations' worth for what follows
    (`tnerv.time_budget.Budget`); it shortens the plan at the end of an epoch if it falls behind.

    As in the reference scripts of NeRV, HNeRV and FFNeRV, one seed governs the initial weights and
    the frame order: seed torch (`seed_everything(config.seed)`) before building the model, as
    `tnerv.runs.fit_run` does. A fresh fit starts by putting the generators where seeding with
    `config.seed` and building this model leaves them (it builds a throw-away copy, `fresh_copy`),
    so the frame order depends on `config.seed` alone, not on what the caller drew before. Each
    epoch's order is then drawn from torch's generator by a shuffling DataLoader, exactly as theirs
    is, so a model built and fitted this way follows the reference's training step for step (same
    seed, same config: same numbers).

    After a quarter of the epochs the fit is checked for a collapse (`collapse_verdict`: PSNR within
    1 dB of the mean frame's), with an evaluation there if the schedule has none; the check draws no
    random numbers. A collapse is reported in one line; with `config.restart_on_collapse` N, the fit
    starts over from new initial weights with the next seed (seed + 1, ...) up to N times. The result
    is collapsed if the PSNR is still within the margin at the end.

    With `final_eval` False the caller measures the fitted model itself (`tnerv encode` decodes the file it
    writes): the last epoch is evaluated only where the schedule (`eval_every`) asks, the result has no
    report (None), and a collapse seen at the check is left for the caller to settle (`settle_collapse`)."""
    config.validate()
    fast_path_check = None
    if config.precision == "auto":  # before the seeded build below: the trial draws random numbers
        config, fast_path_check = choose_training_path(model, video, config)
    run_dir = Path(run_dir) if run_dir is not None else None
    checkpoint_path = run_dir / CHECKPOINT if run_dir else None
    if resume and checkpoint_path is not None and not checkpoint_path.exists():
        # Stopped before its first checkpoint: the run starts over, from the same seed (fit_run seeds
        # before it builds the model, so the restart is the run that was interrupted).
        resume = False
    if resume and checkpoint_path is None:
        raise TnervError("nothing to resume: resuming needs the run directory")
    if not resume:
        # First, before anything else draws: everything after this point replays the old order.
        _seeded_build(model, config.seed)
    device = pick_device(config.device)
    if init_from_environment(device.type) and device.type == "cuda":
        device = torch.device("cuda", local_rank())  # one GPU per process
    rank, world = rank_and_size()
    writes = rank == 0  # under torchrun, rank 0 alone writes files and shows progress
    if config.precision == "bf16" and not native_bf16(device) and writes:
        warnings.warn(
            f"bf16 is emulated on this {device.type} (no bf16 units: AVX-512-BF16, AMX or a bf16 GPU): "
            "it trains several times slower than fp32", stacklevel=2,
        )
    if config.nnpack and (device.type != "cpu" or not nnpack_available()) and writes:
        warnings.warn(f"nnpack has no effect here: it runs on CPUs with NNPACK, not on this {device.type}",
                      stacklevel=2)
    dtype = torch.float64 if config.precision == "fp64" else torch.float32
    # bf16 autocast and the memory layout: the decoder's execution paths (fp64 is a dtype, below).
    execution = ExecutionPath("bf16" if config.precision == "bf16" else "fp32", config.channels_last, config.nnpack)
    execution.apply(model.to(device).train())
    autocast = execution.autocast(device)
    if dtype != torch.float32:
        model.to(dtype)  # parameters and buffers; a frame buffer is reallocated in its configured dtype
    frames = VideoFrames(video, device, (model.config.height, model.config.width), dtype)
    num_frames = len(frames)
    if num_frames != model.config.num_frames:
        raise TnervError(f"the model was built for {model.config.num_frames} frames, the video has {num_frames}")

    restarts: list[dict[str, Any]] = []
    fit_started = time.time()  # the history's and the result's seconds count from here
    started = fit_started if started is None else started  # a time budget's from here
    budget = Budget(config.time_budget, config.epochs, config.recipe_first, reserve_evals, active=not resume)
    plan = _Plan(model, config.epochs, 1)
    estimate: dict[str, Any] | None = None  # what the fit said its epochs would cost, after its first steps

    def say(line: str) -> None:
        if writes:
            tqdm.write(f"tnerv: warning: {line}", file=sys.stderr)

    def tell(line: str) -> None:
        if writes and (progress or budget.seconds is not None):
            tqdm.write(f"tnerv: {line}", file=sys.stderr)

    def agreed(epochs: int) -> int:
        # Each process times its own steps: rank 0's plan is every rank's (torchrun).
        return int(broadcast_from_main(torch.tensor([epochs], device=device)).item())

    timed_pass: float | None = None  # the seconds of a model's pass over the video before training, if it made one

    def first_costs(clock: StepClock, items: int, timed_eval: float | None) -> Costs:
        step = clock.seconds_per_step()
        evaluation = (timed_eval if timed_eval is not None else EVAL_PER_PASS * timed_pass if timed_pass is not None
                      else first_eval_seconds(step, config.batch_size, items))
        return Costs(step, evaluation, plan.steps_per_epoch, config.eval_every, collapse_check_epoch, final_eval)

    def pass_progress(items: int, steps_per_epoch: int) -> PassProgress:
        """A bar for a model's pass over the video before training; after its first chunk, what the fit
        expects to cost, from that chunk's time (`Budget.provisional`)."""
        began, bar = time.time(), None

        def told(done: int, total: int) -> None:
            nonlocal bar, timed_pass
            if bar is None:
                bar = tqdm(total=total, unit="frame", desc="preparing", disable=not (progress and writes),
                           dynamic_ncols=True)
                bar.start_t = began  # its rate and time left count the chunk just done
                per_frame = (time.time() - began) / done
                step = STEP_FORWARDS * per_frame / model.training_items() * config.batch_size
                costs = Costs(step, EVAL_PER_PASS * per_frame * total, steps_per_epoch, config.eval_every,
                              collapse_check_epoch, final_eval)
                expected = budget.provisional(time.time() - started + per_frame * (total - done), costs)
                tell(f"preparing: {total} frames through the model, about {format_duration(per_frame * total)} "
                     f"here; then {expected} (a training step taken as {STEP_FORWARDS:g} forward passes until "
                     "the first steps are timed)")
            bar.update(done - bar.n)
            if done == total:
                bar.close()
                timed_pass = time.time() - began

        return told

    def attempt(resume: bool) -> tuple[QualityReport | None, list[dict[str, Any]], dict[str, Any] | None]:
        """One fit from the current weights: (final report, or None without `final_eval`, history, None), or
        (None, history, verdict) when it collapsed and a restart is left."""
        nonlocal estimate
        model_groups = model.optimizer_groups()
        groups = [
            {"params": g["params"], "lr": config.lr * g.get("lr_scale", 1.0)} for g in model_groups
        ]
        optimizer = torch.optim.Adam(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
        # Shuffled batches of frame indices, drawn as the reference scripts' DataLoaders draw them. With N
        # processes (torchrun) a step's global batch is N times the per-process batch_size, split over them.
        # A patch-trained model (HiNeRV) is trained on items, `training_items()` per frame: its patches.
        items = num_frames * model.training_items()
        batches = torch.utils.data.DataLoader(range(items), batch_size=config.batch_size * world, shuffle=True)
        steps_per_epoch = len(batches)
        plan.steps_per_epoch = steps_per_epoch
        plan.set(plan.epochs)

        def schedule(it: int) -> float:
            return stage_lr_factor(it // steps_per_epoch, it % steps_per_epoch, steps_per_epoch, plan.stages, config)

        # A group with "scheduled": False keeps its rate (e.g. entropy models that must follow to the end).
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [schedule if g.get("scheduled", True) else (lambda it: 1.0) for g in model_groups]
        )
        loss_fn = LOSSES[config.loss]
        all_idx = torch.arange(num_frames, device=device)

        model.attach_video(frames)
        start_epoch, history = 0, []
        if resume:
            state = torch.load(checkpoint_path, map_location=device, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
            start_epoch, history = state["epoch"], state["history"]
            restarts[:] = state.get("restarts", [])
            plan.set(state["train_config"]["epochs"])  # the epochs planned when it started (a budget's)
        else:
            if progress and writes:
                tqdm.write("tnerv: preparing the fit (the model's first passes over the video)", file=sys.stderr)
            model.on_fit_start(all_idx, frames, pass_progress(items, steps_per_epoch))

        # Every rank holds the whole model; DistributedDataParallel averages the ranks' gradients. Buffers
        # are not broadcast: per-frame state (the frame buffer) is kept consistent by the models themselves.
        trained = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)

        def save_checkpoint(epoch: int) -> None:
            if checkpoint_path is None or not writes:
                return
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "epoch": epoch,
                "history": history,
                "train_config": {**config.to_dict(), "epochs": plan.epochs},
                "restarts": restarts,  # the seed in use is config.seed + len(restarts)
            }
            atomic_save(state, checkpoint_path)

        log = None
        if run_dir and writes:
            # The log restarts from the checkpoint's history: epochs after the last checkpoint are redone.
            log = open(run_dir / METRICS_LOG, "w")
            log.writelines(json.dumps(entry) + "\n" for entry in history)
        initial = start_epoch * steps_per_epoch
        bar = (progress.start(plan.total_steps, initial) if isinstance(progress, SegmentSteps) and writes
               else step_bar(plan.total_steps, initial, bool(progress) and writes))
        clock, costs = StepClock(), None
        timed_eval = None  # an evaluation's seconds, once one has run
        report = None
        try:
            epoch = start_epoch
            while epoch < plan.epochs:
                if epoch in plan.stage_starts:
                    optimizer.state.clear()  # a new stage: Adam's moments start afresh, as a new optimiser's
                model.on_epoch_start(epoch, plan.epochs)
                epoch_loss = 0.0
                clock.restart()
                for step, idx in enumerate(batches, start=epoch * steps_per_epoch):
                    model.on_step_start(step, plan.total_steps)
                    idx, weight = shard(broadcast_from_main(idx.to(device)))
                    target = frames(idx) if items == num_frames else model.training_target(idx, frames)
                    with autocast:
                        outputs = trained(idx, target if model.needs_frames else None)
                        loss = model.training_loss(outputs, target, loss_fn)
                    optimizer.zero_grad(set_to_none=True)
                    (loss * weight).backward()
                    if config.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    model.after_step(idx, outputs)
                    epoch_loss += sum_over_ranks(loss.detach() * len(idx) * (weight > 0)).item()
                    bar.update(1)
                    clock.tick()
                    # Rank 0's clock decides for every rank (torchrun): the plan below is a collective.
                    if costs is None and broadcast_from_main(torch.tensor([int(clock.ready())], device=device)).item():
                        costs = first_costs(clock, items, timed_eval)
                        if not resume:
                            elapsed = time.time() - started
                            planned, line = budget.first_plan(elapsed, costs, epoch)
                            planned = agreed(planned)
                            tell(line)
                            estimate = {"seconds": elapsed + costs.seconds(planned, epoch), "epochs": planned,
                                        "step_seconds": costs.step_seconds, "said": line}
                            plan.set(planned)
                            bar.total = plan.total_steps
                            bar.refresh()
                done = epoch + 1
                if costs is not None and budget.active:  # behind the plan: fewer epochs, never more
                    costs.step_seconds = clock.seconds_per_step(last=steps_per_epoch)
                    planned = agreed(budget.replan(time.time() - started, costs, done, plan.epochs))
                    if planned != plan.epochs:
                        tell(f"behind the time budget: {planned} epochs instead of {plan.epochs}")
                        plan.set(planned)
                        bar.total = plan.total_steps
                        bar.refresh()
                entry: dict[str, Any] = {
                    "epoch": done,
                    "loss": epoch_loss / items,
                    "lr": scheduler.get_last_lr()[0],
                    "seconds": time.time() - fit_started,
                }
                if done % config.eval_every == 0 or (done == plan.epochs and final_eval):
                    evaluating = time.time()
                    report = evaluate(model, frames, config.eval_batch_size)
                    timed_eval = time.time() - evaluating
                    if costs is not None:
                        costs.eval_seconds = timed_eval
                    entry.update(psnr=report.psnr, ms_ssim=report.ms_ssim)
                    bar.set_postfix(epoch=done, loss=f"{entry['loss']:.4f}", psnr=f"{report.psnr:.2f}")
                else:
                    bar.set_postfix(epoch=done, loss=f"{entry['loss']:.4f}")
                verdict = check_collapse(entry) if done == plan.check_epoch else None
                history.append(entry)
                if log:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                if verdict and len(restarts) < config.restart_on_collapse:
                    return None, history, verdict
                if done % config.checkpoint_every == 0 or done == plan.epochs:
                    save_checkpoint(done)
                if on_epoch_end:
                    on_epoch_end(done)
                epoch = done
        finally:
            bar.close()
            if log:
                log.close()
        if not final_eval:
            return None, history, None  # the caller measures the model: no report, even one the schedule made
        if report is None:  # resumed a run that had already finished
            report = evaluate(model, frames, config.eval_batch_size)
        return report, history, None

    def check_collapse(entry: dict[str, Any]) -> dict[str, Any] | None:
        """The collapse check after `check_epoch`: evaluates if the schedule did not, records the
        mean-frame PSNR in the entry and says so in one line if the fit collapsed."""
        if "psnr" not in entry:
            with _rng_untouched():
                extra = evaluate(model, frames, config.eval_batch_size)
            entry.update(psnr=extra.psnr, ms_ssim=extra.ms_ssim)
        entry["mean_frame_psnr"] = mean_frame_psnr(frames, config.eval_batch_size)
        verdict = collapse_verdict(entry["epoch"], entry["psnr"], entry["mean_frame_psnr"])
        if verdict:
            seed = config.seed + len(restarts)
            then = (f"restarting with seed {seed + 1} (restart {len(restarts) + 1} of {config.restart_on_collapse})"
                    if len(restarts) < config.restart_on_collapse else
                    "training goes on (--restart-on-collapse N restarts with the next seed)")
            say(f"the fit looks collapsed (seed {seed}): PSNR {verdict['psnr']:.2f} dB after epoch {entry['epoch']} "
                f"of {plan.epochs}, not {COLLAPSE_MARGIN_DB:g} dB above the mean frame's "
                f"{verdict['mean_frame_psnr']:.2f} dB; {then}")
        return verdict

    report, history, verdict = attempt(resume)
    while verdict is not None:
        restarts.append({"seed": config.seed + len(restarts), "reason": "collapsed", **verdict})
        if checkpoint_path is not None and writes:
            checkpoint_path.unlink(missing_ok=True)  # the abandoned seed's: a resume must not continue it
        fresh = _seeded_build(model, config.seed + len(restarts))
        model.load_state_dict(fresh.state_dict())  # new initial weights; the generators as seed + build left them
        report, history, verdict = attempt(False)
    seed = config.seed + len(restarts)
    return FitResult(
        report=report, epochs=plan.epochs, seconds=time.time() - fit_started, history=history,
        collapsed=_final_verdict(history, plan.check_epoch, report.psnr if report else None), seed=seed,
        restarts=list(restarts),
        estimate=estimate,
        fast_path_check=fast_path_check,
    )


def _final_verdict(history: list[dict[str, Any]], check_epoch: int, final_psnr: float | None) -> dict[str, Any] | None:
    """The check's verdict if the fit is still within the margin at the end ("final_psnr" added); with no
    final PSNR (a fit without its final evaluation), the check's verdict with "final_psnr" None, for the
    caller to settle (`settle_collapse`)."""
    check = next((e for e in history if e["epoch"] == check_epoch and "mean_frame_psnr" in e), None)
    if check is None:  # a run resumed from a checkpoint written before the check existed
        return None
    return settle_collapse(collapse_verdict(check_epoch, check["psnr"], check["mean_frame_psnr"]), final_psnr)


def settle_collapse(verdict: dict[str, Any] | None, final_psnr: float | None) -> dict[str, Any] | None:
    """A collapse check's verdict settled by the fitted model's final PSNR (None: not known yet): None where
    there was none or the final PSNR clears the margin, else the verdict with "final_psnr"."""
    if verdict is None or (final_psnr is not None
                           and collapse_verdict(verdict["epoch"], final_psnr, verdict["mean_frame_psnr"]) is None):
        return None
    return {**verdict, "final_psnr": final_psnr}


# A training fast path (bf16 autocast, channels_last, NNPACK) is judged by a trial: the run's recipe for
# TRIAL_EPOCHS epochs on the video's first TRIAL_FRAMES frames, once in fp32 and once on the path, from the
# same initial weights. In such a trial (8 frames of bikes at 32x64) bf16 with SSIM under autocast ended
# 9.4 dB (NeRV) and 10.2 dB (FFNeRV) below fp32, and 0.04 and 0.02 dB below once SSIM ran in float32.
TRIAL_FRAMES = 8
TRIAL_EPOCHS = 20
FAST_PATH_MARGIN_DB = 0.1  # how far below the fp32 trial's PSNR the path's may end
# Both trials stuck at the mean colour (about 13 dB) agree whatever the path does: the fp32 trial must gain
# this much from its first quarter to its end for the trial to judge (the 8 frames above: 12.9 to 22.2 dB).
TRIAL_MIN_GAIN_DB = 3.0


def training_path(config: TrainConfig) -> ExecutionPath:
    """The execution path a config trains on (fp64 as fp32's, in float64; "auto" not yet resolved)."""
    return ExecutionPath("bf16" if config.precision == "bf16" else "fp32", config.channels_last, config.nnpack)


def _trial_fit(model: VideoINR, frames: torch.Tensor, config: TrainConfig, path: ExecutionPath) -> FitResult:
    """A trial fit of a fresh copy of `model` on `frames` on `path`, TRIAL_EPOCHS of `config`'s recipe from
    the initial weights of its seed; leaves the random generators as they were, and prints nothing."""
    recipe = {**config.to_dict(), "epochs": TRIAL_EPOCHS, "eval_every": TRIAL_EPOCHS,
              "checkpoint_every": TRIAL_EPOCHS, "restart_on_collapse": 0, "precision": path.precision,
              "channels_last": path.channels_last, "nnpack": path.nnpack}
    # The trial fits' collapse lines and warnings are not the run's.
    with _rng_untouched(), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed_everything(config.seed)  # the same initial weights on every path
        return fit(model.fresh_copy(len(frames)), frames, TrainConfig.from_dict(recipe), progress=False)


def check_training_path(
    model: VideoINR, video: torch.Tensor, config: TrainConfig, path: ExecutionPath, fp32: FitResult | None = None
) -> dict[str, Any]:
    """The trial of `path` for `model` on `video` with `config`'s recipe: both PSNRs, the fp32 trial's
    PSNR after its first quarter, and whether the path passed; leaves the random generators as they were.
    `fp32`: the fp32 trial already fitted (`_trial_fit` on FP32), which several paths share."""
    frames = video[:TRIAL_FRAMES]
    started = time.time()
    fp32 = fp32 or _trial_fit(model, frames, config, FP32)
    fast = _trial_fit(model, frames, config, path).report.psnr
    early = next(e["psnr"] for e in fp32.history if e["epoch"] == collapse_check_epoch(TRIAL_EPOCHS))
    judged = fp32.report.psnr >= early + TRIAL_MIN_GAIN_DB
    return {
        "path": path.describe(), "frames": len(frames), "epochs": TRIAL_EPOCHS, "psnr_fp32": fp32.report.psnr,
        "psnr_fast": fast, "psnr_fp32_first_quarter": early, "judged": judged,
        "passed": judged and fast >= fp32.report.psnr - FAST_PATH_MARGIN_DB, "seconds": time.time() - started,
    }


def choose_training_path(
    model: VideoINR, video: torch.Tensor, config: TrainConfig
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config to train with and the record of its trials (for run.json): "auto" becomes the first
    fast path whose trial passes (candidate_paths: bf16 where native, NNPACK on CPUs), else plain fp32;
    a fast path asked for explicitly is tried too and kept, with a warning if it failed; fp32 and fp64
    are not tried (None)."""
    asked = training_path(config)
    if config.precision == "auto":
        trials, chosen = [], FP32
        fp32 = _trial_fit(model, video[:TRIAL_FRAMES], config, FP32)  # one reference for every path tried
        for path in candidate_paths(pick_device(config.device), "auto")[:-1]:  # the fp32 reference left out
            trials.append(check_training_path(model, video, config, path, fp32))
            if trials[-1]["passed"]:
                chosen = path
                break
        config = dataclasses.replace(config, precision=chosen.precision, channels_last=chosen.channels_last,
                                     nnpack=chosen.nnpack)
        return config, {"asked": "auto", "chosen": chosen.describe(), "trials": trials}
    if config.precision == "fp64" or asked == FP32:
        return config, None
    trial = check_training_path(model, video, config, asked)
    if not trial["passed"]:
        why = (f"{trial['psnr_fast']:.2f} dB against fp32's {trial['psnr_fp32']:.2f}" if trial["judged"] else
               "the fp32 trial did not learn enough to judge")
        warnings.warn(f"{asked.describe()} failed its quality trial ({trial['frames']} frames, {trial['epochs']} "
                      f"epochs: {why}): it may train worse than fp32", stacklevel=2)
    return config, {"asked": asked.describe(), "chosen": asked.describe(), "trials": [trial]}
