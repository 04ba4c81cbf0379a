"""Progress bars: a fit's bar of training steps, or its share of one bar over a segmented encode's frames."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from tqdm.auto import tqdm


class StepBar(Protocol):
    """What a fit does with its bar of training steps (a tqdm bar does all of it)."""

    total: float

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(self, **values: Any) -> None: ...

    def refresh(self) -> None: ...

    def close(self) -> None: ...


def step_bar(total: int, initial: int, show: bool) -> StepBar:
    """A fit's own bar: `total` steps, `initial` of them done before (a resumed fit)."""
    return tqdm(total=total, initial=initial, disable=not show, unit="step", dynamic_ncols=True)


class VideoBar:
    """One bar over the frames of a segmented encode: each segment's fit moves it by the segment's frames
    times the share of its planned steps done, so the bar ends when the last segment's training does, and
    its time left (elapsed time over the share done, evaluations and writing included) covers every
    segment still to come."""

    def __init__(self, frames: int, frames_done: int = 0):
        # smoothing=0: the time left is extrapolated from the whole encode so far, not from the last
        # few updates, between which a segment prepares, evaluates and writes its file.
        self.bar = tqdm(total=frames, initial=frames_done, unit="frame", desc="video", smoothing=0,
                        dynamic_ncols=True, file=sys.stderr,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")

    def segment(self, label: str, frames: int) -> SegmentSteps:
        """The step bar of the fit of one segment of `frames` frames, shown as `label` (e.g. "2/4")."""
        return SegmentSteps(self, label, frames)

    def say(self, line: str) -> None:
        """Prints a line above the bar."""
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        """Ends the bar."""
        self.bar.close()


class SegmentSteps:
    """A segment fit's step bar, drawn as its share of a VideoBar (see `VideoBar.segment`)."""

    def __init__(self, video: VideoBar, label: str, frames: int):
        self.video, self.label, self.frames = video, label, frames
        self.total: float = 1.0
        self.steps = 0.0
        self.moved = 0.0  # frames of the video bar this segment has moved so far

    def update(self, n: float = 1) -> None:
        """Counts `n` more steps done."""
        self.steps += n
        self._move_to(self.frames * min(1.0, self.steps / max(self.total, 1)))

    def set_postfix(self, **values: Any) -> None:
        """Shows the segment and the fit's figures after the bar."""
        self.video.bar.set_postfix(segment=self.label, **values)

    def refresh(self) -> None:
        """Redraws the bar after a new plan (`total`) of steps."""
        self.update(0)

    def close(self) -> None:
        """Counts the segment's frames done: its fit ended, at its plan or earlier."""
        self._move_to(self.frames)

    def start(self, total: int, initial: int) -> SegmentSteps:
        """Takes the fit's plan of `total` steps, `initial` of them done before (a resumed fit)."""
        self.total = total
        self.update(initial)
        return self

    def _move_to(self, frames: float) -> None:
        if frames > self.moved:
            self.video.bar.update(frames - self.moved)
            self.moved = frames
