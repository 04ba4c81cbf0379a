"""The `tnerv` command. It parses arguments and calls the library; errors become one line and exit 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from tnerv.errors import TnervError, short_repr


def _size(text: str, order: str) -> tuple[int, int]:
    """Parses "AxB" into two positive ints; `order` names them for the error message."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
        if a <= 0 or b <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {order} such as 144x256, got {text!r}") from None
    return a, b


def _hw(text: str) -> tuple[int, int]:
    return _size(text, "HxW")


def _wh(text: str) -> tuple[int, int]:
    return _size(text, "WxH")


def _count(text: str) -> int:
    """Parses a parameter budget: 3.0M, 500k or 2000000."""
    scale = {"k": 1e3, "m": 1e6}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a parameter count such as 3.0M or 500k, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a parameter budget must be positive, got {text!r}")
    return round(value)


def _memory(text: str) -> int:
    """Parses an amount of memory: 8G, 512M or a number of bytes."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount of memory such as 8G or 512M, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"an amount of memory must be positive, got {text!r}")
    return round(value)


def _worker(text: str) -> tuple[int, int]:
    """Parses I/N, a worker's index and the number of workers."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"I/N needs 0 <= I < N, got {text!r}")
    return index, count


def _number(kind: type, low: float, low_inclusive: bool = True, high: float | None = None) -> Any:
    """An argparse type: a finite number of `kind` in the range [low (or (low), high)."""
    bound = (f"at least {low:g}" if low_inclusive else f"more than {low:g}") + (f" and below {high:g}" if high else "")
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} {bound}, got {text!r}") from None
        inside = (value >= low if low_inclusive else value > low) and (high is None or value < high)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"expected {noun} {bound}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1)
_count_from_zero = _number(int, 0)
_positive_float = _number(float, 0, low_inclusive=False)
_nonnegative_float = _number(float, 0)
_fraction = _number(float, 0, high=1)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line, `tnerv: error: ...`, exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("tnerv").strip()
        hint = f" (see tnerv {command} --help)" if command else " (see tnerv --help)"
        self.exit(2, f"tnerv: error: {message}{hint}\n")


def _assignment(text: str) -> tuple[str, Any]:
    """Parses key=value; the value is read as TOML (numbers, lists, strings) or kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def _print(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def _add_video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (mp4, mkv, mov, avi, y4m, raw .yuv) or a folder of PNG/JPEG frames")
    p.add_argument("--yuv-size", type=_wh, metavar="WxH", help="frame size of a raw 8-bit 4:2:0 .yuv file")
    p.add_argument("--matrix", choices=["bt601", "bt709"], help="YUV->RGB matrix (default: bt709 from 720p up)")


def cmd_info(args: argparse.Namespace) -> int:
    from tnerv.video import probe

    info = probe(args.video, size=args.yuv_size)
    text = (
        f"{info.path}\n  frames: {info.num_frames}\n  size:   {info.width}x{info.height} (WxH)\n"
        f"  fps:    {info.fps:g}\n  codec:  {info.codec} ({info.pix_fmt})"
    )
    _print(asdict(info), args.json, text)
    return 0


def _format_count(n: int) -> str:
    return f"{n / 1e6:.3f}M" if n >= 1e5 else f"{n:,}"


def _counts_line(label: str, frames: int, height: int, width: int, c: dict[str, int]) -> str:
    return (
        f"{label:<32} {frames:>6} {height:>5}x{width:<5} {_format_count(c['transmitted']):>9}  "
        f"{_format_count(c['decoder'])} / {_format_count(c['grids'])} / {_format_count(c['embeddings'])}"
        f" (+ {_format_count(c['encoder'])})"
    )


_COUNTS_HEADER = f"{'':<32} {'frames':>6} {'HxW':>11} {'size':>9}  decoder / grids / embeddings (+ encoder, not sent)"


def cmd_models(args: argparse.Namespace) -> int:
    from tnerv.models import create_model, list_models, list_presets, load_preset
    from tnerv.models.sizing import shapes_only

    if args.setting:
        return _setting_table(args)
    if args.video_for:
        return _configs_for_video(args)
    rows = []
    for name in list_models():
        for preset_name in list_presets(name) or [None]:
            preset = load_preset(preset_name) if preset_name else None
            overrides = {"num_frames": args.frames} if args.frames else {}
            with shapes_only():  # counts need shapes only, not memory
                model = create_model(name, preset.config(**overrides) if preset else overrides)
            rows.append(
                {
                    "model": name,
                    "preset": preset_name,
                    "description": preset.description if preset else "",
                    "height": model.config.height,
                    "width": model.config.width,
                    "num_frames": model.config.num_frames,
                    "parameters": model.parameter_counts(),
                }
            )
    lines = [_COUNTS_HEADER.replace(" " * 32, f"{'model / preset':<32}", 1)]
    for r in rows:
        label = f"{r['model']} / {r['preset'] or '-'}"
        lines.append(_counts_line(label, r["num_frames"], r["height"], r["width"], r["parameters"]))
    _print(rows, args.json, "\n".join(lines))
    return 0


def _configs_for_video(args: argparse.Namespace) -> int:
    """What `fit` and `encode` would choose for a video, per model, without training."""
    from tnerv.models import list_models, load_preset
    from tnerv.models.auto import config_for_video, describe, describe_line
    from tnerv.video import probe

    info = probe(args.video_for, size=args.yuv_size)
    frames = args.frames or info.num_frames
    height, width = args.resize or (info.height, info.width)
    preset = load_preset(args.preset) if args.preset else None
    names = [args.model or preset.model] if (args.model or preset) else list_models()
    rows = []
    for name in names:
        config, geometry = config_for_video(name, height, width, frames, preset, None, args.size)
        rows.append(describe(name, config, geometry))
    header = f"{args.video_for}: {frames} frames of {height}x{width} (HxW)"
    _print(rows, args.json, "\n".join([header, *(describe_line(r) for r in rows)]))
    return 0


def _setting_table(args: argparse.Namespace) -> int:
    from tnerv.bench.protocols import CPU_SCALE
    from tnerv.models import list_models
    from tnerv.models.settings import cpu_config, get_setting, setting_config
    from tnerv.models.sizing import format_split, split_of, transmitted_size

    setting = get_setting(args.setting)
    height, width, cpu_frames, cpu_budget, _ = CPU_SCALE[setting.name]
    paper_frames = args.frames if args.frames and args.scale == "paper" else setting.num_frames
    cpu_frames = args.frames if args.frames and args.scale == "cpu" else cpu_frames
    scales = {
        "paper": (setting.height, setting.width, paper_frames, setting.budget),
        "cpu": (height, width, cpu_frames, cpu_budget),
    }
    rows, comparison = [], []
    for model in list_models():
        paper = setting_config(model, setting.name, paper_frames)
        cpu = cpu_config(model, setting.name, height, width, cpu_frames, cpu_budget)
        counts = {"paper": transmitted_size(model, paper), "cpu": transmitted_size(model, cpu)}
        row: dict[str, Any] = {"model": model, "setting": setting.name, "scale": args.scale}
        for scale, (h, w, n, _) in scales.items():
            row[scale] = {
                "height": h, "width": w, "num_frames": n, "parameters": counts[scale],
                "split": {k: round(100 * v, 1) for k, v in split_of(counts[scale]).items()},
            }
        row.update(num_frames=row[args.scale]["num_frames"], parameters=counts[args.scale])
        rows.append(row)
        comparison.append(
            f"{model:<8} {_format_count(counts['paper']['transmitted']):>9} {format_split(counts['paper']):>10}"
            f"   {_format_count(counts['cpu']['transmitted']):>9} {format_split(counts['cpu']):>10}"
        )
    h, w, n, budget = scales[args.scale]
    lines = [
        f"{setting.description}; budget {_format_count(setting.budget)}, {paper_frames} frames",
        f"CPU scale: {height}x{width}, {cpu_frames} frames, budget {_format_count(cpu_budget)} "
        "(derived from the paper-scale config, same split: tnerv.models.settings.cpu_config)",
        "",
        f"{args.scale} scale: {h}x{w}, {n} frames, budget {_format_count(budget)}",
        _COUNTS_HEADER.replace(" " * 32, f"{'model':<32}", 1),
        *(_counts_line(r["model"], n, h, w, r["parameters"]) for r in rows),
        "",
        "split of the transmitted parameters, decoder/grids/embeddings %:",
        f"{'model':<8} {'paper':>9} {'D/G/E %':>10}   {'CPU':>9} {'D/G/E %':>10}",
        *comparison,
    ]
    _print(rows, args.json, "\n".join(lines))
    return 0


def _summary(result: Any) -> str:
    r = result.report
    return (
        f"{result.model}: PSNR {r.psnr:.2f} dB, MS-SSIM {r.ms_ssim:.4f} [{r.ms_ssim_variant}], "
        f"{_format_count(result.parameters['transmitted'])} parameters, {result.epochs} epochs\n"
        f"run directory: {result.run_dir}"
    )


def _video_spec(args: argparse.Namespace) -> Any:
    from tnerv.runs import VideoSpec

    return VideoSpec(
        path=args.video, start=args.start, count=args.frames, step=args.step, resize=args.resize,
        yuv_size=args.yuv_size, matrix=args.matrix,
    )


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    train = {k: v for k, v in {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "eval_every": args.eval_every,
        "seed": args.seed, "device": args.device, "precision": args.precision, "loss": args.loss,
        "channels_last": args.channels_last or None, "nnpack": args.nnpack or None,
        "restart_on_collapse": args.restart_on_collapse,
    }.items() if v is not None}
    train.update(args.train_set or [])
    if "eval_every" in train:
        train.setdefault("checkpoint_every", train["eval_every"])
    return train


def _announce(args: argparse.Namespace) -> Any:
    """Prints what was chosen for the video (one line) before training; --json carries it instead."""
    from tnerv.models.auto import describe_line

    return None if args.json else (lambda info: print(describe_line(info), flush=True))


def cmd_fit(args: argparse.Namespace) -> int:
    from tnerv.parallel import is_main_process, launched_by_torchrun
    from tnerv.runs import fit_run

    if args.nproc > 1 and not launched_by_torchrun():
        return _launch_torchrun(args.nproc, args.argv)
    result = fit_run(
        _video_spec(args), args.out, model=args.model, preset=args.preset, model_overrides=dict(args.set or []),
        train_overrides=_train_overrides(args), overwrite=args.overwrite, resume=args.resume,
        progress=not args.quiet, size=args.size, ablations=args.ablation, on_config=_announce(args),
    )
    if is_main_process():
        _print(result.to_dict(), args.json, _summary(result))
    return 0


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """`tnerv fit --nproc N ...` is `torchrun --nproc-per-node N -m tnerv fit ...` (PyTorch's launcher)."""
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            rest.append(token)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "tnerv", *rest]
    return subprocess.run(command).returncode


def _encode_summary(r: Any) -> str:
    parts = ", ".join(f"{k} {100 * v / r.num_bytes:.1f}%" for k, v in r.bytes_by_component.items() if v)
    estimate = (
        f" (learned-density estimate of the payload: {r.estimated_payload_bytes:,.0f} bytes; coded: {r.payload_bytes:,})"
        if r.estimated_payload_bytes is not None else ""
    )
    return (
        f"{r.path}: {r.num_bytes:,} bytes, {r.bpp:.4f} bpp ({r.num_frames} frames of {r.width}x{r.height}){estimate}\n"
        f"decoded: PSNR {r.psnr:.2f} dB, MS-SSIM {r.ms_ssim:.4f} [{r.ms_ssim_variant}]\n"
        f"bytes: {parts}\n"
        f"{r.model} ({r.method}), {_format_count(r.parameters['transmitted'])} parameters, "
        f"encoded in {r.encode_seconds / 60:.1f} min; run directory: {r.run_dir}"
    )


def cmd_encode(args: argparse.Namespace) -> int:
    from tnerv.compress import encode_video

    result = encode_video(
        _video_spec(args), args.output, model=args.model, preset=args.preset, lam=args.lam,
        phase_start=args.phase_start, prune=args.prune, model_overrides=dict(args.set or []),
        train_overrides=_train_overrides(args), run_dir=args.run_dir, overwrite=args.overwrite,
        resume=args.resume, progress=not args.quiet, size=args.size, ablations=args.ablation,
        on_config=_announce(args),
    )
    _print(result.to_dict(), args.json, _encode_summary(result))
    return 0


def _passive_openmp() -> None:
    """Lets OpenMP's idle threads sleep instead of spinning, if torch is not loaded yet (OpenMP reads
    this once) and the user did not choose. Decoding alternates OpenMP ops with NNPACK's convolutions,
    which run on their own threads: spinning OpenMP threads took the cores from them (HNeRV decoding at
    1.44x fp32's speed instead of 2.13x, benchmarks/speed.py); oneDNN's paths do not mind either way."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cmd_decode(args: argparse.Namespace) -> int:
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
    _print(result.to_dict(), args.json, text)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from tnerv.bench.plots import file_allocation
    from tnerv.decode import inspect_file

    info = inspect_file(args.file)
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
    _print(info, args.json, "\n".join(lines))
    return 0


def _made_with(compression: Any) -> list[str]:
    """The line of `tnerv inspect` that says how a file was made (its header's compression settings,
    shown as written: a file from elsewhere may hold anything there, the decoder does not use it)."""
    if not isinstance(compression, dict):
        return []
    # JSON keys are strings: their repr without the quotes; every value escaped and cut (short_repr).
    shown = ", ".join(f"{short_repr(k)[1:-1]}={short_repr(v)}" for k, v in compression.items() if k != "method")
    return [f"  made with: {shown}"]


def cmd_eval(args: argparse.Namespace) -> int:
    from tnerv.runs import eval_run

    frames_out = Path(args.frames_out) if args.frames_out else None
    if frames_out and frames_out.exists() and any(frames_out.iterdir()) and not args.overwrite:
        raise TnervError(f"{frames_out} is not empty; pass --overwrite to write frames into it")
    result = eval_run(args.run_dir, frames_out=args.frames_out, batch_size=args.batch_size)
    text = _summary(result) + (f"\nframes written to {args.frames_out}" if args.frames_out else "")
    _print(result.to_dict(), args.json, text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tnerv.bench.plots import file_allocation
    from tnerv.compress import encode_video
    from tnerv.decode import decode_file, inspect_file
    from tnerv.runs import VideoSpec
    from tnerv.video import sample

    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise TnervError(f"{out} is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(path=str(sample("bikes")), count=args.frames, resize=(128, 256))
    if not args.json:  # --json prints the JSON document alone
        print(
            f"tnerv demo: compressing {args.frames} frames of the bikes sample (128x256) with T-NeRV "
            f"(preset tnerv-s-cpu, lambda {args.lam:g}, {args.epochs} epochs)"
        )
    encoded = encode_video(
        spec, out / "bikes.tnrv", preset="tnerv-s-cpu", lam=args.lam,
        train_overrides={"epochs": args.epochs}, progress=not args.quiet,
    )
    decoded = decode_file(encoded.path, out / "bikes-decoded.mp4")  # a fresh decoder, from the file alone
    plot = file_allocation(inspect_file(encoded.path), out / "bytes.png")
    text = (
        _encode_summary(encoded)
        + f"\ndecoded the file again with a fresh decoder: {decoded.num_frames} frames at {decoded.fps:.1f} fps"
        + f" on {decoded.path['ran']} (choosing the path took {decoded.path_seconds:.2f} s)"
        + f" -> {decoded.output}\nbyte allocation plot: {plot}"
    )
    _print({"encode": encoded.to_dict(), "decode": decoded.to_dict(), "plot": str(plot)}, args.json, text)
    return 0


def cmd_anchor(args: argparse.Namespace) -> int:
    from tnerv.anchors import crf_range, encode_anchor, stream_suffix
    from tnerv.runs import load_frames, write_json_atomic
    from tnerv.video import probe

    crfs = list(dict.fromkeys(args.crf))  # a CRF listed twice is encoded once
    lo, hi = crf_range(args.codec)
    bad = [c for c in crfs if not lo <= c <= hi]
    if bad:  # checked before any encode, so no half-finished set of streams is left behind
        raise TnervError(f"{args.codec} --crf must be in {lo}..{hi}, got {bad[0]}")
    out = Path(args.out) if args.out else None
    stem = f"{Path(args.video).stem}-{args.codec}" + ("-444" if args.pix_fmt == "yuv444p" else "")
    streams = {c: out / f"{stem}-crf{c}{stream_suffix(args.codec)}" for c in crfs} if out else {}
    targets = [*streams.values(), out / "anchor.json"] if out else []
    for target in targets:
        if target.exists():
            raise TnervError(f"{target} exists; choose another --out or remove it")
    spec = _video_spec(args)
    fps = probe(args.video, size=args.yuv_size).fps
    frames = load_frames(spec).permute(0, 2, 3, 1).numpy()
    results = [
        encode_anchor(frames, args.codec, c, pix_fmt=args.pix_fmt, preset=args.preset, fps=fps,
                      matrix=args.matrix, stream_path=streams.get(c))[0]
        for c in crfs
    ]
    doc = {"video": asdict(spec), "fps": fps, "results": [r.to_dict() for r in results]}
    if out:
        write_json_atomic(doc, out / "anchor.json")
    r0 = results[0]
    lines = [
        f"{args.codec} anchor (preset {r0.preset}, no frame reordering), {r0.pix_fmt}, {r0.matrix} matrix: "
        f"{r0.num_frames} frames of {r0.width}x{r0.height} from {args.video}",
        f"{'crf':>4} {'bytes':>10} {'bpp':>8} {'PSNR dB':>8} {'MS-SSIM':>8} {'enc s':>7} {'dec fps':>8}",
        *(f"{r.crf:>4} {r.num_bytes:>10,} {r.bpp:>8.4f} {r.psnr:>8.2f} {r.ms_ssim:>8.4f} "
          f"{r.encode_seconds:>7.2f} {r.decode_fps:>8.1f}" for r in results),
        f"bytes: raw elementary stream, no container; PSNR and MS-SSIM on RGB; MS-SSIM is {r0.ms_ssim_variant}",
    ]
    if out:
        lines.append(f"streams and anchor.json written to {out}")
    _print(doc, args.json, "\n".join(lines))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tnerv.bench.protocols import protocol
    from tnerv.bench.runner import run_bench
    from tnerv.video.datasets import Sequence, dataset_sequences

    chosen = protocol(
        args.kind, args.setting, args.scale, args.epochs, args.frames, args.resize, args.budget,
        tuple(args.lambdas) if args.lambdas else None, tuple(args.crf) if args.crf else None,
    )
    if args.videos:
        dataset = "videos"
        videos = [Sequence("videos", Path(v).stem, v, yuv_size=args.yuv_size, matrix=args.matrix) for v in args.videos]
    else:
        dataset = args.dataset
        videos = dataset_sequences(args.dataset, args.data_root, args.sequences)
    out = Path(args.out or f"bench-{args.kind}-{dataset}-{chosen.setting}-{chosen.scale}")
    log = (lambda line: None) if args.json else print
    if not args.json:
        print(f"tnerv bench {args.kind}: {len(videos)} video(s) of {dataset}; {chosen.label}; output in {out}")
    outcome = run_bench(
        args.kind, chosen, videos, args.models, out, dataset, progress=not args.quiet, log=log, worker=args.worker
    )
    written = [*outcome.tables, *outcome.plots, *([outcome.report] if outcome.report else [])]
    if outcome.complete:
        text = f"{len(outcome.records)} results; tables in {out / 'tables'}, plots in {out / 'plots'}; report: {outcome.report}"
    else:
        text = (
            f"{len(outcome.records)} results so far; this worker's units are done, others are not: the last worker "
            "to finish writes the tables (or rerun without --worker)"
        )
    _print({"records": outcome.records, "written": [str(p) for p in written], "complete": outcome.complete}, args.json, text)
    return 0


def _add_training_args(p: argparse.ArgumentParser, overwrite_help: str, resume_help: str) -> None:
    p.add_argument("--model", help="model name (see `tnerv models`; default: tnerv, or the preset's)")
    p.add_argument(
        "--preset", help="a preset name (see `tnerv models`; default: a config derived from the video, "
        "see `tnerv models --for VIDEO`)",
    )
    p.add_argument("--frames", type=_positive_int, help="number of frames to use (default: all)")
    p.add_argument("--start", type=_count_from_zero, default=0, help="first frame (default 0)")
    p.add_argument("--step", type=_positive_int, default=1, help="take every k-th frame")
    p.add_argument("--resize", type=_hw, metavar="HxW", help="resize and centre-crop frames to HxW")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--loss", choices=["l2", "fusion"])
    p.add_argument("--eval-every", type=_positive_int, help="epochs between evaluations and checkpoints")
    p.add_argument("--seed", type=_count_from_zero)
    p.add_argument(
        "--restart-on-collapse", type=_count_from_zero, metavar="N",
        help="if the PSNR is not 1 dB above the mean frame's after a quarter of the epochs, start over with the "
             "next seed, up to N times (default 0: say so and go on)",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--precision", choices=["fp32", "bf16", "fp64", "auto"],
        help="bf16: autocast, fast where the hardware has bf16 (GPU, AVX-512-BF16, AMX); fp64: slow, for exact checks; "
        "auto: bf16 (where native) or NNPACK (CPU) if a short trial fit ends within 0.1 dB of fp32's, else fp32 "
        "(bf16 and the flags below are tried too, and warned about if they fail; the trials go in run.json)",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions: same arithmetic, usually faster")
    p.add_argument(
        "--nnpack", action="store_true",
        help="CPU: float32 convolutions through NNPACK's Winograd/FFT kernels (fewer multiplications, ~1e-5 relative error)",
    )
    p.add_argument("--set", type=_assignment, action="append", metavar="KEY=VALUE", help="override a model config field")
    p.add_argument(
        "--train-set", type=_assignment, action="append", metavar="KEY=VALUE",
        help="override a training recipe field (betas=[0.5,0.999], warmup=0.2, warmup_start=0.1, "
        "schedule=cosine|constant, weight_decay=0, grad_clip=0.1, ...)",
    )
    p.add_argument(
        "--size", type=_count, metavar="S",
        help="scale the model to S transmitted parameters (e.g. 3.0M; default: from the video's pixels)",
    )
    p.add_argument("--ablation", action="append", metavar="NAME", help="T-NeRV ablation E1-E5, D1-D3 (repeatable)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help=overwrite_help)
    group.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tnerv` command."""
    from tnerv.codec.settings import DEFAULT_LAMBDA, PHASE_START  # no torch: the parser stays quick

    parser = _Parser(prog="tnerv", description="Neural video representation and compression.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="frames, size, fps and codec of a video")
    _add_video_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="every model and preset with parameter counts by component")
    p.add_argument("--frames", type=_positive_int, help="count embeddings for this many frames")
    p.add_argument(
        "--for", dest="video_for", metavar="VIDEO",
        help="the config `fit`/`encode` would choose for this video (geometry, size, split), per model",
    )
    p.add_argument("--model", help="with --for: this model only")
    p.add_argument("--preset", help="with --for: start from this preset")
    p.add_argument("--size", type=_count, metavar="S", help="with --for: the size budget (default: from the video)")
    p.add_argument("--resize", type=_hw, metavar="HxW", help="with --for: the frame size after --resize")
    p.add_argument("--yuv-size", type=_wh, metavar="WxH", help="with --for: frame size of a raw .yuv file")
    p.add_argument("--setting", help="the size table of a paper setting: setting1, setting2, davis, mcl-jcv, uvg-1080p")
    p.add_argument(
        "--scale", choices=["paper", "cpu"], default="paper",
        help="with --setting: which scale's configs to count (both scales' splits are printed side by side)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fit", help="fit a model to a video")
    _add_video_args(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--nproc", type=_positive_int, default=1, metavar="N",
        help="train in N processes, one per GPU (or CPU gloo), as torchrun --nproc-per-node N; "
        "the global batch is N times --batch-size",
    )
    _add_training_args(p, "replace a run already in --out", "continue the interrupted run in --out")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("encode", help="compress a video into a .tnrv file")
    _add_video_args(p)
    p.add_argument("-o", "--output", required=True, help="the .tnrv file to write")
    p.add_argument(
        "--lambda", dest="lam", type=_nonnegative_float,
        help=f"rate weight of entropy-constrained models (larger = smaller file; default {DEFAULT_LAMBDA:g})",
    )
    p.add_argument("--phase-start", "--lambda-start", dest="phase_start", type=_fraction, default=PHASE_START,
                   help=f"fraction of epochs before the compression phase (lambda > 0, pruning, QAT); default {PHASE_START:g}")
    p.add_argument("--prune", type=_fraction, help="fraction of decoder weights to prune (post-training models; NeRV: 0.4)")
    p.add_argument("--run-dir", help="where training checkpoints go (default: OUTPUT.run)")
    _add_training_args(p, "replace an existing output and its run directory", "continue an interrupted encode")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a .tnrv file to an mp4 or a folder of PNGs")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="an .mp4 file, or a folder for PNG frames")
    p.add_argument("--frames", metavar="A:B", help="decode frames A to B-1 only")
    p.add_argument("--batch-size", type=_positive_int, default=4)
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto",
        help="auto (default): the fastest of bf16 (where the hardware has it), NNPACK (CPU) and fp32 whose "
        "frames stay within 0.05 dB of fp32's",
    )
    p.add_argument(
        "--max-memory", type=_memory, metavar="SIZE",
        help="refuse a file whose decoding needs more memory than this, e.g. 8G (default: 4G, or this machine's memory if less)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("inspect", help="header and bytes per component of a .tnrv file")
    p.add_argument("file")
    p.add_argument("--plot", metavar="PNG", help="also draw the byte allocation to this PNG file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plot")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("eval", help="evaluate a fitted run on its video")
    p.add_argument("run_dir")
    p.add_argument("--frames-out", help="also write the decoded frames as PNGs to this folder")
    p.add_argument("--overwrite", action="store_true", help="allow --frames-out to be a folder that holds files")
    p.add_argument("--batch-size", type=_positive_int, default=4)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="compress and decode a bundled sample clip (about 4 minutes on 2 CPU cores)")
    p.add_argument("--out", help="folder for the outputs (default: runs/demo-<time>)")
    p.add_argument("--frames", type=_positive_int, default=32)
    p.add_argument("--epochs", type=_positive_int, default=25)
    p.add_argument("--lambda", dest="lam", type=_nonnegative_float, default=0.1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("anchor", help="encode a video with x265, x264 or SVT-AV1 at CRF points (codec anchors)")
    # tnerv.anchors.ANCHOR_CODECS, listed here so building the parser needs no torch import.
    p.add_argument("codec", choices=["x265", "x264", "av1"])
    _add_video_args(p)
    p.add_argument("--crf", type=int, nargs="+", default=[22, 27, 32, 37], help="CRF points (default 22 27 32 37)")
    p.add_argument("--pix-fmt", choices=["yuv420p", "yuv444p"], default="yuv420p", help="default yuv420p")
    p.add_argument("--preset", help="encoder preset (default: veryslow for x265/x264, 8 for SVT-AV1)")
    p.add_argument("--frames", type=_positive_int, help="number of frames to use (default: all)")
    p.add_argument("--start", type=_count_from_zero, default=0, help="first frame (default 0)")
    p.add_argument("--resize", type=_hw, metavar="HxW", help="resize and centre-crop frames to HxW")
    p.add_argument("--out", help="folder for the raw streams and anchor.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_anchor, step=1)

    p = sub.add_parser(
        "bench", help="run the paper's experiments (tables, RD curves, BD statistics, timing, HTML report)"
    )
    p.add_argument("kind", choices=["representation", "compression", "ablation", "timing"])
    p.add_argument("--dataset", default="samples", help="samples (default), uvg, davis or mcl-jcv")
    p.add_argument("--data-root", metavar="DIR", help="the local copy of the dataset")
    p.add_argument("--sequences", nargs="+", metavar="NAME", help="only these sequences of the dataset")
    p.add_argument("--videos", nargs="+", metavar="VIDEO", help="your own videos instead of a dataset")
    p.add_argument("--yuv-size", type=_wh, metavar="WxH", help="frame size of raw .yuv files given with --videos")
    p.add_argument("--matrix", choices=["bt601", "bt709"], help="YUV->RGB matrix of --videos")
    p.add_argument(
        "--models", nargs="+", metavar="M",
        help="models (compression: also x265, x264, av1; ablation: tnerv, E1..E5, D1..D3, E3+D1)",
    )
    p.add_argument("--setting", help="setting1, setting2, davis, mcl-jcv, uvg-1080p (default: the bench's)")
    p.add_argument("--scale", choices=["paper", "cpu"], default="cpu", help="paper (GPU) or cpu (default)")
    p.add_argument("--epochs", type=_positive_int, help="override the scale's epochs")
    p.add_argument("--frames", type=_positive_int, help="override the scale's frame count")
    p.add_argument("--resize", type=_hw, metavar="HxW", help="override the scale's frame size")
    p.add_argument("--budget", type=_count, help="override the scale's size budget (e.g. 400k)")
    p.add_argument(
        "--lambdas", type=_nonnegative_float, nargs="+", help="compression: rate points of entropy-constrained models"
    )
    p.add_argument("--crf", type=int, nargs="+", help="compression: CRF points of the codec anchors (default 22 27 32 37)")
    p.add_argument("--out", help="output folder (a rerun skips finished runs)")
    p.add_argument(
        "--worker", type=_worker, metavar="I/N",
        help="run worker I's share of the units (0 <= I < N) beside N-1 other workers that share --out",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser


# Options whose value may start with "-" (a frame range such as -3:2): argparse would read the value as
# an option, so it is glued to its option ("--frames=-3:2") and reaches the option's own check.
_DASH_VALUE_OPTIONS = ("--frames",)


def _glue_dash_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for token in argv:
        if out and out[-1] in _DASH_VALUE_OPTIONS and token.startswith("-") and token[1:2].isdigit():
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs one command; user errors print `tnerv: error: ...` and exit 2."""
    argv = _glue_dash_values(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
    except SystemExit as exc:  # --help (0), or a bad command line already reported in one line (2)
        return int(exc.code or 0)
    try:
        return args.func(args)
    except TnervError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message quotes
        print(f"tnerv: error: {message}", file=sys.stderr)
    except OSError as exc:  # unwritable output, full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"tnerv: error: {exc.strerror or exc}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("tnerv: interrupted (the last checkpoint is intact; continue with --resume)", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
