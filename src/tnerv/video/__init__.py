"""Video input/output, colour conversion, sample clips and frame transforms."""

from tnerv.video.colour import MATRICES, check_matrix, default_matrix, rgb_to_yuv420, yuv420_to_rgb, yuv_to_rgb
from tnerv.video.datasets import DATASETS, Sequence, dataset_sequences
from tnerv.video.io import (
    DEFAULT_FPS, Video, VideoInfo, count_frames, probe, read_video, write_frames, write_mp4, write_png,
)
from tnerv.video.samples import SAMPLES, sample
from tnerv.video.transforms import Padding, resize_and_crop, round_to_8bit, to_tensor, to_uint8

__all__ = [
    "DATASETS",
    "DEFAULT_FPS",
    "MATRICES",
    "Padding",
    "SAMPLES",
    "Sequence",
    "Video",
    "VideoInfo",
    "check_matrix",
    "dataset_sequences",
    "default_matrix",
    "count_frames",
    "probe",
    "read_video",
    "resize_and_crop",
    "rgb_to_yuv420",
    "round_to_8bit",
    "sample",
    "to_tensor",
    "to_uint8",
    "write_frames",
    "write_mp4",
    "write_png",
    "yuv420_to_rgb",
    "yuv_to_rgb",
]
