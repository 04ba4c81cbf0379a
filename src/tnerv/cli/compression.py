"""`tnerv encode`, `decode`, `inspect` and `demo`: making, reading and showing .tnrv files."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from tnerv.cli.arguments import train_overrides, video_spec
from tnerv.cli.output import announcer, format_count, print_result
from tnerv.errors import TnervError, short_repr
from tnerv.time_budget import format_duration


def _encode_summary(r: Any) -> str:
    parts = ", ".join(f"{k} {100 * v / r.num_bytes:.1f}%" for k, v in r.bytes_by_component.items() if v)
    estimate = (
        f" (learned-density estimate of the payload: {r.estimated_payload_bytes:,.0f} bytes; coded: {r.payload_bytes:,})"
        if r.estimated_payload_bytes is not None else ""
    )
    segments = "".join(
        f"\n  segment {i}: {s['num_frames']} frames, {s['num_bytes']:,} bytes, {s['bpp']:.4f} bpp, PSNR {s['psnr']:.2f} dB"
        f" (first frame {s['edge_psnr'][0]:.2f}, last {s['edge_psnr'][1]:.2f})" for i, s in enumerate(r.segments or []))
    return (
        f"{r.path}: {r.num_bytes:,} bytes, {r.bpp:.4f} bpp ({r.num_frames} frames of {r.width}x{r.height}){estimate}"
        f"{segments}\n"
        f"decoded: PSNR {r.psnr:.2f} dB, MS-SSIM {r.ms_ssim:.4f} [{r.ms_ssim_variant}]\n"
        f"bytes: {parts}\n"
        f"{r.model} ({r.method}), {format_count(r.parameters['transmitted'])} parameters, "
        f"encoded in {r.encode_seconds / 60:.1f} min; run directory: {r.run_dir}"
    )


def cmd_encode(args: argparse.Namespace) -> int:
    """`tnerv encode`: compresses a video into a .tnrv file and measures the file's decoded frames."""
    from tnerv.compress import SegmentsPending, anchor_beside, encode_video

    try:
        result = encode_video(
            video_spec(args), args.output, model=args.model, preset=args.preset, lam=args.lam,
            phase_start=args.phase_start, prune=args.prune, model_overrides=dict(args.set or []),
            train_overrides=train_overrides(args), run_dir=args.run_dir, overwrite=args.overwrite,
            resume=args.resume, progress=not args.quiet, size=args.size, ablations=args.ablation,
            on_config=announcer(args), segment_frames=args.segment_frames, worker=args.worker, join=args.join,
            warm_start=args.warm_start,
        )
    except SegmentsPending as pending:  # this worker's share is done: not an error
        print(f"tnerv: {pending}", file=sys.stderr)
        return 0
    data, text = result.to_dict(), _encode_summary(result)
    if args.compare:
        anchor = anchor_beside(video_spec(args), result, args.compare)
        data, text = {**data, "anchor": anchor and anchor.to_dict()}, text + "\n" + _beside(result, anchor, args.compare)
    print_result(data, args.json, text)
    return 0


def _beside(r: Any, anchor: Any, codec: str) -> str:
    """Lines that put an encode beside the anchor's smallest encode of the same frames as good or better."""
    from tnerv.anchors import anchor_label

    label = anchor_label(codec)
    if anchor is None:
        return f"{label} reaches no {r.psnr:.2f} dB on these frames at any CRF"
    ratio = r.num_bytes / anchor.num_bytes
    return (f"{label} at CRF {anchor.crf}: {anchor.num_bytes:,} bytes, {anchor.bpp:.4f} bpp, {anchor.psnr:.2f} dB: "
            + (f"{ratio:.1f}x fewer bytes than the .tnrv file" if ratio >= 1 else f"{1 / ratio:.1f}x the .tnrv file's bytes")
            + "\n(a neural codec's model is amortised over the video's frames, and a short clip gives it few; the "
            "paper compares with x265 on 600 frames of 1080p: docs/experiments.md)")


def _passive_openmp() -> None:
    """Lets OpenMP's idle threads sleep instead of spinning, if torch is not loaded yet (OpenMP reads
    this once) and the user did not choose. Decoding alternates OpenMP ops with NNPACK's convolutions,
    which run on their own threads: spinning OpenMP threads took the cores from them (HNeRV decoding at
    1.44x fp32's speed instead of 2.13x, benchmarks/speed.py); oneDNN's paths do not mind either way."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cmd_decode(args: argparse.Namespace) -> int:
    """`tnerv decode`: decodes a .tnrv file, or a frame range of it, to an mp4 or PNG frames."""
    _passive_openmp()
    from tnerv.decode import decode_file

    result = decode_file(
        args.file, args.output, args.frames, overwrite=args.overwrite, batch_size=args.batch_size,
        max_memory=args.max_memory, precision=args.precision,
    )
    # The path trials are timed apart from the decoding (building the decoder included), and said so.
    choosing = f"; choosing the path took {result.path_seconds:.2f} s" if "trials" in result.path else ""
    text = (
        f"decoded frames {result.first_frame}:{result.first_frame + result.num_frames} to {result.output} "
        f"in {result.seconds:.2f} s ({result.fps:.1f} frames per second) on {result.path['ran']}{choosing}\n"
        f"path: {result.path['reason']}"
    )
    print_result(result.to_dict(), args.json, text)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """`tnerv inspect`: prints a .tnrv file's header and its bytes by component, optionally as a plot."""
    from tnerv.bench.plots import file_allocation
    from tnerv.decode import inspect_file

    info = inspect_file(args.file)
    if "segments" in info:
        return _inspect_segments(info, args)
    if args.plot:
        if Path(args.plot).exists() and not args.overwrite:
            raise TnervError(f"{args.plot} exists; pass --overwrite to replace it")
        info["plot"] = str(file_allocation(info, args.plot))
    v = info["video"]
    lines = [
        f"{info['path']}: {info['bytes']:,} bytes, {info['bpp']:.4f} bpp",
        f"  model {info['model']} ({info['method']}), tnerv {info['tnerv_version']}",
        f"  video {v['num_frames']} frames of {v['width']}x{v['height']} at {v['fps']:g} fps, {v['colour']}",
        *_made_with(info["compression"]),
        "  bytes by component:",
        *(f"    {k:<11} {b:>10,}  {100 * b / info['bytes']:5.1f}%" for k, b in info["bytes_by_component"].items()),
    ]
    if args.plot:
        lines.append(f"  byte-allocation plot: {info['plot']}")
    print_result(info, args.json, "\n".join(lines))
    return 0


def _inspect_segments(info: dict[str, Any], args: argparse.Namespace) -> int:
    """`tnerv inspect` of a file coded in segments: its video, then a line per segment."""
    if args.plot:
        raise TnervError("--plot shows a file of one model; this file holds segments (--json lists their bytes)")
    v = info["video"]
    lines = [f"{info['path']}: {info['bytes']:,} bytes, {info['bpp']:.4f} bpp, {len(info['segments'])} segments",
             f"  video {v['num_frames']} frames of {v['width']}x{v['height']} at {v['fps']:g} fps, {v['colour']}"]
    for i, seg in enumerate(info["segments"]):
        first, n = seg["first_frame"], seg["video"]["num_frames"]
        lines.append(f"  segment {i}: frames {first}:{first + n}, {seg['bytes']:,} bytes, {seg['bpp']:.4f} bpp, "
                     f"model {seg['model']} ({seg['method']})")
    print_result(info, args.json, "\n".join(lines))
    return 0


def _made_with(compression: Any) -> list[str]:
    """The line of `tnerv inspect` that says how a file was made (its header's compression settings,
    shown as written: a file from elsewhere may hold anything there, the decoder does not use it)."""
    if not isinstance(compression, dict):
        return []
    # JSON keys are strings: their repr without the quotes; every value escaped and cut (short_repr).
    shown = ", ".join(f"{short_repr(k)[1:-1]}={short_repr(v)}" for k, v in compression.items() if k != "method")
    return [f"  made with: {shown}"]


def cmd_demo(args: argparse.Namespace) -> int:
    """`tnerv demo`: encodes the bikes sample, decodes the file with a fresh decoder and plots its bytes."""
    from tnerv.bench.plots import file_allocation
    from tnerv.compress import anchor_beside, encode_video
    from tnerv.decode import decode_file, inspect_file
    from tnerv.runs import VideoSpec
    from tnerv.video import sample

    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise TnervError(f"{out} is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(path=str(sample("bikes")), count=args.frames, resize=(128, 256))
    length = f"{args.epochs} epochs" if args.epochs else f"--time {format_duration(args.time)}"
    if not args.json:  # --json prints the JSON document alone
        print(
            f"tnerv demo: compressing {args.frames} frames of the bikes sample (128x256) with T-NeRV "
            f"(preset tnerv-s-cpu, lambda {args.lam:g}, {length})"
        )
    encoded = encode_video(
        spec, out / "bikes.tnrv", preset="tnerv-s-cpu", lam=args.lam, progress=not args.quiet,
        train_overrides={"epochs": args.epochs} if args.epochs else {"time_budget": args.time},
    )
    decoded = decode_file(encoded.path, out / "bikes-decoded.mp4")  # a fresh decoder, from the file alone
    anchor = anchor_beside(spec, encoded)
    plot = file_allocation(inspect_file(encoded.path), out / "bytes.png")
    text = (
        _encode_summary(encoded)
        + f"\ndecoded the file again with a fresh decoder: {decoded.num_frames} frames at {decoded.fps:.1f} fps"
        + f" on {decoded.path['ran']} (choosing the path took {decoded.path_seconds:.2f} s)"
        + f" -> {decoded.output}\nbyte allocation plot: {plot}\n" + _beside(encoded, anchor, "x265")
    )
    print_result({"encode": encoded.to_dict(), "decode": decoded.to_dict(), "plot": str(plot),
                  "anchor": anchor and anchor.to_dict()}, args.json, text)
    return 0
