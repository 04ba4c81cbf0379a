"""Time budgets (`--time`): durations, the plan of epochs within a budget, the estimate a fit prints after
its first steps, and a fit that ends on time and resumes to the epochs it planned."""

import json

import pytest
import torch

from tnerv import compress, time_budget
from tnerv.cli import main
from tnerv.compress import encode_video
from tnerv.errors import TnervError
from tnerv.models import create_model, load_preset
from tnerv.runs import VideoSpec
from tnerv.time_budget import REPLAN_MARGIN, Budget, Costs, StepClock, format_duration, parse_duration
from tnerv.train import CHECKPOINT, TrainConfig, collapse_check_epoch, fit


def tiny_nerv(frames: torch.Tensor):
    n, _, h, w = frames.shape
    torch.manual_seed(0)
    return create_model("nerv", load_preset("nerv-s-cpu").config(height=h, width=w, num_frames=n, stem_dims=(32,),
                                                                    channels=8))


def test_durations_read_as_people_write_them():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400 and parse_duration("45") == 45 and parse_duration("0.5m") == 30
    for bad in ("10x", "m", "0", "1h 30m", "-5m", "inf", ""):
        with pytest.raises(TnervError):
            parse_duration(bad)
    assert format_duration(42) == "42 s" and format_duration(450) == "7.5 min" and format_duration(114_000) == "31.7 h"


def test_the_plan_is_the_most_epochs_that_fit():
    costs = Costs(step_seconds=1.0, eval_seconds=10.0, steps_per_epoch=100, eval_every=10)
    # 3 epochs: 300 s of steps, an evaluation at the end and the collapse check's: 320 s.
    assert costs.seconds(3) == 320
    assert costs.epochs_within(320) == 3 and costs.epochs_within(419.9) == 3 and costs.epochs_within(420) == 4
    assert costs.seconds(12, from_epoch=10) == 200 + 10  # two epochs and the final evaluation
    assert costs.epochs_within(1, from_epoch=5) == 6  # at least one more epoch
    # Given the check's epoch, the check costs an evaluation only where none is scheduled.
    checked = Costs(step_seconds=1.0, eval_seconds=10.0, steps_per_epoch=100, eval_every=10,
                    check_epoch=collapse_check_epoch)
    assert checked.seconds(1) == 110  # the check is the final evaluation
    assert checked.seconds(4) == 420 and checked.seconds(5) == 520  # at epoch 1, and at 2: of its own
    assert checked.seconds(5, from_epoch=1) == 420 and checked.seconds(5, from_epoch=2) == 310  # ahead; behind
    assert checked.seconds(40) == 4040  # at epoch 10, a scheduled evaluation
    # A fit whose caller measures the model (an encode) has no final evaluation: the check's is its own.
    measured = Costs(step_seconds=1.0, eval_seconds=10.0, steps_per_epoch=100, eval_every=10,
                     check_epoch=collapse_check_epoch, final_eval=False)
    assert measured.seconds(1) == 110 and measured.seconds(4) == 410 and measured.seconds(20) == 2030
    assert measured.seconds(12, from_epoch=10) == 200  # two epochs, and no evaluation after them


def test_the_recipe_is_kept_when_it_fits_and_a_budget_fills_itself():
    costs = Costs(step_seconds=1.0, eval_seconds=0.0, steps_per_epoch=10, eval_every=10)
    explicit = Budget(seconds=100, recipe_epochs=300)
    assert explicit.first_plan(0.0, costs)[0] == 10  # fills the budget whatever the recipe says
    assert Budget(seconds=10_000, recipe_epochs=3).first_plan(0.0, costs)[0] == 1000
    default = Budget(seconds=100, recipe_epochs=300, recipe_first=True)
    epochs, line = default.first_plan(0.0, costs)  # the recipe: 3000 s, within an hour: kept
    assert epochs == 300 and not default.active and "300 epochs" in line
    short = Budget(seconds=5, recipe_epochs=300).first_plan(0.0, costs)  # one epoch takes 10 s
    assert short[0] == 1 and "past the budget: less than an epoch fits" in short[1]
    assert "past the budget" not in explicit.first_plan(0.0, costs)[1]
    slow = Costs(step_seconds=2.0, eval_seconds=0.0, steps_per_epoch=10, eval_every=10)
    default = Budget(seconds=100, recipe_epochs=300, recipe_first=True)
    epochs, line = default.first_plan(0.0, slow)  # the recipe: 6000 s, more than an hour: the budget
    assert epochs == 5 and default.active and "--epochs 300" in line


def test_a_plan_that_falls_behind_is_shortened_never_lengthened():
    costs = Costs(step_seconds=1.0, eval_seconds=0.0, steps_per_epoch=10, eval_every=10)
    budget = Budget(seconds=100, recipe_epochs=300)
    assert budget.replan(elapsed=20, costs=costs, done=2, planned=10) == 10  # on time
    assert budget.replan(elapsed=5, costs=costs, done=2, planned=5) == 5  # ahead: no more epochs
    assert budget.replan(elapsed=50, costs=costs, done=2, planned=10) == 7  # behind: 5 more fit
    assert budget.replan(elapsed=99, costs=costs, done=2, planned=10) == 2  # no time left: stop here


def _epoch_seconds(history):
    ends = [0.0] + [e["seconds"] for e in history]
    return max(b - a for a, b in zip(ends, ends[1:]))


def test_a_fit_with_a_budget_ends_on_time_with_its_plan_in_the_checkpoint(tiny_clip, tmp_path):
    config = TrainConfig(epochs=200, batch_size=1, eval_every=50, checkpoint_every=1, time_budget=6.0)
    (tmp_path / "a").mkdir()
    result = fit(tiny_nerv(tiny_clip), tiny_clip, config, tmp_path / "a", progress=False)
    # Plans end at epoch boundaries and evaluations are estimated until one is timed: the fit may pass the
    # budget by the margin the plan allows, one epoch and its last evaluation, no more.
    final_eval = result.seconds - result.history[-1]["seconds"]
    assert result.seconds <= 6.0 * (1 + REPLAN_MARGIN) + _epoch_seconds(result.history) + final_eval
    assert 1 <= result.epochs < 200 and result.estimate["epochs"] >= result.epochs
    state = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)
    assert state["epoch"] == state["train_config"]["epochs"] == result.epochs



def test_a_resumed_budget_fit_trains_to_the_epochs_it_planned(tiny_clip, tmp_path, monkeypatch):
    # The plan made after the first steps is 5 epochs (fixed here, not timed); the recipe says 200.
    monkeypatch.setattr(Budget, "first_plan", lambda self, elapsed, costs, done: (5, "planned 5 epochs"))
    monkeypatch.setattr(StepClock, "ready", lambda self: len(self.durations) >= 2)  # planned in the first epoch
    config = TrainConfig(epochs=200, batch_size=4, eval_every=50, checkpoint_every=1, time_budget=600.0)

    def stop(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_nerv(tiny_clip), tiny_clip, config, tmp_path, progress=False, on_epoch_end=stop)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["train_config"]["epochs"] == 5
    monkeypatch.setattr(Budget, "first_plan", lambda self, elapsed, costs, done: pytest.fail("a resume planned again"))
    resumed = fit(tiny_nerv(tiny_clip), tiny_clip, config, tmp_path, resume=True, progress=False)
    assert resumed.epochs == 5 and [e["epoch"] for e in resumed.history] == [1, 2, 3, 4, 5]


def _clock(*durations: float) -> StepClock:
    clock = StepClock()
    clock.durations = list(durations)
    return clock


def test_the_clock_times_a_second_of_steps_at_least():
    assert not _clock(*[0.008] * 20).ready()  # a first epoch of tiny steps: 0.15 s, a pause away from 2x
    assert _clock(*[0.008] * 130).ready()  # past a second, across epochs
    assert _clock(0.1, *[0.06] * 20).ready() and not _clock(0.1, *[0.06] * 19).ready()  # 20 timed steps (1.2 s)
    assert _clock(5.0, 1.5, 1.5).ready() is False and _clock(5.0, 1.5, 1.5, 1.5).ready()  # 3 steps of 3 s or more
    assert _clock(9.0, 0.01, 0.01, 0.01).seconds_per_step() == pytest.approx(0.01)  # the first step left out


def test_the_estimate_after_the_first_steps_is_within_a_quarter_of_the_total(tiny_clip):
    result = fit(tiny_nerv(tiny_clip), tiny_clip, TrainConfig(epochs=80, batch_size=1, eval_every=40), progress=False)
    assert 0.75 <= result.estimate["seconds"] / result.seconds <= 1.25, (result.estimate, result.seconds)


def test_a_model_that_passes_over_the_video_first_says_what_the_fit_expects_before_its_first_step(
        tiny_clip, capsys):
    """T-NeRV fills its buffer of independent frames before training (on bikes, a default encode's first
    two silent minutes): after the pass's first chunk, a bar and what the fit expects, from that chunk's time."""
    from test_tnerv import TINY

    from tnerv.models.tnerv import TNeRVConfig

    torch.manual_seed(0)
    fit(create_model("tnerv", TNeRVConfig(**TINY)), tiny_clip, TrainConfig(epochs=3, batch_size=2, eval_every=3))
    err = capsys.readouterr().err
    said = next(line for line in err.splitlines() if "frames through the model" in line)
    assert said.startswith("tnerv: preparing: 8 frames through the model, about ") and "then 3 epochs of 4 steps" in said
    assert "roughly" in said and "forward passes" in said
    assert err.index("frames through the model") < err.index("/12 [")  # before the training bar starts
    fit(tiny_nerv(tiny_clip), tiny_clip, TrainConfig(epochs=1, batch_size=2, eval_every=1))
    assert "frames through the model" not in capsys.readouterr().err  # NeRV makes no such pass


def test_a_provisional_estimate_decides_nothing():
    costs = Costs(step_seconds=1.0, eval_seconds=0.0, steps_per_epoch=10, eval_every=10)
    budget = Budget(seconds=100, recipe_epochs=300, recipe_first=True)
    line = budget.provisional(0.0, costs)  # the recipe: 3000 s, within an hour
    assert line.startswith("300 epochs") and "roughly 50.0 min" in line and "about" not in line and budget.active
    assert budget.first_plan(0.0, costs)[0] == 300 and not budget.active


def test_time_and_epochs_together_are_refused_in_one_line(capsys, tmp_path):
    for extra, message in ((["--time", "5s", "--epochs", "3"], "not allowed with"), (["--time", "ten"], "not a duration")):
        code = main(["fit", "bikes", "--frames", "4", "--out", str(tmp_path / "x"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def test_encode_without_epochs_or_time_takes_the_default_budget_when_the_recipe_is_long(tmp_path, monkeypatch):
    monkeypatch.setattr(time_budget, "RECIPE_LIMIT", 1.0)  # any recipe is too long here
    monkeypatch.setattr(compress, "DEFAULT_ENCODE_BUDGET", 4.0)  # below the recipe's time on any machine here
    clip = VideoSpec(path="bikes", count=8, resize=(32, 64))
    result = encode_video(clip, tmp_path / "clip.tnrv", preset="nerv-s-cpu", progress=False,
                          model_overrides={"stem_dims": [32], "channels": 8})
    run = json.loads((tmp_path / "clip.tnrv.run" / "run.json").read_text())
    recipe = load_preset("nerv-s-cpu").train["epochs"]
    assert run["time_budget"]["seconds"] == 4.0 and run["time_budget"]["recipe_first"]
    assert run["time_budget"]["epochs"] < recipe and "--epochs" in run["time_budget"]["estimate"]["said"]
    # The whole encode, the file and its check included; a tiny run's fixed costs (building, writing) are a
    # large share of 4 s, hence half the budget as tolerance.
    assert result.encode_seconds < 4.0 * 1.5
