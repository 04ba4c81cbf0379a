"""Speed of training and decoding, plain fp32 against the fast path, beside the official code's figures.

    python benchmarks/speed.py                       # NeRV, HNeRV, FFNeRV, T-NeRV: 5 epochs per path
    python benchmarks/speed.py --models hnerv --epochs 10
    python benchmarks/speed.py --epochs 1 --passes 1 # a quick check that everything runs
    python benchmarks/speed.py --scale paper --frames 16 --epochs 20   # on a GPU: the paper presets

Configs: the parity protocol (benchmarks/parity.py): NeRV, HNeRV and FFNeRV at their reference-exact
presets (`<model>-ref-cpu`, about 0.35M, 64 frames of bikes), T-NeRV by tnerv's own rule for that video
at 0.35M (it has no official code). Each path fits the same model from the same seed for the same
epochs: s/epoch is the median over the epochs (the last, which evaluates, left out), PSNR the fit's.
Decoding: the decoder rebuilt from the fp32 fit's transmitted state, batch 1, eval, no_grad, 10 warm-up
frames, the median of `--passes` passes over every frame; its PSNR is that of the 8-bit frames.
GFLOP/frame is counted with torch.utils.flop_counter over one decoding pass; the matmul peak is a
2048x2048 product measured in the same run. The fast path is the decoder's first choice
(tnerv.models.execution.candidate_paths): bf16 autocast with channels_last where the device computes bf16
natively, else on a CPU NNPACK's Winograd/FFT convolutions in float32 (its GFLOP/s are those of the
direct convolutions it replaces: it does fewer multiplications). On other CPUs bf16 is emulated and slower.
`--scale paper` (for a GPU) takes the paper presets instead (NeRV/FFNeRV/T-NeRV 720p, HNeRV 960p) on
`--frames` frames of bikes scaled up to their size, and adds each path's peak GPU memory.

The official figures (`OFFICIAL` in parity.py) were measured on the machine kind of issue 14 (AVX-512
with bf16, 206 GFLOP/s fp32 matmul on 2 cores); on another machine compare each path with the fp32
column of the same run, and the official code only through a run of it on that machine, whose
figures `--official hnerv=S_PER_EPOCH,FPS ...` puts in the table instead (docs/experiments.md).
Run on an idle machine with the Makefile's malloc settings (MALLOC_MMAP_THRESHOLD_=268435456,
MALLOC_TRIM_THRESHOLD_=1073741824)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

# As `tnerv decode` does (cli.compression._passive_openmp): idle OpenMP threads sleep rather than spin, so that
# NNPACK's own threads get the cores. Set before torch loads OpenMP; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from parity import OFFICIAL, decode_fps  # noqa: E402 - the official code's figures and timing, same protocol
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tnerv.metrics import psnr  # noqa: E402
from tnerv.models import create_model, load_preset  # noqa: E402
from tnerv.models.budget import auto_config  # noqa: E402
from tnerv.models.execution import FP32, ExecutionPath, candidate_paths, native_bf16  # noqa: E402
from tnerv.runs import VideoSpec, load_frames  # noqa: E402
from tnerv.train import TrainConfig, fit, pick_device, seed_everything  # noqa: E402
from tnerv.video import round_to_8bit, sample  # noqa: E402

MODELS = ["nerv", "hnerv", "ffnerv", "tnerv"]
OFFICIAL_MACHINE_FP32_GFLOPS = 206  # the 2048x2048 fp32 matmul of the machine the official figures come from
SEED = 1  # the official scripts' default
PAPER_PRESETS = {"nerv": "nerv-12.5m-720p", "hnerv": "hnerv-3.0m-960p", "ffnerv": "ffnerv-12.4m-720p",
                 "tnerv": "tnerv-12.4m-720p"}


def setup(name: str, scale: str = "parity", frames: int = 16) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    """The model's config, recipe and frames: the parity protocol, or a paper preset on `frames` frames."""
    if scale == "paper":
        preset = load_preset(PAPER_PRESETS[name])
        config, recipe = dataclasses.replace(preset.config(), num_frames=frames), dict(preset.train)
    elif name == "tnerv":
        config, _ = auto_config("tnerv", 128, 256, 64, 350_000)
        recipe = {"epochs": 60, "batch_size": 1}
    else:
        preset = load_preset(f"{name}-ref-cpu")
        config, recipe = preset.config(), dict(preset.train)
    video = load_frames(VideoSpec(path=str(sample("bikes")), count=config.num_frames, resize=(config.height, config.width)))
    return config, recipe, video


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an n x n matrix product (the machine's practical peak for dense work)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(name: str, config, recipe: dict, video: torch.Tensor, epochs: int, path: ExecutionPath, device: str):
    """Fits the model on one path; returns (model, median s/epoch, PSNR)."""
    overrides = {"epochs": epochs, "seed": SEED, "device": device, "eval_every": epochs, "checkpoint_every": epochs,
                 "precision": path.precision, "channels_last": path.channels_last, "nnpack": path.nnpack}
    config_train = TrainConfig.from_dict({**recipe, **overrides})
    seed_everything(SEED)
    model = create_model(name, config)
    result = fit(model, video, config_train, progress=False)
    seconds = [h["seconds"] for h in result.history]
    per_epoch = [b - a for a, b in zip([0.0, *seconds[:-2]], seconds[:-1])] or seconds  # the last one evaluates
    return model, statistics.median(per_epoch), result.report.psnr


@torch.no_grad()
def decode(decoder, path: ExecutionPath, passes: int) -> tuple[torch.Tensor, float]:
    """Every frame decoded on a path (batch 1), and the median fps over `passes` passes (parity's timing)."""
    fps = decode_fps(decoder, passes=passes, execution=path)
    idx = torch.arange(decoder.config.num_frames, device=next(decoder.parameters()).device)
    with path.autocast(idx.device):
        out = torch.cat([o.float() for _, o in decoder.reconstruct(idx, None, 1)])
    return out, fps


@torch.no_grad()
def flops_per_frame(decoder) -> float:
    """Floating-point operations of one decoding pass over every frame, per frame."""
    idx = torch.arange(decoder.config.num_frames, device=next(decoder.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        for _ in decoder.reconstruct(idx, None, 1):
            pass
    return counter.get_total_flops() / len(idx)


def measure(name: str, epochs: int, passes: int, fast: ExecutionPath, device: str, scale: str, frames: int) -> dict:
    config, recipe, video = setup(name, scale, frames)
    target = video.float() / 255
    row = {"model": name, "frames": f"{len(video)} of {config.height}x{config.width}", "epochs": epochs}
    fitted = None
    for label, path in (("fp32", FP32), ("fast", fast)):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        model, row[f"train_s_{label}"], row[f"train_psnr_{label}"] = train(name, config, recipe, video, epochs, path, device)
        if device.startswith("cuda"):
            row[f"peak_memory_gib_{label}"] = torch.cuda.max_memory_allocated() / 2**30
        fitted = fitted or model
        print(f"  {name} {label} ({path.describe()}, {row['frames']}): {row[f'train_s_{label}']:.2f} s/epoch, "
              f"{row[f'train_psnr_{label}']:.2f} dB after {epochs} epochs", flush=True)
    row["parameters"] = fitted.parameter_counts()["transmitted"]
    state = fitted.transmitted_state()
    target = target.to(next(fitted.parameters()).device)
    for label, path in (("fp32", FP32), ("fast", fast)):
        decoder = type(fitted).from_transmitted(config, state).to(next(fitted.parameters()).device).eval()
        out, row[f"decode_fps_{label}"] = decode(decoder, path, passes)
        row[f"decode_psnr_{label}"] = psnr(round_to_8bit(out), target).mean().item()
    row["gflop_per_frame"] = flops_per_frame(type(fitted).from_transmitted(config, state).eval()) / 1e9
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per training path (default 5)")
    parser.add_argument("--passes", type=int, default=3, help="timed decoding passes (default 3)")
    parser.add_argument("--scale", choices=["parity", "paper"], default="parity")
    parser.add_argument("--frames", type=int, default=16, help="frames at --scale paper (default 16)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--official", type=official_figure, action="append", metavar="MODEL=S_PER_EPOCH,FPS",
        help="the official code's figures measured on this machine (e.g. hnerv=7.76,35.9), instead of those of "
        "the machine of issue 14",
    )
    args = parser.parse_args()
    official = dict(args.official) if args.official else OFFICIAL
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    bf16 = native_bf16(device)
    fast = candidate_paths(device, "auto")[0]  # the decoder's first choice: bf16, else NNPACK on a CPU
    peak = {"fp32": matmul_gflops(torch.float32, device)}
    if bf16:
        peak["bf16"] = matmul_gflops(torch.bfloat16, device)
    capability = torch.cuda.get_device_name(device) if device.type == "cuda" else torch.backends.cpu.get_cpu_capability()
    print(f"{device.type} ({capability}), {torch.get_num_threads()} threads; native bf16: {'yes' if bf16 else 'no'}; "
          f"fast path: {fast.describe()}; matmul peak: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    rows = [measure(name, args.epochs, args.passes, fast, str(device), args.scale, args.frames) for name in args.models]
    if args.json:
        print(json.dumps({"device": str(device), "capability": capability, "fast_path": fast.to_dict(), "peak_gflops": peak,
                          "official": official, "results": rows}, indent=2))
        return
    fast_peak = peak[fast.precision]
    where = ("measured on this machine (--official)" if args.official else
             f"on a machine of {OFFICIAL_MACHINE_FP32_GFLOPS} GFLOP/s fp32 matmul (this one: {peak['fp32']:.0f})")
    print(f"\nOfficial figures: the official code {where}; x fp32 compares the fast path with plain fp32 in this run.")
    print(f"{'':<7} {'params':>8} | {'train s/epoch':^34} | {'train PSNR':^21} | {'decode fps':^34} | "
          f"{'decode PSNR (8-bit)':^21} | {'GFLOP/s fast':>14}")
    print(f"{'model':<7} {'':>8} | {'fp32':>6} {'fast':>6} {'x fp32':>6} {'official':>8} {'x off':>5} | "
          f"{'fp32':>6} {'fast':>6} {'diff':>6} | {'fp32':>6} {'fast':>6} {'x fp32':>6} {'official':>8} {'x off':>5} | "
          f"{'fp32':>6} {'fast':>6} {'diff':>6} | {'(% of peak)':>14}")
    for r in rows:
        ref = official.get(r["model"], {})
        off_train, off_dec = ref.get("s_per_epoch"), ref.get("decode_fps")
        gflops = r["gflop_per_frame"] * r["decode_fps_fast"]
        print(
            f"{r['model']:<7} {r['parameters']:>8,} | {r['train_s_fp32']:>6.2f} {r['train_s_fast']:>6.2f} "
            f"{r['train_s_fp32'] / r['train_s_fast']:>5.2f}x {_fmt(off_train, '8.2f')} "
            f"{_fmt(off_train and off_train / r['train_s_fast'], '4.2f')}x | "
            f"{r['train_psnr_fp32']:>6.2f} {r['train_psnr_fast']:>6.2f} {r['train_psnr_fast'] - r['train_psnr_fp32']:>+6.2f} | "
            f"{r['decode_fps_fp32']:>6.1f} {r['decode_fps_fast']:>6.1f} {r['decode_fps_fast'] / r['decode_fps_fp32']:>5.2f}x "
            f"{_fmt(off_dec, '8.1f')} {_fmt(off_dec and r['decode_fps_fast'] / off_dec, '4.2f')}x | "
            f"{r['decode_psnr_fp32']:>6.2f} {r['decode_psnr_fast']:>6.2f} {r['decode_psnr_fast'] - r['decode_psnr_fp32']:>+6.2f} | "
            f"{gflops:>6.0f} ({100 * gflops / fast_peak:>3.0f}%)"
            + (f" | peak GPU memory {r['peak_memory_gib_fp32']:.1f} / {r['peak_memory_gib_fast']:.1f} GiB"
               if "peak_memory_gib_fp32" in r else "")
        )


def official_figure(text: str) -> tuple[str, dict[str, float]]:
    """Parses MODEL=S_PER_EPOCH,FPS (the official code's training seconds per epoch and decode fps)."""
    try:
        model, figures = text.split("=")
        s_per_epoch, fps = (float(v) for v in figures.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL=S_PER_EPOCH,FPS, got {text!r}") from None
    if model not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {model!r}; available: {', '.join(MODELS)}")
    return model, {"s_per_epoch": s_per_epoch, "decode_fps": fps}


def _fmt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{value:{spec}}" if value else f"{'-':>{width}}"


if __name__ == "__main__":
    main()
