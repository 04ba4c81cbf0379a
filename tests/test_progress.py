"""One bar over a segmented encode: each segment's fit moves it by its share of the video's frames."""

import pytest

from tnerv.progress import VideoBar


def test_segment_fits_move_one_bar_by_their_frames_times_the_share_of_steps_done():
    bar = VideoBar(frames=8)
    first = bar.segment("1/2", frames=3).start(total=10, initial=0)
    first.update(5)
    assert bar.bar.n == pytest.approx(1.5)
    first.total = 20  # a new plan, as a time budget makes it: the bar never goes back
    first.refresh()
    assert bar.bar.n == pytest.approx(1.5)
    first.update(15)
    assert bar.bar.n == pytest.approx(3 * 20 / 20)
    first.close()
    second = bar.segment("2/2", frames=5).start(total=4, initial=2)  # resumed half way
    assert bar.bar.n == pytest.approx(3 + 2.5)
    second.set_postfix(epoch=3)
    assert "segment=2/2" in bar.bar.postfix and "epoch=3" in bar.bar.postfix
    second.close()  # a fit that ended before its plan (a budget) still counts its segment done
    assert bar.bar.n == pytest.approx(bar.bar.total)
    bar.close()


def test_a_resumed_encode_starts_the_bar_at_the_frames_of_its_written_segments():
    bar = VideoBar(frames=10, frames_done=4)
    assert bar.bar.n == 4 and bar.bar.total == 10
    bar.close()
