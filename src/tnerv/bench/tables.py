"""Benchmark tables from result records: markdown (best **bold**, second <u>underlined</u>) and CSV.

Every function takes the bench runner's records (one dict per run: bench, scale_label, dataset,
video, method, method_label, point, parameters, split, psnr, ms_ssim, ms_ssim_variant, bpp, num_bytes,
bytes_by_component, encode_seconds, decode_fps, ...) and never reads runs itself. Methods and
videos keep the order in which they first appear in the records unless an order is given.

Emphasis follows the paper: per column (per row in the timing table) the best value is bold and
the second best underlined, ranked on the values as displayed, so that entries printed alike are
marked alike; a tie for the best leaves no second place. Underlining needs three or more values;
with two it would only mark the worse one.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tnerv import bjontegaard
from tnerv.bench.protocols import BENCHES, format_size
from tnerv.errors import TnervError
from tnerv.files import write_atomic

Record = dict[str, Any]

# metric key -> (display name, unit, decimals)
METRICS = {"psnr": ("PSNR", "dB", 2), "ms_ssim": ("MS-SSIM", "", 4)}
# Order of the byte-allocation components; others follow in order of appearance.
COMPONENTS = ("decoder", "grids", "embeddings", "other")
MISSING = "–"  # no record for this cell
UNDEFINED = "n/a"  # a value that could not be computed (e.g. RD curves that do not overlap)
NA_NOTE = "n/a = curves that do not overlap or have too few points (cubic: 4)"


@dataclass
class Cell:
    """One table entry: display text, the number behind it (None for labels) and its emphasis."""

    text: str
    value: float | None = None  # nan where the entry is missing or undefined
    emphasis: str = ""  # "best", "second" or ""


@dataclass
class Table:
    """A titled table of cells, with a caption that names the scale and the MS-SSIM variant."""

    name: str  # file stem, e.g. "quality_psnr"
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""

    def numeric_columns(self) -> list[bool]:
        """Which columns hold numbers (right-aligned)."""
        return [any(row[j].value is not None for row in self.rows) for j in range(len(self.columns))]

    def to_markdown(self) -> str:
        """GitHub markdown: bold title, the table, and the caption in italics underneath."""
        align = ["--:" if numeric else ":--" for numeric in self.numeric_columns()]
        lines = [f"**{_md(self.title)}**", ""]
        lines.append("| " + " | ".join(_md(c) for c in self.columns) + " |")
        lines.append("|" + "|".join(align) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
        if self.caption:
            lines += ["", f"*{_md(self.caption)}*"]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV with a header row and plain numbers (full precision, nan where undefined)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([cell.text if cell.value is None else cell.value for cell in row])
        return buffer.getvalue()


def _md(text: str) -> str:
    """Escape text for a markdown table: HTML specials and the characters markdown acts on."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char in "\\|*_`":
        text = text.replace(char, "\\" + char)
    return text


def _md_cell(cell: Cell) -> str:
    """A cell's markdown with its emphasis."""
    text = _md(cell.text)
    if cell.emphasis == "best":
        return f"**{text}**"
    if cell.emphasis == "second":
        return f"<u>{text}</u>"
    return text


# ---------------------------------------------------------------------------------------------
# Record helpers shared with plots and report


def ordered(values: Iterable[str]) -> list[str]:
    """Unique values in order of first appearance."""
    return list(dict.fromkeys(values))


def methods_of(records: Sequence[Record]) -> list[str]:
    """Method keys in order of first appearance."""
    return ordered(r["method"] for r in records)


def videos_of(records: Sequence[Record]) -> list[str]:
    """Video names in order of first appearance."""
    return ordered(r["video"] for r in records)


def method_labels(records: Sequence[Record]) -> dict[str, str]:
    """Display name of each method (the first label seen; the key where there is none)."""
    labels: dict[str, str] = {}
    for r in records:
        labels.setdefault(r["method"], r.get("method_label") or r["method"])
    return labels


def is_anchor(records: Sequence[Record], method: str) -> bool:
    """A conventional codec (x265, ...): no transmitted parameters in any of its records."""
    own = [r for r in records if r["method"] == method]
    return bool(own) and all(r.get("parameters") is None for r in own)


def scale_label(records: Sequence[Record]) -> str:
    """The records' scale label(s), e.g. "CPU scale: 144x256, 32 frames, ..."."""
    labels = ordered(str(r.get("scale_label") or r.get("scale") or "") for r in records)
    return "; ".join(label for label in labels if label) or "scale not recorded"


def msssim_variant(records: Sequence[Record]) -> str:
    """The MS-SSIM variant(s) the records were scored with."""
    variants = ordered(str(r.get("ms_ssim_variant") or "") for r in records)
    return ", ".join(v for v in variants if v) or "not recorded"


def dataset_of(records: Sequence[Record]) -> str:
    """The records' dataset name(s)."""
    return ", ".join(ordered(str(r.get("dataset") or "") for r in records))


def caption_for(records: Sequence[Record], note: str = "") -> str:
    """A caption naming the scale and the MS-SSIM variant, after an optional note."""
    parts = [note] if note else []
    parts += [scale_label(records), f"MS-SSIM: {msssim_variant(records)}"]
    return ". ".join(p.rstrip(".") for p in parts) + "."


def select(records: Sequence[Record], bench: str) -> list[Record]:
    """The records of one bench kind (records without a bench field are kept)."""
    if bench not in BENCHES:
        raise TnervError(f"unknown bench {bench!r}; expected one of {', '.join(BENCHES)}")
    return [r for r in records if r.get("bench", bench) == bench]


def metric_info(metric: str) -> tuple[str, str, int]:
    """(display name, unit, decimals) of a metric key."""
    if metric not in METRICS:
        raise TnervError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return METRICS[metric]


def mean(values: Iterable[float | None]) -> float:
    """Mean of the values that are there (not None, not nan); nan when none are."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return math.fsum(kept) / len(kept) if kept else math.nan


def number(value: float | None, decimals: int, suffix: str = "") -> Cell:
    """A numeric cell: "–" for a missing value, "n/a" for nan."""
    if value is None:
        return Cell(MISSING, math.nan)
    if math.isnan(value):
        return Cell(UNDEFINED, math.nan)
    return Cell(f"{value:.{decimals}f}{suffix}", value)


COLLAPSED = " (collapsed)"


def flag_collapsed(cell: Cell, records: Iterable[Record]) -> Cell:
    """The quality cell of these records, marked when any of their fits collapsed (stuck near the
    mean frame: `tnerv.train.collapse_verdict`)."""
    if any(r.get("collapsed") for r in records):
        cell.text += COLLAPSED
    return cell


def mark(cells: Sequence[Cell], higher_is_better: bool = True, decimals: int | None = None) -> None:
    """Bold the best and underline the second-best of these cells, ranked as displayed."""
    def key(cell: Cell) -> float:
        value = float(cell.value)
        return round(value, decimals) if decimals is not None and math.isfinite(value) else value

    ranked = [c for c in cells if c.value is not None and not math.isnan(c.value)]
    if len(ranked) < 2:
        return
    levels = sorted({key(c) for c in ranked}, reverse=higher_is_better)
    best = [c for c in ranked if key(c) == levels[0]]
    for cell in best:
        cell.emphasis = "best"
    # a tie for the best leaves no second place (ranks 1, 1, 3)
    if len(best) == 1 and len(ranked) >= 3 and len(levels) > 1:
        for cell in ranked:
            if key(cell) == levels[1]:
                cell.emphasis = "second"


SPLIT_COLUMN = "Split D/G/E %"


def has_split(records: Sequence[Record]) -> bool:
    """Whether any record carries the split of its parameters (records before it was recorded do not)."""
    return any(r.get("split") for r in records)


def split_text(records: Sequence[Record]) -> str:
    """The records' mean split of the transmitted parameters as "D/G/E" percent (decoder, grids,
    embeddings), e.g. "60/16/24"; "–" where none has one."""
    splits = [r["split"] for r in records if r.get("split")]
    if not splits:
        return MISSING
    return "/".join(f"{mean(s.get(k) for s in splits):.0f}" for k in ("decoder", "grids", "embeddings"))


def _values(records: Sequence[Record], method: str, video: str, field: str) -> list[float]:
    """One field of a method's records of one video (None entries dropped)."""
    return [r[field] for r in records if r["method"] == method and r["video"] == video and r.get(field) is not None]


# ---------------------------------------------------------------------------------------------
# Tables


def quality_table(
    records: Sequence[Record],
    metric: str = "psnr",
    methods: Sequence[str] | None = None,
    videos: Sequence[str] | None = None,
) -> Table:
    """Quality per method (rows) and video (columns) with Size and Avg. columns, as Tab. 1/2/4."""
    name, unit, decimals = metric_info(metric)
    methods = list(methods) if methods is not None else methods_of(records)
    videos = list(videos) if videos is not None else videos_of(records)
    labels = method_labels(records)
    with_split = has_split(records)  # decoder / grids / embeddings: the proportions each model ran with
    rows = []
    for method in methods:
        per_video = [mean(_values(records, method, v, metric)) for v in videos]
        params = mean(r.get("parameters") for r in records if r["method"] == method)
        size = Cell(MISSING, math.nan) if math.isnan(params) else Cell(format_size(params), round(params))
        cells = [
            flag_collapsed(number(None if math.isnan(q) else q, decimals),
                           (r for r in records if r["method"] == method and r["video"] == v))
            for q, v in zip(per_video, videos)
        ]
        avg = mean(per_video)  # over the videos this method has
        avg_cell = flag_collapsed(number(None if math.isnan(avg) else avg, decimals),
                                  (r for r in records if r["method"] == method and r["video"] in videos))
        split = [Cell(split_text([r for r in records if r["method"] == method]))] if with_split else []
        rows.append([Cell(labels.get(method, method)), size, *split, *cells, avg_cell])
    first = 3 if with_split else 2
    for j in range(first, first + len(videos) + 1):
        mark([row[j] for row in rows], True, decimals)
    heading = f"{name} [{unit}]" if unit else name
    return Table(
        name=f"quality_{metric}",
        title=f"{heading} per video ({dataset_of(records)})",
        columns=["Model", "Size", *([SPLIT_COLUMN] if with_split else []), *videos, "Avg."],
        rows=rows,
        caption=caption_for(records, "Best per column in bold, second-best underlined; Avg. over the videos each has"),
    )


def rd_points(records: Sequence[Record], method: str, video: str, metric: str) -> tuple[list[float], list[float]]:
    """(bpp, quality) of a method's rate points on one video, sorted by bpp."""
    points = sorted(
        (r["bpp"], r[metric])
        for r in records
        if r["method"] == method and r["video"] == video and r.get("bpp") is not None and r.get(metric) is not None
    )
    return [p[0] for p in points], [p[1] for p in points]


def bd_per_video(
    records: Sequence[Record], reference: str, other: str, metric: str = "psnr", method: str = "cubic"
) -> dict[str, tuple[float, float]]:
    """{video: (BD-Rate %, BD-quality)} of `reference` against `other` on the videos both have."""
    if method not in bjontegaard.METHODS:  # checked here, as per-video errors only mean n/a
        raise TnervError(f"unknown BD method {method!r}; expected one of {', '.join(bjontegaard.METHODS)}")
    result = {}
    for video in videos_of(records):
        anchor_rate, anchor_q = rd_points(records, other, video, metric)
        test_rate, test_q = rd_points(records, reference, video, metric)
        if not anchor_rate or not test_rate:
            continue
        curves = (anchor_rate, anchor_q, test_rate, test_q)
        result[video] = (_bd(bjontegaard.bd_rate, curves, method), _bd(bjontegaard.bd_psnr, curves, method))
    return result


def _bd(statistic: Any, curves: tuple[list[float], ...], method: str) -> float:
    """One BD statistic; nan where the curves admit no fit (too few or repeated points)."""
    try:
        return statistic(*curves, method=method)
    except TnervError:  # undefined for this video, which the table shows as n/a
        return math.nan


def _compression(records: Sequence[Record]) -> list[Record]:
    """Records that carry a rate."""
    return [r for r in records if r.get("bpp") is not None]


def _bd_setup(records: Sequence[Record], reference: str, metric: str) -> tuple[list[Record], list[str], str, int]:
    """Compression records, the methods compared against the reference, quality label, decimals."""
    rated = _compression(records)
    methods = methods_of(rated)
    if reference not in methods:
        raise TnervError(f"no compression records of the reference method {reference!r}")
    name, unit, decimals = metric_info(metric)
    label = f"BD-{name} [{unit}]" if unit else f"BD-{name}"
    return rated, [m for m in methods if m != reference], label, decimals


def bd_table(records: Sequence[Record], reference: str = "tnerv", metric: str = "psnr", method: str = "cubic") -> Table:
    """BD-Rate and BD-quality of the reference against every other method, averaged over videos (Tab. 3)."""
    rated, others, quality_label, decimals = _bd_setup(records, reference, metric)
    labels = method_labels(rated)
    rate_row, quality_row = [Cell("BD-Rate [%]")], [Cell(quality_label)]
    for other in others:
        per_video = bd_per_video(rated, reference, other, metric, method)
        rate_row.append(number(bjontegaard.average_bd({v: s[0] for v, s in per_video.items()}), 2, "%"))
        quality_row.append(number(bjontegaard.average_bd({v: s[1] for v, s in per_video.items()}), decimals))
    ref = labels[reference]
    note = (
        f"{ref} against each method ({method} fit of {METRICS[metric][0]} over bpp, mean over videos): "
        f"negative BD-Rate = {ref} needs fewer bits for the same quality; {NA_NOTE}"
    )
    return Table(
        name=f"bd_{metric}" + ("" if method == "cubic" else f"_{method}"),
        title=f"Bjøntegaard statistics for {ref} ({METRICS[metric][0]}, {method}, {dataset_of(rated)})",
        columns=["Metric", *(labels[m] for m in others)],
        rows=[rate_row, quality_row],
        caption=caption_for(rated, note),
    )


def bd_table_per_video(
    records: Sequence[Record], reference: str = "tnerv", metric: str = "psnr", method: str = "cubic", stat: str = "rate"
) -> Table:
    """One BD statistic ("rate" or "quality") of the reference per video (rows) and method (columns)."""
    if stat not in ("rate", "quality"):
        raise TnervError(f"unknown BD statistic {stat!r}; expected 'rate' or 'quality'")
    rated, others, quality_label, decimals = _bd_setup(records, reference, metric)
    labels = method_labels(rated)
    index, digits, suffix = (0, 2, "%") if stat == "rate" else (1, decimals, "")
    per_method = {m: bd_per_video(rated, reference, m, metric, method) for m in others}
    rows = []
    for video in videos_of(rated):
        values = [per_method[m][video][index] if video in per_method[m] else None for m in others]
        rows.append([Cell(video), *(number(v, digits, suffix) for v in values)])
    average = [bjontegaard.average_bd({v: s[index] for v, s in per_method[m].items()}) for m in others]
    rows.append([Cell("Avg."), *(number(a, digits, suffix) for a in average)])
    stat_label = "BD-Rate [%]" if stat == "rate" else quality_label
    ref = labels[reference]
    return Table(
        name=f"bd_{metric}_{stat}_by_video" + ("" if method == "cubic" else f"_{method}"),
        title=f"{stat_label} of {ref} per video ({METRICS[metric][0]}, {method}, {dataset_of(rated)})",
        columns=["Video", *(labels[m] for m in others)],
        rows=rows,
        caption=caption_for(rated, f"{ref} against each method, {method} fit; {NA_NOTE}"),
    )


def timing_table(records: Sequence[Record], methods: Sequence[str] | None = None) -> Table:
    """Encoding minutes and decoding fps per method, averaged over videos (Tab. 5)."""
    methods = list(methods) if methods is not None else methods_of(records)
    videos = videos_of(records)
    labels = method_labels(records)
    enc_row, dec_row = [Cell("Enc. [min]")], [Cell("Dec. [fps]")]
    for method in methods:
        # mean per video first, so a video timed twice does not weigh double
        minutes = mean(mean(s / 60 for s in _values(records, method, v, "encode_seconds")) for v in videos)
        fps = mean(mean(_values(records, method, v, "decode_fps")) for v in videos)
        enc_row.append(number(None if math.isnan(minutes) else minutes, 1))
        dec_row.append(number(None if math.isnan(fps) else fps, 1))
    mark(enc_row[1:], higher_is_better=False, decimals=1)
    mark(dec_row[1:], higher_is_better=True, decimals=1)
    sizes = ordered(f"{r['height']}x{r['width']}" for r in records if r.get("height") and r.get("width"))
    return Table(
        name="timing",
        title=f"Encoding/decoding speed ({dataset_of(records)}, {', '.join(sizes) or 'size not recorded'})",
        columns=["Metric", *(labels.get(m, m) for m in methods)],
        rows=[enc_row, dec_row],
        caption=caption_for(records, "Mean over videos; fastest in bold, second underlined"),
    )


def rd_points_table(records: Sequence[Record]) -> Table:
    """Every compression record: video, method, rate point, bpp, PSNR, MS-SSIM, bytes."""
    rated = _compression(records)
    labels = method_labels(rated)
    video_rank = {v: i for i, v in enumerate(videos_of(rated))}
    method_rank = {m: i for i, m in enumerate(methods_of(rated))}
    with_split = has_split(rated)
    rows = []
    for r in sorted(rated, key=lambda r: (video_rank[r["video"]], method_rank[r["method"]], r["bpp"])):
        size = r.get("num_bytes")
        rows.append([
            Cell(r["video"]),
            Cell(labels[r["method"]]),
            Cell(r.get("point") or ""),
            number(r["bpp"], 4),
            flag_collapsed(number(r.get("psnr"), 2), [r]),
            flag_collapsed(number(r.get("ms_ssim"), 4), [r]),
            Cell(MISSING, math.nan) if size is None else Cell(f"{size:,}", size),
            *([Cell(split_text([r]))] if with_split else []),
        ])
    return Table(
        name="rd_points",
        title=f"Rate-distortion points ({dataset_of(rated)})",
        columns=[
            "Video", "Method", "Point", "bpp", "PSNR [dB]", "MS-SSIM", "Bytes", *([SPLIT_COLUMN] if with_split else [])
        ],
        rows=rows,
        caption=caption_for(rated),
    )


def components_of(records: Sequence[Record]) -> list[str]:
    """Byte-allocation components present, in the usual order, unknown ones after."""
    seen = ordered(k for r in records for k in (r.get("bytes_by_component") or {}))
    return [c for c in COMPONENTS if c in seen] + [c for c in seen if c not in COMPONENTS]


def byte_allocation_table(records: Sequence[Record]) -> Table:
    """Bytes (and share) of each component per video, method and rate point (numbers of Fig. 4)."""
    split = [r for r in records if r.get("bytes_by_component")]
    components = components_of(split)
    labels = method_labels(split)
    rows = []
    for r in split:
        parts = r["bytes_by_component"]
        total = sum(parts.values())
        cells = []
        for c in components:
            size = parts.get(c)
            share = 100 * size / total if size is not None and total else 0.0
            cells.append(Cell(MISSING, math.nan) if size is None else Cell(f"{size:,} ({share:.1f}%)", size))
        key = [Cell(r["video"]), Cell(labels[r["method"]]), Cell(r.get("point") or "")]
        rows.append([*key, Cell(f"{total:,}", total), *cells])
    return Table(
        name="byte_allocation",
        title=f"Byte allocation per component ({dataset_of(split)})",
        columns=["Video", "Method", "Point", "Total [B]", *(f"{c} [B]" for c in components)],
        rows=rows,
        caption=caption_for(split, "Bytes of each component (share of the total)"),
    )


def _width_change(field: str, change: Sequence[Any]) -> str:
    before, after = (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in change)
    return f"{field} {before} -> {after}"


def ablation_widths_table(records: Sequence[Record]) -> Table:
    """Per ablated T-NeRV, the widths its ablation changed from the full model's at the same size."""
    ablated = [r for r in records if r.get("ablations")]
    labels = method_labels(ablated)
    rows = []
    for method in methods_of(ablated):
        # One config per frame count: videos of another length may have other widths.
        changes = ordered(
            "; ".join(_width_change(f, c) for f, c in (r.get("widths_changed") or {}).items()) or "none"
            for r in ablated if r["method"] == method
        )
        rows.append([Cell(labels[method]), Cell(" | ".join(changes))])
    return Table(
        name="ablation_widths",
        title="Widths the ablations changed",
        columns=["Model", "Widths changed (full T-NeRV's -> ablated)"],
        rows=rows,
        caption=caption_for(ablated, "Every other width is the full T-NeRV's at the same size"),
    )


def tables_for(records: Sequence[Record], bench: str, reference: str = "tnerv") -> list[Table]:
    """The tables that fit a bench kind, built from its records."""
    records = select(records, bench)
    if not records:
        raise TnervError(f"there are no records of the {bench} bench")
    if bench != "compression":
        quality = [quality_table(records, metric) for metric in METRICS]
        if bench == "ablation" and any(r.get("ablations") for r in records):
            quality.append(ablation_widths_table(records))
        return [timing_table(records), *quality] if bench == "timing" else quality
    tables = [rd_points_table(records)]
    methods = methods_of(_compression(records))
    if reference not in methods:  # fall back to the first neural method
        reference = next((m for m in methods if not is_anchor(records, m)), "")
    if reference and len(methods) > 1:
        # Both fits: the classic cubic (as the paper's Tab. 3) swings wildly between uneven points, which
        # PCHIP does not.
        for metric in METRICS:
            for fit in bjontegaard.METHODS:
                tables.append(bd_table(records, reference, metric, fit))
                tables += [bd_table_per_video(records, reference, metric, fit, s) for s in ("rate", "quality")]
    if any(r.get("bytes_by_component") for r in records):
        tables.append(byte_allocation_table(records))
    return tables


def write_tables(records: Sequence[Record], out_dir: str | Path, bench: str, reference: str = "tnerv") -> list[Path]:
    """Write each table of the bench as <name>.md and <name>.csv into out_dir; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables_for(records, bench, reference):
        for suffix, text in ((".md", table.to_markdown()), (".csv", table.to_csv())):
            path = out / f"{table.name}{suffix}"
            write_atomic(path, text)
            paths.append(path)
    return paths
