"""What a fit costs here, and how many epochs fit in a time budget (`--time`): durations as the command
line writes them, the clock of the first training steps, the plan of epochs, the estimate a fit prints.

Neural encoding is anytime: quality grows with training time. A fit with a budget measures its first
steps (they are part of the training), then fixes the number of epochs that ends it within the budget,
keeping the recipe's shape (warm-up, schedule, compression phase, stages: all fractions of the epochs;
the steps timed before the plan ran at the recipe's learning rates); at the end of each epoch it shortens
the plan if it has fallen behind (never lengthens it)."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from tnerv.errors import TnervError

# The first training steps timed before the estimate (the first, which pays one-time costs, is not used):
# at least MIN_CLOCKED, until CLOCKED_SECONDS have passed or MAX_CLOCKED steps have run, and never less
# than MIN_CLOCKED_SECONDS of steps: a window of a few tiny steps is decided by a pause of a few
# milliseconds (in the test suite, a tiny fit's 7 timed steps of its first epoch once averaged 15.1 ms,
# against 10.5 ms over the fit: an estimate 36% over).
MIN_CLOCKED, MAX_CLOCKED, CLOCKED_SECONDS, MIN_CLOCKED_SECONDS = 3, 20, 3.0, 1.0
# An evaluation's time per frame, as a share of a training step's time per frame, until one is timed: an
# assumption (a forward pass without the backward one, plus the metrics), replaced by the first timed evaluation.
EVAL_SHARE = 0.5
# An evaluation's time, as a share of a model's pass over the video before training, where it made one
# (the same forward passes, plus the metrics): measured once, T-NeRV on bikes, 60.4 s against 50.3 s.
EVAL_PER_PASS = 1.2
# A training step's time per item, in forward passes of one item: the assumption of the estimate made
# during a model's pass over the video before training, before any step is timed (the estimate after the
# first steps replaces it). Measured once: T-NeRV on bikes, a 1.39 s step against 0.28-0.31 s a frame.
STEP_FORWARDS = 4.5
# With no --epochs and no --time, `tnerv encode` keeps the recipe when it takes at most this long here...
RECIPE_LIMIT = 3600.0
# ...and otherwise trains for this long (the default budget, stated in the README and in its first line).
DEFAULT_ENCODE_BUDGET = 20 * 60.0
# `tnerv demo`'s budget (the whole encode: training, writing, checking).
DEMO_TIME = 180.0
# Plans are shortened when the projected end passes the budget by more than this share of it.
REPLAN_MARGIN = 0.02

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 90s, 10m, 2h or 1h30m (a bare number is seconds)."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise TnervError(f"{text!r} is not a duration (e.g. 90s, 10m, 2h, 1h30m)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise TnervError(f"a duration must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as people read it: 42 s, 7.5 min, 31.7 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class StepClock:
    """Wall-clock durations of a fit's first steps."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._last = time.perf_counter()

    def restart(self) -> None:
        """Starts timing the next step from now."""
        self._last = time.perf_counter()

    def tick(self) -> None:
        """Records the step that just ended."""
        now = time.perf_counter()
        self.durations.append(now - self._last)
        self._last = now

    def ready(self) -> bool:
        """Whether enough steps were timed for an estimate (MIN_CLOCKED, MAX_CLOCKED, CLOCKED_SECONDS,
        MIN_CLOCKED_SECONDS), across epochs if need be."""
        timed = self.durations[1:]
        seconds = sum(timed)
        return len(timed) >= MIN_CLOCKED and (
            seconds >= CLOCKED_SECONDS or (len(timed) >= MAX_CLOCKED and seconds >= MIN_CLOCKED_SECONDS))

    def seconds_per_step(self, last: int | None = None) -> float:
        """The mean step (of the `last` ones), the first step left out where there are others (it pays
        one-time costs): a mean, since the slow steps (a busy machine, the allocator) are part of the cost."""
        first = 1 if len(self.durations) > 1 else 0
        if last:  # only the tail is read: called every epoch, on a list that grows every step
            first = max(first, len(self.durations) - last)
        return statistics.fmean(self.durations[first:])


@dataclass
class Costs:
    """What a fit costs here: a training step, an evaluation, and the layout of its epochs; `check_epoch`
    gives the epoch of the collapse check of a plan of so many epochs (`tnerv.train.collapse_check_epoch`)."""

    step_seconds: float
    eval_seconds: float
    steps_per_epoch: int
    eval_every: int
    check_epoch: Callable[[int], int] | None = None  # None: the check always costs an evaluation of its own
    final_eval: bool = True  # False: the fit evaluates after its last epoch only where eval_every falls there

    def seconds(self, epochs: int, from_epoch: int = 0) -> float:
        """The seconds of epochs from_epoch + 1 .. epochs with their evaluations: every eval_every epochs, at
        the end (with final_eval), and the collapse check's where it falls on none of these (counted if it is
        still ahead)."""
        k = self.eval_every
        evals = epochs // k - from_epoch // k + (epochs % k != 0 and self.final_eval)
        check = self.check_epoch(epochs) if self.check_epoch else None
        if check is None:
            evals += from_epoch == 0
        elif from_epoch < check and check % k != 0 and (check < epochs or not self.final_eval):
            evals += 1  # at the last epoch, the final evaluation serves the check where there is one
        return max(epochs - from_epoch, 0) * self.steps_per_epoch * self.step_seconds + evals * self.eval_seconds

    def epochs_within(self, seconds: float, from_epoch: int = 0) -> int:
        """The most epochs (at least from_epoch + 1) whose remainder from `from_epoch` fits in `seconds`."""
        low = from_epoch + 1
        high = low + int(seconds / max(self.steps_per_epoch * self.step_seconds, 1e-9)) + 1
        while low < high:  # seconds() grows with the epochs: the last that fits
            middle = (low + high + 1) // 2
            low, high = (middle, high) if self.seconds(middle, from_epoch) <= seconds else (low, middle - 1)
        return low


def first_eval_seconds(step_seconds: float, batch_size: int, items: int) -> float:
    """An evaluation's seconds before one is timed: EVAL_SHARE of a training step's time per item, for all
    `items` (frames, or a patch-trained model's patches of every frame)."""
    return EVAL_SHARE * step_seconds / batch_size * items


@dataclass
class Budget:
    """A fit's time budget of `seconds` (None: none, the recipe's epochs are only costed), the recipe's
    `recipe_epochs`; with `recipe_first` (tnerv encode's default), the recipe is kept when it takes at most
    RECIPE_LIMIT here; `reserve_evals` evaluations' worth is left for what follows the fit (writing and
    checking a file). Elapsed times are the caller's, from where its budget counts."""

    seconds: float | None
    recipe_epochs: int
    recipe_first: bool = False
    reserve_evals: int = 0
    active: bool = True  # False once the recipe was kept, or on a resume (the plan is the checkpoint's)

    def first_plan(self, elapsed: float, costs: Costs, done: int = 0) -> tuple[int, str]:
        """The epochs to train, and the line that says what they cost here, from the first steps' costs,
        timed while `done` epochs had run."""
        epochs, line, keeps_recipe = self._decide(elapsed, costs, done)
        self.active = self.active and not keeps_recipe
        return epochs, line

    def provisional(self, elapsed: float, costs: Costs) -> str:
        """What the fit expects before any step is timed, from costs assumed (`STEP_FORWARDS`); decides nothing."""
        return self._decide(elapsed, costs, 0)[1].replace("about", "roughly")

    def _decide(self, elapsed: float, costs: Costs, done: int) -> tuple[int, str, bool]:
        recipe = elapsed + costs.seconds(self.recipe_epochs, done)
        cost = (f"{self.recipe_epochs} epochs of {costs.steps_per_epoch} steps at {costs.step_seconds:.3g} s a step, "
                f"with their evaluations: about {format_duration(recipe)} here")
        if self.seconds is None or (self.recipe_first and recipe <= RECIPE_LIMIT):
            return self.recipe_epochs, cost, True
        epochs = costs.epochs_within(self.left(elapsed, costs), done)
        ends = elapsed + costs.seconds(epochs, done) + self.reserve_evals * costs.eval_seconds
        within = f"{epochs} epochs (about {format_duration(elapsed + costs.seconds(epochs, done))} here)"
        if ends > self.seconds * (1 + REPLAN_MARGIN):  # plans are whole epochs: the least is one more
            within += (f", past the budget: less than an epoch fits ({costs.steps_per_epoch} steps), and a plan is "
                       "whole epochs")
        if self.recipe_first:
            return epochs, (f"the recipe's {cost}, more than {format_duration(RECIPE_LIMIT)}: training for "
                            f"{format_duration(self.seconds)} instead, {within}; --epochs {self.recipe_epochs} asks for "
                            "the recipe, --time for another budget"), False
        return epochs, f"--time {format_duration(self.seconds)}: {within}; the recipe's {cost}", False

    def left(self, elapsed: float, costs: Costs) -> float:
        """Seconds the fit may still spend, the reserve for what follows it kept."""
        assert self.seconds is not None
        return self.seconds - elapsed - self.reserve_evals * costs.eval_seconds

    def replan(self, elapsed: float, costs: Costs, done: int, planned: int) -> int:
        """The epochs after `done` of `planned` have run: fewer if the rest would end past the budget (by
        more than REPLAN_MARGIN of it), down to `done` when no time is left; never more."""
        if not self.active or self.seconds is None or done >= planned:
            return planned
        projected = elapsed + costs.seconds(planned, done) + self.reserve_evals * costs.eval_seconds
        if projected <= self.seconds * (1 + REPLAN_MARGIN):
            return planned
        left = self.left(elapsed, costs)
        if costs.seconds(done + 1, done) > left:
            return done
        return min(planned, costs.epochs_within(left, done))
