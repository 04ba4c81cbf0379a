"""What the benchmark scripts share: fit a model, rebuild its decoder from the transmitted state,
and measure quality and decoding speed the same way for every model."""

from __future__ import annotations

import argparse

import torch

from tnerv.decode import time_decode
from tnerv.metrics import ms_ssim, psnr
from tnerv.models import ModelConfig, create_model
from tnerv.runs import VideoSpec, load_frames
from tnerv.train import TrainConfig, fit, pick_device
from tnerv.video import sample


@torch.no_grad()
def decode_all(model, batch_size: int) -> tuple[torch.Tensor, float]:
    """Every frame decoded by a decoder, and the frames per second (`tnerv.decode.time_decode`: the
    median of 3 passes)."""
    idx = torch.arange(model.config.num_frames, device=next(model.parameters()).device)
    speed, out = time_decode(lambda: torch.cat([o for _, o in model.reconstruct(idx, None, batch_size)]),
                             len(idx), 3, device=idx.device)
    return out, speed.fps


def fit_and_measure(name: str, config: ModelConfig, train: TrainConfig, video: torch.Tensor, batch_size: int) -> dict:
    """Fits a model, then PSNR, MS-SSIM and decode fps of the decoder rebuilt from its transmitted
    state (what a receiver runs), and the training time."""
    torch.manual_seed(train.seed)
    model = create_model(name, config)
    result = fit(model, video, train, progress=False)
    decoder = type(model).from_transmitted(config, model.transmitted_state()).to(pick_device(train.device))
    target = video.float().div(255).to(next(decoder.parameters()).device)
    decoded, fps = decode_all(decoder, batch_size)
    quality = ms_ssim(decoded, target)
    return {
        "model": name,
        "parameters": model.parameter_counts()["transmitted"],
        "psnr": psnr(decoded, target).mean().item(),
        "ms_ssim": quality.values.mean().item(),
        "ms_ssim_variant": quality.variant,
        "decode_fps": fps,
        "train_seconds": result.seconds,
        "fit_psnr": result.report.psnr,
    }


def add_clip_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes: the clip, decoding batch, device and threads."""
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--resize", default="128x256", help="HxW the clip is resized (and centre-cropped) to")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per batch while decoding")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")


def load_clip(args: argparse.Namespace) -> torch.Tensor:
    """Sets the thread count and reads the bikes clip the options describe, uint8 (N, 3, H, W)."""
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.resize.lower().split("x"))
    return load_frames(VideoSpec(path=str(sample("bikes")), count=args.frames, resize=(h, w)))
