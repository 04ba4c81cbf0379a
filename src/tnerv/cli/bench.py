"""`tnerv bench`: the paper's experiments, resumable, with their tables, plots and report."""

from __future__ import annotations

import argparse
from pathlib import Path

from tnerv.cli.output import print_result


def cmd_bench(args: argparse.Namespace) -> int:
    """`tnerv bench`: runs one of the paper's experiments and writes its tables, plots and report."""
    from tnerv.bench.protocols import protocol
    from tnerv.bench.runner import run_bench
    from tnerv.video.datasets import Sequence, dataset_sequences

    chosen = protocol(
        args.kind, args.setting, args.scale, args.epochs, args.frames, args.resize, args.budget,
        tuple(args.lambdas) if args.lambdas else None, tuple(args.crf) if args.crf else None, args.time,
    )
    if args.videos:
        dataset = "videos"
        videos = [Sequence("videos", Path(v).stem, v, yuv_size=args.yuv_size, matrix=args.matrix) for v in args.videos]
    else:
        dataset = args.dataset
        videos = dataset_sequences(args.dataset, args.data_root, args.sequences)
    out = Path(args.out or f"bench-{args.kind}-{dataset}-{chosen.setting}-{chosen.scale}")
    log = (lambda line: None) if args.json else print
    if not args.json:
        print(f"tnerv bench {args.kind}: {len(videos)} video(s) of {dataset}; {chosen.label}; output in {out}")
    outcome = run_bench(
        args.kind, chosen, videos, args.models, out, dataset, progress=not args.quiet, log=log, worker=args.worker
    )
    written = [*outcome.tables, *outcome.plots, *([outcome.report] if outcome.report else [])]
    if outcome.complete:
        text = f"{len(outcome.records)} results; tables in {out / 'tables'}, plots in {out / 'plots'}; report: {outcome.report}"
    else:
        text = (
            f"{len(outcome.records)} results so far; this worker's units are done, others are not: the last worker "
            "to finish writes the tables (or rerun without --worker)"
        )
    print_result({"records": outcome.records, "written": [str(p) for p in written], "complete": outcome.complete}, args.json, text)
    return 0
