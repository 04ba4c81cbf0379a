"""A fit killed with SIGKILL anywhere resumes to the weights of a run that was never interrupted."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from tnerv.cli import main
from tnerv.video import sample

# 6 epochs of 4 steps, a checkpoint every 2 epochs.
FIT = ["fit", str(sample("bikes")), "--preset", "nerv-s-cpu", "--frames", "8", "--resize", "32x64", "--epochs", "6",
       "--batch-size", "2", "--eval-every", "2", "--quiet", "--set", "stem_dims=[32]", "--set", "channels=8"]

# The child runs the fit with one hook that kills it (SIGKILL: no handler, no cleanup) at a given point.
CHILD = """
import os, signal, sys, torch
import tnerv.train as train
from tnerv.cli import main

point, arg = sys.argv[1], int(sys.argv[2])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point == "epoch":  # after epoch `arg` ended (and its checkpoint, if any, was written)
    real_fit = train.fit
    def fit(*a, **k):
        return real_fit(*a, **{**k, "on_epoch_end": lambda done: done == arg and die()})
    import tnerv.runs
    tnerv.runs.fit = fit
elif point == "step":  # inside training step `arg`, after the gradients, before the update
    steps = [0]
    real_step = torch.optim.Adam.step
    def step(self, *a, **k):
        steps[0] += 1
        if steps[0] == arg:
            die()
        return real_step(self, *a, **k)
    torch.optim.Adam.step = step
elif point == "saving":  # while writing checkpoint number `arg`: the temporary file half written
    saves = [0]
    real_save = train.atomic_save
    def atomic_save(obj, path):
        saves[0] += 1
        if saves[0] == arg:
            with open(str(path) + ".partial.tmp", "wb") as f:
                f.write(b"half a checkpoint")
            die()
        return real_save(obj, path)
    train.atomic_save = atomic_save
main(sys.argv[3:])
"""

POINTS = [
    ("epoch", 1),  # run.json written, no checkpoint yet
    ("epoch", 2),  # just after the first checkpoint
    ("step", 14),  # in the middle of epoch 4
    ("saving", 2),  # while writing the second checkpoint
    ("epoch", 5),  # one epoch before the end
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main([*FIT, "--out", str(out)]) == 0
    return torch.load(out / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.parametrize("point, arg", POINTS)
def test_a_killed_fit_resumes_to_the_uninterrupted_weights(tmp_path, uninterrupted, point, arg):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", CHILD, point, str(arg), *FIT, "--out", str(out)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (out / "run.json").exists()
    assert (out / "checkpoint.pt").exists() == (point != "epoch" or arg >= 2)
    assert main(["fit", str(sample("bikes")), "--out", str(out), "--resume", "--quiet"]) == 0
    resumed = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    assert resumed.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(resumed[name], value), name
