"""A fit stuck at the mean frame says so, and can restart with the next seed."""

import dataclasses
import json
import math

import pytest
import torch

import tnerv.train
from tnerv.models import create_model, load_preset
from tnerv.train import (
    CHECKPOINT,
    TrainConfig,
    VideoFrames,
    collapse_verdict,
    fit,
    mean_frame_psnr,
    seed_everything,
    settle_collapse,
)

HNERV = {"height": 32, "width": 64, "num_frames": 8, "strides": "auto", "num_blocks": 3,
         "target_latent_height": 4, "embed_channels": 8, "encoder_width": 16, "channels": 24}


@pytest.fixture
def halves() -> torch.Tensor:
    """8 frames of 32x64, white on the left in even frames and on the right in odd ones: the mean
    frame is grey everywhere (PSNR 10 log10(4) = 6.02 dB), each frame is easy to learn."""
    clip = torch.zeros(8, 3, 32, 64, dtype=torch.uint8)
    clip[0::2, :, :, :32] = 255
    clip[1::2, :, :, 32:] = 255
    return clip


def tiny_nerv(seed: int) -> torch.nn.Module:
    seed_everything(seed)
    config = load_preset("nerv-s-cpu").config(height=32, width=64, num_frames=8, stem_dims=(32,), channels=8)
    return create_model("nerv", config)


def tiny_hnerv(seed: int) -> torch.nn.Module:
    seed_everything(seed)
    return create_model("hnerv", HNERV)


# A tiny NeRV at lr 3e-3 learns the mean frame of `halves` and stays there; a tiny HNeRV at 1e-2
# learns the frames. The check is after epoch 1 of 4; one evaluation at the end.
STUCK = TrainConfig(epochs=4, batch_size=1, lr=3e-3, loss="l2", warmup=0, eval_every=4)
TRAINS = TrainConfig(epochs=4, batch_size=1, lr=1e-2, loss="l2", warmup=0, eval_every=4)


def test_the_verdict_is_a_margin_of_1_db_over_the_mean_frame():
    assert collapse_verdict(3, 6.99, 6.0) == {"epoch": 3, "psnr": 6.99, "mean_frame_psnr": 6.0}
    assert collapse_verdict(3, 4.0, 6.0) is not None  # below the mean frame: learned less than it
    assert collapse_verdict(3, math.nan, 6.0) is not None
    assert collapse_verdict(3, 7.0, 6.0) is None
    assert collapse_verdict(3, math.inf, 6.0) is None
    assert collapse_verdict(3, 5.0, math.inf) is None  # a still clip: the mean frame is exact


def test_mean_frame_psnr_is_that_of_the_grey_frame(halves):
    assert mean_frame_psnr(VideoFrames(halves, torch.device("cpu")), batch_size=3) == pytest.approx(10 * math.log10(4))
    still = halves[:1].expand(4, -1, -1, -1)
    assert mean_frame_psnr(VideoFrames(still, torch.device("cpu"))) == math.inf


def test_a_fit_stuck_at_the_mean_frame_is_flagged(halves, capsys):
    result = fit(tiny_nerv(0), halves, STUCK, progress=False)
    mean = 10 * math.log10(4)
    assert result.collapsed is not None, result.history
    assert result.collapsed["epoch"] == 1 and result.collapsed["mean_frame_psnr"] == pytest.approx(mean)
    assert abs(result.collapsed["final_psnr"] - mean) < 1 and result.collapsed["final_psnr"] == result.report.psnr
    # The check evaluated after epoch 1 though the schedule evaluates at 4 only, and said so in one line.
    assert [e["epoch"] for e in result.history if "psnr" in e] == [1, 4]
    lines = [line for line in capsys.readouterr().err.splitlines() if "collapsed" in line]
    assert len(lines) == 1 and lines[0].startswith("tnerv: warning: the fit looks collapsed (seed 0)"), lines
    assert result.seed == 0 and result.restarts == []


def test_without_its_final_evaluation_a_fit_leaves_the_collapse_to_settle(halves):
    """A fit whose caller measures the model (an encode decodes its file) skips the evaluation after its last
    epoch, and a collapse seen at the check waits for the caller's PSNR (settle_collapse)."""
    unscheduled = dataclasses.replace(STUCK, eval_every=STUCK.epochs + 1)  # no evaluation falls on the last epoch
    result = fit(tiny_nerv(0), halves, unscheduled, progress=False, final_eval=False)
    assert result.report is None and [e["epoch"] for e in result.history if "psnr" in e] == [1]
    pending = result.collapsed
    assert pending["epoch"] == 1 and pending["final_psnr"] is None
    mean = pending["mean_frame_psnr"]
    assert settle_collapse(pending, mean + 0.5) == {**pending, "final_psnr": mean + 0.5}  # still stuck
    assert settle_collapse(pending, mean + 1.5) is None  # trained after all
    assert settle_collapse(None, mean) is None


def test_a_fit_that_trains_is_not_flagged(halves, capsys):
    result = fit(tiny_hnerv(0), halves, TRAINS, progress=False)
    check = result.history[0]
    assert check["psnr"] > check["mean_frame_psnr"] + 1 and result.collapsed is None
    assert "collapsed" not in capsys.readouterr().err


def test_restart_on_collapse_tries_the_next_seed(halves, tmp_path):
    config = TrainConfig(**{**STUCK.to_dict(), "betas": STUCK.betas, "seed": 4, "restart_on_collapse": 1,
                            "checkpoint_every": 1})
    result = fit(tiny_nerv(4), halves, config, tmp_path, progress=False)
    assert [(r["seed"], r["reason"], r["epoch"]) for r in result.restarts] == [(4, "collapsed", 1)]
    assert result.seed == 5
    # The kept fit is the one a model built after seeding with 5 gives: new weights, seed 5's order.
    direct = tiny_nerv(5)
    expected = fit(direct, halves, TrainConfig(**{**config.to_dict(), "betas": config.betas, "seed": 5,
                                                  "restart_on_collapse": 0}), progress=False)
    assert result.report.psnr == expected.report.psnr and result.collapsed == expected.collapsed
    state = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert state["restarts"] == result.restarts and state["epoch"] == 4
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in state["model"].items())
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]  # the kept fit's epochs only


@pytest.mark.parametrize("name", ["nerv", "hnerv", "ffnerv", "dnerv", "tnerv"])
def test_the_check_leaves_the_training_as_it_was(tiny_clip, monkeypatch, name):
    """The check's evaluation (after epoch 1, off the schedule) draws no random numbers and changes
    no state: the weights are those of the same fit without a check."""
    n, _, h, w = tiny_clip.shape
    config = load_preset(f"{name}-s-cpu").config(height=h, width=w, num_frames=n)
    recipe = TrainConfig(epochs=2, batch_size=2, lr=1e-3, eval_every=2, seed=1)

    def fitted() -> dict[str, torch.Tensor]:
        seed_everything(1)
        model = create_model(name, config)
        result = fit(model, tiny_clip, recipe, progress=False)
        return model.state_dict(), [e.get("mean_frame_psnr") for e in result.history]

    checked, marks = fitted()
    assert marks[0] is not None  # the check ran
    monkeypatch.setattr(tnerv.train, "collapse_check_epoch", lambda epochs: epochs + 1)
    unchecked, marks = fitted()
    assert marks == [None, None]
    for k, v in checked.items():
        assert torch.equal(v, unchecked[k]), k


def test_the_tables_mark_a_collapsed_fit():
    from tnerv.bench.tables import quality_table, rd_points_table

    records = [
        {"bench": "representation", "video": "bikes", "method": "hnerv", "psnr": 13.734, "parameters": 1000,
         "collapsed": {"epoch": 15, "psnr": 13.7, "mean_frame_psnr": 13.5, "final_psnr": 13.734}},
        {"bench": "representation", "video": "bikes", "method": "nerv", "psnr": 27.43, "parameters": 1000,
         "collapsed": None},
    ]
    rows = {row[0].text: [c.text for c in row[2:]] for row in quality_table(records).rows}  # video, Avg.
    assert rows == {"hnerv": ["13.73 (collapsed)"] * 2, "nerv": ["27.43"] * 2}
    assert quality_table(records).rows[0][2].value == 13.734  # the number behind the cell is untouched
    rated = [{**r, "bench": "compression", "bpp": 0.1, "ms_ssim": 0.5, "lam": 0.1} for r in records]
    cells = {row[1].text: row[4].text for row in rd_points_table(rated).rows}
    assert cells == {"hnerv": "13.73 (collapsed)", "nerv": "27.43"}
