"""Bench tables, figures and the HTML report, on synthetic result records."""

from __future__ import annotations

import builtins
import csv
import importlib.util
import io
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from tnerv import bjontegaard
from tnerv.bench import plots, report, tables
from tnerv.bench.display import ANCHORS
from tnerv.models import list_models, model_class
from tnerv.video import write_frames

SCALE = "CPU scale: 32x64, 8 frames, 0.40M parameters, 60 epochs"
VARIANT = "ms-ssim(win=11,scales=2)"
LABELS = {"tnerv": "T-NeRV", "hnerv": "HNeRV", "nerv": "NeRV", "x265": "x265 (veryslow)"}
VIDEOS = ["bikes", "carphone"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record(bench: str, video: str, method: str, psnr: float, **fields) -> dict:
    """A result record with every field the bench runner writes."""
    base = {
        "bench": bench, "scale": "cpu", "scale_label": SCALE, "dataset": "samples", "video": video,
        "method": method, "method_label": LABELS.get(method, method), "point": "", "parameters": 400_000,
        "psnr": psnr, "ms_ssim": 1 - 10 ** (-psnr / 20), "ms_ssim_variant": VARIANT, "bpp": None,
        "num_bytes": None, "bytes_by_component": None, "encode_seconds": None, "decode_fps": None,
        "num_frames": 8, "height": 32, "width": 64, "epochs": 60, "frame_index": None, "frame_png": None,
        "frame_psnr": None, "original_png": None,
    }
    base.update(fields)
    return base


# PSNR per (method, video) for the representation bench: tnerv best on bikes, hnerv on carphone.
REPRESENTATION = {
    "tnerv": {"bikes": 31.0, "carphone": 33.0},
    "hnerv": {"bikes": 30.0, "carphone": 34.0},
    "nerv": {"bikes": 29.0, "carphone": 32.0},
}


def representation_records() -> list[dict]:
    """2 videos x 3 methods."""
    return [
        record("representation", v, m, psnr, parameters=400_000 + 1000 * i)
        for i, (m, per_video) in enumerate(REPRESENTATION.items())
        for v, psnr in per_video.items()
    ]


def rd_curve(method: str, video: str) -> tuple[list[float], list[float]]:
    """Four (bpp, PSNR) points; nerv's curve lies where no other curve is (no BD overlap)."""
    shift = 0.5 if video == "carphone" else 0.0
    if method == "nerv":
        return [5.0, 6.0, 7.0, 8.0], [10.0, 11.0, 12.0, 13.0]
    scale, offset = {"tnerv": (1.0, 0.0), "hnerv": (1.3, -0.4), "x265": (1.6, -0.8)}[method]
    bpp = [0.05 * scale * 2**i for i in range(4)]
    return bpp, [30.0 + offset + shift + 4.0 * i + 0.3 * i * i for i in range(4)]


def compression_records(out_dir: Path | None = None) -> list[dict]:
    """2 videos x (3 networks + x265) x 4 rate points; with decoded frames when out_dir is given."""
    rng = np.random.default_rng(0)
    records = []
    for video in VIDEOS:
        original = rng.integers(0, 256, (1, 32, 64, 3), dtype=np.uint8)
        if out_dir is not None:
            write_frames(original, out_dir / "frames" / video / "original")
        for method in ("tnerv", "hnerv", "x265", "nerv"):
            bpp, psnr = rd_curve(method, video)
            for i, (rate, quality) in enumerate(zip(bpp, psnr)):
                anchor = method == "x265"
                fields = {
                    "point": f"crf={30 - 3 * i}" if anchor else f"lambda={[1.0, 0.5, 0.1, 0.01][i]}",
                    "parameters": None if anchor else 400_000, "bpp": rate, "num_bytes": int(rate * 32 * 64 * 8 / 8),
                    "encode_seconds": 1.0 if anchor else 120.0, "decode_fps": 200.0 if anchor else 50.0,
                }
                if method == "tnerv":
                    parts = {"decoder": 1000 * (i + 1), "grids": 500, "embeddings": 300, "other": 20}
                    fields["bytes_by_component"] = parts
                if out_dir is not None:
                    noise = rng.integers(-(4 - i) * 6, (4 - i) * 6 + 1, original.shape)
                    decoded = np.clip(original.astype(int) + noise, 0, 255).astype(np.uint8)
                    folder = Path("frames") / video / f"{method}-{i}"
                    write_frames(decoded, out_dir / folder)
                    fields |= {"frame_index": 0, "frame_png": str(folder / "frame_00001.png"),
                               "frame_psnr": quality + 0.25, "original_png": f"frames/{video}/original/frame_00001.png"}
                records.append(record("compression", video, method, quality, **fields))
    return records


def md_rows(markdown: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (header included)."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


# ---------------------------------------------------------------------------------------------
# Tables


def test_quality_table_marks_best_and_second_per_column_and_averages() -> None:
    table = tables.quality_table(representation_records(), "psnr")
    md = table.to_markdown()
    rows = md_rows(md)
    assert rows["Model"] == ["Size", "bikes", "carphone", "Avg."]
    assert rows["T-NeRV"] == ["400k", "**31.00**", "<u>33.00</u>", "**32.00**"]
    assert rows["HNeRV"] == ["401k", "<u>30.00</u>", "**34.00**", "**32.00**"]  # tie for the best average
    assert rows["NeRV"] == ["402k", "29.00", "32.00", "30.50"]
    assert SCALE in md and VARIANT in md  # the caption names the scale and the MS-SSIM variant
    ms = md_rows(tables.quality_table(representation_records(), "ms_ssim").to_markdown())
    assert ms["T-NeRV"][1] == f"**{1 - 10 ** (-31 / 20):.4f}**"


def test_quality_table_average_uses_the_videos_a_method_has() -> None:
    records = representation_records()[:-1]  # nerv lacks carphone
    table = tables.quality_table(records, "psnr", methods=["nerv", "tnerv"])
    rows = md_rows(table.to_markdown())
    assert list(rows) == ["Model", "NeRV", "T-NeRV"]
    assert rows["NeRV"][1:] == ["29.00", tables.MISSING, "29.00"]
    assert rows["T-NeRV"][1:] == ["**31.00**", "33.00", "**32.00**"]


def test_csv_parses_back_to_the_numbers() -> None:
    table = tables.quality_table(representation_records(), "psnr")
    rows = list(csv.reader(io.StringIO(table.to_csv())))
    assert rows[0] == ["Model", "Size", "bikes", "carphone", "Avg."]
    parsed = {r[0]: [float(x) for x in r[1:]] for r in rows[1:]}
    assert parsed["HNeRV"] == [401_000, 30.0, 34.0, 32.0]
    assert parsed["NeRV"] == [402_000, 29.0, 32.0, 30.5]
    assert "*" not in table.to_csv() and "<u>" not in table.to_csv()


def test_bd_table_equals_bjontegaard_per_video_mean_and_shows_na() -> None:
    records = compression_records()
    table = tables.bd_table(records, reference="tnerv", metric="psnr")
    assert table.columns == ["Metric", "HNeRV", "x265 (veryslow)", "NeRV"]
    for column, other in ((1, "hnerv"), (2, "x265")):
        rates = [bjontegaard.bd_rate(*rd_curve(other, v), *rd_curve("tnerv", v)) for v in VIDEOS]
        deltas = [bjontegaard.bd_psnr(*rd_curve(other, v), *rd_curve("tnerv", v)) for v in VIDEOS]
        assert table.rows[0][column].value == pytest.approx(np.mean(rates))
        assert table.rows[1][column].value == pytest.approx(np.mean(deltas))
        assert table.rows[0][column].value < 0  # tnerv saves bits against both
    assert table.rows[0][3].text == "n/a" and table.rows[1][3].text == "n/a"
    rows = md_rows(table.to_markdown())
    assert rows["BD-Rate [%]"][0] == f"{table.rows[0][1].value:.2f}%"
    assert rows["BD-PSNR [dB]"][2] == "n/a"
    csv_rows = list(csv.reader(io.StringIO(table.to_csv())))
    assert float(csv_rows[1][1]) == pytest.approx(table.rows[0][1].value) and math.isnan(float(csv_rows[1][3]))


def test_bd_table_per_video_lists_each_video_and_the_average() -> None:
    table = tables.bd_table_per_video(compression_records(), reference="tnerv", metric="psnr", stat="rate")
    assert [row[0].text for row in table.rows] == [*VIDEOS, "Avg."]
    for i, video in enumerate(VIDEOS):
        expected = bjontegaard.bd_rate(*rd_curve("x265", video), *rd_curve("tnerv", video))
        assert table.rows[i][2].value == pytest.approx(expected)
    assert table.rows[2][2].value == pytest.approx((table.rows[0][2].value + table.rows[1][2].value) / 2)
    assert all(row[3].text == "n/a" for row in table.rows)


def test_bd_with_too_few_points_is_na_not_an_error() -> None:
    records = [r for r in compression_records() if not (r["method"] == "hnerv" and r["point"] == "lambda=1.0")]
    table = tables.bd_table(records, reference="tnerv")
    assert table.rows[0][1].text == "n/a"  # a cubic needs four points
    assert table.rows[0][2].text != "n/a"


def test_timing_table_marks_fastest() -> None:
    records = [
        record("timing", v, m, 30.0, encode_seconds=secs, decode_fps=fps)
        for v in VIDEOS
        for m, secs, fps in (("nerv", 60.0, 90.0), ("hnerv", 120.0, 20.0), ("tnerv", 180.0, 40.0))
    ]
    rows = md_rows(tables.timing_table(records).to_markdown())
    assert rows["Metric"] == ["NeRV", "HNeRV", "T-NeRV"]
    assert rows["Enc. [min]"] == ["**1.0**", "<u>2.0</u>", "3.0"]
    assert rows["Dec. [fps]"] == ["**90.0**", "20.0", "<u>40.0</u>"]


def test_rd_points_table_lists_every_compression_record() -> None:
    records = compression_records()
    table = tables.rd_points_table(records)
    assert len(table.rows) == len(records)
    first = table.rows[0]
    assert [c.text for c in first[:3]] == ["bikes", "T-NeRV", "lambda=1.0"]
    assert first[3].value == pytest.approx(0.05) and first[4].value == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("bench", "names"),
    [
        ("representation", {"quality_psnr", "quality_ms_ssim"}),
        ("timing", {"timing", "quality_psnr", "quality_ms_ssim"}),
        ("compression", {"rd_points", "byte_allocation"} | {
            f"bd_{metric}{table}{fit}" for metric in ("psnr", "ms_ssim") for fit in ("", "_pchip")
            for table in ("", "_rate_by_video", "_quality_by_video")
        }),
    ],
)
def test_write_tables_writes_markdown_and_csv_for_the_bench(tmp_path: Path, bench: str, names: set[str]) -> None:
    records = compression_records() if bench == "compression" else [
        {**r, "bench": bench, "encode_seconds": 60.0, "decode_fps": 30.0} for r in representation_records()
    ]
    paths = tables.write_tables(records, tmp_path, bench)
    assert {p.name for p in paths} == {f"{n}{s}" for n in names for s in (".md", ".csv")}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    assert all(SCALE in p.read_text() for p in paths if p.suffix == ".md")


# ---------------------------------------------------------------------------------------------
# Figures


def test_plots_write_valid_pngs(tmp_path: Path) -> None:
    records = compression_records()
    written = [
        plots.rd_curves(records, "psnr", tmp_path / "rd.png"),
        plots.rd_curves(records, "ms_ssim", tmp_path / "rd_bikes.png", video="bikes"),
        plots.rd_grid(records, "psnr", tmp_path / "grid.png"),
        plots.byte_allocation(records, tmp_path / "bytes.png"),
        plots.quality_bars(representation_records(), "psnr", tmp_path / "bars.png"),
    ]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert len(list(tmp_path.iterdir())) == len(written)  # no temp files left
    written = plots.write_plots(representation_records(), tmp_path / "rep", "representation")
    assert [p.name for p in written] == ["bars_psnr.png", "bars_ms_ssim.png"]


def test_rd_average_is_per_point_index_and_skips_uneven_methods() -> None:
    dropped = ("hnerv", "bikes", "lambda=1.0")
    records = [r for r in compression_records() if (r["method"], r["video"], r["point"]) != dropped]
    curves, left_out = plots.rd_data(records, "psnr")
    assert left_out == ["hnerv"]
    bpp, psnr = curves["tnerv"]
    assert bpp == pytest.approx([0.05, 0.1, 0.2, 0.4]) and psnr[0] == pytest.approx(30.25)  # mean of both videos


def test_models_and_anchors_keep_the_colour_and_marker_of_their_cards() -> None:
    shown = {m: model_class(m).card for m in list_models()} | ANCHORS
    assert len({d.colour for d in shown.values()}) == len({d.marker for d in shown.values()}) == len(shown)
    for method, display in shown.items():
        style = plots.method_style(method)
        assert (style["color"], style["marker"]) == (display.colour, display.marker)


def test_method_styles_are_stable_and_anchors_dashed(monkeypatch) -> None:
    # Bench workers draw figures in other processes, each with its own str-hash salt and its own order
    # of methods: a style must follow from the name alone. A fresh copy of the module (no state from
    # earlier calls), asked in the reverse order with another hash() (a new salt), gives the same styles.
    names = ["tnerv", "my-model", "other-model", "tnerv-E1", "x265"]
    styles = [plots.method_style(m) for m in names]
    spec = importlib.util.spec_from_file_location("plots_in_another_process", plots.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    monkeypatch.setattr(builtins, "hash", lambda obj: zlib.crc32(repr(obj).encode()) * 7919)
    assert [fresh.method_style(m) for m in reversed(names)][::-1] == styles
    assert plots.method_style("x265", anchor=True)["linestyle"] == "--"
    assert plots.method_style("tnerv-E1")["color"] != plots.method_style("tnerv-E2")["color"]


# ---------------------------------------------------------------------------------------------
# Report


def test_report_is_self_contained_with_tables_figures_and_crops(tmp_path: Path) -> None:
    records = compression_records(tmp_path)
    path = report.write_report(records, tmp_path, "compression", extra_notes="a note")
    assert path == tmp_path / "report.html"
    page = path.read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?!["']|data:|#)""", page)  # nothing from outside
    assert "frames/" not in page and "<script" not in page
    assert SCALE in page and VARIANT in page and "a note" in page
    for table in tables.tables_for(records, "compression"):
        assert f'id="table-{table.name}"' in page
    # crops: the reference's median point and its nearest rival, captioned with frame PSNR @ bpp
    tnerv_mid = [r for r in records if r["video"] == "bikes" and r["method"] == "tnerv"][1]
    assert f"{tnerv_mid['frame_psnr']:.2f} dB @ {tnerv_mid['bpp']:.3f} bpp" in page
    hnerv_mid = [r for r in records if r["video"] == "bikes" and r["method"] == "hnerv"][1]
    assert f"{hnerv_mid['frame_psnr']:.2f} dB @ {hnerv_mid['bpp']:.3f} bpp" in page
    assert page.count("<h3>bikes</h3>") == 1 and page.count("<h3>carphone</h3>") == 1
    assert "Original" in page


def test_report_for_representation_captions_parameters_and_tolerates_missing_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (1, 32, 64, 3), dtype=np.uint8)
    write_frames(frame, tmp_path / "orig")
    write_frames(frame // 2, tmp_path / "dec")
    records = representation_records()
    records[0] |= {"frame_png": "dec/frame_00001.png", "original_png": "orig/frame_00001.png", "frame_psnr": 28.5,
                   "frame_index": 3}
    records[2] |= {"frame_png": "missing/frame_00001.png"}  # hnerv bikes: file is not there
    page = report.write_report(records, tmp_path, "representation", title="Representation").read_text()
    assert "<strong>31.00</strong>" in page and "<u>33.00</u>" in page and "**" not in page
    assert "28.50 dB, 400k params" in page
    assert "Original, frame 3" in page
    assert page.count("<h3>bikes</h3>") == 1 and "<h3>carphone</h3>" not in page  # no frames, no crops


def test_report_escapes_text_from_records(tmp_path: Path) -> None:
    records = [{**r, "video": "<b>x</b>" if r["video"] == "bikes" else r["video"]} for r in representation_records()]
    records[0]["method_label"] = 'T-NeRV "<script>"'
    page = report.write_report(records, tmp_path, "representation", extra_notes=["<i>note</i>"]).read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script>" not in page and "<i>note</i>" not in page
    md = tables.quality_table(records).to_markdown()
    assert "<b>" not in md and "&lt;b&gt;x&lt;/b&gt;" in md


def test_crop_region_is_where_the_frames_differ_most() -> None:
    a = np.zeros((64, 128, 3), np.uint8)
    b = a.copy()
    b[40:56, 90:122] = 200
    size = report.crop_size(64, 128)
    top, left = report.pick_region(a, b, size)
    assert size == (32, 32)
    assert top <= 40 and top + size[0] >= 56 and left <= 90 and left + size[1] >= 122
    assert report.pick_region(a, a, size) == (16, 48)  # no difference: the centre
    assert report.enlarge(np.zeros((8, 16, 3), np.uint8)).shape == (8 * 22, 16 * 22, 3)
