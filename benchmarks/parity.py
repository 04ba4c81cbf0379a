"""Parity with the official code: each reference-exact preset (`<model>-ref-cpu`) fitted on the first 64
frames of the bikes sample, next to the official implementation's figures for the same config.

    python benchmarks/parity.py                        # NeRV, HNeRV, FFNeRV, E-NeRV, DNeRV, HiNeRV, seeds 1 2 3: 60 epochs each
    python benchmarks/parity.py --models hnerv --seeds 3 --restart-on-collapse 1
    python benchmarks/parity.py --epochs 2 --seeds 1   # a quick check that everything runs

Seed by seed, each tnerv fit is set next to the official code's fit of the same seed. For NeRV, HNeRV and
FFNeRV the same seed is the same start (initial weights and frame order, tests/test_official_init.py), so
every seed must be within 0.3 dB of its official twin; E-NeRV and DNeRV start from other weights at the same
seed (docs/experiments.md) and HiNeRV's start is not known to be the official one, so their seeds are samples
and the verdict compares the medians. A fit that ends less than 1 dB above the mean frame's PSNR is labelled
collapsed, on either side, by the same rule.

Each preset builds, layer for layer, what the official code builds with its README flags scaled to about
0.35M parameters, and trains with the official recipe (see the presets' descriptions). Measured as the
official figures were (docs/official-runs.md): PSNR is the mean per-frame PSNR of the
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
from pathlib import Path

import torch

from tnerv.decode import time_decode
from tnerv.metrics import psnr
from tnerv.models import create_model, load_preset
from tnerv.models.execution import FP32, ExecutionPath
from tnerv.runs import VideoSpec, load_frames
from tnerv.train import COLLAPSE_MARGIN_DB, TrainConfig, VideoFrames, collapse_verdict, fit, mean_frame_psnr, seed_everything
from tnerv.video import sample

# The official code on this machine kind (2 cores: AMD EPYC, AVX-512 with native bf16), same frames, 60
# epochs: transmitted parameters as tnerv counts them, and the median s/epoch and decode fps of its default
# seed (1); PSNR (dB, float model after the last epoch) per seed (its --manualSeed). HNeRV's seeds 1-3 were
# run one after another on one machine on 2026-12-07 (seed 1 gave the 29.02 of the first official run
# again); on a machine of unrecorded kind on 2026-12-06 they gave 29.02, 28.87 and 13.73 (seed 3 stuck at
# the mean frame), so which seed collapses depends on the machine, for both codes. How each was run:
# docs/official-runs.md.
OFFICIAL = {
    "nerv": {"parameters": 347_919, "s_per_epoch": 3.70, "decode_fps": 67.3, "psnr": {1: 27.43, 2: 27.47, 3: 27.49}},
    "hnerv": {"parameters": 359_278, "s_per_epoch": 4.63, "decode_fps": 63.3, "psnr": {1: 29.02, 2: 28.96, 3: 28.68}},
    "ffnerv": {"parameters": 345_109, "s_per_epoch": 6.59, "decode_fps": 49.2, "psnr": {1: 28.30, 2: 28.31, 3: 28.50}},
    # hmkx/HiNeRV @ fdb92ec, seeds 1-3 one after another on 2026-12-07 on this machine kind: its final
    # evaluation's mean per-frame PSNR; seed 1's median s/epoch of epochs 31-60 (its first 30 shared the
    # machine); its decode speed was not measured.
    "hinerv": {"parameters": 347_383, "s_per_epoch": 11.72, "psnr": {1: 35.31, 2: 35.61, 3: 35.33}},
    # kyleleey/E-NeRV @ 9f3529a and QiZhao-NJU/Neural-Representation-for-Video-via-Differential-Input-and-
    # Pyramidal-Architecture @ d46afa4, 2026-12-07, this machine kind, on a machine shared with other work
    # (their s/epoch, seed 1's median, do not time the code): the final evaluation's mean per-frame PSNR;
    # decode speed not measured. Parameters as tnerv counts them (the scripts print 342,341 with E-NeRV's
    # 288 fixed token coordinates, and 735,318 with DNeRV's encoders and without its embeddings).
    "enerv": {"parameters": 342_053, "s_per_epoch": 3.95, "psnr": {1: 28.74, 2: 28.67, 3: 28.91}},
    "dnerv": {"parameters": 357_828, "s_per_epoch": 9.98, "psnr": {1: 30.59, 2: 30.74, 3: 30.57}},
}
MODELS = ["nerv", "hnerv", "ffnerv", "enerv", "dnerv", "hinerv"]
# Models whose seed gives tnerv the official initial weights and frame order (tests/test_official_init.py):
# each seed is judged against the official same seed. The others start elsewhere at the same seed
# (docs/experiments.md; HiNeRV's is not known to be the official one), so their seeds are samples of one
# distribution and the medians are compared.
SAME_START = {"nerv", "hnerv", "ffnerv"}
TOLERANCE_DB = 0.3  # a seed against the official same seed, or a median against the official median
RESTART_TOLERANCE_DB = 0.5  # a fit restarted after a collapse against the official seeds that trained
PAPER_EPOCHS = 60  # the official figures' epochs: a verdict is given only at these


@torch.no_grad()
def decode_fps(decoder: torch.nn.Module, warmup: int = 10, passes: int = 5, execution: ExecutionPath = FP32) -> float:
    """Frames per second of a decoder on an execution path, batch 1: the median of `passes` timed
    passes over every frame (`tnerv.decode.time_decode`), after `warmup` frames."""
    execution.apply(decoder)
    device = next(decoder.parameters()).device
    idx = torch.arange(decoder.config.num_frames, device=device)

    def one_pass(frames: torch.Tensor) -> None:
        with execution.autocast(device):
            for _ in decoder.reconstruct(frames, None, 1):
                pass

    speed, _ = time_decode(lambda: one_pass(idx), len(idx), passes, lambda: one_pass(idx[:warmup]), device)
    return speed.fps


def measure(name: str, epochs: int | None, seed: int, restart_on_collapse: int = 0) -> dict:
    """Fits `<name>-ref-cpu` on bikes and measures it the way the official figures were measured."""
    preset = load_preset(f"{name}-ref-cpu")
    config = preset.config()
    video = load_frames(VideoSpec(path=str(sample("bikes")), count=config.num_frames, resize=(config.height, config.width)))
    recipe = {**preset.train, "seed": seed, "device": "cpu", "restart_on_collapse": restart_on_collapse}
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
        "seed_kept": result.seed,  # differs from seed after a restart on collapse
        "restarts": result.restarts,
        "psnr": psnr(decoded, target).mean().item(),
        "fit_psnr": result.report.psnr,
        "mean_frame_psnr": mean_frame_psnr(VideoFrames(video, torch.device("cpu"))),
        "collapsed": result.collapsed,  # fit's own verdict: stuck at the mean frame after a quarter of the epochs
        "s_per_epoch": statistics.median(per_epoch),
        "decode_fps": decode_fps(decoder),
    }


def stuck_at_mean_frame(final_psnr: float, mean_psnr: float) -> bool:
    """Whether a final PSNR is within fit's collapse margin of the mean frame's: the one rule applied to
    tnerv's and the official code's figures alike (of the official runs only the final PSNR is known)."""
    return collapse_verdict(0, final_psnr, mean_psnr) is not None


def model_verdict(rows: list[dict]) -> str:
    """The verdict over all seeds of one model: for a model in SAME_START each seed against the official
    code's same seed (a restarted fit against the median of the official seeds that trained), for the others
    the median over the seeds against the official median of the same seeds."""
    compared = [r for r in rows if r["official_psnr"] is not None]
    if not compared:
        return "no official figure for these seeds"
    if any(r["epochs"] != PAPER_EPOCHS for r in rows):
        return f"no verdict: the official figures are at {PAPER_EPOCHS} epochs"
    ours = statistics.median(r["psnr"] for r in compared)
    theirs = statistics.median(r["official_psnr"] for r in compared)
    head = (f"median over seeds {' '.join(str(r['seed']) for r in compared)}: {ours:.2f} dB, official {theirs:.2f} "
            f"({ours - theirs:+.2f}); ")
    if compared[0]["model"] not in SAME_START:
        if abs(ours - theirs) > TOLERANCE_DB:
            return head + f"FAILS: the median MISSES {TOLERANCE_DB} dB (another start than the official code's)"
        return head + f"the median within {TOLERANCE_DB} dB (another start than the official code's: medians compared)"
    missed = [r for r in compared if abs(r["psnr"] - r["official_psnr"]) > r["tolerance"]]
    disagree = [r for r in compared if not r["restarts"] and r["label"] != r["official_label"] and r not in missed]
    if missed or disagree:
        parts = [f"seed {r['seed']} MISSES {r['tolerance']} dB" for r in missed]
        parts += [f"seed {r['seed']}: collapsed on one side only" for r in disagree]
        return head + "FAILS: " + ", ".join(parts)
    return head + "every seed within its bound of the official figure, collapses on both sides alike"


def with_official(r: dict) -> dict:
    """A result with the official code's figure to compare it with and both sides' collapse labels: the
    official same seed's, or for a fit restarted after a collapse (which the official code never does), the
    median of the official seeds that did not collapse."""
    mean = r["mean_frame_psnr"]
    official = OFFICIAL.get(r["model"], {}).get("psnr", {})
    collapsed = {seed for seed, value in official.items() if stuck_at_mean_frame(value, mean)}
    label = "collapsed" if stuck_at_mean_frame(r["psnr"], mean) else ""
    if r["restarts"]:
        trained = [value for seed, value in sorted(official.items()) if seed not in collapsed]
        theirs = statistics.median(trained) if trained else None
        label = f"seed {r['seed_kept']}" + (" collapsed" if label else "")
        official_label = f"median {len(trained)}" if trained else ""
        tolerance = RESTART_TOLERANCE_DB
    else:
        theirs = official.get(r["seed"])
        official_label = "collapsed" if r["seed"] in collapsed else ""
        tolerance = TOLERANCE_DB
    return {**r, "official_psnr": theirs, "label": label, "official_label": official_label, "tolerance": tolerance}


def print_table(rows: list[dict]) -> None:
    """Seed by seed, tnerv next to the official code, and a verdict per model over all its seeds."""
    print(f"bikes, {torch.get_num_threads()} CPU threads; official figures: the official code on this machine kind, "
          "same frames, same seed; 'collapsed': the final PSNR is not "
          f"{COLLAPSE_MARGIN_DB:.0f} dB above the mean frame's")
    print(f"{'model':<7} {'frames':<14} {'params':>9} {'official':>9} {'seed':>4} {'PSNR':>6} {'':<16} {'official':>8}"
          f" {'':<10} {'diff':>6} {'s/epoch':>7} {'official':>8} {'dec fps':>7} {'official':>8}")
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        ref = OFFICIAL.get(name, {})
        for r in mine:
            theirs = r["official_psnr"]
            official_psnr = _figure(theirs, 2)
            diff = "-" if theirs is None else f"{r['psnr'] - theirs:+.2f}"
            print(f"{name:<7} {r['frames']:<14} {r['parameters']:>9,} {_count(ref.get('parameters')):>9} {r['seed']:>4}"
                  f" {r['psnr']:>6.2f} {r['label']:<16} {official_psnr:>8} {r['official_label']:<10} {diff:>6}"
                  f" {r['s_per_epoch']:>7.2f} {_figure(ref.get('s_per_epoch'), 2):>8} {r['decode_fps']:>7.1f}"
                  f" {_figure(ref.get('decode_fps'), 1):>8}")
        print(f"  {name}: mean frame {mine[0]['mean_frame_psnr']:.2f} dB; {model_verdict(mine)}")


def saved_results(paths: list[str]) -> list[dict]:
    """The results of earlier `--json` runs; those written before collapses were recorded get the fields
    a fit without a restart has, and the clip's mean-frame PSNR."""
    rows = [r for path in paths for r in json.loads(Path(path).read_text())["results"]]
    for r in rows:
        r.setdefault("seed_kept", r["seed"])
        r.setdefault("restarts", [])
        r.setdefault("collapsed", None)
        if "mean_frame_psnr" not in r:
            config = load_preset(r["preset"]).config()
            video = load_frames(VideoSpec(path=str(sample("bikes")), count=config.num_frames,
                                          resize=(config.height, config.width)))
            r["mean_frame_psnr"] = mean_frame_psnr(VideoFrames(video, torch.device("cpu")))
    return rows


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _figure(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--epochs", type=int, help=f"override the presets' {PAPER_EPOCHS} epochs (no verdict then)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds to run (default 1 2 3)")
    parser.add_argument("--restart-on-collapse", type=int, default=0, metavar="N",
                        help="restart a collapsed fit with the next seed, up to N times (the official code does not)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", nargs="+", metavar="FILE",
                        help="fit nothing: tabulate the results of earlier --json runs next to the official figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.results:
        print_table([with_official(r) for r in saved_results(args.results)])
        return

    rows = []
    for name in args.models:
        for seed in args.seeds:
            rows.append(with_official(measure(name, args.epochs, seed, args.restart_on_collapse)))
            if not args.json:
                r = rows[-1]
                print(f"  {name} seed {seed}: {r['psnr']:.2f} dB {r['label']}", flush=True)
    if args.json:
        print(json.dumps({"official": OFFICIAL, "results": rows}, indent=2))
        return
    print_table(rows)


if __name__ == "__main__":
    main()
