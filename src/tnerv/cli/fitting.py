"""`tnerv fit` and `tnerv eval`: a model fitted to a video in a run directory, and its evaluation."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from tnerv.cli.arguments import train_overrides, video_spec
from tnerv.cli.output import announcer, format_count, print_result
from tnerv.errors import TnervError


def _summary(result: Any) -> str:
    r = result.report
    return (
        f"{result.model}: PSNR {r.psnr:.2f} dB, MS-SSIM {r.ms_ssim:.4f} [{r.ms_ssim_variant}], "
        f"{format_count(result.parameters['transmitted'])} parameters, {result.epochs} epochs\n"
        f"run directory: {result.run_dir}"
    )


def cmd_fit(args: argparse.Namespace) -> int:
    """`tnerv fit`: fits a model to a video in a run directory (with --nproc, through torchrun)."""
    from tnerv.parallel import is_main_process, launched_by_torchrun
    from tnerv.runs import fit_run

    if args.nproc > 1 and not launched_by_torchrun():
        return _launch_torchrun(args.nproc, args.argv)
    result = fit_run(
        video_spec(args), args.out, model=args.model, preset=args.preset, model_overrides=dict(args.set or []),
        train_overrides=train_overrides(args), overwrite=args.overwrite, resume=args.resume,
        progress=not args.quiet, size=args.size, ablations=args.ablation, on_config=announcer(args),
    )
    if is_main_process():
        print_result(result.to_dict(), args.json, _summary(result))
    return 0


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """`tnerv fit --nproc N ...` is `torchrun --nproc-per-node N -m tnerv fit ...` (PyTorch's launcher)."""
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            rest.append(token)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "tnerv", *rest]
    return subprocess.run(command).returncode


def cmd_eval(args: argparse.Namespace) -> int:
    """`tnerv eval`: evaluates a fitted run on its video, optionally writing the decoded frames."""
    from tnerv.runs import eval_run

    frames_out = Path(args.frames_out) if args.frames_out else None
    if frames_out and frames_out.exists() and any(frames_out.iterdir()) and not args.overwrite:
        raise TnervError(f"{frames_out} is not empty; pass --overwrite to write frames into it")
    result = eval_run(args.run_dir, frames_out=args.frames_out, batch_size=args.batch_size)
    text = _summary(result) + (f"\nframes written to {args.frames_out}" if args.frames_out else "")
    print_result(result.to_dict(), args.json, text)
    return 0
