"""Run directories: fit a model to a video into a folder, resume it, evaluate it later.

A run directory holds run.json (what was fitted, and how), checkpoint.pt (the latest checkpoint),
metrics.jsonl (one line per epoch) and result.json (the final quality, once finished)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tnerv
from tnerv.codec.settings import CompressionSettings, settings_from_dict
from tnerv.errors import TnervError
from tnerv.files import write_json_atomic
from tnerv.host import check_trainable
from tnerv.metrics import QualityReport
from tnerv.models import VideoINR, config_to_dict, create_model, load_preset, model_class
from tnerv.models.budget import DEFAULT_MODEL, config_for_video, describe
from tnerv.models.counting import transmitted_size
from tnerv.parallel import is_main_process
from tnerv.progress import SegmentSteps
from tnerv.train import (
    CHECKPOINT,
    METRICS_LOG,
    TrainConfig,
    VideoFrames,
    choose_training_path,
    evaluate,
    fit,
    pick_device,
    seed_everything,
)
from tnerv.video import Padding, read_video, resize_and_crop, to_uint8, write_frames

RUN_FILE = "run.json"
RESULT_FILE = "result.json"


@dataclass
class VideoSpec:
    """Where a run's frames come from, so that `tnerv eval` can read the same frames again."""

    path: str
    start: int = 0
    count: int | None = None
    step: int = 1
    resize: tuple[int, int] | None = None  # (height, width) after resize and centre crop
    yuv_size: tuple[int, int] | None = None  # (width, height) of a raw .yuv file
    matrix: str | None = None  # YUV -> RGB matrix; None = by resolution (see tnerv.video)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VideoSpec:
        """Reads the form stored in run.json."""
        values = dict(values)
        for key in ("resize", "yuv_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def load_frames(spec: VideoSpec) -> torch.Tensor:
    """The selected (and resized) frames as a uint8 tensor (N, 3, H, W)."""
    video = read_video(
        spec.path, start=spec.start, count=spec.count, step=spec.step, size=spec.yuv_size, matrix=spec.matrix
    )
    frames = video.frames
    if spec.resize is not None:
        frames = resize_and_crop(frames, *spec.resize)
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def _check_run_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuses a run directory that cannot take this run; changes nothing (see _start_run_dir)."""
    if out.exists() and not out.is_dir():
        raise TnervError(f"output {out} exists and is not a directory")
    holds_run = (out / RUN_FILE).exists()
    if resume and not holds_run:
        raise TnervError(f"cannot resume: {out} holds no run ({RUN_FILE} is missing)")
    if holds_run and not (overwrite or resume):
        raise TnervError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if not holds_run and out.is_dir() and any(out.iterdir()):
        raise TnervError(f"{out} holds files but no run; choose a new or empty folder")


def _start_run_dir(out: Path, overwrite: bool) -> None:
    """Creates the run directory (or clears the run it holds, with `overwrite`) once the run can start."""
    if overwrite:
        for name in (RUN_FILE, RESULT_FILE, CHECKPOINT, METRICS_LOG):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class RunResult:
    """The outcome of a fit or an evaluation of a run directory."""

    run_dir: str
    model: str
    parameters: dict[str, int]
    report: QualityReport | None  # None: the fit did not evaluate after its last epoch (an encode measures the file)
    epochs: int
    train_seconds: float
    chosen: dict[str, Any] | None = None  # the config chosen for the video (`tnerv.models.budget.describe`)
    collapsed: dict[str, Any] | None = None  # the fit's collapse verdict (`tnerv.train.FitResult`), None if none
    seed: int | None = None  # the seed of the fit kept (the run's, plus one per restart after a collapse)
    restarts: list[dict[str, Any]] | None = None  # the seeds abandoned for a collapse, and their verdicts
    # A fit's model as trained (its compression wrapper included) and the frames it was fitted to (uint8
    # N, 3, H, W), so that encoding writes the file without reading them back; not part of the record.
    fitted: VideoINR | None = field(default=None, repr=False, compare=False)
    frames: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for result.json and --json output."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("fitted", "frames")}
        data["report"] = asdict(self.report) if self.report else None
        data["psnr"], data["ms_ssim"] = (self.report.psnr, self.report.ms_ssim) if self.report else (None, None)
        return data


def build_model(run: dict[str, Any]) -> VideoINR:
    """The model a run.json describes, wrapped for entropy-constrained training if the run asks."""
    net = create_model(run["model"], run["model_config"])
    settings = settings_from_dict(run.get("compression"))
    return settings.wrap(net) if settings else net


def fit_run(
    video: VideoSpec,
    out: str | Path,
    model: str | None = None,
    preset: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | SegmentSteps = True,
    on_epoch_end: Any = None,
    compression: CompressionSettings | None = None,
    size: int | None = None,
    ablations: list[str] | None = None,
    on_config: Callable[[dict[str, Any]], None] | None = None,
    started: float | None = None,
    reserve_evals: int = 0,
    final_eval: bool = True,
    start_from: Path | None = None,
) -> RunResult:
    """Fits a model (by name and/or preset) to a video into the run directory `out`; `compression`
    (`tnerv.codec.settings`) wraps the model for its compression method (e.g. the rate term); `ablations` switches parts of the model off (T-NeRV); `size` scales the model to
    that many transmitted parameters, keeping its split between components (default: a size that follows
    from the video, `tnerv.models.budget`); `on_config` sees what was chosen (`describe`) before training.
    A time budget (the training config's `time_budget`) counts from `started` (default: now) and leaves
    `reserve_evals` evaluations' worth after the fit (`tnerv.train.fit`); run.json then records the epochs
    it planned. Without `final_eval` the caller measures the model (the result's report is None). With
    `start_from`, a fresh fit starts from that run's trained weights where they fit (`warm_start`)."""
    started = time.time() if started is None else started
    out = Path(out)
    main = is_main_process()  # under torchrun every rank runs this; rank 0 alone writes
    if main:
        _check_run_dir(out, overwrite, resume)
    if resume:
        run = read_run(out)
        if model is not None and model != run["model"]:
            raise TnervError(f"{out} holds a {run['model']} run, not {model}")
        video = VideoSpec.from_dict(run["video"])
        frames = load_frames(video)
        # The stored recipe, on the device asked for now (a run may move between machines).
        stored = run["train_config"]
        device = (train_overrides or {}).get("device", stored.get("device", "auto"))
        config = TrainConfig.from_dict({**stored, "device": device})
        pick_device(config.device)
        seed_everything(config.seed)  # as at the start: a run stopped before its first checkpoint restarts
        net = build_model(run)
    else:
        loaded = load_preset(preset) if preset else None
        if loaded and model and loaded.model != model:
            raise TnervError(f"preset {preset!r} is for model {loaded.model!r}, not {model!r}")
        name = model or (loaded.model if loaded else DEFAULT_MODEL)
        if size is not None:
            check_trainable(name, size)  # before a config is solved for an absurd size
        frames = load_frames(video)
        n, _, h, w = frames.shape
        model_config, geometry = config_for_video(
            name, h, w, n, loaded, model_overrides, size, ablations or ()
        )
        chosen = describe(name, model_config, geometry)
        if on_config and main:
            on_config(chosen)
        train_values = {**model_class(name).train_defaults, **(loaded.train if loaded else {}), **(train_overrides or {})}
        config = TrainConfig.from_dict(train_values)
        run = {
            "tnerv_version": tnerv.__version__,
            "model": name,
            "preset": preset,
            "model_config": config_to_dict(model_config),
            "train_config": config.to_dict(),
            "video": asdict(video),
            "compression": compression.to_dict() if compression else None,
            "padding": Padding(h, w, geometry.coded_height, geometry.coded_width).to_dict(),
            "chosen": chosen,
        }
        pick_device(config.device)  # an unusable device leaves nothing behind
        check_trainable(name, transmitted_size(name, model_config)["total"])
        seed_everything(config.seed)  # the initial weights depend on the seed too
        net = build_model(run)  # before run.json is written: a config that cannot build leaves nothing
        if start_from is not None:
            run["started_from"] = {"run": str(start_from), "parameters": warm_start(net, start_from)}
        # A fast path's trial, once: run.json keeps the path it chose, so that a resume trains on it.
        config, run["fast_path_check"] = choose_training_path(net, frames, config)
        run["train_config"] = config.to_dict()
        if main:
            _start_run_dir(out, overwrite)
            write_json_atomic(run, out / RUN_FILE)
    result = fit(net, frames, config, out, resume=resume, progress=progress, on_epoch_end=on_epoch_end,
                 started=started, reserve_evals=reserve_evals, final_eval=final_eval)
    if main and config.time_budget is not None:
        # The budget and what it bought (a resume trains to the epochs its checkpoint planned).
        estimate = result.estimate or (run.get("time_budget") or {}).get("estimate")
        run["time_budget"] = {"seconds": config.time_budget, "recipe_first": config.recipe_first,
                              "epochs": result.epochs, "estimate": estimate}
        write_json_atomic(run, out / RUN_FILE)
    outcome = RunResult(
        run_dir=str(out),
        model=run["model"],
        parameters=net.parameter_counts(),
        report=result.report,
        epochs=result.epochs,
        train_seconds=result.history[-1]["seconds"] if result.history else result.seconds,
        chosen=run.get("chosen"),
        collapsed=result.collapsed,
        seed=result.seed,
        restarts=result.restarts,
        fitted=net,
        frames=frames,
    )
    if main:
        write_json_atomic(outcome.to_dict(), out / RESULT_FILE)
    return outcome


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run.json of a run directory."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise TnervError(f"{run_dir} is not a run directory ({RUN_FILE} is missing)")
    return json.loads(path.read_text())


def run_padding(run: dict[str, Any]) -> Padding:
    """How a run's frames are padded for its model (run.json's "padding"; a run.json written before
    that field existed holds the video's size in "chosen" as "padded_from", only where it was padded)."""
    if "padding" in run:
        return Padding.from_dict(run["padding"])
    coded = run["model_config"]["height"], run["model_config"]["width"]
    return Padding(*(run.get("chosen") or {}).get("padded_from", coded), *coded)


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """A run directory's checkpoint (`tnerv.train.fit` writes it), as a TnervError if it is missing or damaged."""
    if not (run_dir / CHECKPOINT).exists():
        raise TnervError(f"{run_dir} has no checkpoint yet ({CHECKPOINT} is missing)")
    try:
        return torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged file must not become a traceback
        raise TnervError(f"cannot read the checkpoint in {run_dir}: {exc}") from exc


def warm_start(net: VideoINR, run_dir: Path) -> int:
    """Loads into `net` the trained parameters of another run's checkpoint that have a twin in it (same name
    and shape), and returns how many: buffers (masks, frame buffers, embeddings filled from the frames) and
    parameters of another shape (per-frame ones of a video of another length) keep what was built."""
    checkpoint = read_checkpoint(run_dir)
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise TnervError(f"cannot start from {run_dir}: its checkpoint holds no model")
    own = dict(net.named_parameters())
    twins = {name: value for name, value in state.items() if name in own and own[name].shape == value.shape}
    with torch.no_grad():
        for name, value in twins.items():
            own[name].copy_(value)
    return len(twins)


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[VideoINR, dict[str, Any], dict[str, Any]]:
    """The fitted model of a run directory, its run.json and its checkpoint."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    state = read_checkpoint(run_dir)
    net = build_model(run)
    try:
        net.load_state_dict(state["model"])
    except Exception as exc:  # a checkpoint of another model must not become a traceback
        raise TnervError(f"cannot read the checkpoint in {run_dir}: {exc}") from exc
    return net.to(pick_device(device)).eval(), run, state


def eval_run(run_dir: str | Path, frames_out: str | Path | None = None, batch_size: int = 4) -> RunResult:
    """Evaluates a run's checkpoint on its video; optionally writes the decoded frames as PNGs."""
    net, run, state = load_run(run_dir)
    device = next(net.parameters()).device
    video = load_frames(VideoSpec.from_dict(run["video"]))
    padding = run_padding(run)
    if video.shape[0] != net.config.num_frames or tuple(video.shape[2:]) != (padding.height, padding.width):
        raise TnervError(f"the video of {run_dir} no longer matches the run (frames or size changed)")
    frames = VideoFrames(video, device, (padding.coded_height, padding.coded_width))
    decoded: list[torch.Tensor] = []
    keep = (lambda idx, out: decoded.append(out.cpu())) if frames_out is not None else None
    report = evaluate(net, frames, batch_size, on_batch=keep)
    if frames_out is not None:
        write_frames(to_uint8(torch.cat(decoded)), frames_out)
    return RunResult(
        run_dir=str(run_dir),
        model=run["model"],
        parameters=net.parameter_counts(),
        report=report,
        epochs=state["epoch"],
        train_seconds=state["history"][-1]["seconds"] if state["history"] else 0.0,
    )

