"""Model registry and presets: `create_model(name, config)`, `list_models()`, TOML presets."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from collections.abc import Callable
from typing import Any

from tnerv.errors import TnervError
from tnerv.models.base import ModelConfig, VideoINR, check_config, config_from_dict
from tnerv.models.card import ModelCard

_MODELS: dict[str, type[VideoINR]] = {}


def register_model(cls: type[VideoINR]) -> type[VideoINR]:
    """Class decorator that makes a model available to `create_model` under `cls.name`."""
    # The benches and settings look a model up by name only, so a model without its card would fail
    # far from here (in a figure, or in a setting's config); refuse it where it is defined.
    if not isinstance(getattr(cls, "card", None), ModelCard):
        raise TypeError(f"model {cls.name!r} has no card (card = ModelCard(...) on {cls.__name__})")
    _MODELS[cls.name] = cls
    return cls


def _unknown(kind: str, name: str, known: list[str]) -> TnervError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return TnervError(f"unknown {kind} {name!r}{hint}; available: {', '.join(known)}")


def list_models() -> list[str]:
    """Names of every registered model."""
    return sorted(_MODELS)


def model_class(name: str) -> type[VideoINR]:
    """The class registered under a model name; a clear error for an unknown one."""
    if name not in _MODELS:
        raise _unknown("model", name, list_models())
    return _MODELS[name]


def model_card(name: str) -> ModelCard | None:
    """A registered model's card; None for any other method (an anchor codec, an ablated T-NeRV)."""
    cls = _MODELS.get(name)
    return cls.card if cls is not None else None


def make_config(name: str, values: dict[str, Any] | None = None) -> ModelConfig:
    """A model's config dataclass from plain data (unknown fields are an error)."""
    return config_from_dict(model_class(name).config_class, dict(values or {}), name)


def create_model(name: str, config: ModelConfig | dict[str, Any] | None = None) -> VideoINR:
    """Builds a registered model from its config (a dataclass or plain data)."""
    cls = model_class(name)
    return _checked_build(name, cls, config)


def create_decoder(name: str, config: ModelConfig | dict[str, Any]) -> VideoINR:
    """The decoder side of a registered model (what `from_transmitted` fills), untrained."""
    return _checked_build(name, model_class(name).build_decoder, config)


def _checked_build(name: str, build: Callable[[ModelConfig], VideoINR], config: ModelConfig | dict[str, Any] | None) -> VideoINR:
    if not isinstance(config, ModelConfig):
        config = make_config(name, config)
    check_config(config, name)
    try:
        return build(config)
    except (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError, AssertionError) as exc:
        # A config whose fields each look fine may still not fit together (a negative width after
        # rounding, strides that do not divide the frame): the user's mistake, said in one line.
        raise TnervError(f"the config does not build a {name} model: {exc}") from None


@dataclass
class Preset:
    """A named configuration: the model, its config, the video it was designed for, its training recipe."""

    name: str
    model: str
    description: str
    model_config: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> ModelConfig:
        """The model config of this preset with some fields replaced (e.g. the actual frame size)."""
        return make_config(self.model, {**self.model_config, **overrides})


def _preset_files() -> dict[str, Any]:
    folder = resources.files("tnerv.models") / "presets"
    return {p.name.removesuffix(".toml"): p for p in folder.iterdir() if p.name.endswith(".toml")}


def list_presets(model: str | None = None) -> list[str]:
    """Names of every preset, or of one model's presets."""
    return sorted(n for n in _preset_files() if model is None or load_preset(n).model == model)


def load_preset(name: str) -> Preset:
    """Reads a preset TOML file that ships with the package."""
    files = _preset_files()
    if name not in files:
        raise _unknown("preset", name, sorted(files))
    data = tomllib.loads(files[name].read_text())
    return Preset(
        name=name,
        model=data["model"],
        description=data.get("description", ""),
        model_config=data.get("config", {}),
        train=data.get("train", {}),
    )
