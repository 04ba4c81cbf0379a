"""Parity with the official code: each reference-exact preset (`<model>-ref-cpu`) fitted on the first 64
frames of the bikes sample, next to the official implementation's figures for the same config.

    python benchmarks/parity.py                        # NeRV, HNeRV, FFNeRV, E-NeRV, DNeRV: 60 epochs each
    python benchmarks/parity.py --models hnerv --seeds 0 1 2
    python benchmarks/parity.py --epochs 2             # a quick check that everything runs

Each preset builds, layer for layer, what the official code builds with its README flags scaled to about
0.35M parameters, and trains with the official recipe (see the presets' descriptions). Measured as the
official figures were (shared/findings/official-runs/REPORT.md): PSNR is the mean per-frame PSNR of the
float model after the last epoch, frames clamped to [0, 1]; s/epoch is the median over the epochs;
decode fps is the decoder alone rebuilt from the transmitted state (HNeRV's and DNeRV's embeddings
precomputed, FFNeRV with its aggregation), batch 1, eval, no_grad, 10 warm-up frames, then the median
of 5 passes over every frame. Run it on an idle machine with the Makefile's malloc settings, as the
official figures were measured (2 threads, MALLOC_MMAP_THRESHOLD_=268435456,
MALLOC_TRIM_THRESHOLD_=1073741824): timings from a busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from tnerv.metrics import psnr
from tnerv.models import create_model, load_preset
from tnerv.models.execution import FP32, ExecutionPath
from tnerv.runs import VideoSpec, load_frames
from tnerv.train import TrainConfig, fit, seed_everything
from tnerv.video import sample

# The official code on this machine kind (2 cores), same frames, 60 epochs, its default seed (1):
# transmitted parameters as tnerv counts them, PSNR (dB), median s/epoch, decode fps.
OFFICIAL = {
    "nerv": {"parameters": 347_919, "psnr": 27.43, "s_per_epoch": 3.70, "decode_fps": 67.3},
    "hnerv": {"parameters": 359_278, "psnr": 29.02, "s_per_epoch": 4.63, "decode_fps": 63.3},
    "ffnerv": {"parameters": 345_109, "psnr": 28.30, "s_per_epoch": 6.59, "decode_fps": 49.2},
}
MODELS = ["nerv", "hnerv", "ffnerv", "enerv", "dnerv"]
TOLERANCE_DB = 0.3


@torch.no_grad()
def decode_fps(decoder: torch.nn.Module, warmup: int = 10, passes: int = 5, execution: ExecutionPath = FP32) -> float:
    """Frames per second of a decoder on an execution path, batch 1: the median of `passes` timed
    passes over every frame."""
    execution.apply(decoder)
    device = next(decoder.parameters()).device
    idx = torch.arange(decoder.config.num_frames, device=device)

    def one_pass(frames: torch.Tensor) -> None:
        with execution.autocast(device):
            for _ in decoder.reconstruct(frames, None, 1):
                pass
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    one_pass(idx[:warmup])
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        one_pass(idx)
        times.append(time.perf_counter() - start)
    return len(idx) / statistics.median(times)


def measure(name: str, epochs: int | None, seed: int) -> dict:
    """Fits `<name>-ref-cpu` on bikes and measures it the way the official figures were measured."""
    preset = load_preset(f"{name}-ref-cpu")
    config = preset.config()
    video = load_frames(VideoSpec(path=str(sample("bikes")), count=config.num_frames, resize=(config.height, config.width)))
    recipe = {**preset.train, "seed": seed, "device": "cpu"}
    if epochs is not None:
        recipe["epochs"] = epochs
    recipe["eval_every"] = recipe["checkpoint_every"] = recipe["epochs"]  # one evaluation, at the end
    train = TrainConfig.from_dict(recipe)
    seed_everything(seed)
    model = create_model(name, config)
    result = fit(model, video, train, progress=False)
    seconds = [h["seconds"] for h in result.history]
    per_epoch = [b - a for a, b in zip([0.0, *seconds[:-2]], seconds[:-1])] or seconds  # the last one evaluates
    decoder = type(model).from_transmitted(config, model.transmitted_state())
    target = video.float() / 255
    decoded = torch.cat([out for _, out in decoder.reconstruct(torch.arange(len(video)), None, 4)])
    return {
        "model": name,
        "preset": f"{name}-ref-cpu",
        "frames": f"{len(video)} of {config.height}x{config.width}",
        "parameters": model.parameter_counts()["transmitted"],
        "epochs": train.epochs,
        "seed": seed,
        "psnr": psnr(decoded, target).mean().item(),
        "fit_psnr": result.report.psnr,
        "s_per_epoch": statistics.median(per_epoch),
        "decode_fps": decode_fps(decoder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--epochs", type=int, help="override the presets' 60 epochs (the official figures are at 60)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds to run (default 1, the official default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for name in args.models:
        for seed in args.seeds:
            results.append(measure(name, args.epochs, seed))
            if not args.json:
                print(f"  {name} seed {seed}: {results[-1]['psnr']:.2f} dB", flush=True)
    if args.json:
        print(json.dumps({"official": OFFICIAL, "results": results}, indent=2))
        return
    print(f"bikes, {torch.get_num_threads()} CPU threads; official figures: the official code on this machine kind")
    header = f"{'model':<7} {'frames':<14} {'params':>9} {'official':>9} {'seed':>4} {'PSNR':>6} {'official':>8} {'diff':>6}"
    print(header + f" {'s/epoch':>7} {'official':>8} {'dec fps':>7} {'official':>8}")
    for r in results:
        ref = OFFICIAL.get(r["model"])
        if ref is None:
            tail = "   no official figure"
            print(f"{r['model']:<7} {r['frames']:<14} {r['parameters']:>9,} {'-':>9} {r['seed']:>4} {r['psnr']:>6.2f}"
                  f" {'-':>8} {'-':>6} {r['s_per_epoch']:>7.2f} {'-':>8} {r['decode_fps']:>7.1f} {'-':>8}{tail}")
            continue
        diff = r["psnr"] - ref["psnr"]
        verdict = "" if r["epochs"] != 60 else ("  within 0.3 dB" if abs(diff) <= TOLERANCE_DB else "  MISSES 0.3 dB")
        print(f"{r['model']:<7} {r['frames']:<14} {r['parameters']:>9,} {ref['parameters']:>9,} {r['seed']:>4}"
              f" {r['psnr']:>6.2f} {ref['psnr']:>8.2f} {diff:>+6.2f} {r['s_per_epoch']:>7.2f} {ref['s_per_epoch']:>8.2f}"
              f" {r['decode_fps']:>7.1f} {ref['decode_fps']:>8.1f}{verdict}")


if __name__ == "__main__":
    main()
