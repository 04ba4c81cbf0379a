"""Benchmark figures from result records: RD curves, RD small multiples, byte allocation, quality bars.

Figures are built as bare matplotlib Figures on the Agg canvas (pyplot is never imported, so no
window opens and no global figure state builds up). Every method keeps one colour and marker in
every figure (a model's from its card: `tnerv.bench.display`); conventional codecs (records without
parameters) are drawn dashed.
"""

from __future__ import annotations

import io
import math
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tnerv.bench.display import display_of
from tnerv.bench.tables import (
    METRICS,
    Record,
    components_of,
    is_anchor,
    mean,
    method_labels,
    methods_of,
    rd_points,
    scale_label,
    select,
    videos_of,
)
from tnerv.errors import TnervError
from tnerv.files import write_atomic

COMPONENT_COLOURS = {"decoder": "#4c72b0", "grids": "#dd8452", "embeddings": "#55a868", "other": "#8c8c8c"}
_FALLBACK_MARKERS = "osv^DPXh*p<>"
_ABLATION = re.compile(r"tnerv-([A-Za-z])(\d+)")
DPI = 120


def method_style(method: str, anchor: bool = False) -> dict[str, str]:
    """Colour, marker and line style of a method, the same in every figure."""
    shown = display_of(method)  # a model's card or an anchor codec's entry
    ablation = _ABLATION.fullmatch(method)
    if shown is not None:
        colour = shown.colour
    elif ablation:
        # ablation variants: one colour family per letter, darker for higher numbers
        family = {"E": "Blues", "D": "Greens"}.get(ablation.group(1).upper(), "Purples")
        colour = colors.to_hex(colormaps[family](min(0.35 + 0.12 * int(ablation.group(2)), 0.95)))
    else:  # a stable pick from the name, so it does not depend on which records are plotted
        palette = colormaps["tab20"].colors
        colour = colors.to_hex(palette[zlib.crc32(method.encode()) % len(palette)])
    fallback = _FALLBACK_MARKERS[zlib.crc32(method.encode()) % len(_FALLBACK_MARKERS)]
    marker = shown.marker if shown is not None else fallback
    return {"color": colour, "marker": marker, "linestyle": "--" if anchor else "-"}


def _new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save(fig: Figure, out_path: str | Path) -> Path:
    """Write the figure atomically (format from the suffix, PNG by default); return the path."""
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=DPI)
    write_atomic(path, buffer.getvalue())
    return path


def _axis_label(metric: str) -> str:
    """Axis label of a metric, with its unit."""
    name, unit, _ = METRICS[metric]
    return f"{name} [{unit}]" if unit else name


def _rated(records: Sequence[Record], metric: str) -> list[Record]:
    """Records with a rate and the metric."""
    if metric not in METRICS:
        raise TnervError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return [r for r in records if r.get("bpp") is not None and r.get(metric) is not None]


def rd_data(
    records: Sequence[Record], metric: str, video: str | None = None
) -> tuple[dict[str, tuple[list[float], list[float]]], list[str]]:
    """Curves {method: (bpp, quality)} for one video or averaged over videos, and methods left out.

    The average is per rate-point index (points sorted by bpp on each video), so only methods with
    the same number of points on every video are averaged; the others are returned as left out.
    """
    rated = _rated(records, metric)
    curves, left_out = {}, []
    videos = videos_of(rated)
    for method in methods_of(rated):
        if video is not None:
            bpp, quality = rd_points(rated, method, video, metric)
            if bpp:
                curves[method] = (bpp, quality)
            continue
        per_video = [rd_points(rated, method, v, metric) for v in videos]
        counts = {len(bpp) for bpp, _ in per_video}
        if len(counts) != 1 or 0 in counts:
            left_out.append(method)
            continue
        n = counts.pop()
        curves[method] = (
            [mean(p[0][i] for p in per_video) for i in range(n)],
            [mean(p[1][i] for p in per_video) for i in range(n)],
        )
    return curves, left_out


def _draw_rd(ax, records: Sequence[Record], curves: dict[str, tuple[list[float], list[float]]], metric: str) -> None:
    """Draw one line with markers per method."""
    labels = method_labels(records)
    for method, (bpp, quality) in curves.items():
        ax.plot(bpp, quality, label=labels[method], markersize=4, linewidth=1.4,
                **method_style(method, is_anchor(records, method)))
    ax.set_xlabel("bpp")
    ax.set_ylabel(_axis_label(metric))
    ax.grid(True, alpha=0.3)


def rd_curves_figure(records: Sequence[Record], metric: str = "psnr", video: str | None = None) -> Figure:
    """Quality over bpp for one video, or averaged over the videos (Fig. 1)."""
    curves, left_out = rd_data(records, metric, video)
    if not curves:
        raise TnervError(f"no rate-distortion points to plot for {video or 'the average'}")
    videos = videos_of(_rated(records, metric))
    where = video if video is not None else f"Average over {len(videos)} video{'s' * (len(videos) != 1)}"
    fig = _new_figure(6.4, 4.6)
    ax = fig.add_subplot()
    _draw_rd(ax, records, curves, metric)
    ax.set_title(f"{METRICS[metric][0]}: {where}\n{scale_label(records)}", fontsize=9)
    ax.legend(fontsize=8)
    if left_out:
        labels = method_labels(records)
        names = ", ".join(labels[m] for m in left_out)
        fig.text(0.01, 0.005, f"Not averaged (rate points differ across videos): {names}", fontsize=7)
    return fig


def rd_curves(records: Sequence[Record], metric: str, out_path: str | Path, video: str | None = None) -> Path:
    """Write the RD curves of one video (or the average over videos) to out_path."""
    return save(rd_curves_figure(records, metric, video), out_path)


def rd_grid_figure(records: Sequence[Record], metric: str = "psnr") -> Figure:
    """Small multiples of RD curves, one panel per video (Fig. 2)."""
    rated = _rated(records, metric)
    videos = videos_of(rated)
    if not videos:
        raise TnervError("no rate-distortion points to plot")
    cols = min(4, len(videos))
    rows = math.ceil(len(videos) / cols)
    fig = _new_figure(3.4 * cols, 2.8 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, video in zip(axes.flat, videos):
        _draw_rd(ax, records, rd_data(rated, metric, video)[0], metric)
        ax.set_title(video, fontsize=9)
    for ax in list(axes.flat)[len(videos):]:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"{METRICS[metric][0]} over bpp per video\n{scale_label(records)}", fontsize=10)
    return fig


def rd_grid(records: Sequence[Record], metric: str, out_path: str | Path) -> Path:
    """Write RD small multiples (one panel per video) to out_path."""
    return save(rd_grid_figure(records, metric), out_path)


def _point_order(points: list[str]) -> list[str]:
    """Rate points by their number ("lambda=0.01" before "lambda=0.1"), else as they came."""
    def number(point: str) -> float | None:
        try:
            return float(point.rsplit("=", 1)[-1].rstrip("kKmM"))
        except ValueError:
            return None

    values = [number(p) for p in points]
    if None in values:
        return points
    return [p for _, p in sorted(zip(values, points))]


def byte_allocation_figure(records: Sequence[Record], method: str = "tnerv", share: bool = True) -> Figure:
    """Stacked bars per video of each component's share (or bytes), one panel per rate point (Fig. 4)."""
    split = [r for r in records if r["method"] == method and r.get("bytes_by_component")]
    if not split:
        raise TnervError(f"no byte allocation recorded for {method!r}")
    points = _point_order(list(dict.fromkeys(r.get("point") or "" for r in split)))
    components = components_of(split)
    videos = videos_of(split)
    fig = _new_figure(max(3.0 * len(points) + 1.6, 4.5), 3.6)
    axes = fig.subplots(1, len(points), squeeze=False, sharey=True)[0]
    for ax, point in zip(axes, points):
        at_point = {r["video"]: r for r in split if (r.get("point") or "") == point}
        shown = [v for v in videos if v in at_point]
        bottom = [0.0] * len(shown)
        for component in components:
            heights = []
            for v in shown:
                parts = at_point[v]["bytes_by_component"]
                total = sum(parts.values()) or 1
                size = parts.get(component, 0)
                heights.append(100 * size / total if share else size / 1000)
            colour = COMPONENT_COLOURS.get(component, method_style(component)["color"])
            ax.bar(range(len(shown)), heights, bottom=bottom, color=colour, label=component, width=0.7)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_xticks(range(len(shown)), shown, rotation=45, ha="right", fontsize=8)
        bpp = mean(at_point[v].get("bpp") for v in shown)
        ax.set_title(point + ("" if math.isnan(bpp) else f" ({bpp:.3g} bpp)"), fontsize=9)
    axes[0].set_ylabel("share of bytes [%]" if share else "kB")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    label = method_labels(split)[method]
    fig.suptitle(f"Byte allocation of {label}\n{scale_label(records)}", fontsize=10)
    return fig


def byte_allocation(records: Sequence[Record], out_path: str | Path, method: str = "tnerv", share: bool = True) -> Path:
    """Write the byte-allocation bars of one method to out_path."""
    return save(byte_allocation_figure(records, method, share), out_path)


def quality_bars_figure(records: Sequence[Record], metric: str = "psnr") -> Figure:
    """Grouped bars: one group per video (and the average), one bar per method (a picture of Tab. 1)."""
    if metric not in METRICS:
        raise TnervError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    scored = [r for r in records if r.get(metric) is not None]
    methods, videos = methods_of(scored), videos_of(scored)
    if not methods:
        raise TnervError(f"no {metric} values to plot")
    labels = method_labels(scored)
    groups = [*videos, "Avg."]
    fig = _new_figure(max(6.4, 1.0 + 0.35 * len(groups) * len(methods)), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    finite = []
    for k, method in enumerate(methods):
        per_video = [mean(r[metric] for r in scored if r["method"] == method and r["video"] == v) for v in videos]
        heights = [*per_video, mean(per_video)]
        finite += [h for h in heights if math.isfinite(h)]
        xs = [g - 0.4 + width * (k + 0.5) for g in range(len(groups))]
        colour = method_style(method, is_anchor(scored, method))["color"]
        ax.bar(xs, [h if math.isfinite(h) else 0 for h in heights], width=width, color=colour, label=labels[method])
    if finite:
        # differences are small next to the values, so the axis starts near the lowest bar
        low, high = min(finite), max(finite)
        pad = max((high - low) * 0.15, 0.5 if metric == "psnr" else 0.002)
        ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0, fontsize=8)
    ax.set_ylabel(_axis_label(metric))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"{METRICS[metric][0]} per video\n{scale_label(records)}", fontsize=9)
    return fig


def quality_bars(records: Sequence[Record], metric: str, out_path: str | Path) -> Path:
    """Write grouped quality bars (videos x methods) to out_path."""
    return save(quality_bars_figure(records, metric), out_path)


def figures_for(records: Sequence[Record], bench: str, reference: str = "tnerv") -> list[tuple[str, str, Figure]]:
    """The figures that fit a bench kind, as (file stem, caption, figure)."""
    records = select(records, bench)
    figures = []
    if bench != "compression":
        for metric in METRICS:
            if any(r.get(metric) is not None for r in records):
                figures.append((f"bars_{metric}", f"{METRICS[metric][0]} per video and method",
                                quality_bars_figure(records, metric)))
        return figures
    for metric in METRICS:
        if _rated(records, metric):
            name = METRICS[metric][0]
            figures += [
                (f"rd_{metric}", f"{name} over bpp, averaged over videos", rd_curves_figure(records, metric)),
                (f"rd_grid_{metric}", f"{name} over bpp per video", rd_grid_figure(records, metric)),
            ]
    split = [m for m in methods_of(records) if any(r.get("bytes_by_component") for r in records if r["method"] == m)]
    if split:
        method = reference if reference in split else split[0]
        figures.append((f"bytes_{method}", f"Byte allocation of {method_labels(records)[method]} per rate point",
                        byte_allocation_figure(records, method)))
    return figures


def write_plots(records: Sequence[Record], out_dir: str | Path, bench: str, reference: str = "tnerv") -> list[Path]:
    """Write the figures that fit the bench as <name>.png into out_dir; return the paths."""
    return [save(fig, Path(out_dir) / f"{name}.png") for name, _, fig in figures_for(records, bench, reference)]


def file_allocation_figure(info: dict[str, Any]) -> Figure:
    """One bar of a .tnrv file's bytes per component (`tnerv.decode.inspect_file`), as supplementary Fig. 4."""
    parts = {k: v for k, v in info["bytes_by_component"].items() if v > 0}
    total = sum(parts.values())
    fig = _new_figure(7, 1.8)
    ax = fig.add_subplot()
    left = 0.0
    for name, value in parts.items():
        share = 100 * value / total
        ax.barh(0, share, left=left, color=COMPONENT_COLOURS.get(name, "#999999"), label=f"{name} {share:.1f}%")
        left += share
    ax.set_xlim(0, 100)
    ax.set_yticks([])
    ax.set_xlabel("share of the file's bytes (%)")
    ax.set_title(f"{Path(info['path']).name}: {info['bytes']:,} bytes, {info['bpp']:.4f} bpp ({info['model']})")
    fig.legend(loc="outside lower center", ncol=len(parts), frameon=False)
    return fig


def file_allocation(info: dict[str, Any], out_path: str | Path) -> Path:
    """Writes `file_allocation_figure` (PNG, or the suffix's format); returns the path."""
    return save(file_allocation_figure(info), out_path)
