"""Video compression end to end: fit a model into a run directory, write its transmitted state as
a .tnrv file, decode any frame range from that file alone, and inspect where the bytes went."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tnerv.codec.bitstream import BitstreamError, read_file
from tnerv.codec.constrained import ENTROPY_CONSTRAINED
from tnerv.codec.container import check_header, decoder_from_file, write_model_file
from tnerv.codec.post_training import POST_TRAINING, QuantizationAware
from tnerv.codec.wrapper import CompressionWrapper
from tnerv.errors import TnervError
from tnerv.files import check_output
from tnerv.metrics import QualityReport, bits_per_pixel, psnr
from tnerv.models import VideoINR, config_to_dict, load_preset, model_class
from tnerv.models.auto import DEFAULT_MODEL
from tnerv.models.execution import FP32, ExecutionPath, candidate_paths
from tnerv.parallel import launched_by_torchrun
from tnerv.runs import VideoSpec, fit_run, load_frames, load_run, read_run
from tnerv.train import VideoFrames, evaluate
from tnerv.video import default_matrix, probe, round_to_8bit, to_uint8, write_frames, write_mp4


# The rate weight of entropy-constrained models when none is given: the second of the paper's four
# rate points (0.01, 0.1, 0.5, 1.0), a file near the middle of their range.
DEFAULT_LAMBDA = 0.1


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
    chosen: dict[str, Any] | None = None  # the config chosen for the video (`tnerv.models.auto.describe`)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json output."""
        return asdict(self)


def compression_settings(
    model: str, lam: float | None, phase_start: float, init_bits: int, prune: float | None = None
) -> dict[str, Any]:
    """The run's compression record: entropy-constrained for models trained that way (lambda default
    DEFAULT_LAMBDA), else post-training quantisation (with the model's pruning and quantisation-aware fine-tuning)."""
    cls = model_class(model)
    if cls.compression == ENTROPY_CONSTRAINED:
        lam = DEFAULT_LAMBDA if lam is None else lam
        if lam < 0:
            raise TnervError(f"--lambda must be 0 or more, got {lam}")
        if prune:
            raise TnervError(f"{model} is compressed by its rate term; --prune does not apply")
        return {"method": ENTROPY_CONSTRAINED, "lambda": lam, "lambda_start": phase_start, "init_bits": init_bits}
    if lam is not None:
        raise TnervError(f"{model} is compressed after training (quantisation + entropy coding); --lambda does not apply")
    prune = cls.post_training_prune if prune is None else prune
    if not 0 <= prune < 1:
        raise TnervError(f"--prune is the fraction of weights removed, in [0, 1); got {prune}")
    return {
        "method": POST_TRAINING, "bits": dict(cls.post_training_bits), "prune": prune,
        "qat": cls.post_training_qat, "phase_start": phase_start,
    }


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
    # The video's own size: a model that codes padded frames is cropped back to it by the decoder.
    video = _video_header(VideoSpec.from_dict(run["video"]), net.config.num_frames, *frames.size)
    return export_model(net, run["model"], video, path, frames)


def export_model(
    net: VideoINR, model: str, video: dict[str, Any], path: str | Path, frames: VideoFrames
) -> tuple[Any, float | None]:
    """Writes a fitted model (a CompressionWrapper, or a plain model: its own post-training method) as
    a .tnrv file for `video` (the header's num_frames, height, width, fps, colour); returns as export_file."""
    if not isinstance(net, CompressionWrapper):  # a plain `tnerv fit` run: the model's own method
        settings = compression_settings(model, None, 1.0, 8, prune=0.0)
        net = QuantizationAware(net, settings["bits"])
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
        extra={"method": net.name},
    )
    return summary, net.estimated_bits(quantized)


def decoded_quality(path: str | Path, frames: VideoFrames, batch_size: int = 4) -> QualityReport:
    """PSNR and MS-SSIM of a file's decoded 8-bit frames (what `tnerv decode` writes) against the
    original frames."""
    decoder, _ = decoder_from_file(path, frames.data.device)
    return evaluate(decoder, frames, batch_size, as_uint8=True)


def encode_video(
    video: VideoSpec,
    path: str | Path,
    model: str | None = None,
    preset: str | None = None,
    lam: float | None = None,
    lambda_start: float = 0.8,
    init_bits: int = 8,
    prune: float | None = None,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    size: int | None = None,
    ablations: list[str] | None = None,
    on_config: Callable[[dict[str, Any]], None] | None = None,
) -> EncodeResult:
    """Trains a model on a video (in `run_dir`, default PATH.run), writes the .tnrv file and
    measures the quality of what a decoder gets from it."""
    if launched_by_torchrun():
        raise TnervError("tnerv encode runs in one process; torchrun is for tnerv fit")
    path = check_output(path, (".tnrv",), "a .tnrv file")
    run_dir = Path(run_dir) if run_dir else path.with_name(path.name + ".run")
    if path.exists() and not overwrite and not (resume and _written_by(path, run_dir)):
        raise TnervError(f"{path} exists; pass --overwrite to replace it")
    started = time.time()
    compression = None
    if not resume:
        name = model or (load_preset(preset).model if preset else DEFAULT_MODEL)
        compression = compression_settings(name, lam, lambda_start, init_bits, prune)
    fitted = fit_run(
        video, run_dir, model=model, preset=preset, model_overrides=model_overrides,
        train_overrides=train_overrides, overwrite=overwrite, resume=resume, progress=progress,
        compression=compression, size=size, ablations=ablations, on_config=on_config,
    )
    run = read_run(run_dir)
    frames = VideoFrames(load_frames(VideoSpec.from_dict(run["video"])), torch.device("cpu"))
    summary, estimate = export_file(run_dir, path, frames)
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
        chosen=run.get("chosen"),
    )


def _written_by(path: Path, run_dir: Path) -> bool:
    """Whether the .tnrv file at `path` is the one the run in `run_dir` wrote (same model and config):
    resuming that run may write it again, byte for byte."""
    try:
        header, _ = read_file(path)
        run = read_run(run_dir)
    except (TnervError, OSError, ValueError):
        return False
    return header.get("model") == run["model"] and header.get("config") == run["model_config"]


def parse_range(text: str | None, num_frames: int) -> tuple[int, int]:
    """Parses "a:b" (either side may be empty) into a frame range [a, b) inside the video."""
    if text is None:
        return 0, num_frames
    try:
        a_text, b_text = text.split(":")
        a = int(a_text) if a_text else 0
        b = int(b_text) if b_text else num_frames
    except ValueError:
        raise TnervError(f"--frames takes a:b (e.g. 0:10), got {text!r}") from None
    if not 0 <= a < b <= num_frames:
        raise TnervError(f"frames {a}:{b} requested but the file holds frames 0:{num_frames}")
    return a, b


@dataclass
class DecodeResult:
    """What `decode_file` wrote and how fast it decoded."""

    output: str
    first_frame: int
    num_frames: int
    seconds: float
    fps: float
    path: dict[str, Any]  # the execution path the decoder chose (ExecutionPath.to_dict) and why

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json output."""
        return asdict(self)


def decode_frames(
    path: str | Path,
    first: int,
    end: int,
    batch_size: int = 4,
    device: str = "cpu",
    max_memory: int | None = None,
    execution: ExecutionPath = FP32,
) -> tuple[torch.Tensor, float, float]:
    """Frames [first, end) of a file (N, 3, H, W) in [0, 1], with the decoding time (building the
    decoder included) and the video's fps; `execution` is the path the decoder runs (fp32 by default)."""
    started = time.time()
    decoder, header = decoder_from_file(path, device, max_memory, num_decoded=end - first)
    frames = decode_range(decoder, header, first, end, batch_size, execution, str(path))
    return frames, time.time() - started, header["video"]["fps"]


def decode_range(
    decoder: VideoINR,
    header: dict[str, Any],
    first: int,
    end: int,
    batch_size: int,
    execution: ExecutionPath = FP32,
    source: str = "file",
) -> torch.Tensor:
    """Frames [first, end) (N, 3, H, W) in [0, 1] of a decoder rebuilt from a file with `header`.

    Batches are aligned to multiples of `batch_size` in the whole video, so that a range decodes
    to bit-identical frames as the whole video (kernels may round differently per batch shape)."""
    execution.apply(decoder)
    aligned_first = first // batch_size * batch_size
    aligned_end = min(-(-end // batch_size) * batch_size, header["video"]["num_frames"])
    idx = torch.arange(aligned_first, aligned_end, device=next(decoder.parameters()).device)
    h, w = header["video"]["height"], header["video"]["width"]  # the model's frames may be padded
    frames = []
    try:
        with execution.autocast(idx.device):
            for _, out in decoder.reconstruct(idx, None, batch_size):
                if out.shape[-3:-2] != (3,) or out.shape[-2] < h or out.shape[-1] < w:
                    raise ValueError(f"it decodes frames of {tuple(out.shape[-3:])}, not 3x{h}x{w}")
                frames.append(out[..., :h, :w].float().cpu())
    except (RuntimeError, ValueError, IndexError) as exc:
        # The header passed every check, yet its model does not run: a file no tnerv writes.
        raise BitstreamError(f"{source}: its model does not decode: {exc}") from None
    return torch.cat(frames)[first - aligned_first : end - aligned_first]


def decode_file(
    path: str | Path,
    output: str | Path,
    frame_range: str | None = None,
    overwrite: bool = False,
    batch_size: int = 4,
    max_memory: int | None = None,
    precision: str = "auto",
) -> DecodeResult:
    """Decodes frames a:b of a .tnrv file to an mp4 (by its suffix) or a folder of PNGs; `max_memory`
    (bytes, default this machine's memory) refuses a file whose decoding would need more."""
    output = Path(output)
    check_output(output, (".mp4", ""), "an .mp4 file, or a folder (no suffix) for PNG frames")
    if output.exists() and not overwrite and (output.is_file() or any(output.iterdir())):
        raise TnervError(f"{output} exists; pass --overwrite to replace it")
    header, _ = read_file(path)
    check_header(header, str(path))
    first, end = parse_range(frame_range, header["video"]["num_frames"])
    started = time.time()
    decoder, header = decoder_from_file(path, "cpu", max_memory, num_decoded=end - first)
    built = time.time() - started
    # The decoder is built once; choosing its path (a bf16 trial) is not counted in the decoding time.
    execution, choice = choose_decode_path(decoder, header, batch_size, precision, str(path))
    started = time.time()
    frames = decode_range(decoder, header, first, end, batch_size, execution, str(path))
    seconds = built + time.time() - started
    pixels = to_uint8(frames)
    if output.suffix.lower() == ".mp4":
        write_mp4(pixels, output, header["video"]["fps"])
    else:
        write_frames(pixels, output)
    return DecodeResult(str(output), first, end - first, seconds, (end - first) / seconds, choice)


# A fast path (bf16, NNPACK) is used only if its 8-bit frames come this close to the fp32 decode's (PSNR
# between the two) on the video's first batch. With errors independent of the fp32 decode's own, the loss
# is 10 log10(1 + 10^((P - D) / 10)) dB for a decode of PSNR P: at D = 60 dB, at most 0.05 dB for P <= 40.6 dB.
MIN_AGREEMENT_DB = 60.0


def choose_decode_path(
    decoder: VideoINR, header: dict[str, Any], batch_size: int, precision: str = "auto", source: str = "file"
) -> tuple[ExecutionPath, dict[str, Any]]:
    """The fastest execution path for a decoder rebuilt from a file that keeps the 8-bit frames within
    0.05 dB of the fp32 decode, with the record of the choice for the decode report. The choice depends
    on the file and the machine only, not on the frames asked for: a range decodes as the whole video does."""
    *fast, reference = candidate_paths(torch.device("cpu"), precision)
    if not fast:
        reason = "fp32 asked" if precision == "fp32" else "fp32: no faster path on this device"
        return reference, {**reference.to_dict(), "reason": reason}
    # Each fast path is checked against fp32 on the video's first batch before it is trusted with any
    # frame; the first (fastest) that agrees is taken.
    probe_end = min(header["video"]["num_frames"], batch_size)
    expected = decode_range(decoder, header, 0, probe_end, batch_size, reference, source)
    chosen, verdicts, agreements = reference, [], {}
    for path in fast:
        trial = decode_range(decoder, header, 0, probe_end, batch_size, path, source)
        agreement = min(psnr(round_to_8bit(trial), round_to_8bit(expected)).mean().item(), 100.0)  # 100: identical
        agreements[path.describe()] = agreement
        kept = agreement >= MIN_AGREEMENT_DB
        verdicts.append(f"{path.describe()} {'kept' if kept else 'refused'}: its 8-bit frames are "
                        f"{agreement:.1f} dB from fp32's (needs {MIN_AGREEMENT_DB:.0f})")
        if kept:
            chosen = path
            break
    return chosen, {**chosen.to_dict(), "reason": "; ".join(verdicts), "agreement_db": agreements}


def inspect_file(path: str | Path) -> dict[str, Any]:
    """The header of a .tnrv file and its bytes by component and by tensor."""
    header, sections = read_file(path)
    check_header(header, str(path))
    size = Path(path).stat().st_size
    by_component: dict[str, int] = {}
    tensors = []
    for entry, section in zip(header["tensors"], sections):
        section_bytes = section.size_in_file
        by_component[entry["component"]] = by_component.get(entry["component"], 0) + section_bytes
        tensors.append({**entry, "bytes": section_bytes, "payload_bytes": len(section.payload), "step": section.step})
    by_component["other"] = size - sum(by_component.values())
    v = header["video"]
    return {
        "path": str(path),
        "bytes": size,
        "bpp": bits_per_pixel(size, v["num_frames"], v["height"], v["width"]),
        "model": header["model"],
        "method": header.get("method"),
        "video": v,
        "config": header["config"],
        "bytes_by_component": by_component,
        "tensors": tensors,
        "tnerv_version": header.get("tnerv_version"),
    }


def plot_byte_allocation(info: dict[str, Any], path: str | Path) -> Path:
    """A bar of the bytes per component (as supplementary Fig. 4), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tnerv.bench.plots import COMPONENT_COLOURS as colours  # the benches' colours

    parts = {k: v for k, v in info["bytes_by_component"].items() if v > 0}
    total = sum(parts.values())
    fig, ax = plt.subplots(figsize=(7, 1.4))
    left = 0.0
    for name, value in parts.items():
        share = 100 * value / total
        ax.barh(0, share, left=left, color=colours.get(name, "#999999"), label=f"{name} {share:.1f}%")
        left += share
    ax.set_xlim(0, 100)
    ax.set_yticks([])
    ax.set_xlabel("share of the file's bytes (%)")
    ax.set_title(f"{Path(info['path']).name}: {info['bytes']:,} bytes, {info['bpp']:.4f} bpp ({info['model']})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=len(parts), frameon=False)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
