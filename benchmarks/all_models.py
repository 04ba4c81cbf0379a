"""Every model on one sample clip at a CPU size: equal parameter budget (via the size solver), equal epochs.

    python benchmarks/all_models.py                   # 32 frames of bikes at 128x256, 100 epochs, 0.4M each
    python benchmarks/all_models.py --epochs 2        # a quick check that everything runs
    python benchmarks/all_models.py --size 800000 --models nerv hnerv tnerv

Each model starts from its CPU preset (`<model>-s-cpu`), is scaled by `solve_for_budget` to the budget
at the clip's size and length, and trains with its preset's recipe for the same number of epochs.
Decoding speed is measured on the decoder rebuilt from the transmitted state (what a receiver runs),
over every frame. Seconds per epoch include the one evaluation at the end.
"""

from __future__ import annotations

import argparse
import json

import torch

from tnerv.models import list_models, load_preset, model_class
from tnerv.models.scaling import solve_for_budget
from tnerv.train import TrainConfig

from common import add_clip_args, fit_and_measure, load_clip

MODELS = ["nerv", "enerv", "cnerv", "ffnerv", "hnerv", "dnerv", "hinerv", "tnerv"]


def run(name: str, video: torch.Tensor, budget: int, epochs: int, device: str, batch_size: int) -> dict:
    n, _, h, w = video.shape
    preset = load_preset(f"{name}-s-cpu")
    config, size = solve_for_budget(name, preset.config(height=h, width=w, num_frames=n), budget, tolerance=0.03)
    train = TrainConfig.from_dict(
        {**model_class(name).train_defaults, **preset.train, "epochs": epochs, "eval_every": epochs, "device": device}
    )
    measured = fit_and_measure(name, config, train, video, batch_size)
    return {**measured, "parameters": size, "seconds_per_epoch": measured["train_seconds"] / epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--size", type=int, default=400_000, help="transmitted parameters of every model")
    parser.add_argument("--models", nargs="+", default=[m for m in MODELS if m in list_models()])
    add_clip_args(parser)
    args = parser.parse_args()
    video = load_clip(args)
    h, w = video.shape[-2:]
    results = []
    for name in args.models:
        results.append(run(name, video, args.size, args.epochs, args.device, args.batch_size))
        if not args.json:
            print(f"  {name} done", flush=True)

    if args.json:
        summary = {"frames": len(video), "height": h, "width": w, "epochs": args.epochs, "results": results}
        print(json.dumps(summary, indent=2))
        return
    print(f"bikes, {len(video)} frames at {h}x{w}, {args.epochs} epochs, {torch.get_num_threads()} CPU threads")
    print(f"{'model':<7} {'params':>9} {'PSNR':>7} {'MS-SSIM':>8} {'s/epoch':>8} {'decode fps':>10}")
    for r in results:
        print(
            f"{r['model']:<7} {r['parameters']:>9,} {r['psnr']:>7.2f} {r['ms_ssim']:>8.4f} "
            f"{r['seconds_per_epoch']:>8.2f} {r['decode_fps']:>10.1f}"
        )
    print(f"MS-SSIM variant: {results[0]['ms_ssim_variant']}")


if __name__ == "__main__":
    main()
