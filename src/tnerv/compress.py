"""Video compression end to end: fit a model into a run directory, write its transmitted state as
a .tnrv file, decode any frame range from that file alone, and inspect where the bytes went."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tnerv.codec.bitstream import BitstreamError, read_file
from tnerv.codec.constrained import ENTROPY_CONSTRAINED
from tnerv.codec.container import check_frames, check_header, decoder_from_file, write_model_file
from tnerv.codec.post_training import POST_TRAINING, QuantizationAware
from tnerv.codec.wrapper import CompressionWrapper
from tnerv.errors import TnervError
from tnerv.files import check_output
from tnerv.metrics import QualityReport, bits_per_pixel, psnr
from tnerv.models import VideoINR, config_to_dict, load_preset, model_class
from tnerv.models.auto import DEFAULT_MODEL
from tnerv.models.execution import FP32, ExecutionPath, candidate_paths
from tnerv.models.nnpack import fallbacks as nnpack_fallbacks
from tnerv.models.sizing import machine_memory
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
    # The encoder's own file, held a batch at a time: capped by this machine, not the untrusted default.
    decoder, _ = decoder_from_file(path, frames.data.device, machine_memory(), batch_size, batch_size)
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
    seconds: float  # building the decoder and decoding the frames on the chosen path
    fps: float  # num_frames / seconds
    path_seconds: float  # choosing the path: the fp32 and fast-path trials (`choose_decode_path`)
    path: dict[str, Any]  # the execution path the decoder chose (ExecutionPath.to_dict), why, and what ran

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json output."""
        return asdict(self)


class DecoderError(TnervError):
    """A file that passed every check, yet whose decoder failed while running: not a damaged file but a
    tnerv bug or a crafted file, reported in one line as such."""


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
    decoder, header = decoder_from_file(path, device, max_memory, num_decoded=end - first, batch_size=batch_size)
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
                    # The file's own inconsistency: its model's frames are not the video it declares.
                    raise BitstreamError(f"{source}: its model decodes frames of {tuple(out.shape[-3:])}, "
                                         f"not the 3x{h}x{w} of its header")
                frames.append(out[..., :h, :w].float().cpu())
    except (RuntimeError, ValueError, IndexError) as exc:
        # The file passed every check, yet its model failed: tnerv's fault or a crafted file's, which
        # the checks should have caught; either way not a damaged file, and never a traceback.
        message = " ".join(str(exc).split())  # one line; torch's messages can run to pages
        message = message if len(message) <= 300 else message[:297] + "..."
        raise DecoderError(f"{source} passed every check but its decoder failed: {message} "
                           "(a tnerv bug or a crafted file; please report)") from exc
    return check_frames(torch.cat(frames)[first - aligned_first : end - aligned_first], first, source)


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
    (bytes, default `default_memory_cap()`: 4 GiB or less) refuses a file whose decoding would need more."""
    output = Path(output)
    check_output(output, (".mp4", ""), "an .mp4 file, or a folder (no suffix) for PNG frames")
    if output.exists() and not overwrite and (output.is_file() or any(output.iterdir())):
        raise TnervError(f"{output} exists; pass --overwrite to replace it")
    header, _ = read_file(path)
    check_header(header, str(path))
    first, end = parse_range(frame_range, header["video"]["num_frames"])
    started = time.time()
    decoder, header = decoder_from_file(path, "cpu", max_memory, num_decoded=end - first, batch_size=batch_size)
    built = time.time() - started
    # The decoder is built once; choosing its path (the trials) is timed apart from the decoding.
    started = time.time()
    execution, choice = choose_decode_path(decoder, header, batch_size, precision, str(path))
    path_seconds = time.time() - started
    started = time.time()
    frames = decode_range(decoder, header, first, end, batch_size, execution, str(path))
    seconds = built + time.time() - started
    choice = {**choice, **what_ran(decoder, execution)}
    pixels = to_uint8(frames)
    if output.suffix.lower() == ".mp4":
        write_mp4(pixels, output, header["video"]["fps"])
    else:
        write_frames(pixels, output)
    return DecodeResult(str(output), first, end - first, seconds, (end - first) / seconds, path_seconds, choice)


def what_ran(decoder: VideoINR, execution: ExecutionPath) -> dict[str, Any]:
    """The path a decode ran on as the report says it ("ran"), with the NNPACK convolution calls that
    failed and ran on PyTorch's kernels instead ("nnpack_fallbacks", on an NNPACK path)."""
    if not execution.nnpack:
        return {"ran": execution.describe()}
    failed, calls, message = nnpack_fallbacks(decoder)
    note = f" (fell back to PyTorch's kernels on {failed} of {calls} convolution calls: {message})" if failed else ""
    return {"ran": execution.describe() + note, "nnpack_fallbacks": failed}


# A fast path (bf16, NNPACK) is used only if every 8-bit frame it decodes on the probe batches comes this
# close to the fp32 decode's (the worst frame's PSNR between the two). With errors independent of the fp32
# decode's own, a frame of PSNR P loses 10 log10(1 + 10^((P - D) / 10)) dB: at D = 60 dB, at most 0.05 dB
# for P <= 40.6 dB.
MIN_AGREEMENT_DB = 60.0
AGREEMENT_STATISTIC = "the worst frame's PSNR between the path's and fp32's 8-bit frames"


def probe_ranges(num_frames: int, batch_size: int) -> list[tuple[int, int]]:
    """The frame ranges a fast path is checked on: the whole video's first, middle and last batches
    (aligned as `decode_range` aligns them; fewer where the video has fewer batches)."""
    batches = -(-num_frames // batch_size)
    return [(b * batch_size, min((b + 1) * batch_size, num_frames)) for b in sorted({0, batches // 2, batches - 1})]


def worst_frame(trial: torch.Tensor, expected: torch.Tensor, first: int = 0) -> tuple[float, int]:
    """The lowest per-frame PSNR (dB) between two decodes' 8-bit frames of frames first, first + 1, ...,
    and that frame: inf when every frame is identical, NaN (and the first such frame) when a frame is not
    finite."""
    values = psnr(round_to_8bit(trial), round_to_8bit(expected))
    bad = values.isnan().nonzero()
    i = int(bad[0]) if len(bad) else int(values.argmin())
    return values[i].item(), first + i


def _trial(name: str, worst_db: float, frame: int) -> tuple[bool, dict[str, Any], str]:
    """A fast path's verdict: kept or not, its record for the report and its sentence."""
    identical = worst_db == math.inf
    kept = identical or worst_db >= MIN_AGREEMENT_DB  # False for NaN
    record = {"kept": kept, "identical": identical, "worst_frame": None if identical else frame,
              "worst_frame_db": None if identical or math.isnan(worst_db) else worst_db}
    if identical:
        return kept, record, f"{name} kept: its 8-bit frames are identical to fp32's"
    if math.isnan(worst_db):
        return kept, record, f"{name} refused: its frame {frame} is not finite"
    sentence = (f"{name} {'kept' if kept else 'refused'}: its worst 8-bit frame ({frame}) is "
                f"{worst_db:.1f} dB from fp32's (needs {MIN_AGREEMENT_DB:.0f})")
    return kept, record, sentence


def choose_decode_path(
    decoder: VideoINR, header: dict[str, Any], batch_size: int, precision: str = "auto", source: str = "file"
) -> tuple[ExecutionPath, dict[str, Any]]:
    """The fastest execution path for a decoder rebuilt from a file that keeps each 8-bit frame within
    0.05 dB of the fp32 decode on the probe batches, with the record of the choice for the decode report.

    The probe batches are the whole video's first, middle and last, whatever range is decoded: the choice
    depends on the file and the machine only, so that a range decodes to the same frames as the whole
    video does (a check on the range's own batches could choose another path for a range than for the
    video). The frames between the probes are not compared: the check samples the video, at the cost of
    about 3 batches per path tried."""
    *fast, reference = candidate_paths(torch.device("cpu"), precision)
    if not fast:
        reason = "fp32 asked" if precision == "fp32" else "fp32: no faster path on this device"
        return reference, {**reference.to_dict(), "reason": reason}
    num_frames = header["video"]["num_frames"]
    ranges = probe_ranges(num_frames, batch_size)
    expected = [decode_range(decoder, header, a, b, batch_size, reference, source) for a, b in ranges]

    def worst(path: ExecutionPath) -> tuple[float, int]:  # one batch of the path's frames held at a time
        found = [worst_frame(decode_range(decoder, header, a, b, batch_size, path, source), frames, a)
                 for (a, b), frames in zip(ranges, expected)]
        return next((f for f in found if math.isnan(f[0])), None) or min(found)

    chosen, verdicts, trials = reference, [], {}
    for path in fast:  # the first (fastest) that agrees is taken
        worst_db, frame = worst(path)
        kept, trials[path.describe()], sentence = _trial(path.describe(), worst_db, frame)
        verdicts.append(sentence)
        if kept:
            chosen = path
            break
    compared = ", ".join(f"{a}:{b}" for a, b in ranges)
    reason = (f"{'; '.join(verdicts)} (compared: frames {compared} of {num_frames}, the video's first, middle "
              f"and last batches whatever range is decoded; {AGREEMENT_STATISTIC})")
    return chosen, {**chosen.to_dict(), "reason": reason, "trials": trials,
                    "compared_frames": [list(r) for r in ranges], "statistic": AGREEMENT_STATISTIC}


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
