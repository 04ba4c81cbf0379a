"""The paper's evaluation settings as data (supplementary Appendix C): each setting's frame size, frame
count and size budget, and the geometry every model takes in it. Where a model departs from a setting's common geometry, its card says
so (`ModelCard.settings`). A model's config in a setting follows from these by the size rule (`tnerv.models.budget.setting_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tnerv.errors import TnervError
from tnerv.models.base import ModelConfig
from tnerv.models.registry import load_preset, model_class

# The settings' budgets are met within this: integer widths move a size in steps (FFNeRV's grid channels by
# up to 4% at 3M); the sizes reached are mostly within 1% (see size_table), as the paper reports them.
SETTING_TOLERANCE = 0.03


@dataclass(frozen=True)
class Setting:
    """One evaluation setting of the paper."""

    name: str
    height: int
    width: int
    budget: int  # transmitted parameters
    num_frames: int  # the default frame count (the size of content-aware models depends on it)
    description: str


SETTINGS = {
    s.name: s
    for s in (
        Setting("setting1", 720, 1280, 12_400_000, 600, "UVG at 1280x720, 12.4M parameters (supp. C.2, Tab. 1)"),
        Setting("setting2", 960, 1920, 3_000_000, 600, "UVG at 1920x960, 3.0M parameters (supplementary C.3, Tab. 1)"),
        Setting("davis", 1080, 1920, 2_000_000, 60, "DAVIS validation at 1920x1080, first 60 frames, 2M (Tab. 4)"),
        Setting("mcl-jcv", 720, 1280, 5_000_000, 150, "MCL-JCV at 1280x720, 150 frames, 5M (Tab. 4)"),
        Setting("uvg-1080p", 1080, 1920, 9_300_000, 600, "UVG at 1920x1080 for compression, 9.3M (supp. Tab. 8, Fig. 4)"),
    )
}

# The geometry every model takes in a setting unless its card says otherwise (`ModelCard.settings`):
# 16:9 frames keep the 720p latent's 9x16 (C.2: strides 5,2,2,2,2 at 720p, 5,3,2,2,2 at 1080p as
# T-NeRV's Tab. 8); 2:1 frames get an 8x16 latent with strides 5,3,2,2,2 (C.3).
_STRIDES_16_9 = {720: (5, 2, 2, 2, 2), 1080: (5, 3, 2, 2, 2)}
_COMMON_GEOMETRY: dict[str, dict[str, Any]] = {
    "setting1": {"strides": _STRIDES_16_9[720]},
    "setting2": {"strides": (5, 3, 2, 2, 2)},
    "davis": {"strides": _STRIDES_16_9[1080]},
    "mcl-jcv": {"strides": _STRIDES_16_9[720]},
    "uvg-1080p": {"strides": _STRIDES_16_9[1080]},
}


def get_setting(name: str) -> Setting:
    """A setting by name; a clear error for an unknown one."""
    if name not in SETTINGS:
        raise TnervError(f"unknown setting {name!r}; available: {', '.join(SETTINGS)}")
    return SETTINGS[name]


def setting_reference(model: str, setting: str) -> tuple[ModelConfig, dict[str, Any], str | None]:
    """The reference config a setting derives a model's config from (the preset the setting names for
    it, a published config, else the reference preset on the model's card), the setting's geometry for
    the model, and the name of the preset the setting names, if any."""
    card = model_class(model).card
    overrides = {**_COMMON_GEOMETRY[setting], **card.settings.get(setting, {})}
    named = overrides.pop("preset", None)
    return load_preset(named or card.reference_preset).config(), overrides, named
