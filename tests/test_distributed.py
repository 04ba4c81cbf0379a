"""Data-parallel fits with torchrun (gloo on the CPU): 2 processes give the weights of one process
with the same global batch, and a killed 2-process fit resumes to the same weights."""

import json
import subprocess
import sys

import pytest
import torch

from tnerv.cli import main
from tnerv.video import sample

CLIP = [str(sample("bikes")), "--frames", "8", "--resize", "32x64", "--quiet"]
TINY = {
    "nerv": ["--preset", "nerv-s-cpu", "--set", "stem_dims=[32]", "--set", "channels=8"],
    "hnerv": ["--model", "hnerv", "--size", "20k"],
    # T-NeRV in float64 (weights, frames, optimiser and its frame buffer): in float32 its temporal MLP
    # rounds a batch of 1 differently from a batch of 2 (gemv against gemm, 4e-7) and Adam's normalised
    # first steps grow that to 1e-5 within 8 steps (as between a 1-thread and a 2-thread run of one
    # process); in float64 the two runs agree to 1e-13, and a wrong split still shows far above 1e-6.
    "tnerv": ["--model", "tnerv", "--size", "20k", "--set", "buffer_dtype=float64", "--precision", "fp64"],
}
ATOL = 1e-6  # how close the 2-process weights come to the 1-process ones (parameters and buffers)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

# Rank 0 kills itself (SIGKILL) after an epoch; torchrun then stops the other rank.
KILLED_AT_EPOCH = """
import os, signal, sys
import tnerv.runs
from tnerv.cli import main

epoch = int(sys.argv[1])
real_fit = tnerv.runs.fit
def fit(*a, **k):
    die = lambda done: done == epoch and os.environ["RANK"] == "0" and os.kill(os.getpid(), signal.SIGKILL)
    return real_fit(*a, **{**k, "on_epoch_end": die})
tnerv.runs.fit = fit
sys.exit(main(sys.argv[2:]))
"""


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        if a[name].is_floating_point():
            assert torch.allclose(a[name], b[name], rtol=0, atol=atol), (name, (a[name] - b[name]).abs().max())
        else:
            assert torch.equal(a[name], b[name]), name


def torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True)


def fit_args(model: str) -> list[str]:
    return ["fit", *CLIP, *TINY[model], "--epochs", "2", "--eval-every", "1"]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Each model fitted by 2 processes (torchrun; NeRV through `tnerv fit --nproc 2`), batch 1 each."""
    runs = {}
    for model in TINY:
        out = tmp_path_factory.mktemp(model) / "two"
        if model == "nerv":
            assert main([*fit_args(model), "--batch-size", "1", "--nproc", "2", "--out", str(out)]) == 0
        else:
            proc = torchrun("-m", "tnerv", *fit_args(model), "--batch-size", "1", "--out", str(out))
            assert proc.returncode == 0, proc.stderr[-3000:]
        runs[model] = out
    return runs


@pytest.mark.parametrize("model", list(TINY))
def test_two_processes_give_the_weights_of_one_with_the_same_global_batch(tmp_path, two_process_runs, model):
    one = tmp_path / "one"
    assert main([*fit_args(model), "--batch-size", "2", "--out", str(one)]) == 0
    assert (two_process_runs[model] / "result.json").exists()
    assert_close(weights(two_process_runs[model]), weights(one), ATOL)
    expected = torch.float64 if "fp64" in TINY[model] else torch.float32
    assert all(w.dtype == expected for w in weights(one).values() if w.is_floating_point())


def test_a_killed_two_process_fit_resumes_to_the_same_weights(tmp_path, two_process_runs):
    killed = tmp_path / "killed"
    fit = [*fit_args("tnerv"), "--batch-size", "1"]
    proc = torchrun("--no-python", sys.executable, "-c", KILLED_AT_EPOCH, "1", *fit, "--out", str(killed))
    assert proc.returncode != 0 and (killed / "checkpoint.pt").exists()
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["epoch"] == 1
    resumed = torchrun("-m", "tnerv", "fit", str(sample("bikes")), "--out", str(killed), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_close(weights(killed), weights(two_process_runs["tnerv"]), atol=0)


def test_two_processes_plan_a_time_budget_together(tmp_path):
    """Under a time budget, the plan made after the first timed steps is a collective (rank 0's plan on every
    rank): the ranks agree on when it is made (rank 0's clock), else one would wait for the other forever."""
    out = tmp_path / "budget"
    proc = subprocess.run([*TORCHRUN, "-m", "tnerv", "fit", *CLIP, *TINY["nerv"], "--time", "5s", "--eval-every", "50",
                           "--batch-size", "1", "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    planned = torch.load(out / "checkpoint.pt", weights_only=False)["train_config"]["epochs"]
    assert run["time_budget"]["seconds"] == 5.0 and run["time_budget"]["estimate"] is not None
    assert 1 <= run["time_budget"]["epochs"] == planned
