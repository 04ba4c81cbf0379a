"""What each bench runs on every video, at paper scale and at CPU scale.

A protocol fixes the frame size, the frame count, the size budget, the epochs and (for compression)
the rate points. Paper scale follows the supplementary: the settings of `tnerv.models.settings`, 300
epochs (DAVIS 600; compression 600, inferred: docs/models.md), lambda in {0.01, 0.1, 0.5, 1.0}
at a fixed size (Fig. 4), x265 at CRF 22/27/32/37. CPU scale shrinks all of it by one recipe, so that a
bench runs in minutes on 2 cores: the frame's long side becomes 256 px (same aspect as the setting:
144x256, or 128x256 for setting 2), 16-32 frames, a budget of 0.6x the setting's budget per frame (so
that per-frame parts, HNeRV's embedding channels, stay in the paper's relation), 1/5 of the epochs (1/10
for compression), and every output says so in its label. Each model's CPU-scale config is derived from
its paper-scale config in the setting by `tnerv.models.budget.cpu_config` (the one rule that keeps
the split between decoder, grids and embeddings), and trained with the recipe of its `-s-cpu` preset
at the model's paper batch size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from tnerv.errors import TnervError
from tnerv.models.settings import get_setting
from tnerv.time_budget import format_duration

BENCHES = ("representation", "compression", "ablation", "timing")
SCALES = ("paper", "cpu")

# The setting each bench uses unless --setting names another.
DEFAULT_SETTING = {
    "representation": "setting1",
    "compression": "uvg-1080p",
    "ablation": "setting1",
    "timing": "davis",
}

PAPER_EPOCHS = {"setting1": 300, "setting2": 300, "davis": 600, "mcl-jcv": 300, "uvg-1080p": 600}
# Tab. 2 ablates on the first 300 frames of each UVG sequence.
PAPER_ABLATION_FRAMES = 300

# CPU scale per setting: (height, width, frames, budget, epochs). Budget: CPU_BUDGET_PER_FRAME times the
# setting's budget per frame (budget / frames), rounded: 12.4M/600 frames -> 16 frames: 200k, 3.0M/600
# -> 32 frames: 100k, 2M/60 -> 16 frames: 320k, 5M/150 -> 24 frames: 480k, 9.3M/600 -> 32 frames: 300k.
# Setting 1 takes 16 frames so that its representation bench (seven models, two clips) fits in an hour
# on 2 cores; the small presets (`-s-cpu`) are the same rule at 32 frames and 400k.
CPU_BUDGET_PER_FRAME = 0.6
CPU_SCALE = {
    "setting1": (144, 256, 16, 200_000, 60),
    "setting2": (128, 256, 32, 100_000, 60),
    "davis": (144, 256, 16, 320_000, 120),
    "mcl-jcv": (144, 256, 24, 480_000, 60),
    "uvg-1080p": (144, 256, 32, 300_000, 60),
}

LAMBDAS = (0.01, 0.1, 0.5, 1.0)
CRFS = (22, 27, 32, 37)
# Models compressed after training reach other rates by other sizes: these multiples of the budget.
SIZE_FACTORS = (0.5, 1.0, 1.5, 2.0)
# Integer widths move a model's size in steps, which are coarse for the small CPU-scale models.
CPU_SIZE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Protocol:
    """What a bench runs on every video."""

    bench: str
    setting: str
    scale: str
    height: int
    width: int
    num_frames: int | None  # None: the dataset's own selection (every UVG frame, DAVIS 60, MCL-JCV 150)
    budget: int  # transmitted parameters
    epochs: int
    lambdas: tuple[float, ...] = LAMBDAS
    size_factors: tuple[float, ...] = SIZE_FACTORS
    crfs: tuple[int, ...] = CRFS
    size_tolerance: float = 0.03
    unit_time: float | None = None  # seconds of each unit's encode or fit (--time): its epochs then fill them

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes of post-training models in a compression bench."""
        return tuple(round(self.budget * f) for f in self.size_factors)

    @property
    def label(self) -> str:
        """One line that says at which scale every number of this bench was measured."""
        frames = "all frames" if self.num_frames is None else f"{self.num_frames} frames"
        length = f"{self.epochs} epochs" if self.unit_time is None else f"{format_duration(self.unit_time)} a unit"
        return (
            f"{self.scale.upper() if self.scale == 'cpu' else 'Paper'} scale ({self.setting}): "
            f"{self.height}x{self.width}, {frames}, {format_size(self.budget)} parameters, {length}"
        )

    def to_dict(self) -> dict:
        """Plain data for bench.json (as JSON reads it back: lists, not tuples)."""
        return json.loads(json.dumps({**asdict(self), "label": self.label}))


def format_size(parameters: float) -> str:
    """A parameter count the way the paper prints it: 12.4M, 3.0M, 400k, 950."""
    if parameters >= 999_500:
        return f"{parameters / 1e6:.1f}M"
    if parameters >= 10_000:
        return f"{parameters / 1e3:.0f}k"
    if parameters >= 1000:
        return f"{parameters / 1e3:.1f}k"
    return f"{parameters:.0f}"


def protocol(
    bench: str,
    setting: str | None = None,
    scale: str = "cpu",
    epochs: int | None = None,
    frames: int | None = None,
    resize: tuple[int, int] | None = None,
    budget: int | None = None,
    lambdas: tuple[float, ...] | None = None,
    crfs: tuple[int, ...] | None = None,
    unit_time: float | None = None,
) -> Protocol:
    """The protocol of a bench in a setting at a scale; `epochs`, `frames`, `resize` (height, width),
    `budget`, `lambdas` and `crfs` override the scale's values (the label shows the values used);
    `unit_time` (seconds, not with `epochs`) gives each unit a time budget instead of the epochs."""
    if bench not in BENCHES:
        raise TnervError(f"unknown bench {bench!r}; available: {', '.join(BENCHES)}")
    if scale not in SCALES:
        raise TnervError(f"unknown scale {scale!r}; available: {', '.join(SCALES)}")
    name = setting or DEFAULT_SETTING[bench]
    s = get_setting(name)
    if unit_time is not None and epochs is not None:
        raise TnervError("--time and --epochs are two ways to say how long a unit trains: give one")
    for option, value in (("--epochs", epochs), ("--frames", frames), ("--budget", budget)):
        if value is not None and value < 1:
            raise TnervError(f"{option} must be at least 1, got {value}")
    if scale == "paper" and resize is not None:
        raise TnervError(f"at paper scale the frame size is the setting's ({s.height}x{s.width}); --resize is for --scale cpu")
    if scale == "paper":
        paper_frames = PAPER_ABLATION_FRAMES if bench == "ablation" else None
        chosen = Protocol(bench, name, scale, s.height, s.width, paper_frames, s.budget, PAPER_EPOCHS[name])
    else:
        height, width, cpu_frames, cpu_budget, cpu_epochs = CPU_SCALE[name]
        chosen = Protocol(
            bench, name, scale, height, width, cpu_frames, cpu_budget, cpu_epochs, size_tolerance=CPU_SIZE_TOLERANCE
        )
    if lambdas is not None and (not lambdas or min(lambdas) < 0):
        raise TnervError("--lambdas takes one or more values of 0 or more")
    overrides = {"epochs": epochs, "num_frames": frames, "budget": budget, "lambdas": lambdas, "crfs": crfs,
                 "unit_time": unit_time}
    if resize is not None:
        overrides.update(height=resize[0], width=resize[1])
    return replace(chosen, **{k: v for k, v in overrides.items() if v is not None})
