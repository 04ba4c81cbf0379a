"""Argument types, the parser class with the project's error format, and argument groups shared by commands."""

from __future__ import annotations

import argparse
import math
import tomllib
from typing import Any, NoReturn

from tnerv.errors import TnervError
from tnerv.time_budget import parse_duration  # no torch: the parser stays quick


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
    if not math.isfinite(value):  # round() of inf is an OverflowError, and nan compares false to everything
        raise argparse.ArgumentTypeError(f"expected a parameter count such as 3.0M or 500k, got {text!r}")
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


def _duration(text: str) -> float:
    """An argparse type: a duration (tnerv.time_budget.parse_duration) in seconds."""
    try:
        return parse_duration(text)
    except TnervError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _add_video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (mp4, mkv, mov, avi, y4m, raw .yuv) or a folder of PNG/JPEG frames")
    p.add_argument("--yuv-size", type=_wh, metavar="WxH", help="frame size of a raw 8-bit 4:2:0 .yuv file")
    p.add_argument("--matrix", choices=["bt601", "bt709"], help="YUV->RGB matrix (default: bt709 from 720p up)")


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
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int)
    length.add_argument(
        "--time", type=_duration, metavar="DURATION",
        help="train for about this long, e.g. 10m or 2h: the epochs that fit, planned after the first steps, the "
             "recipe's shape kept (not with --epochs)",
    )
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float)
    # Checked by the training config against tnerv.train.LOSSES (one home for the names; no torch import here).
    p.add_argument("--loss", help="the training loss: fusion (0.7 L1 + 0.3 SSIM), l2, l1-ms-ssim5 (HiNeRV's)")
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


def video_spec(args: argparse.Namespace) -> Any:
    """The frames the video arguments select (`_add_video_args` and the frame options)."""
    from tnerv.runs import VideoSpec

    return VideoSpec(
        path=args.video, start=args.start, count=args.frames, step=args.step, resize=args.resize,
        yuv_size=args.yuv_size, matrix=args.matrix,
    )


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The training recipe fields the training arguments set (`_add_training_args`)."""
    train = {k: v for k, v in {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "eval_every": args.eval_every,
        "seed": args.seed, "device": args.device, "precision": args.precision, "loss": args.loss,
        "channels_last": args.channels_last or None, "nnpack": args.nnpack or None,
        "restart_on_collapse": args.restart_on_collapse, "time_budget": args.time,
    }.items() if v is not None}
    train.update(args.train_set or [])
    if "eval_every" in train:
        train.setdefault("checkpoint_every", train["eval_every"])
    return train
