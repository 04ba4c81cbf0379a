"""The argument parser of the `tnerv` command: every command, its options and its help."""

from __future__ import annotations

import argparse

from tnerv.cli.anchor import cmd_anchor
from tnerv.cli.arguments import (
    _add_training_args,
    _add_video_args,
    _count,
    _count_from_zero,
    _duration,
    _fraction,
    _hw,
    _memory,
    _nonnegative_float,
    _Parser,
    _positive_int,
    _wh,
    _worker,
)
from tnerv.cli.bench import cmd_bench
from tnerv.cli.compression import cmd_decode, cmd_demo, cmd_encode, cmd_inspect
from tnerv.cli.describe import cmd_info, cmd_models
from tnerv.cli.fitting import cmd_eval, cmd_fit
from tnerv.time_budget import DEMO_TIME


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tnerv` command."""
    from tnerv.codec.settings import (  # no torch: the parser stays quick
        DEFAULT_LAMBDA, DEFAULT_SEGMENT_FRAMES, PHASE_START, STAGED_PHASE_START,
    )

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
    p.add_argument("--phase-start", "--lambda-start", dest="phase_start", type=_fraction,
                   help=f"fraction of the training steps before the compression phase (lambda > 0, pruning, QAT); default "
                        f"{PHASE_START:g}, HiNeRV's {STAGED_PHASE_START:.3f} (300 of its 390 epochs)")
    p.add_argument("--prune", type=_fraction,
                   help="fraction of decoder weights to prune (post-training models; NeRV: 0.4; HiNeRV: 0.15 of all its parameters)")
    p.add_argument("--run-dir", help="where training checkpoints go (default: OUTPUT.run)")
    p.add_argument("--segment-frames", type=_positive_int, metavar="N",
                   help=f"code a longer video in segments of N frames, one model each, in one file (default "
                        f"{DEFAULT_SEGMENT_FRAMES}, or as many as fit this machine's memory if fewer)")
    p.add_argument("--worker", type=_worker, metavar="I/N",
                   help="encode segments I, I+N, ... (0 <= I < N) beside N-1 other workers sharing --run-dir; "
                        "the last to finish writes the file")
    p.add_argument("--join", action="store_true", help="write the file from the segments the workers wrote")
    p.add_argument("--warm-start", action="store_true",
                   help="start each segment's model from the previous segment's trained weights (segments are "
                        "then encoded in order by one process; docs/experiments.md measures it)")
    p.add_argument("--compare", choices=["x265"], help="also encode the frames with x265 (veryslow, no B-frames) at "
                   "the largest CRF that reaches the file's PSNR, and print both sizes")
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

    p = sub.add_parser("demo", help="compress and decode a bundled sample clip (encoding takes --time, 3 minutes by default)")
    p.add_argument("--out", help="folder for the outputs (default: runs/demo-<time>)")
    p.add_argument("--frames", type=_positive_int, default=32)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--time", type=_duration, default=DEMO_TIME, metavar="DURATION",
                        help=f"training time (default {DEMO_TIME / 60:g}m: the epochs that fit on this machine)")
    length.add_argument("--epochs", type=_positive_int, help="train this many epochs instead of --time")
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
    p.add_argument(
        "--time", type=_duration, metavar="DURATION",
        help="train each unit for about this long (e.g. 10m) instead of the scale's epochs: the epochs that fit",
    )
    p.add_argument("--out", help="output folder (a rerun skips finished runs)")
    p.add_argument(
        "--worker", type=_worker, metavar="I/N",
        help="run worker I's share of the units (0 <= I < N) beside N-1 other workers that share --out",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser
