"""Scaling a model config to a parameter budget by its width knob, keeping its split between components."""

from __future__ import annotations

import math
from typing import Any

from tnerv.errors import TnervError
from tnerv.models.counting import transmitted_parts


def scale_width(width: int, factor: float, minimum: int = 1) -> int:
    """A channel width scaled by `factor`, rounded, at least `minimum`: the unit of every scale_widths."""
    return max(minimum, round(width * factor))


def solve_for_budget(
    model: str, config: Any, budget: int, tolerance: float = 0.01, knob: Any = None
) -> tuple[Any, int]:
    """The config scaled to `budget` transmitted parameters at its resolution and frame count, and the
    size reached. Bisects (in log space) on the model's knob `scale_widths(config, factor)` (or on
    `knob(config, factor)` where given), which keeps the model's split between components; a model
    without that knob but with a budget-aware `scale_config(config, budget)` (T-NeRV) is scaled by
    it. Raises if no config comes within `tolerance` (relative) of the budget."""
    from tnerv.models.registry import model_class

    if budget <= 0:
        raise TnervError(f"the size budget must be positive, got {budget}")
    cls = model_class(model)

    def size(cfg: Any) -> int:
        return transmitted_parts(model, cfg)["transmitted"]

    try:
        (knob or cls.scale_widths)(config, 1.0)
    except NotImplementedError:
        if not hasattr(cls, "scale_config"):
            raise TnervError(f"model {model!r} has no size knob (scale_widths) to solve for a budget") from None
        best = cls.scale_config(config, budget)
        reached = size(best)
    else:
        cache: dict[float, tuple[Any, int]] = {}

        def at(factor: float) -> tuple[Any, int]:
            if factor not in cache:
                cfg = (knob or cls.scale_widths)(config, factor)
                cache[factor] = (cfg, size(cfg))
            return cache[factor]

        lo, hi = 1.0, 1.0
        while at(lo)[1] > budget and lo > 1e-4:
            lo /= 2
        while at(hi)[1] < budget and hi < 1e4:
            hi *= 2
        for _ in range(60):
            if hi / lo < 1 + 1e-7:
                break
            mid = math.sqrt(lo * hi)
            if at(mid)[1] < budget:
                lo = mid
            else:
                hi = mid
        best, reached = min(cache.values(), key=lambda item: abs(item[1] - budget))
    if abs(reached / budget - 1) > tolerance:
        raise TnervError(
            f"{model} cannot be scaled to {budget:,} parameters at {config.height}x{config.width}, "
            f"{config.num_frames} frames within {tolerance:.1%} (closest: {reached:,}); its fixed parts "
            f"(positional encodings, heads, embeddings) may be too large for the budget"
        )
    return best, reached


def solve_ablated_for_budget(
    model: str, config: Any, ablations: list[str] | tuple[str, ...], budget: int, tolerance: float = 0.01
) -> tuple[Any, int, dict[str, tuple[Any, Any]]]:
    """The config with `ablations` applied at `budget` transmitted parameters, the size reached and the
    widths the ablations changed ({field: (full model's, ablated's)}). The full model is scaled to the
    budget first and the ablation changes only what it names, plus the widths the model says take up
    the budget it frees or needs (T-NeRV: `TNeRV.ablate_at_budget`); no ablations: `solve_for_budget`."""
    from tnerv.models.registry import model_class

    full, reached = solve_for_budget(model, config, budget, tolerance)
    if not ablations:
        return full, reached, {}
    return model_class(model).ablate_at_budget(full, list(ablations), budget, tolerance)
