"""T-NeRV against NeRV on the bikes sample at a CPU size: equal parameter budget, equal epochs.

    python benchmarks/tnerv_vs_nerv.py                 # 32 frames at 128x256, the presets' 100 epochs
    python benchmarks/tnerv_vs_nerv.py --epochs 5      # a quick check that everything runs
    python benchmarks/tnerv_vs_nerv.py --size 800000 # both models scaled to 0.8M parameters

T-NeRV uses the preset tnerv-s-cpu (scaled to --size with TNeRV.scale_config if given); NeRV uses
nerv-s-cpu with its latent channels ("fc_dim") chosen so that its size is the closest to T-NeRV's.
Both train with their preset's recipe for the same number of epochs. Decoding speed is measured on
the decoder rebuilt from the transmitted state (what a receiver runs), over every frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from tnerv.models import load_preset
from tnerv.models.counting import transmitted_size
from tnerv.models.nerv import NeRVConfig
from tnerv.models.tnerv import TNeRV
from tnerv.train import TrainConfig

from common import add_clip_args, fit_and_measure, load_clip


def nerv_config_matching(base: NeRVConfig, budget: int) -> NeRVConfig:
    """NeRV's config with the latent channels whose size is closest to the budget."""

    def size(channels: int) -> int:
        return transmitted_size("nerv", dataclasses.replace(base, channels=channels))["transmitted"]

    best = min(range(1, 257), key=lambda c: abs(size(c) - budget))
    return dataclasses.replace(base, channels=best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="default: the T-NeRV preset's")
    parser.add_argument("--size", type=int, help="transmitted parameters of both (default: tnerv-s-cpu's size)")
    add_clip_args(parser)
    args = parser.parse_args()
    video = load_clip(args)
    h, w = video.shape[-2:]
    n = video.shape[0]
    geometry = {"height": h, "width": w, "num_frames": n}

    t_preset, n_preset = load_preset("tnerv-s-cpu"), load_preset("nerv-s-cpu")
    t_config = t_preset.config(**geometry)
    if args.size:
        t_config = TNeRV.scale_config(t_config, args.size)
    budget = transmitted_size("tnerv", t_config)["transmitted"]
    n_config = nerv_config_matching(n_preset.config(**geometry), budget)

    epochs = args.epochs or t_preset.train.get("epochs", 100)
    results = []
    for name, config, preset in (("tnerv", t_config, t_preset), ("nerv", n_config, n_preset)):
        train = TrainConfig.from_dict({**preset.train, "epochs": epochs, "eval_every": epochs, "device": args.device})
        results.append(fit_and_measure(name, config, train, video, args.batch_size))

    if args.json:
        print(json.dumps({"frames": n, "height": h, "width": w, "epochs": epochs, "results": results}, indent=2))
        return
    print(f"bikes, {n} frames at {h}x{w}, {epochs} epochs, {torch.get_num_threads()} CPU threads")
    print(f"{'model':<6} {'params':>9} {'PSNR':>7} {'MS-SSIM':>8} {'decode fps':>10} {'train s':>8}")
    for r in results:
        print(
            f"{r['model']:<6} {r['parameters']:>9,} {r['psnr']:>7.2f} {r['ms_ssim']:>8.4f} "
            f"{r['decode_fps']:>10.1f} {r['train_seconds']:>8.0f}"
        )
    print(f"MS-SSIM variant: {results[0]['ms_ssim_variant']}")


if __name__ == "__main__":
    main()
