"""One self-contained HTML page per bench: settings, tables, figures and side-by-side frame crops.

Everything the page shows is inside the file: figures and crops are base64 PNG data URIs, the CSS
is inline, there is no script, and a Content-Security-Policy forbids loading anything else. All
text taken from records is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import tnerv
from tnerv.bench.plots import figures_for, png_bytes
from tnerv.bench.tables import (
    Record,
    Table,
    dataset_of,
    format_size,
    method_labels,
    methods_of,
    msssim_variant,
    ordered,
    scale_label,
    select,
    tables_for,
    videos_of,
)
from tnerv.errors import TnervError
from tnerv.files import write_atomic
from tnerv.video.io import decode_image, encode_png

REPORT_FILE = "report.html"
CROP_WIDTH = 360  # crops are enlarged (nearest neighbour) to about this many pixels wide
THUMB_WIDTH = 240

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
.scale { font-weight: 600; color: #444; } .generated, .caption { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e3e3e3; }
th { border-bottom: 2px solid #999; text-align: left; } td.num, th.num { text-align: right; }
table.settings th { border-bottom: 1px solid #e3e3e3; font-weight: 600; }
.scroll { overflow-x: auto; }
figure { margin: 0.8em 0; } figcaption { font-size: 12px; color: #444; }
img { max-width: 100%; }
.crops { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.crops figure { margin: 0; } .crops img { image-rendering: pixelated; }
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(text: object) -> str:
    """HTML-escape any value's text."""
    return html.escape(str(text), quote=True)


def _data_uri(png: bytes) -> str:
    """A PNG as a data URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table_html(table: Table) -> str:
    """A Table as an HTML table with the best bold and the second underlined, title and caption."""
    numeric = table.numeric_columns()
    head = "".join(f'<th{" class=num" if n else ""}>{_e(c)}</th>' for c, n in zip(table.columns, numeric))
    body = []
    for row in table.rows:
        cells = []
        for cell, n in zip(row, numeric):
            text = _e(cell.text)
            if cell.emphasis == "best":
                text = f"<strong>{text}</strong>"
            elif cell.emphasis == "second":
                text = f"<u>{text}</u>"
            cells.append(f'<td{" class=num" if n else ""}>{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<h3 id="table-{_e(table.name)}">{_e(table.title)}</h3>\n<div class="scroll"><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>\n"
        f'<p class="caption">{_e(table.caption)}</p>'
    )


# ---------------------------------------------------------------------------------------------
# Frame crops


def read_png(path: Path) -> np.ndarray | None:
    """An image file as RGB (H, W, 3) uint8, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return decode_image(path).to_ndarray(format="rgb24")
    except TnervError:
        return None


def crop_size(height: int, width: int) -> tuple[int, int]:
    """Crop height and width: a quarter of each side, but at least 32 px where the frame allows."""
    return max(height // 4, min(height, 32)), max(width // 4, min(width, 32))


def pick_region(a: np.ndarray, b: np.ndarray | None, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left of the window where frames a and b differ most (the centre when they do not)."""
    h, w = a.shape[:2]
    ch, cw = size
    centre = ((h - ch) // 2, (w - cw) // 2)
    if b is None or b.shape != a.shape:
        return centre
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(axis=2)
    # window sums of all positions at once from an integral image
    s = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = s[ch:, cw:] - s[:-ch, cw:] - s[ch:, :-cw] + s[:-ch, :-cw]
    if sums.max() == 0:
        return centre
    top, left = np.unravel_index(np.argmax(sums), sums.shape)
    return int(top), int(left)


def enlarge(rgb: np.ndarray, width: int = CROP_WIDTH) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor to about `width` pixels wide."""
    factor = max(1, width // rgb.shape[1])
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def thumbnail(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A small copy of the frame with the crop (top, left, height, width) outlined in red."""
    out = rgb.copy()
    top, left, ch, cw = box
    t = max(1, rgb.shape[1] // 200)  # outline thickness that survives the shrinking
    red = np.array([230, 20, 20], np.uint8)
    out[top:top + t, left:left + cw] = out[top + ch - t:top + ch, left:left + cw] = red
    out[top:top + ch, left:left + t] = out[top:top + ch, left + cw - t:left + cw] = red
    step = max(1, math.ceil(rgb.shape[1] / THUMB_WIDTH))
    return enlarge(out[::step, ::step], THUMB_WIDTH)


@dataclass
class Crop:
    """One captioned image of the visual comparison."""

    title: str
    caption: str
    png: bytes


def _quality_caption(record: Record, bench: str) -> str:
    """Caption 'PSNR dB @ bpp bpp' (compression) or 'PSNR dB, N params', with the frame's PSNR if known."""
    value = record.get("frame_psnr")
    value = record.get("psnr") if value is None else value
    text = "PSNR n/a" if value is None else f"{value:.2f} dB"
    if bench == "compression" and record.get("bpp") is not None:
        return f"{text} @ {record['bpp']:.3f} bpp"
    if record.get("parameters") is not None:
        return f"{text}, {format_size(record['parameters'])} params"
    return text


def _closest(candidates: list[Record], bpp: float | None) -> Record:
    """The candidate nearest in log-bpp (or the best PSNR when rates are unknown)."""
    if bpp is None or any(r.get("bpp") is None or r["bpp"] <= 0 for r in candidates) or bpp <= 0:
        return max(candidates, key=lambda r: r.get("psnr") or -math.inf)
    return min(candidates, key=lambda r: abs(math.log(r["bpp"]) - math.log(bpp)))


def crop_pair(
    records: Sequence[Record], video: str, bench: str, reference: str, methods: tuple[str, str] | None = None
) -> tuple[Record, Record | None] | None:
    """The two records whose frames are compared on one video: the reference and its best rival.

    Compression: the reference's median-rate point, and for every other method its point nearest
    in rate; the rival is the one of those with the highest PSNR. Otherwise the best PSNR of each.
    """
    own = [r for r in records if r["video"] == video and r.get("frame_png")]
    first = methods[0] if methods else reference
    if first not in {r["method"] for r in own}:
        if methods or not own:
            return None
        first = max(own, key=lambda r: r.get("psnr") or -math.inf)["method"]
    mine = [r for r in own if r["method"] == first]
    if bench == "compression" and all(r.get("bpp") is not None for r in mine):
        mine.sort(key=lambda r: r["bpp"])
        ref = mine[(len(mine) - 1) // 2]
    else:
        ref = max(mine, key=lambda r: r.get("psnr") or -math.inf)
    rivals = [m for m in methods_of(own) if m != first and (methods is None or m == methods[1])]
    picks = [_closest([r for r in own if r["method"] == m], ref.get("bpp") if bench == "compression" else None)
             for m in rivals]
    other = max(picks, key=lambda r: r.get("psnr") or -math.inf) if picks else None
    return ref, other


def video_crops(
    records: Sequence[Record], out_dir: Path, video: str, bench: str, reference: str,
    methods: tuple[str, str] | None = None,
) -> list[Crop]:
    """Thumbnail with the crop marked, then the original crop and the two methods' crops."""
    pair = crop_pair(records, video, bench, reference, methods)
    if pair is None:
        return []
    ref, other = pair
    ref_frame = read_png(out_dir / ref["frame_png"])
    if ref_frame is None:
        return []
    other_frame = read_png(out_dir / other["frame_png"]) if other else None
    if other_frame is not None and other_frame.shape != ref_frame.shape:
        other, other_frame = None, None
    original = read_png(out_dir / ref["original_png"]) if ref.get("original_png") else None
    if original is not None and original.shape != ref_frame.shape:
        original = None
    size = crop_size(*ref_frame.shape[:2])
    top, left = pick_region(ref_frame, other_frame if other_frame is not None else original, size)
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    labels = method_labels(records)
    index = ref.get("frame_index")
    frame_name = "frame" if index is None else f"frame {index}"
    crops = []
    if original is not None:
        crops.append(Crop(f"Original, {frame_name}", f"crop at x={left}, y={top}, {size[1]}x{size[0]} px",
                          encode_png(thumbnail(original, (top, left, *size)))))
        crops.append(Crop("Original", "ground truth", encode_png(enlarge(original[window]))))
    for record, frame in ((ref, ref_frame), (other, other_frame)):
        if record is not None and frame is not None:
            point = f" ({record['point']})" if record.get("point") else ""
            crops.append(Crop(labels[record["method"]] + point, _quality_caption(record, bench),
                              encode_png(enlarge(frame[window]))))
    return crops


# ---------------------------------------------------------------------------------------------
# The page


def _settings(records: Sequence[Record], bench: str) -> list[tuple[str, str]]:
    """Key facts of the bench for the settings table."""
    labels = method_labels(records)
    shapes = ordered(f"{r.get('num_frames')} frames of {r.get('height')}x{r.get('width')}" for r in records)
    epochs = ordered(str(r["epochs"]) for r in records if r.get("epochs") is not None)
    return [
        ("Bench", bench),
        ("Scale", scale_label(records)),
        ("Dataset", dataset_of(records)),
        ("Videos", ", ".join(videos_of(records))),
        ("Methods", ", ".join(labels[m] for m in methods_of(records))),
        ("Frames", "; ".join(shapes)),
        ("Epochs", ", ".join(epochs) or "n/a"),
        ("MS-SSIM", msssim_variant(records)),
        ("Records", str(len(records))),
    ]


def render_report(
    records: Sequence[Record],
    out_dir: str | Path,
    bench: str,
    title: str | None = None,
    extra_notes: Sequence[str] | str | None = None,
    reference: str = "tnerv",
    crop_methods: tuple[str, str] | None = None,
) -> str:
    """The report page as a string (frames are read relative to out_dir)."""
    records = select(records, bench)
    out = Path(out_dir)
    title = title or f"{bench.capitalize()} benchmark: {dataset_of(records)}"
    notes = [extra_notes] if isinstance(extra_notes, str) else list(extra_notes or [])
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="scale">{_e(scale_label(records))}</p>',
        f'<p class="generated">Generated by tnerv {_e(tnerv.__version__)} on {_e(generated)}</p>',
        '<h2 id="settings">Settings</h2><table class="settings"><tbody>',
        *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _settings(records, bench)),
        "</tbody></table>",
    ]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append('<h2 id="tables">Tables</h2>')
    parts += [table_html(t) for t in tables_for(records, bench, reference)]
    figures = figures_for(records, bench, reference)
    if figures:
        parts.append('<h2 id="figures">Figures</h2>')
    for name, caption, fig in figures:
        parts.append(
            f'<figure id="figure-{_e(name)}"><img src="{_data_uri(png_bytes(fig))}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}. {_e(scale_label(records))}</figcaption></figure>"
        )
    crops = {v: video_crops(records, out, v, bench, reference, crop_methods) for v in videos_of(records)}
    if any(crops.values()):
        parts.append('<h2 id="crops">Visual comparison</h2>')
        parts.append('<p class="caption">Crops enlarged with nearest-neighbour sampling, taken where the two '
                     "methods' frames differ most; PSNR of the shown frame.</p>")
    for video, shown in crops.items():
        if not shown:
            continue
        parts.append(f"<h3>{_e(video)}</h3><div class=\"crops\">")
        parts += [
            f'<figure><img src="{_data_uri(c.png)}" alt="{_e(c.title)}">'
            f"<figcaption><b>{_e(c.title)}</b><br>{_e(c.caption)}</figcaption></figure>"
            for c in shown
        ]
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    records: Sequence[Record],
    out_dir: str | Path,
    bench: str,
    title: str | None = None,
    extra_notes: Sequence[str] | str | None = None,
    reference: str = "tnerv",
    crop_methods: tuple[str, str] | None = None,
) -> Path:
    """Write <out_dir>/report.html for the bench's records; return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    write_atomic(path, render_report(records, out, bench, title, extra_notes, reference, crop_methods))
    return path
