"""Runs a bench: every (video, method, rate point) it needs, one result record each, resumable.

An output folder holds
  bench.json                       what the bench is (kind, dataset, protocol), checked on a rerun
  runs/<video>/<unit>/             the run directory of each fit (checkpoints: a crash resumes there)
  files/<video>/<unit>.tnrv|.hevc  compressed files (compression benches)
  results/<video>/<unit>.json      one record per finished unit: a rerun skips these
  frames/<video>/<unit>.png        the decoded middle frame of each unit (and original.png)
and the tables, plots and report.html made from the records (`tnerv.bench.report`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tnerv.anchors import ANCHOR_CODECS, encode_anchor, stream_suffix
from tnerv.bench.display import display_of
from tnerv.bench.protocols import Protocol
from tnerv.codec.container import decoder_from_file
from tnerv.codec.settings import ENTROPY_CONSTRAINED
from tnerv.compress import encode_video
from tnerv.decode import time_decode
from tnerv.errors import TnervError
from tnerv.host import machine_memory
from tnerv.metrics import psnr
from tnerv.models import config_to_dict, list_models, model_class
from tnerv.models.base import VideoINR
from tnerv.models.budget import cpu_config, setting_config
from tnerv.models.counting import split_of
from tnerv.models.tnerv import ABLATIONS
from tnerv.runs import RUN_FILE, VideoSpec, fit_run, load_frames, load_run, write_json_atomic
from tnerv.train import VideoFrames, pick_device
from tnerv.video import probe, write_png
from tnerv.video.datasets import Sequence

BENCH_FILE = "bench.json"
# Protocol fields a rerun may change: the bench kind (compared as the records' kind) and the rate points,
# which only add units (each has its own record).
FREE_FIELDS = ("bench", "lambdas", "size_factors", "crfs")
ABLATION_NAMES = tuple(ABLATIONS)  # E1-E5, D1-D3 (supplementary Tab. 2)


@dataclass(frozen=True)
class Unit:
    """One thing a bench measures: a method (model, ablated T-NeRV or anchor) at one rate point on one video."""

    video: Sequence
    method: str  # the record's row key: "tnerv", "hnerv", "tnerv-E1", "x265"
    model: str | None = None  # the registry model; None for anchors
    ablations: tuple[str, ...] = ()
    lam: float | None = None
    size: int | None = None
    crf: int | None = None

    @property
    def point(self) -> str:
        """Which rate point: "" for representation, else lambda=.., size=.. or crf=.."""
        if self.lam is not None:
            return f"lambda={self.lam:g}"
        if self.crf is not None:
            return f"crf={self.crf}"
        return f"size={self.size}" if self.size is not None else ""

    @property
    def key(self) -> str:
        """The unit's file name stem: unique per video."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.method}_{self.point}" if self.point else self.method)

    @property
    def label(self) -> str:
        """The display name of the method (a model's from its card): "HNeRV", "T-NeRV (E3+D1)", "x265 (veryslow)"."""
        if self.ablations and self.model is not None:
            return f"{model_class(self.model).card.label} ({'+'.join(self.ablations)})"
        shown = display_of(self.method)
        return shown.label if shown is not None else self.method


def parse_methods(bench: str, names: list[str] | None) -> list[str]:
    """The methods a bench runs: models (and anchors for compression; ablations for the ablation bench)."""
    models = list_models()
    if bench == "ablation":
        chosen = names or ["tnerv", *ABLATION_NAMES]
        methods = []
        for name in chosen:
            short = name.upper().removeprefix("TNERV-")
            if name.lower() == "tnerv":
                methods.append("tnerv")
            elif short in ABLATION_NAMES or all(part in ABLATION_NAMES for part in short.split("+")):
                methods.append(f"tnerv-{short}")
            else:
                raise TnervError(f"unknown ablation {name!r}; available: tnerv, {', '.join(ABLATION_NAMES)} (or E1+D2)")
        return methods
    default = ["tnerv", "cnerv", "ffnerv", "hnerv", "hinerv", "x265"] if bench == "compression" else models
    chosen = names or default
    allowed = models + (list(ANCHOR_CODECS) if bench == "compression" else [])
    for name in chosen:
        if name not in allowed:
            raise TnervError(f"unknown method {name!r} for the {bench} bench; available: {', '.join(allowed)}")
    return list(dict.fromkeys(chosen))


def plan_units(bench: str, protocol: Protocol, videos: list[Sequence], methods: list[str]) -> list[Unit]:
    """Every unit of a bench, video by video."""
    units = []
    for video in videos:
        for method in methods:
            if method in ANCHOR_CODECS:
                units += [Unit(video, method, crf=crf) for crf in protocol.crfs]
            elif method.startswith("tnerv-"):
                units.append(Unit(video, method, "tnerv", tuple(method.removeprefix("tnerv-").split("+"))))
            elif bench != "compression":
                units.append(Unit(video, method, method))
            elif model_class(method).compression == ENTROPY_CONSTRAINED:
                units += [Unit(video, method, method, lam=lam, size=protocol.budget) for lam in protocol.lambdas]
            else:
                units += [Unit(video, method, method, size=size) for size in protocol.sizes]
    return units


def video_spec(video: Sequence, protocol: Protocol) -> VideoSpec:
    """The frames a protocol takes from a video: up to its frame count (fewer from a shorter video)
    from the video's selection, resized and centre-cropped."""
    available = probe(video.path, size=video.yuv_size).num_frames - video.start
    count = min(n for n in (protocol.num_frames, video.count, available) if n is not None)
    if count < 1:
        raise TnervError(f"{video.name} has no frames from frame {video.start} on")
    return VideoSpec(
        path=video.path, start=video.start, count=count, resize=(protocol.height, protocol.width),
        yuv_size=video.yuv_size, matrix=video.matrix,
    )


def sized_config(unit: Unit, protocol: Protocol, num_frames: int) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The unit's model config: the setting's (paper scale) or the one derived from it by the rule that
    keeps its proportions (CPU scale), at the unit's size; then ablated, which keeps the full model's
    widths but those it names; and the widths the ablation changed, {field: [full model's, ablated's]}."""
    model = unit.model
    assert model is not None
    size = unit.size or protocol.budget
    if protocol.scale == "cpu":
        config = cpu_config(
            model, protocol.setting, protocol.height, protocol.width, num_frames, size, protocol.size_tolerance
        )
    else:
        config = setting_config(model, protocol.setting, num_frames, size)
    if not unit.ablations:
        return config_to_dict(config), {}
    ablated, _, changed = model_class(model).ablate_at_budget(config, list(unit.ablations), size, protocol.size_tolerance)
    return config_to_dict(ablated), json.loads(json.dumps(changed))


def model_config(unit: Unit, protocol: Protocol, num_frames: int) -> dict[str, Any]:
    """The unit's model config (see sized_config)."""
    return sized_config(unit, protocol, num_frames)[0]


def split_record(parameters: dict[str, int]) -> dict[str, float]:
    """A result's split of its transmitted parameters: percent in the decoder, grids and embeddings."""
    return {k: round(100 * v, 1) for k, v in split_of(parameters).items()}


def _train_setup(unit: Unit, protocol: Protocol) -> tuple[str | None, dict[str, Any]]:
    """The preset whose training recipe a unit uses (CPU scale), the protocol's epochs (or, with a time a
    unit, the budget those epochs are planned in), and the model's paper batch size (1 for all seven but
    HiNeRV): the `-s-cpu` presets train at 2 for speed, which at CPU scale's few steps leaves half the
    models far from converged."""
    length: dict[str, Any] = {"epochs": protocol.epochs}
    if protocol.unit_time is not None:
        length["time_budget"] = protocol.unit_time
    if protocol.scale != "cpu":
        return None, length
    batch = model_class(unit.model).train_defaults.get("batch_size", 1)
    return f"{unit.model}-s-cpu", {**length, "batch_size": batch}


def timed_decode(
    build: Callable[[], VideoINR], num_frames: int, keep: int, device: torch.device, passes: int = 3
) -> tuple[float, torch.Tensor]:
    """Frames per second of building a decoder and decoding every frame, one at a time (as a player
    would; `tnerv.decode.time_decode`, the median of `passes` passes), and the decoded frame `keep` as
    uint8 (3, H, W). A first frame is decoded before the clock starts, so that one-off start-up costs
    (kernel selection, allocation) are not counted."""

    def decode_pass() -> torch.Tensor:
        kept = None
        for idx, out in build().reconstruct(torch.arange(num_frames, device=device), None, 1):
            if idx[0].item() == keep:
                kept = torch.round(out[0].float() * 255).to(torch.uint8).cpu()
        assert kept is not None, f"frame {keep} is not among the {num_frames} decoded"
        return kept

    def warmup() -> None:
        next(build().reconstruct(torch.zeros(1, dtype=torch.long, device=device), None, 1))

    speed, kept = time_decode(decode_pass, num_frames, passes, warmup, device)
    return speed.fps, kept


@dataclass
class BenchRun:
    """A bench in an output folder: what it runs and where each result goes."""

    bench: str
    dataset: str
    protocol: Protocol
    videos: list[Sequence]
    methods: list[str]
    out: Path
    progress: bool = True
    log: Callable[[str], None] = print
    records: list[dict[str, Any]] = field(default_factory=list)
    # (I, N): this process is worker I of N sharing the output folder; it runs units I, I+N, I+2N, ...
    worker: tuple[int, int] | None = None
    complete: bool = False  # every unit of the bench has its record (after run)

    def check_folder(self) -> None:
        """Writes bench.json, or checks that the folder holds this same bench (a rerun skips finished units)."""
        self.out.mkdir(parents=True, exist_ok=True)
        protocol = {k: v for k, v in self.protocol.to_dict().items() if k not in FREE_FIELDS}
        stored = {"bench": _record_kind(self.bench), "dataset": self.dataset, "protocol": protocol}
        path = self.out / BENCH_FILE
        if path.exists():
            previous = json.loads(path.read_text())
            for key in ("bench", "dataset", "protocol"):
                if previous.get(key) != stored[key]:
                    raise TnervError(
                        f"{self.out} holds another bench ({key}: {_short(previous.get(key))}, now {_short(stored[key])});"
                        " choose another --out"
                    )
        else:
            write_json_atomic(stored, path)

    def run(self) -> list[dict[str, Any]]:
        """Runs every unit not finished yet (of this worker's share) and returns all the records found
        at the end, finished before, now, or by other workers; `complete` says whether that is all."""
        units = plan_units(self.bench, self.protocol, self.videos, self.methods)
        self.check_sizes(units)
        self.check_folder()
        index, count = self.worker or (0, 1)
        for i, unit in enumerate(units, start=1):
            path = self._result(unit)
            tag = f"[{i}/{len(units)}] {unit.video.name} {unit.label} {unit.point}".rstrip()
            if path.exists():
                self.log(f"{tag}: done before, skipped")
                continue
            if (i - 1) % count != index:
                continue  # another worker's unit
            self.log(f"{tag}: running")
            record = self.run_unit(unit)
            if self.worker:
                record["worker"] = f"{index}/{count}"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(record, path)
            self.log(f"{tag}: {_summary(record)}")
        # Read back every record: other workers may have finished theirs meanwhile.
        found = [self._result(unit) for unit in units]
        self.records = [json.loads(path.read_text()) for path in found if path.exists()]
        self.complete = len(self.records) == len(units)
        return self.records

    def _result(self, unit: Unit) -> Path:
        return self.out / "results" / unit.video.name / f"{unit.key}.json"

    def check_sizes(self, units: list[Unit]) -> None:
        """Solves every model's size before anything runs, so that a size no model can reach fails
        in a second rather than after hours of other fits."""
        frame_counts: dict[str, int] = {}
        for unit in units:
            if unit.model is None:
                continue
            if unit.video.name not in frame_counts:
                frame_counts[unit.video.name] = video_spec(unit.video, self.protocol).count
            try:
                model_config(unit, self.protocol, frame_counts[unit.video.name])
            except TnervError as exc:
                where = " ".join(filter(None, (unit.label, unit.point, "on", unit.video.name)))
                raise TnervError(f"{where}: {exc}") from None

    # -- units ---------------------------------------------------------------------------------------

    def _frames(self, video: Sequence) -> tuple[VideoSpec, torch.Tensor]:
        spec = video_spec(video, self.protocol)
        return spec, load_frames(spec)

    def _base_record(self, unit: Unit, frames: torch.Tensor, keep: int) -> dict[str, Any]:
        n, _, h, w = frames.shape
        original = self.out / "frames" / unit.video.name / "original.png"
        if not original.exists():
            original.parent.mkdir(parents=True, exist_ok=True)
            write_png(_as_numpy(frames[keep : keep + 1])[0], original)
        return {
            "bench": _record_kind(self.bench), "scale": self.protocol.scale, "scale_label": self.protocol.label,
            "dataset": self.dataset, "video": unit.video.name, "method": unit.method, "method_label": unit.label,
            "point": unit.point, "num_frames": n, "height": h, "width": w, "frame_index": keep,
            "original_png": str(original.relative_to(self.out)),
            "parameters": None, "split": None, "bpp": None, "num_bytes": None, "bytes_by_component": None,
            "epochs": None,
        }

    def _keep_frame(self, record: dict[str, Any], unit: Unit, frame: torch.Tensor, original: torch.Tensor) -> None:
        path = self.out / "frames" / unit.video.name / f"{unit.key}.png"
        write_png(_as_numpy(frame[None])[0], path)
        record["frame_png"] = str(path.relative_to(self.out))
        record["frame_psnr"] = psnr(frame[None].float() / 255, original[None].float() / 255).item()

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        """Fits, encodes or runs the anchor of one unit and measures it."""
        spec, frames = self._frames(unit.video)
        keep = frames.shape[0] // 2
        record = self._base_record(unit, frames, keep)
        if unit.model is None:
            frame = self._run_anchor(unit, spec, frames, keep, record)
        else:
            device = pick_device("auto")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            run = self._run_encode if self.bench == "compression" else self._run_fit
            frame = run(unit, spec, frames, keep, record, device)
            record["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            if device.type == "cuda":
                record["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        self._keep_frame(record, unit, frame, frames[keep])
        return record

    def _run_anchor(
        self, unit: Unit, spec: VideoSpec, frames: torch.Tensor, keep: int, record: dict[str, Any]
    ) -> torch.Tensor:
        """Encodes with a codec anchor at the unit's CRF; returns the decoded frame `keep`."""
        result, decoded = encode_anchor(
            _as_numpy(frames), unit.method, unit.crf, fps=_fps(spec),
            matrix=spec.matrix, stream_path=self._file(unit, stream_suffix(unit.method)),
        )
        record.update(
            psnr=result.psnr, ms_ssim=result.ms_ssim, ms_ssim_variant=result.ms_ssim_variant, bpp=result.bpp,
            num_bytes=result.num_bytes, encode_seconds=result.encode_seconds, decode_fps=result.decode_fps,
            anchor={"preset": result.preset, "pix_fmt": result.pix_fmt, "matrix": result.matrix}, device="cpu",
        )
        return torch.from_numpy(decoded[keep]).permute(2, 0, 1)

    def _run_encode(
        self, unit: Unit, spec: VideoSpec, frames: torch.Tensor, keep: int, record: dict[str, Any], device: torch.device
    ) -> torch.Tensor:
        """Trains the unit's model with its compression into a .tnrv file and decodes that file."""
        run_dir = self.out / "runs" / unit.video.name / unit.key
        preset, train = _train_setup(unit, self.protocol)
        path = self._file(unit, ".tnrv")
        path.unlink(missing_ok=True)  # a file left by a crash before its record was written
        result = encode_video(
            spec, path, unit.model, preset, lam=unit.lam, model_overrides=model_config(unit, self.protocol, len(frames)),
            train_overrides=train, run_dir=run_dir, resume=(run_dir / RUN_FILE).exists(), progress=self.progress,
        )
        # Its own file: capped by this machine's memory, not the default for untrusted files.
        fps, frame = timed_decode(
            lambda: decoder_from_file(path, device, machine_memory(), 1, 1)[0], result.num_frames, keep, device
        )
        record.update(
            psnr=result.psnr, ms_ssim=result.ms_ssim, ms_ssim_variant=result.ms_ssim_variant, bpp=result.bpp,
            num_bytes=result.num_bytes, bytes_by_component=result.bytes_by_component,
            parameters=result.parameters["transmitted"], split=split_record(result.parameters),
            encode_seconds=result.encode_seconds, decode_fps=fps,
            method_detail=result.method, file=str(path.relative_to(self.out)), epochs=result.epochs,
            collapsed=result.collapsed,  # the fit's verdict, settled by the file's PSNR
        )
        return frame

    def _run_fit(
        self, unit: Unit, spec: VideoSpec, frames: torch.Tensor, keep: int, record: dict[str, Any], device: torch.device
    ) -> torch.Tensor:
        """Fits the unit's model and decodes every frame from its transmitted state alone."""
        run_dir = self.out / "runs" / unit.video.name / unit.key
        preset, train = _train_setup(unit, self.protocol)
        config, changed = sized_config(unit, self.protocol, len(frames))
        fitted = fit_run(
            spec, run_dir, unit.model, preset, model_overrides=config,
            train_overrides=train, resume=(run_dir / RUN_FILE).exists(), progress=self.progress,
        )
        net, _, _ = load_run(run_dir, device=str(device))
        net.prepare_export(VideoFrames(frames, device))
        state, cls, cfg = net.transmitted_state(), type(net), net.config
        fps, frame = timed_decode(lambda: cls.from_transmitted(cfg, state).to(device), len(frames), keep, device)
        record.update(
            psnr=fitted.report.psnr, ms_ssim=fitted.report.ms_ssim, ms_ssim_variant=fitted.report.ms_ssim_variant,
            parameters=fitted.parameters["transmitted"], split=split_record(fitted.parameters),
            encode_seconds=fitted.train_seconds, decode_fps=fps,
            epochs=fitted.epochs, ablations=list(unit.ablations), widths_changed=changed, collapsed=fitted.collapsed,
        )
        return frame

    def _file(self, unit: Unit, suffix: str) -> Path:
        path = self.out / "files" / unit.video.name / f"{unit.key}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _record_kind(bench: str) -> str:
    # The timing bench measures the representation runs (Tab. 5 beside Tab. 4): they share a folder.
    return "representation" if bench == "timing" else bench


def _fps(spec: VideoSpec) -> float:
    return probe(spec.path, size=spec.yuv_size).fps / spec.step


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("label", json.dumps(value)[:80])
    return str(value)


def _summary(record: dict[str, Any]) -> str:
    rate = f", {record['bpp']:.4f} bpp" if record.get("bpp") is not None else ""
    return (
        f"PSNR {record['psnr']:.2f} dB, MS-SSIM {record['ms_ssim']:.4f}{rate}, "
        f"{record['encode_seconds'] / 60:.1f} min, decodes at {record['decode_fps']:.1f} fps"
    )


def _as_numpy(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 tensor -> (N, H, W, 3) array, as the video writers and anchors take them."""
    return frames.permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class BenchOutcome:
    """A bench run: its records and the files made from them (none while other workers' units are
    unfinished: the last worker to finish, or a rerun, writes them)."""

    records: list[dict[str, Any]]
    tables: list[Path]
    plots: list[Path]
    report: Path | None
    complete: bool = True


def write_outputs(records: list[dict[str, Any]], out: Path, bench: str) -> tuple[list[Path], list[Path], Path]:
    """Tables (markdown and CSV), plots and the HTML report of a bench's records."""
    from tnerv.bench.plots import write_plots
    from tnerv.bench.report import write_report
    from tnerv.bench.tables import write_tables

    # The timing bench shows the representation runs' timing: the tables pick records by bench kind.
    shown = [{**r, "bench": bench} for r in records]
    tables = write_tables(shown, out / "tables", bench)
    plots = write_plots(shown, out / "plots", bench)
    return tables, plots, write_report(shown, out, bench)


def run_bench(
    bench: str,
    protocol: Protocol,
    videos: list[Sequence],
    methods: list[str] | None = None,
    out: str | Path = "bench-out",
    dataset: str = "samples",
    progress: bool = True,
    log: Callable[[str], None] = print,
    worker: tuple[int, int] | None = None,
) -> BenchOutcome:
    """Runs (or resumes) a bench into `out` and writes its tables, plots and report; with `worker`
    (I, N), only worker I's share of the units, the outputs once every worker's units are done."""
    if not videos:
        raise TnervError("the bench has no videos to run on")
    if worker is not None and not 0 <= worker[0] < worker[1]:
        raise TnervError(f"--worker I/N needs 0 <= I < N, got {worker[0]}/{worker[1]}")
    run = BenchRun(
        bench, dataset, protocol, videos, parse_methods(bench, methods), Path(out), progress, log, worker=worker
    )
    records = run.run()
    if not run.complete:
        return BenchOutcome(records, [], [], None, complete=False)
    tables, plots, report = write_outputs(records, Path(out), bench)
    return BenchOutcome(records, tables, plots, report)
