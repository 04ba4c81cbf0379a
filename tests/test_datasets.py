"""Tests for tnerv.video.datasets on fake dataset layouts built in tmp_path."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tnerv.errors import TnervError
from tnerv.video import read_video
from tnerv.video.datasets import DATASETS, MCL_JCV_30FPS, UVG_FILES, Sequence, dataset_sequences

UVG_NAMES = ["Beauty", "Bosphorus", "HoneyBee", "Jockey", "ReadySetGo", "ShakeNDry", "YachtRide"]
# The MCL-JCV frame rates by source number (30 fps ones are the paper's 16).
MCL_JCV_FPS = {i: 30 for i in (1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 19, 26, 27, 28, 30)}
MCL_JCV_FPS.update({i: 25 for i in (5, 6, 7, 8, 9, 18, 20)})
MCL_JCV_FPS.update({i: 24 for i in (17, 21, 22, 23, 24, 25, 29)})


def touch(path: Path, data: bytes = b"") -> Path:
    """Create a file (and its folders) holding `data`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def uvg_file(name: str) -> str:
    """The file name UVG ships for a sequence prefix."""
    return f"{name}_1920x1080_120fps_420_8bit_YUV.yuv"


def make_davis(root: Path, frames: dict[str, int]) -> Path:
    """DAVIS-style JPEG folders with the given (empty) frame counts."""
    for seq, n in frames.items():
        for i in range(n):
            touch(root / "JPEGImages" / "1080p" / seq / f"{i:05d}.jpg")
    return root


DAVIS_FRAMES = {"blackswan": 50, "bmx-trees": 80, "dog": 60, "libby": 49}


def test_registry_lists_the_four_datasets() -> None:
    assert list(DATASETS) == ["samples", "uvg", "davis", "mcl-jcv"]
    assert all(isinstance(v, str) and "\n" not in v for v in DATASETS.values())


def test_samples_need_no_root() -> None:
    seqs = dataset_sequences("samples")
    assert [s.name for s in seqs] == ["bikes", "carphone"]
    assert all(Path(s.path).is_file() and s.dataset == "samples" and s.count is None for s in seqs)
    assert [s.name for s in dataset_sequences("samples", names=["CARPHONE"])] == ["carphone"]


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(TnervError, match="unknown dataset 'kinetics'.*samples, uvg, davis, mcl-jcv"):
        dataset_sequences("kinetics")


@pytest.mark.parametrize("dataset", ["uvg", "davis", "mcl-jcv"])
def test_root_is_required(dataset: str, tmp_path: Path) -> None:
    with pytest.raises(TnervError, match="--data-root DIR"):
        dataset_sequences(dataset)
    with pytest.raises(TnervError, match="root folder not found"):
        dataset_sequences(dataset, tmp_path / "nope")


def test_dataset_name_is_case_insensitive(tmp_path: Path) -> None:
    touch(tmp_path / "videoSRC01_1920x1080_30.yuv")
    assert dataset_sequences("MCL_JCV", tmp_path, names=["videosrc01"])[0].name == "videoSRC01"


def test_uvg_finds_all_seven(tmp_path: Path) -> None:
    for i, prefix in enumerate(UVG_FILES.values()):
        # Files directly in the root or one folder down; case differs from the table name.
        folder = tmp_path if i % 2 else tmp_path / "UVG"
        touch(folder / uvg_file(prefix.lower() if i == 0 else prefix))
    seqs = dataset_sequences("uvg", tmp_path)
    assert [s.name for s in seqs] == UVG_NAMES
    ready = seqs[UVG_NAMES.index("ReadySetGo")]
    assert Path(ready.path).name == uvg_file("ReadySteadyGo")
    assert all(s.yuv_size == (1920, 1080) and s.matrix == "bt709" and s.count is None for s in seqs)
    assert all(s.start == 0 and s.dataset == "uvg" for s in seqs)


def test_uvg_skips_10bit_and_4k_versions(tmp_path: Path) -> None:
    touch(tmp_path / "Beauty_1920x1080_120fps_420_10bit_YUV.yuv")
    touch(tmp_path / "Beauty_3840x2160_120fps_420_8bit_YUV.yuv")
    with pytest.raises(TnervError, match="Beauty not found"):
        dataset_sequences("uvg", tmp_path, names=["Beauty"])
    touch(tmp_path / "sub" / uvg_file("Beauty"))
    (seq,) = dataset_sequences("uvg", tmp_path, names=["beauty"])
    assert Path(seq.path) == tmp_path / "sub" / uvg_file("Beauty")


def test_uvg_missing_names_sequences_and_pattern(tmp_path: Path) -> None:
    for prefix in ["Beauty", "Bosphorus", "HoneyBee", "Jockey", "YachtRide"]:
        touch(tmp_path / uvg_file(prefix))
    with pytest.raises(TnervError) as info:
        dataset_sequences("uvg", tmp_path)
    message = str(info.value)
    assert "ReadySetGo, ShakeNDry not found" in message
    assert uvg_file("ReadySteadyGo") in message and uvg_file("ShakeNDry") in message
    assert "\n" not in message
    # A subset without the missing ones is fine.
    assert [s.name for s in dataset_sequences("uvg", tmp_path, names=["jockey", "Beauty"])] == ["Jockey", "Beauty"]


def test_unknown_sequence_lists_available(tmp_path: Path) -> None:
    with pytest.raises(TnervError, match="no sequence 'Kimono'.*available: Beauty, Bosphorus"):
        dataset_sequences("uvg", tmp_path, names=["Kimono"])


def test_uvg_file_reads_with_its_size(tmp_path: Path) -> None:
    # One grey 1080p I420 frame: the Sequence fields are all read_video needs.
    touch(tmp_path / uvg_file("Jockey"), bytes([128]) * (1920 * 1080 * 3 // 2))
    (seq,) = dataset_sequences("uvg", tmp_path, names=["Jockey"])
    video = read_video(seq.path, start=seq.start, count=seq.count, size=seq.yuv_size, matrix=seq.matrix)
    assert video.frames.shape == (1, 1080, 1920, 3)
    # Limited-range Y=128 with neutral chroma is grey (128 - 16) * 255 / 219 = 130.4.
    assert np.all(np.abs(video.frames.astype(int) - 130) <= 1)


def test_davis_keeps_sequences_with_60_frames(tmp_path: Path) -> None:
    make_davis(tmp_path, DAVIS_FRAMES)
    seqs = dataset_sequences("davis", tmp_path)
    assert [s.name for s in seqs] == ["bmx-trees", "dog"]
    assert all(s.count == 60 and s.start == 0 and s.yuv_size is None and s.matrix is None for s in seqs)
    assert Path(seqs[0].path) == tmp_path / "JPEGImages" / "1080p" / "bmx-trees"


def tiny_jpeg(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A real size x size JPEG of one flat colour, encoded with PyAV's mjpeg encoder."""
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width = codec.height = size
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), rgb, np.uint8), format="rgb24")
    packets = codec.encode(frame.reformat(format="yuvj420p")) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def test_davis_folder_reads_first_60_frames(tmp_path: Path) -> None:
    jpeg = tiny_jpeg((200, 100, 50))
    for i in range(64):
        touch(tmp_path / "JPEGImages" / "1080p" / "dog" / f"{i:05d}.jpg", jpeg)
    (seq,) = dataset_sequences("davis", tmp_path)
    video = read_video(seq.path, start=seq.start, count=seq.count, size=seq.yuv_size, matrix=seq.matrix)
    assert video.frames.shape == (60, 16, 16, 3)
    # JPEG itself is lossy (a few levels of ringing at default quality).
    assert np.all(np.abs(video.frames.astype(int) - (200, 100, 50)) <= 8)


def test_davis_2016_list_file(tmp_path: Path) -> None:
    make_davis(tmp_path, DAVIS_FRAMES)
    lines = [
        f"/JPEGImages/480p/{seq}/{i:05d}.jpg /Annotations/480p/{seq}/{i:05d}.png"
        for seq in ["dog", "blackswan"]
        for i in range(3)
    ]
    touch(tmp_path / "ImageSets" / "480p" / "val.txt", "\n".join(lines).encode())
    # Only listed sequences count (bmx-trees is not in the list); list order is kept.
    assert [s.name for s in dataset_sequences("davis", tmp_path)] == ["dog"]


def test_davis_2017_list_file(tmp_path: Path) -> None:
    make_davis(tmp_path, DAVIS_FRAMES)
    touch(tmp_path / "ImageSets" / "2017" / "val.txt", b"dog\nbmx-trees\n\nlibby\n")
    assert [s.name for s in dataset_sequences("davis", tmp_path)] == ["dog", "bmx-trees"]


def test_davis_listed_sequence_missing(tmp_path: Path) -> None:
    make_davis(tmp_path, DAVIS_FRAMES)
    touch(tmp_path / "ImageSets" / "2017" / "val.txt", b"dog\ncamel\n")
    with pytest.raises(TnervError, match=r"camel not found .*1080p/<sequence>/00000\.jpg"):
        dataset_sequences("davis", tmp_path)


def test_davis_errors(tmp_path: Path) -> None:
    with pytest.raises(TnervError, match=r"no folder .*JPEGImages/1080p"):
        dataset_sequences("davis", tmp_path)
    make_davis(tmp_path, {"blackswan": 50})
    with pytest.raises(TnervError, match="no sequence .* 60 or more"):
        dataset_sequences("davis", tmp_path)
    make_davis(tmp_path, {"dog": 60})
    with pytest.raises(TnervError, match=r"fewer than 60 frames in blackswan \(50\)"):
        dataset_sequences("davis", tmp_path, names=["blackswan"])
    assert [s.name for s in dataset_sequences("davis", tmp_path, names=["DOG"])] == ["dog"]


def test_mcl_jcv_keeps_the_16_at_30_fps(tmp_path: Path) -> None:
    for i, fps in MCL_JCV_FPS.items():
        touch((tmp_path / "ori" if i > 20 else tmp_path) / f"videoSRC{i:02d}_1920x1080_{fps}.yuv")
    seqs = dataset_sequences("mcl-jcv", tmp_path)
    assert len(seqs) == 16 and tuple(s.name for s in seqs) == MCL_JCV_30FPS
    assert all(s.count == 150 and s.yuv_size == (1920, 1080) and s.matrix == "bt709" for s in seqs)
    assert Path(seqs[-1].path) == tmp_path / "ori" / "videoSRC30_1920x1080_30.yuv"


def test_mcl_jcv_missing_names_sequences_and_pattern(tmp_path: Path) -> None:
    touch(tmp_path / "videoSRC01_1920x1080_30.yuv")
    touch(tmp_path / "videoSRC05_1920x1080_25.yuv")
    with pytest.raises(TnervError) as info:
        dataset_sequences("mcl-jcv", tmp_path, names=["videoSRC01", "videoSRC02", "videoSRC03"])
    assert "videoSRC02, videoSRC03 not found" in str(info.value)
    assert "videoSRC<NN>_1920x1080_30.yuv" in str(info.value)
    # A 25 fps source is not one of the 16.
    with pytest.raises(TnervError, match="no sequence 'videoSRC05'"):
        dataset_sequences("mcl-jcv", tmp_path, names=["videoSRC05"])


def test_sequence_is_frozen() -> None:
    seq = Sequence("uvg", "Beauty", "/x.yuv")
    with pytest.raises(AttributeError):
        seq.name = "other"  # type: ignore[misc]
