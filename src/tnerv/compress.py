"""Video compression: fit a model into a run directory, write its transmitted state as a .tnrv file and
measure what a decoder gets from it (decoding itself: tnerv.decode)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tnerv.anchors import AnchorResult, anchor_at_psnr
from tnerv.codec.bitstream import read_file
from tnerv.codec.container import decoder_from_file, write_model_file
from tnerv.codec.segments import pack_segments
from tnerv.codec.settings import (
    DEFAULT_SEGMENT_FRAMES,
    POST_TRAINING,
    CompressionSettings,
    PostTrainingSettings,
    compression_settings,
    settings_from_dict,
)
from tnerv.codec.wrapper import CompressionWrapper
from tnerv.errors import TnervError
from tnerv.files import check_output, write_atomic, write_json_atomic
from tnerv.host import check_frames_fit, frames_that_fit, machine_memory
from tnerv.metrics import QualityReport, bits_per_pixel
from tnerv.models import VideoINR, config_to_dict, load_preset, model_class
from tnerv.models.budget import DEFAULT_MODEL
from tnerv.parallel import launched_by_torchrun
from tnerv.progress import SegmentSteps, VideoBar
from tnerv.runs import VideoSpec, fit_run, load_frames, load_run, read_run
from tnerv.time_budget import DEFAULT_ENCODE_BUDGET, RECIPE_LIMIT, format_duration
from tnerv.train import VideoFrames, evaluate, settle_collapse
from tnerv.video import count_frames, default_matrix, probe


@dataclass
class EncodeResult:
    """What `encode_video` produced: the file, its rate, and the quality of its decoded frames."""

    path: str
    run_dir: str
    model: str
    method: str
    num_frames: int
    height: int
    width: int
    num_bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    ms_ssim_variant: str
    bytes_by_component: dict[str, int]
    payload_bytes: int  # the range-coded symbols alone, without frequency tables and framing
    estimated_payload_bytes: float | None  # the learned densities' estimate (entropy-constrained)
    parameters: dict[str, int]
    encode_seconds: float
    epochs: int = 0  # the epochs trained (a time budget's plan, or the recipe's)
    chosen: dict[str, Any] | None = None  # the config chosen for the video (`tnerv.models.budget.describe`)
    edge_psnr: tuple[float, float] | None = None  # the PSNR of the first and the last frame (seams between segments)
    segments: list[dict[str, Any]] | None = None  # a video coded in segments: each one's own result
    seams: list[dict[str, Any]] | None = None  # and at each boundary, the PSNR of the frames on both sides
    # The fit's collapse verdict (`tnerv.train.settle_collapse`) settled by the decoded PSNR, None if none; in
    # segments, {"segments": [the indices of those that collapsed]}.
    collapsed: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json output."""
        return asdict(self)


def _video_header(spec: VideoSpec, num_frames: int, height: int, width: int) -> dict[str, Any]:
    info = probe(spec.path, size=spec.yuv_size)
    return {
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "fps": info.fps / spec.step,
        "colour": {"frames": "RGB", "source_matrix": spec.matrix or default_matrix(info.height)},
    }


def export_file(run_dir: str | Path, path: str | Path, frames: VideoFrames) -> tuple[Any, float | None]:
    """Writes the fitted model of a run directory as a .tnrv file; returns the file's summary and
    the learned densities' payload estimate in bits (None for post-training quantisation)."""
    net, run, _ = load_run(run_dir, device="cpu")
    return export_run(net, run, path, frames)


def export_run(net: VideoINR, run: dict[str, Any], path: str | Path, frames: VideoFrames) -> tuple[Any, float | None]:
    """Writes a model fitted as `run` (its run.json) describes as a .tnrv file for its video, at the
    video's own size (a model that codes padded frames is cropped back to it by the decoder)."""
    size = frames.padding.height, frames.padding.width
    video = _video_header(VideoSpec.from_dict(run["video"]), net.config.num_frames, *size)
    return export_model(net, run["model"], settings_from_dict(run.get("compression")), video, path, frames)


def export_model(
    net: VideoINR,
    model: str,
    settings: CompressionSettings | None,
    video: dict[str, Any],
    path: str | Path,
    frames: VideoFrames,
) -> tuple[Any, float | None]:
    """Writes a fitted model as a .tnrv file for `video` (the header's num_frames, height, width, fps,
    colour), with the compression settings it was trained with in its header: a CompressionWrapper, or
    a plain model (`settings` None: a plain fit, quantised with its model's post-training bits, nothing
    pruned). Returns as export_file."""
    if settings is None:
        settings = PostTrainingSettings(dict(model_class(model).post_training_bits), phase_start=1.0)
    if not isinstance(net, CompressionWrapper):
        net = settings.wrap(net)
    net.prepare_export(frames)
    quantized = net.quantized_state()
    inner = net.model
    summary = write_model_file(
        path,
        model,
        config_to_dict(inner.config),
        video,
        quantized,
        {name: inner.component_of(name) for name in quantized},
        net.frequency_table,
        extra={"method": net.name, "compression": settings.to_dict()},
    )
    return summary, net.estimated_bits(quantized)


def decoded_quality(path: str | Path, frames: VideoFrames, batch_size: int = 4) -> QualityReport:
    """PSNR and MS-SSIM of a file's decoded 8-bit frames (what `tnerv decode` writes) against the
    original frames."""
    # The encoder's own file, held a batch at a time: capped by this machine, not the untrusted default.
    decoder, _ = decoder_from_file(path, frames.data.device, machine_memory(), batch_size, batch_size)
    return evaluate(decoder, frames, batch_size, as_uint8=True)


def encode_video(
    video: VideoSpec,
    path: str | Path,
    model: str | None = None,
    preset: str | None = None,
    lam: float | None = None,
    phase_start: float | None = None,
    init_bits: int = 8,
    prune: float | None = None,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | SegmentSteps = True,
    size: int | None = None,
    ablations: list[str] | None = None,
    on_config: Callable[[dict[str, Any]], None] | None = None,
    segment_frames: int | None = None,
    worker: tuple[int, int] | None = None,
    join: bool = False,
    warm_start: bool = False,
    start_from: Path | None = None,
) -> EncodeResult:
    """Trains a model on a video (in `run_dir`, default PATH.run) with its compression method
    (`tnerv.codec.settings.compression_settings`), writes the .tnrv file and measures the quality of
    what a decoder gets from it. With neither epochs nor a time budget in `train_overrides`, a fresh encode
    keeps the recipe's epochs if they take at most RECIPE_LIMIT here, else trains for
    DEFAULT_ENCODE_BUDGET (`tnerv.time_budget`); a budget counts the whole encode, the file's check included.
    A video of more than `segment_frames` frames (default: DEFAULT_SEGMENT_FRAMES, or as many as fit this
    machine's memory if fewer) is coded in segments (`encode_segments`, where `worker`, `join` and
    `warm_start` apply). `start_from` starts a fresh fit from another run's trained weights (`runs.warm_start`)."""
    if launched_by_torchrun():
        raise TnervError("tnerv encode runs in one process; torchrun is for tnerv fit")
    path = check_output(path, (".tnrv",), "a .tnrv file")
    run_dir = Path(run_dir) if run_dir else path.with_name(path.name + ".run")
    if path.exists() and not overwrite and not (resume and _written_by(path, run_dir)):
        raise TnervError(f"{path} exists; pass --overwrite to replace it")
    info = probe(video.path, size=video.yuv_size)
    total = count_frames(info, start=video.start, count=video.count, step=video.step)
    height, width = video.resize or (info.height, info.width)
    if segment_frames is None:
        segment_frames = max(1, min(DEFAULT_SEGMENT_FRAMES, frames_that_fit(height, width)))
    if segment_frames < 1:
        raise TnervError(f"--segment-frames must be at least 1, got {segment_frames}")
    check_frames_fit(min(total, segment_frames), height, width)
    if (worker or join or warm_start) and total <= segment_frames:
        raise TnervError(f"--worker, --join and --warm-start apply to the segments of a video longer than "
                         f"--segment-frames ({segment_frames}); this one has {total} frames")
    if warm_start and worker:
        raise TnervError("--warm-start starts each segment from the one before: one process encodes them in order, "
                         "not --worker")
    if total > segment_frames:
        return encode_segments(
            video, path, run_dir, total, segment_frames, overwrite, resume, progress, dict(train_overrides or {}),
            worker, join, warm_start, model=model, preset=preset, lam=lam, phase_start=phase_start,
            init_bits=init_bits, prune=prune, model_overrides=model_overrides, size=size, ablations=ablations,
            on_config=on_config)
    started = time.time()
    compression = None
    if not resume:
        name = model or (load_preset(preset).model if preset else DEFAULT_MODEL)
        compression = compression_settings(name, lam, phase_start, init_bits, prune)
        train_overrides = dict(train_overrides or {})
        if "epochs" not in train_overrides and "time_budget" not in train_overrides:
            train_overrides.update(time_budget=DEFAULT_ENCODE_BUDGET, recipe_first=True)
            if progress:
                print(f"tnerv: no --epochs or --time: the recipe's epochs if they take at most "
                      f"{format_duration(RECIPE_LIMIT)} here, else {format_duration(DEFAULT_ENCODE_BUDGET)} "
                      "(measured after the first training steps)", file=sys.stderr, flush=True)
    fitted = fit_run(
        video, run_dir, model=model, preset=preset, model_overrides=model_overrides,
        train_overrides=train_overrides, overwrite=overwrite, resume=resume, progress=progress,
        compression=compression, size=size, ablations=ablations, on_config=on_config, started=started,
        reserve_evals=1,  # the decode check of the file written (an evaluation in 8 bits)
        final_eval=False,  # that check measures the model: an evaluation before it would measure it twice
        start_from=start_from,
    )
    # The model and frames of the fit itself: the file is written without reading them back.
    run = read_run(run_dir)
    frames = VideoFrames(fitted.frames, torch.device("cpu"))
    summary, estimate = export_run(fitted.fitted.cpu().eval(), run, path, frames)
    quality = decoded_quality(path, frames)
    n, _, h, w = frames.data.shape
    return EncodeResult(
        path=str(path),
        run_dir=str(run_dir),
        model=run["model"],
        method=(run.get("compression") or {}).get("method", POST_TRAINING),
        num_frames=n,
        height=h,
        width=w,
        num_bytes=summary.num_bytes,
        bpp=bits_per_pixel(summary.num_bytes, n, h, w),
        psnr=quality.psnr,
        ms_ssim=quality.ms_ssim,
        ms_ssim_variant=quality.ms_ssim_variant,
        bytes_by_component=summary.bytes_by_component,
        payload_bytes=summary.payload_bytes,
        estimated_payload_bytes=None if estimate is None else estimate / 8,
        parameters=fitted.parameters,
        encode_seconds=time.time() - started,
        epochs=fitted.epochs,
        chosen=run.get("chosen"),
        edge_psnr=(quality.per_frame_psnr[0], quality.per_frame_psnr[-1]),
        collapsed=settle_collapse(fitted.collapsed, quality.psnr),
    )


def segment_specs(video: VideoSpec, total: int, segment_frames: int) -> list[VideoSpec]:
    """The frames of each segment of a video of `total` selected frames: consecutive runs of `segment_frames`
    (the last one shorter), each read on its own."""
    return [replace(video, start=video.start + first * video.step, count=min(segment_frames, total - first))
            for first in range(0, total, segment_frames)]


class SegmentsPending(TnervError):
    """A worker's segments are written, others' are not yet: no file (the last worker, or --join, writes it)."""


def encode_segments(
    video: VideoSpec,
    path: Path,
    run_dir: Path,
    total: int,
    segment_frames: int,
    overwrite: bool,
    resume: bool,
    progress: bool,
    train_overrides: dict[str, Any],
    worker: tuple[int, int] | None = None,
    join: bool = False,
    warm_start: bool = False,
    **options: Any,
) -> EncodeResult:
    """Codes a video in segments of `segment_frames` frames: one model per segment, fitted and written in
    run_dir/segment-NNN (read on its own: frames of one segment in memory at a time), then one file of them
    all (`tnerv.codec.segments`). A time budget is shared equally by the segments; a resumed encode keeps
    the segments whose files are written and continues the first that is not. With `worker` (I, N), only
    segments I, I + N, ... are encoded (N workers share run_dir), and the file is written by whichever
    finds every segment written (SegmentsPending otherwise); `join` writes it from the segments alone. With
    `warm_start`, each segment after the first starts from the trained weights of the one before."""
    specs = segment_specs(video, total, segment_frames)
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite or worker or join):
        raise TnervError(f"{run_dir} already holds an encode; pass --resume to continue it or --overwrite to replace it")
    if (resume or join) and not run_dir.is_dir():
        raise TnervError(f"cannot {'join' if join else 'resume'}: {run_dir} does not exist")
    started = time.time()
    budget, share = train_overrides.pop("time_budget", None), None
    if "epochs" not in train_overrides:
        share = (budget or DEFAULT_ENCODE_BUDGET) / len(specs)
        train_overrides.update(time_budget=share, recipe_first=budget is None)
    index, count = worker or (0, 1)
    mine = [] if join else list(range(index, len(specs), count))
    if progress and mine:
        print(f"tnerv: {total} frames in {len(specs)} segments of at most {segment_frames} (--segment-frames), "
              "one model each" + (f", {format_duration(share)} each" if share else "")
              + (f"; worker {index}/{count}: segments {', '.join(map(str, mine))}" if worker else ""),
              file=sys.stderr, flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)

    def written(i: int) -> bool:
        name = run_dir / f"segment-{i:03d}"
        return Path(f"{name}.tnrv.json").exists() and _written_by(Path(f"{name}.tnrv"), name)

    done = {i for i in mine if (resume or worker is not None) and not overwrite and written(i)}  # --overwrite redoes
    bar = VideoBar(sum(specs[i].count for i in mine), sum(specs[i].count for i in done)) if progress and mine else None
    try:
        for i in mine:
            spec, name = specs[i], f"segment-{i:03d}"
            if bar:
                bar.say(f"tnerv: segment {i + 1} of {len(specs)}: frames {spec.start}.. ({spec.count})"
                        + (", written before" if i in done else ""))
            if i in done:
                continue
            result = encode_video(
                spec, run_dir / f"{name}.tnrv", run_dir=run_dir / name, overwrite=overwrite,
                resume=resume and (run_dir / name / "run.json").exists(),
                start_from=run_dir / f"segment-{i - 1:03d}" if warm_start and i else None,
                progress=bar.segment(f"{i + 1}/{len(specs)}", spec.count) if bar else False,
                train_overrides=train_overrides, segment_frames=spec.count, **options)
            write_json_atomic(result.to_dict(), run_dir / f"{name}.tnrv.json")
    finally:
        if bar:
            bar.close()
    missing = [i for i in range(len(specs)) if not written(i)]
    if missing and join:
        raise TnervError(f"cannot join: segments {', '.join(map(str, missing))} of {len(specs)} are not written "
                         f"yet in {run_dir}")
    if missing:
        raise SegmentsPending(
            f"segments {', '.join(map(str, missing))} of {len(specs)} are not written yet in {run_dir}: the last "
            f"worker to finish writes {path}, or --join once they are")
    results = [read_segment_result(run_dir / f"segment-{i:03d}.tnrv.json") for i in range(len(specs))]
    data = pack_segments([(run_dir / f"segment-{i:03d}.tnrv").read_bytes() for i in range(len(specs))])
    write_atomic(path, data)
    return _segmented_result(path, run_dir, results, len(data), time.time() - started)


def read_segment_result(path: Path) -> dict[str, Any]:
    """A segment's EncodeResult as its encode wrote it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise TnervError(f"{path} is unreadable; pass --overwrite to encode again") from None


def _segmented_result(path: Path, run_dir: Path, segments: list[dict[str, Any]], num_bytes: int,
                      seconds: float) -> EncodeResult:
    """The result of a segmented encode: sizes summed, qualities the mean over every frame (as each
    segment's is over its own frames)."""
    frames = [s["num_frames"] for s in segments]
    n, first = sum(frames), segments[0]

    def per_frame(key: str) -> float:
        return sum(s[key] * f for s, f in zip(segments, frames)) / n

    def summed(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in segments:
            for k, v in s[key].items():
                out[k] = out.get(k, 0) + v
        return out

    estimates = [s["estimated_payload_bytes"] for s in segments]
    collapsed = [i for i, s in enumerate(segments) if s.get("collapsed")]
    components = summed("bytes_by_component")  # each segment's framing in its "other"; the file's own added
    components["other"] = components.get("other", 0) + num_bytes - sum(s["num_bytes"] for s in segments)
    return EncodeResult(
        path=str(path), run_dir=str(run_dir), model=first["model"], method=first["method"], num_frames=n,
        height=first["height"], width=first["width"], num_bytes=num_bytes,
        bpp=bits_per_pixel(num_bytes, n, first["height"], first["width"]), psnr=per_frame("psnr"),
        ms_ssim=per_frame("ms_ssim"), ms_ssim_variant=first["ms_ssim_variant"],
        bytes_by_component=components,
        payload_bytes=sum(s["payload_bytes"] for s in segments),
        estimated_payload_bytes=None if None in estimates else sum(estimates),
        parameters=summed("parameters"), encode_seconds=seconds, epochs=first["epochs"], chosen=first["chosen"],
        segments=segments, seams=seams(segments),
        collapsed={"segments": collapsed} if collapsed else None,
    )


def seams(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At each boundary between segments: its frame, the PSNR of the last frame before it and of the first
    after it, and the mean PSNR of the two segments (a seam shows as edge frames well below the means)."""
    out, frame = [], 0
    for before, after in zip(segments, segments[1:]):
        frame += before["num_frames"]
        out.append({"frame": frame, "psnr_before": before["edge_psnr"][1], "psnr_after": after["edge_psnr"][0],
                    "segment_psnr": [before["psnr"], after["psnr"]]})
    return out


def anchor_beside(video: VideoSpec, result: EncodeResult, codec: str = "x265") -> AnchorResult | None:
    """The anchor's smallest encode of the same frames whose PSNR reaches the file's (`anchor_at_psnr`: a
    short CRF search), None if none does; for a video of one segment (it reads the frames whole)."""
    if result.segments:
        raise TnervError("--compare encodes the video whole with the anchor: it takes a video of one segment")
    frames = load_frames(video).permute(0, 2, 3, 1).contiguous().numpy()
    fps = probe(video.path, size=video.yuv_size).fps / video.step
    return anchor_at_psnr(frames, result.psnr, codec, fps=fps, matrix=video.matrix)


def _written_by(path: Path, run_dir: Path) -> bool:
    """Whether the .tnrv file at `path` is the one the run in `run_dir` wrote (same model and config):
    resuming that run may write it again, byte for byte."""
    try:
        header, _ = read_file(path)
        run = read_run(run_dir)
    except (TnervError, OSError, ValueError):
        return False
    return header.get("model") == run["model"] and header.get("config") == run["model_config"]
