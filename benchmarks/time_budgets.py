"""What a time budget buys: PSNR and bpp of `tnerv encode --time T` for each model and budget, on a sample
clip at its own size, with x265's bpp at the same PSNR beside each point (docs/experiments.md).

    python benchmarks/time_budgets.py [--video bikes] [--models tnerv hnerv] [--budgets 2m 5m 10m 20m]
                                      [--crfs 22 27 32 37 42 47] [--out time-budgets]

Each encode is `tnerv encode VIDEO -o OUT/MODEL-T.tnrv --model MODEL --time T` (the whole encode in the
budget: training, writing, the decode check). x265 (veryslow, no B-frames) encodes the same frames at
each CRF; its bpp at an encode's PSNR is interpolated on that curve (`tnerv.anchors.bpp_at_psnr`; none
outside it). Results are written to OUT/results.json after every encode, so an interrupted run keeps
what it measured. The machine should be otherwise idle: a budget buys fewer epochs on a busy one."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from tnerv.anchors import anchor_curve, anchor_label, bpp_at_psnr
from tnerv.compress import encode_video
from tnerv.runs import VideoSpec, load_frames
from tnerv.time_budget import format_duration, parse_duration
from tnerv.video import sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="bikes", help="a sample name or a video file")
    parser.add_argument("--models", nargs="+", default=["tnerv", "hnerv"])
    parser.add_argument("--budgets", nargs="+", default=["2m", "5m", "10m", "20m"])
    parser.add_argument("--crfs", nargs="+", type=int, default=[22, 27, 32, 37, 42, 47])
    parser.add_argument("--out", default="time-budgets")
    args = parser.parse_args()
    budgets = [parse_duration(b) for b in args.budgets]
    path = str(sample(args.video)) if not Path(args.video).exists() else args.video
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    frames = load_frames(VideoSpec(path=path)).permute(0, 2, 3, 1).contiguous().numpy()
    record = {"video": path, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "anchor": [r.to_dict() for r in anchor_curve(frames, "x265", crfs=args.crfs)], "encodes": []}
    results = out / "results.json"
    results.write_text(json.dumps(record, indent=1))
    for model in args.models:
        for budget, text in zip(budgets, args.budgets):
            result = encode_video(VideoSpec(path=path), out / f"{model}-{text}.tnrv", model=model,
                                  train_overrides={"time_budget": budget}, progress=False)
            record["encodes"].append({**result.to_dict(), "budget_seconds": budget})
            results.write_text(json.dumps(record, indent=1))
            print(f"{model} {text}: {result.epochs} epochs, {result.encode_seconds:.0f} s, "
                  f"{result.psnr:.2f} dB, {result.bpp:.4f} bpp", file=sys.stderr, flush=True)
    print(table(record))
    return 0


def table(record: dict) -> str:
    """The markdown table of docs/experiments.md: one row per encode, x265's bpp at its PSNR beside it."""
    from tnerv.anchors import AnchorResult

    curve = [AnchorResult(**r) for r in record["anchor"]]
    rows = [f"| Model | Budget | Epochs | Encode | PSNR (dB) | bpp | {anchor_label('x265')} bpp at that PSNR |",
            "|---|---|---|---|---|---|---|"]
    lowest, highest = min(curve, key=lambda r: r.psnr), max(curve, key=lambda r: r.psnr)
    for e in record["encodes"]:
        anchor = bpp_at_psnr(curve, e["psnr"])
        beside = (f"{anchor:.4f} ({e['bpp'] / anchor:.1f}x)" if anchor else
                  f"below its curve (lowest: {lowest.psnr:.2f} dB at {lowest.bpp:.4f} bpp, CRF {lowest.crf})"
                  if e["psnr"] < lowest.psnr else f"above its curve (highest: {highest.psnr:.2f} dB)")
        rows.append(f"| {e['model']} | {format_duration(e['budget_seconds'])} | {e['epochs']} | "
                    f"{format_duration(e['encode_seconds'])} | {e['psnr']:.2f} | {e['bpp']:.4f} | {beside} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
