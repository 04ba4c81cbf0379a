"""Rate-distortion sweep of entropy-constrained T-NeRV over lambda on a sample clip (CPU scale).

    python benchmarks/lambda_sweep.py [--lambdas 0.01 0.1 0.5 1.0] [--frames 64] [--epochs 100]

Encodes the clip once per lambda with `tnerv.compress.encode_video` (a real .tnrv file each), and
prints bpp, PSNR and MS-SSIM of the decoded 8-bit frames and the byte split per component."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tnerv.compress import encode_video
from tnerv.runs import VideoSpec


def main() -> None:
    """Runs the sweep and prints one row per lambda."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default="bikes")
    parser.add_argument("--model", default="tnerv")
    parser.add_argument("--preset", default="tnerv-s-cpu")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.01, 0.1, 0.5, 1.0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--resize", type=int, nargs=2, default=[128, 256], metavar=("H", "W"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--size", type=float, help="parameter budget (default: the preset's size)")
    parser.add_argument("--out", help="folder for the .tnrv files (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="tnerv-sweep-"))
    out.mkdir(parents=True, exist_ok=True)
    video = VideoSpec(path=args.video, count=args.frames, resize=tuple(args.resize))
    rows = []
    for lam in args.lambdas:
        result = encode_video(
            video, out / f"{args.model}-lambda{lam:g}.tnrv", preset=args.preset, lam=lam,
            train_overrides={"epochs": args.epochs}, size=int(args.size) if args.size else None,
            overwrite=True, progress=False,
        )
        rows.append(result.to_dict())
        split = " / ".join(f"{100 * result.bytes_by_component[c] / result.num_bytes:.1f}" for c in ("decoder", "grids", "embeddings", "other"))
        print(
            f"lambda {lam:<5g} {result.num_bytes:>9,} B  {result.bpp:.4f} bpp  PSNR {result.psnr:.2f} dB  "
            f"MS-SSIM {result.ms_ssim:.4f}  decoder/grids/embeddings/other % {split}  "
            f"payload {result.payload_bytes:,} B vs estimate {result.estimated_payload_bytes:,.0f} B  "
            f"({result.encode_seconds / 60:.1f} min)",
            flush=True,
        )
    print(f"files in {out}; MS-SSIM variant: {rows[0]['ms_ssim_variant']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
