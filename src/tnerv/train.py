"""One training loop for every model: losses, warm-up + cosine schedule, evaluation, atomic
checkpoints and exact resume, a metrics log and a progress bar."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tnerv.errors import TnervError
from tnerv.files import write_with
from tnerv.metrics import QualityReport, ms_ssim, psnr, ssim
from tnerv.models.base import VideoINR

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
    loss: str = "fusion"  # "l2" or "fusion" = 0.7 * L1 + 0.3 * (1 - SSIM)
    grad_clip: float | None = None  # max gradient norm; None = no clipping
    eval_every: int = 10  # epochs between evaluations (PSNR and MS-SSIM over all frames)
    checkpoint_every: int = 10  # epochs between checkpoints (one is always written at the end)
    eval_batch_size: int = 4
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when present, else the CPU
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Builds a config from plain data, naming any unknown field."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TnervError(f"unknown training option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Rejects settings that cannot train, with the reason."""
        if self.epochs < 1 or self.batch_size < 1:
            raise TnervError("epochs and batch size must be at least 1")
        if self.loss not in LOSSES:
            raise TnervError(f"unknown loss {self.loss!r}; available: {', '.join(LOSSES)}")
        if self.precision not in ("fp32", "bf16"):
            raise TnervError(f"unknown precision {self.precision!r}; available: fp32, bf16")
        if not 0 <= self.warmup < 1:
            raise TnervError("warmup is a fraction of the iterations in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run.json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def fusion_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.7 * L1 + 0.3 * (1 - SSIM), the loss of NeRV, E-NeRV, FFNeRV and T-NeRV."""
    return 0.7 * F.l1_loss(pred, target) + 0.3 * (1 - ssim(pred.float(), target.float()).mean())


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": F.mse_loss,
    "fusion": fusion_loss,
}


def lr_factor(iteration: int, total: int, warmup: float, warmup_start: float) -> float:
    """Linear warm-up from `warmup_start` to 1 over the first `warmup` of iterations, then cosine to 0."""
    warm = int(warmup * total)
    if iteration < warm:
        return warmup_start + (1 - warmup_start) * iteration / warm
    progress = (iteration - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * progress))


def pick_device(name: str) -> torch.device:
    """"auto" picks $TNERV_DEVICE if set, else CUDA when available, else the CPU; anything else is
    taken as given."""
    if name == "auto":
        name = os.environ.get("TNERV_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TnervError(f"device {name!r} requested but no CUDA GPU is available")
    return torch.device(name)


class VideoFrames:
    """The video on the training device as uint8 (N, 3, H, W); batches become float in [0, 1]."""

    def __init__(self, frames: torch.Tensor, device: torch.device):
        if frames.dtype != torch.uint8:
            frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
        self.data = frames.to(device)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __call__(self, frame_idx: torch.Tensor) -> torch.Tensor:
        return self.data[frame_idx.to(self.data.device)].float() / 255


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
    for batch_idx, out in model.reconstruct(idx, frames, batch_size):
        out, target = out.float(), frames(batch_idx)
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
    """What a fit produced: the final quality, the epochs run and the wall time of this call."""

    report: QualityReport
    epochs: int
    seconds: float
    history: list[dict[str, Any]]


def fit(
    model: VideoINR,
    video: torch.Tensor,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
) -> FitResult:
    """Fits `model` to `video` ((N, 3, H, W), uint8 or float in [0, 1]) and returns the final quality.

    With `run_dir`, checkpoints and a metrics log are written there; `resume` continues from the last
    checkpoint exactly (model, optimiser, schedule, RNG state, epoch)."""
    config.validate()
    device = pick_device(config.device)
    run_dir = Path(run_dir) if run_dir is not None else None
    seed_everything(config.seed)
    model.to(device).train()
    frames = VideoFrames(video, device)
    num_frames = len(frames)
    if num_frames != model.config.num_frames:
        raise TnervError(f"the model was built for {model.config.num_frames} frames, the video has {num_frames}")

    model_groups = model.optimizer_groups()
    groups = [
        {"params": g["params"], "lr": config.lr * g.get("lr_scale", 1.0)} for g in model_groups
    ]
    optimizer = torch.optim.Adam(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(num_frames / config.batch_size)
    total_steps = config.epochs * steps_per_epoch

    def schedule(it: int) -> float:
        return lr_factor(it, total_steps, config.warmup, config.warmup_start)

    # A group with "scheduled": False keeps its rate (e.g. entropy models that must follow to the end).
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [schedule if g.get("scheduled", True) else (lambda it: 1.0) for g in model_groups]
    )
    loss_fn = LOSSES[config.loss]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    all_idx = torch.arange(num_frames, device=device)

    model.attach_video(frames)
    start_epoch, history = 0, []
    checkpoint_path = run_dir / CHECKPOINT if run_dir else None
    if resume:
        if checkpoint_path is None or not checkpoint_path.exists():
            raise TnervError(f"nothing to resume: no {CHECKPOINT} in {run_dir}")
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_epoch, history = state["epoch"], state["history"]
    else:
        model.on_fit_start(all_idx, frames)

    def save_checkpoint(epoch: int) -> None:
        if checkpoint_path is None:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "epoch": epoch,
            "history": history,
            "train_config": config.to_dict(),
        }
        atomic_save(state, checkpoint_path)

    log = None
    if run_dir:
        # The log restarts from the checkpoint's history: epochs after the last checkpoint are redone.
        log = open(run_dir / METRICS_LOG, "w")
        log.writelines(json.dumps(entry) + "\n" for entry in history)
    started = time.time()
    bar = tqdm(
        total=total_steps, initial=start_epoch * steps_per_epoch, disable=not progress, unit="step",
        dynamic_ncols=True,
    )
    report = None
    try:
        for epoch in range(start_epoch, config.epochs):
            model.on_epoch_start(epoch, config.epochs)
            # The order depends only on (seed, epoch), so a resumed run sees the same batches.
            order = torch.randperm(num_frames, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
            epoch_loss = 0.0
            for start in range(0, num_frames, config.batch_size):
                idx = order[start : start + config.batch_size].to(device)
                target = frames(idx)
                with autocast:
                    outputs = model(idx, target if model.needs_frames else None)
                    loss = model.training_loss(outputs, target, loss_fn)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                model.after_step(idx, outputs)
                epoch_loss += loss.item() * len(idx)
                bar.update(1)
            done = epoch + 1
            entry: dict[str, Any] = {
                "epoch": done,
                "loss": epoch_loss / num_frames,
                "lr": scheduler.get_last_lr()[0],
                "seconds": time.time() - started,
            }
            if done % config.eval_every == 0 or done == config.epochs:
                report = evaluate(model, frames, config.eval_batch_size)
                entry.update(psnr=report.psnr, ms_ssim=report.ms_ssim)
                bar.set_postfix(epoch=done, loss=f"{entry['loss']:.4f}", psnr=f"{report.psnr:.2f}")
            else:
                bar.set_postfix(epoch=done, loss=f"{entry['loss']:.4f}")
            history.append(entry)
            if log:
                log.write(json.dumps(entry) + "\n")
                log.flush()
            if done % config.checkpoint_every == 0 or done == config.epochs:
                save_checkpoint(done)
            if on_epoch_end:
                on_epoch_end(done)
    finally:
        bar.close()
        if log:
            log.close()
    if report is None:  # resumed a run that had already finished
        report = evaluate(model, frames, config.eval_batch_size)
    return FitResult(report=report, epochs=config.epochs, seconds=time.time() - started, history=history)
