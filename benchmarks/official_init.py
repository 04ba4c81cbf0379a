"""Digests of the official HNeRV, NeRV and FFNeRV initial weights, seed by seed: what
tests/test_official_init.py checks `seed_everything(s)` + `<model>-ref-cpu` against.

    /tmp/official/venv/bin/python benchmarks/official_init.py --src /tmp/official/src \
        --out tests/data/official_init_digests.json

`--src` holds the official repositories at the commits in COMMITS with the CPU patches described in
docs/official-runs.md (how to set them up: its "Re-running them").
Run it with an interpreter that can import the official training scripts (the official runs' venv: torch
2.13.0+cpu, tensorboard, pandas, pytorch-msssim, dahuffman); tnerv itself is not imported.

Nothing of the official code is re-implemented here: each model is built by running the official
training script itself, in a fresh process per model and seed, with the flags of the official runs
(docs/official-runs.md, "Command lines") plus `--manualSeed S`. The script's `main()` parses the flags, seeds torch, numpy
and random, and builds the model exactly as in training; the model class is wrapped so that the run
stops the moment the model exists, before any training step, and its `state_dict()` (registration
order, which is construction order) is digested: per tensor its name, shape and the sha256 of its
float32 little-endian bytes, plus one combined digest. HNeRV's script reads its frame folder before
building the model (only the frame count and size enter its sizing rule), so it is given 64 black
128x256 frames; NeRV and FFNeRV read no frames before building.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SEEDS = (1, 2, 3)
FRAMES, HEIGHT, WIDTH = 64, 128, 256  # HNeRV's input folder (the official run's bikes128)

# The official repositories and the commits that were run (docs/official-runs.md, "Repositories and commits").
COMMITS = {
    "hnerv": ("haochen-rye/HNeRV", "4872129c8d004a25477e0c1ffbbff4ba71943ad5"),
    "nerv": ("haochen-rye/NeRV", "6904589ffbe8603dd742d9301bc1954abc551830"),
    "ffnerv": ("maincold2/FFNeRV", "f02d4c0b950db90f5ce43a598faa79265b369cec"),
}

# Per model: the training script, the module-level name of the model class it builds, the source files
# whose contents are recorded, and the official runs' flags (docs/official-runs.md, without the output
# folder, the epochs and HNeRV's data folder, which are filled in below).
SCRIPTS = {
    "hnerv": ("train_nerv_all.py", "HNeRV", ("train_nerv_all.py", "model_all.py", "hnerv_utils.py")),
    "nerv": ("train_nerv.py", "Generator", ("train_nerv.py", "model_nerv.py", "utils.py")),
    "ffnerv": ("main.py", "Generator", ("main.py", "model.py", "utils.py")),
}
FLAGS = {
    "hnerv": "--conv_type convnext pshuffel --act gelu --norm none --crop_list 128_256 --resize_list -1 --loss L2"
    " --enc_strds 4 2 2 2 2 --enc_dim 64_16 --dec_strds 4 2 2 2 2 --ks 0_1_5 --reduce 1.2 --modelsize 0.36"
    " -e 60 --eval_freq 30 --lower_width 12 -b 2 --lr 0.001 -j 0",
    "nerv": "-e 60 --lower-width 36 --num-blocks 1 --dataset bikes144 --frame_gap 1 --embed 1.25_40 --stem_dim_num 128_1"
    " --reduction 2 --fc_hw_dim 9_16_12 --expansion 1 --single_res --loss Fusion6 --warmup 0.2 --lr_type cosine"
    " --strides 2 2 2 2 --conv_type conv -b 1 --lr 0.0005 --norm none --act swish -j 0",
    "ffnerv": "-e 60 --lower-width 44 --num-blocks 1 --dataset bikes144 --fc-hw-dim 9_16_22 --expansion 1 --loss Fusion6"
    " --strides 2 2 2 2 --conv-type conv -b 1 --lr 0.0005 --agg-ind -2 -1 1 2 --lw 0.1 --t-dim 32 64 --resol 256 144 -j 0",
}


class _Built(Exception):
    """Raised by the wrapped model class to stop the training script once its model exists."""

    def __init__(self, model: object) -> None:
        super().__init__("model built")
        self.model = model


def tensor_digest(tensor) -> str:
    """sha256 of a tensor's values as float32 little-endian bytes, in row-major order."""
    import numpy as np  # the official venv's; imported here so that the driver needs nothing but the stdlib
    import torch

    values = tensor.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False)
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def combined_digest(tensors: list[dict]) -> str:
    """One sha256 over the ordered list of (shape, digest) pairs."""
    text = "\n".join(f"{'x'.join(map(str, t['shape']))}:{t['sha256']}" for t in tensors)
    return hashlib.sha256(text.encode()).hexdigest()


def state_digests(model) -> dict:
    """Name, shape and digest of every tensor of a model's state_dict, in order, and their combined digest."""
    tensors = [{"name": name, "shape": list(value.shape), "sha256": tensor_digest(value)} for name, value in model.state_dict().items()]
    return {"combined": combined_digest(tensors), "tensors": tensors}


def blank_frames(folder: Path) -> Path:
    """Writes FRAMES black HEIGHTxWIDTH PNGs (HNeRV's script reads the folder before building its model)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(FRAMES):
        Image.new("RGB", (WIDTH, HEIGHT)).save(folder / f"{i:04d}.png")
    return folder


def script_argv(model: str, seed: int, scratch: Path) -> list[str]:
    """The official run's flags plus the seed, an output folder in scratch and (HNeRV) the frame folder."""
    argv = FLAGS[model].split() + ["--outf", str(scratch / "out"), "--manualSeed", str(seed)]
    if model == "hnerv":
        argv += ["--data_path", str(blank_frames(scratch / "frames")), "--vid", "bikes128"]
    return argv


def build_official(model: str, seed: int, src: Path) -> dict:
    """Runs the official training script of `model` up to the moment its model exists; returns the digests."""
    script, class_name, _ = SCRIPTS[model]
    folder = src / model
    with tempfile.TemporaryDirectory() as scratch:
        argv = [script, *script_argv(model, seed, Path(scratch))]
        os.chdir(folder)  # the scripts resolve their modules and data relative to their own folder
        sys.path.insert(0, str(folder))
        sys.argv = argv
        module = __import__(Path(script).stem)
        real = getattr(module, class_name)

        def build_and_stop(*args, **kwargs):
            raise _Built(real(*args, **kwargs))

        setattr(module, class_name, build_and_stop)
        try:
            module.main()
        except _Built as built:
            digests = state_digests(built.model)
        else:
            raise SystemExit(f"official_init: error: {script} finished without building {class_name}")
    return {"argv": " ".join([script, *FLAGS[model].split(), "--manualSeed", str(seed)]), **digests}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_worker(model: str, seed: int, src: Path) -> dict:
    """Builds one model and seed in a fresh interpreter (a fresh process, as each training run is)."""
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", model, str(seed), "--src", str(src)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "2"},  # as the official runs (cmds.sh)
    )
    if done.returncode != 0:
        raise SystemExit(f"official_init: error: building {model} seed {seed} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def collect(src: Path, models: list[str], seeds: list[int]) -> dict:
    """The digests of every model and seed, with the provenance that produced them."""
    import torch

    out: dict = {
        "command": " ".join(["python", "benchmarks/official_init.py", *sys.argv[1:]]),
        "interpreter": {"python": sys.version.split()[0], "torch": torch.__version__},
        "frames_for_hnerv": f"{FRAMES} black PNGs of {HEIGHT}x{WIDTH} (only their count and size reach the model)",
        "official": {},
        "models": {},
    }
    for model in models:
        repo, commit = COMMITS[model]
        files = {name: file_sha256(src / model / name) for name in SCRIPTS[model][2]}
        out["official"][model] = {"repo": repo, "commit": commit, "patched_files_sha256": files}
        out["models"][model] = {str(seed): run_worker(model, seed, src) for seed in seeds}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="folder with hnerv/, nerv/ and ffnerv/ (the patched official code)")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    parser.add_argument("--models", nargs="+", choices=sorted(SCRIPTS), default=["hnerv", "nerv", "ffnerv"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SEED"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    """Entry point: the driver, or (--worker) one build in this process."""
    args = parse_args()
    src = args.src.resolve()
    for model in args.models:
        if not (src / model / SCRIPTS[model][0]).is_file():
            raise SystemExit(f"official_init: error: {src / model / SCRIPTS[model][0]} not found")
    if args.worker:
        model, seed = args.worker[0], int(args.worker[1])
        result = build_official(model, seed, src)
        sys.stdout.write("\n" + json.dumps(result) + "\n")
        return
    text = json.dumps(collect(src, args.models, args.seeds), indent=1) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
