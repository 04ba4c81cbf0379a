"""`tnerv info` and `tnerv models`: what a video is and what each model would be, without training."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from tnerv.cli.output import format_count, print_result


def cmd_info(args: argparse.Namespace) -> int:
    """`tnerv info`: prints a video's frame count, size, fps and codec."""
    from tnerv.video import probe

    info = probe(args.video, size=args.yuv_size)
    text = (
        f"{info.path}\n  frames: {info.num_frames}\n  size:   {info.width}x{info.height} (WxH)\n"
        f"  fps:    {info.fps:g}\n  codec:  {info.codec} ({info.pix_fmt})"
    )
    print_result(asdict(info), args.json, text)
    return 0


def _counts_line(label: str, frames: int, height: int, width: int, c: dict[str, int]) -> str:
    return (
        f"{label:<32} {frames:>6} {height:>5}x{width:<5} {format_count(c['transmitted']):>9}  "
        f"{format_count(c['decoder'])} / {format_count(c['grids'])} / {format_count(c['embeddings'])}"
        f" (+ {format_count(c['encoder'])})"
    )


_COUNTS_HEADER = f"{'':<32} {'frames':>6} {'HxW':>11} {'size':>9}  decoder / grids / embeddings (+ encoder, not sent)"


def cmd_models(args: argparse.Namespace) -> int:
    """`tnerv models`: prints every model and preset with its parameter counts, or a video's or setting's configs."""
    from tnerv.models import create_model, list_models, list_presets, load_preset
    from tnerv.models.counting import shapes_only

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
    print_result(rows, args.json, "\n".join(lines))
    return 0


def _configs_for_video(args: argparse.Namespace) -> int:
    """What `fit` and `encode` would choose for a video, per model, without training."""
    from tnerv.models import list_models, load_preset
    from tnerv.models.budget import config_for_video, describe, describe_line
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
    print_result(rows, args.json, "\n".join([header, *(describe_line(r) for r in rows)]))
    return 0


def _setting_table(args: argparse.Namespace) -> int:
    from tnerv.bench.protocols import CPU_SCALE
    from tnerv.models import list_models
    from tnerv.models.budget import cpu_config, setting_config
    from tnerv.models.counting import format_split, split_of, transmitted_size
    from tnerv.models.settings import get_setting

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
            f"{model:<8} {format_count(counts['paper']['transmitted']):>9} {format_split(counts['paper']):>10}"
            f"   {format_count(counts['cpu']['transmitted']):>9} {format_split(counts['cpu']):>10}"
        )
    h, w, n, budget = scales[args.scale]
    lines = [
        f"{setting.description}; budget {format_count(setting.budget)}, {paper_frames} frames",
        f"CPU scale: {height}x{width}, {cpu_frames} frames, budget {format_count(cpu_budget)} "
        "(derived from the paper-scale config, same split: tnerv.models.budget.cpu_config)",
        "",
        f"{args.scale} scale: {h}x{w}, {n} frames, budget {format_count(budget)}",
        _COUNTS_HEADER.replace(" " * 32, f"{'model':<32}", 1),
        *(_counts_line(r["model"], n, h, w, r["parameters"]) for r in rows),
        "",
        "split of the transmitted parameters, decoder/grids/embeddings %:",
        f"{'model':<8} {'paper':>9} {'D/G/E %':>10}   {'CPU':>9} {'D/G/E %':>10}",
        *comparison,
    ]
    print_result(rows, args.json, "\n".join(lines))
    return 0
