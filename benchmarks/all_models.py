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
import time

import torch

from tnerv.metrics import ms_ssim, psnr
from tnerv.models import create_model, list_models, load_preset, model_class
from tnerv.models.sizing import solve_for_budget
from tnerv.runs import VideoSpec, load_frames
from tnerv.train import TrainConfig, fit, pick_device
from tnerv.video import sample

MODELS = ["nerv", "enerv", "cnerv", "ffnerv", "hnerv", "dnerv", "tnerv"]


@torch.no_grad()
def decode_all(model, batch_size: int) -> tuple[torch.Tensor, float]:
    """Every frame decoded by the transmitted decoder, and the frames per second (best of 3 runs)."""
    idx = torch.arange(model.config.num_frames, device=next(model.parameters()).device)
    best, out = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        out = torch.cat([o for _, o in model.reconstruct(idx, None, batch_size)])
        if out.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, len(idx) / best


def run(name: str, video: torch.Tensor, budget: int, epochs: int, device: str, batch_size: int) -> dict:
    n, _, h, w = video.shape
    preset = load_preset(f"{name}-s-cpu")
    config, size = solve_for_budget(name, preset.config(height=h, width=w, num_frames=n), budget, tolerance=0.03)
    train = TrainConfig.from_dict(
        {**model_class(name).train_defaults, **preset.train, "epochs": epochs, "eval_every": epochs, "device": device}
    )
    torch.manual_seed(train.seed)
    model = create_model(name, config)
    result = fit(model, video, train, progress=False)
    decoder = type(model).from_transmitted(config, model.transmitted_state()).to(pick_device(device))
    target = video.float().div(255).to(next(decoder.parameters()).device)
    decoded, fps = decode_all(decoder, batch_size)
    quality = ms_ssim(decoded, target)
    return {
        "model": name,
        "parameters": size,
        "psnr": psnr(decoded, target).mean().item(),
        "ms_ssim": quality.values.mean().item(),
        "ms_ssim_variant": quality.variant,
        "seconds_per_epoch": result.seconds / epochs,
        "decode_fps": fps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--resize", default="128x256", help="HxW the clip is resized (and centre-cropped) to")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--size", type=int, default=400_000, help="transmitted parameters of every model")
    parser.add_argument("--models", nargs="+", default=[m for m in MODELS if m in list_models()])
    parser.add_argument("--batch-size", type=int, default=4, help="frames per batch while decoding")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    h, w = (int(v) for v in args.resize.lower().split("x"))
    video = load_frames(VideoSpec(path=str(sample("bikes")), count=args.frames, resize=(h, w)))
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
