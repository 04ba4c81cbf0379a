"""Shared fixtures: tests run on the CPU with few threads, tiny models and short clips."""

import os

import pytest
import torch

torch.set_num_threads(2)
# The suite checks exact CPU results (bit-identical frame ranges, resumed fits); on a GPU machine it
# still runs on the CPU. GPU runs are benchmarks (benchmarks/paper_scale_gpu.sh).
os.environ["TNERV_DEVICE"] = "cpu"


@pytest.fixture(scope="session")
def bikes_32x128x256() -> torch.Tensor:
    """32 frames of the bikes sample at 128x256 as uint8 (N, 3, H, W)."""
    from tnerv.runs import VideoSpec, load_frames
    from tnerv.video import sample

    return load_frames(VideoSpec(path=str(sample("bikes")), count=32, resize=(128, 256)))


@pytest.fixture(scope="session")
def tiny_clip(bikes_32x128x256: torch.Tensor) -> torch.Tensor:
    """8 frames of bikes at 32x64: enough to train a few steps in well under a second."""
    from tnerv.video import resize_and_crop

    frames = bikes_32x128x256[:8].permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(resize_and_crop(frames, 32, 64)).permute(0, 3, 1, 2).contiguous()
