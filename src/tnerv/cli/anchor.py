"""`tnerv anchor`: a video encoded with x265, x264 or SVT-AV1 at CRF points, measured like the neural codecs."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from tnerv.cli.arguments import video_spec
from tnerv.cli.output import print_result


def cmd_anchor(args: argparse.Namespace) -> int:
    """`tnerv anchor`: encodes a video with a traditional codec at each CRF and measures each stream."""
    from tnerv.anchors import anchor_outputs, check_crfs, encode_anchor
    from tnerv.runs import load_frames, write_json_atomic
    from tnerv.video import probe

    # Both checked before any encode, so no half-finished set of streams is left behind.
    crfs = check_crfs(args.codec, args.crf)
    outputs = anchor_outputs(args.out, args.video, args.codec, args.pix_fmt, crfs) if args.out else None
    spec = video_spec(args)
    fps = probe(args.video, size=args.yuv_size).fps
    frames = load_frames(spec).permute(0, 2, 3, 1).numpy()
    results = [
        encode_anchor(frames, args.codec, c, pix_fmt=args.pix_fmt, preset=args.preset, fps=fps,
                      matrix=args.matrix, stream_path=outputs.streams[c] if outputs else None)[0]
        for c in crfs
    ]
    doc = {"video": asdict(spec), "fps": fps, "results": [r.to_dict() for r in results]}
    if outputs:
        write_json_atomic(doc, outputs.results)
    r0 = results[0]
    lines = [
        f"{args.codec} anchor (preset {r0.preset}, no frame reordering), {r0.pix_fmt}, {r0.matrix} matrix: "
        f"{r0.num_frames} frames of {r0.width}x{r0.height} from {args.video}",
        f"{'crf':>4} {'bytes':>10} {'bpp':>8} {'PSNR dB':>8} {'MS-SSIM':>8} {'enc s':>7} {'dec fps':>8}",
        *(f"{r.crf:>4} {r.num_bytes:>10,} {r.bpp:>8.4f} {r.psnr:>8.2f} {r.ms_ssim:>8.4f} "
          f"{r.encode_seconds:>7.2f} {r.decode_fps:>8.1f}" for r in results),
        f"bytes: raw elementary stream, no container; PSNR and MS-SSIM on RGB; MS-SSIM is {r0.ms_ssim_variant}",
    ]
    if outputs:
        lines.append(f"streams and anchor.json written to {outputs.folder}")
    print_result(doc, args.json, "\n".join(lines))
    return 0
