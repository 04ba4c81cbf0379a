"""The bench runner: units, records, resumption, and the protocol guard of an output folder."""

import json
import subprocess
import sys

import pytest

from tnerv.bench.protocols import protocol
from tnerv.bench.runner import BenchRun, Unit, parse_methods, plan_units
from tnerv.bench.tables import tables_for
from tnerv.errors import TnervError
from tnerv.metrics import bits_per_pixel
from tnerv.video.datasets import dataset_sequences

TINY = {"frames": 4, "resize": (32, 64), "budget": 20_000, "epochs": 2}


def tiny_protocol(bench: str, **changes):
    from dataclasses import replace

    return replace(protocol(bench, **TINY), **changes)


def bench_run(bench, out, methods, lines=None, **changes):
    videos = dataset_sequences("samples", names=["bikes"])
    return BenchRun(
        bench, "samples", tiny_protocol(bench, **changes), videos, parse_methods(bench, methods), out,
        progress=False, log=(lines.append if lines is not None else lambda line: None),
    )


def test_methods_and_units_follow_the_bench():
    p = tiny_protocol("compression", lambdas=(0.1, 1.0), size_factors=(1.0, 2.0), crfs=(27, 37))
    video = dataset_sequences("samples", names=["bikes"])[0]
    units = plan_units("compression", p, [video], parse_methods("compression", ["tnerv", "hnerv", "x265"]))
    assert [u.point for u in units] == ["lambda=0.1", "lambda=1", "size=20000", "size=40000", "crf=27", "crf=37"]
    assert len({u.key for u in units}) == len(units)
    ablations = parse_methods("ablation", ["tnerv", "E1", "tnerv-d2", "E3+D1"])
    assert ablations == ["tnerv", "tnerv-E1", "tnerv-D2", "tnerv-E3+D1"]
    unit = plan_units("ablation", p, [video], ["tnerv-E3+D1"])[0]
    assert (unit.model, unit.ablations, unit.label) == ("tnerv", ("E3", "D1"), "T-NeRV (E3+D1)")
    with pytest.raises(TnervError, match="unknown method 'x265'"):
        parse_methods("representation", ["x265"])
    with pytest.raises(TnervError, match="unknown ablation 'E9'"):
        parse_methods("ablation", ["E9"])


def test_representation_bench_records_and_skips_finished_runs(tmp_path):
    lines: list[str] = []
    run = bench_run("representation", tmp_path, ["nerv", "hnerv"], lines)
    records = run.run()
    assert [r["method"] for r in records] == ["nerv", "hnerv"]
    for r in records:
        assert r["num_frames"] == 4 and (r["height"], r["width"]) == (32, 64)
        assert abs(r["parameters"] / 20_000 - 1) < 0.05
        assert set(r["split"]) == {"decoder", "grids", "embeddings"} and sum(r["split"].values()) == pytest.approx(100, abs=0.2)
        assert 5 < r["psnr"] < 60 and 0 < r["ms_ssim"] <= 1 and r["decode_fps"] > 0
        assert (tmp_path / r["frame_png"]).stat().st_size > 0 and (tmp_path / r["original_png"]).exists()
        assert r["scale_label"].startswith("CPU scale (setting1): 32x64, 4 frames, 20k parameters, 2 epochs")
    stored = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "bikes").iterdir()}

    again: list[str] = []
    assert bench_run("representation", tmp_path, ["nerv", "hnerv"], again).run() == records
    assert all(line.endswith("done before, skipped") for line in again)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "bikes").iterdir()} == stored

    # The timing bench reads the same runs; another protocol in the same folder is refused.
    assert bench_run("timing", tmp_path, ["nerv"], setting="setting1").run() == records[:1]
    with pytest.raises(TnervError, match="holds another bench"):
        bench_run("representation", tmp_path, ["nerv"], epochs=3).run()


def test_a_crashed_bench_resumes_where_it_stopped(tmp_path, monkeypatch):
    run = bench_run("representation", tmp_path, ["nerv", "cnerv"])
    original = BenchRun.run_unit

    def crash_on_cnerv(self, unit: Unit):
        if unit.method == "cnerv":
            raise KeyboardInterrupt
        return original(self, unit)

    monkeypatch.setattr(BenchRun, "run_unit", crash_on_cnerv)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    monkeypatch.setattr(BenchRun, "run_unit", original)
    lines: list[str] = []
    records = bench_run("representation", tmp_path, ["nerv", "cnerv"], lines).run()
    assert lines[0].endswith("done before, skipped") and lines[1].endswith("running")
    assert [r["method"] for r in records] == ["nerv", "cnerv"]


def test_compression_bench_measures_real_files_and_anchors(tmp_path):
    run = bench_run(
        "compression", tmp_path, ["tnerv", "hnerv", "x265"], lambdas=(0.1,), size_factors=(1.0,), crfs=(27, 37)
    )
    records = {(r["method"], r["point"]): r for r in run.run()}
    assert set(records) == {("tnerv", "lambda=0.1"), ("hnerv", "size=20000"), ("x265", "crf=27"), ("x265", "crf=37")}
    for r in records.values():
        size = (tmp_path / r.get("file", f"files/bikes/{r['method']}_{r['point'].replace('=', '_')}.hevc")).stat().st_size
        assert r["num_bytes"] == size
        assert r["bpp"] == pytest.approx(bits_per_pixel(size, 4, 32, 64))
        assert r["frame_psnr"] > 10 and r["decode_fps"] > 0
    assert sum(records[("tnerv", "lambda=0.1")]["bytes_by_component"].values()) == records[("tnerv", "lambda=0.1")]["num_bytes"]
    low, high = records[("x265", "crf=27")], records[("x265", "crf=37")]
    assert low["num_bytes"] > high["num_bytes"] and low["psnr"] > high["psnr"]
    assert json.loads((tmp_path / "bench.json").read_text())["bench"] == "compression"

    # More rate points join the same folder: only the new one runs.
    lines: list[str] = []
    bench_run(
        "compression", tmp_path, ["tnerv", "hnerv", "x265"], lines, lambdas=(0.1,), size_factors=(1.0,), crfs=(27, 37, 45)
    ).run()
    assert [line for line in lines if line.endswith("running")] == ["[5/5] bikes x265 (veryslow, no B-frames) crf=45: running"]


def test_a_size_no_model_reaches_fails_before_anything_runs(tmp_path):
    out = tmp_path / "bench"
    with pytest.raises(TnervError, match="HNeRV on bikes: hnerv cannot be scaled to 500 parameters"):
        bench_run("representation", out, ["hnerv", "nerv"], budget=500).run()
    assert not out.exists()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from tnerv.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_bench_command_writes_tables_plots_and_report_and_reruns_in_place(capsys, tmp_path):
    args = [
        "bench", "representation", "--sequences", "carphone", "--models", "nerv", "hnerv", "--frames", "4",
        "--resize", "32x64", "--budget", "20k", "--epochs", "2", "--out", str(tmp_path), "--quiet",
    ]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "report:" in out
    table = (tmp_path / "tables" / "quality_psnr.md").read_text()
    assert "| NeRV |" in table and "| HNeRV |" in table and "32x64, 4 frames, 20k parameters, 2 epochs" in table
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "carphone" in html
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and out.count("done before, skipped") == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "representation", "--dataset", "uvg"], "--data-root"),
        (["bench", "representation", "--dataset", "uvg", "--data-root", "MISSING"], "MISSING"),
        (["bench", "compression", "--models", "x266"], "unknown method 'x266'"),
        (["bench", "ablation", "--models", "E9"], "unknown ablation 'E9'"),
        (["bench", "representation", "--scale", "paper", "--resize", "32x64"], "--resize is for --scale cpu"),
        (["bench", "representation", "--setting", "setting9"], "unknown setting 'setting9'"),
        (["bench", "representation", "--sequences", "foreman"], "foreman"),
    ],
)
def test_bad_bench_arguments_are_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, *[str(tmp_path / a) if a == "MISSING" else a for a in args], "--out", str(tmp_path / "o"))
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tnerv: error: ") and message in lines[0], err
    assert not (tmp_path / "o").exists()


def test_ablation_bench_fits_each_ablated_tnerv_at_the_same_budget(tmp_path):
    records = bench_run("ablation", tmp_path, ["tnerv", "E1", "D1"]).run()
    assert [r["method"] for r in records] == ["tnerv", "tnerv-E1", "tnerv-D1"]
    assert [r["ablations"] for r in records] == [[], ["E1"], ["D1"]]
    run_configs = [json.loads((tmp_path / "runs" / "bikes" / k / "run.json").read_text())["model_config"]
                   for k in ("tnerv", "tnerv-E1", "tnerv-D1")]
    assert [c["grids"] for c in run_configs] == [True, False, True]
    assert [c["flow"] for c in run_configs] == [True, True, False]
    assert all(abs(r["parameters"] / 20_000 - 1) < 0.05 for r in records)
    # E1's embeddings take the grids' parameters; the decoder's widths are the full model's.
    assert "embed_channels" in records[1]["widths_changed"]
    assert not {"pre_channels", "block_channels"} & set(records[1]["widths_changed"])
    assert all(run_configs[1][k] == run_configs[0][k] for k in ("pre_channels", "block_channels"))
    table = next(t for t in tables_for(records, "ablation") if t.name == "ablation_widths")
    assert [row[0].text for row in table.rows] == ["T-NeRV (E1)", "T-NeRV (D1)"]
    assert "embed_channels" in table.rows[0][1].text


def test_a_video_shorter_than_the_protocol_gives_all_its_frames():
    from tnerv.bench.runner import video_spec

    carphone = dataset_sequences("samples", names=["carphone"])[0]
    assert video_spec(carphone, tiny_protocol("representation", num_frames=500)).count == 120
    assert video_spec(carphone, tiny_protocol("representation")).count == 4


def test_two_workers_at_once_run_each_unit_once_and_write_the_single_worker_tables(tmp_path):
    command = [sys.executable, "-m", "tnerv", "bench", "representation", "--models", "nerv", "--frames", "4",
               "--resize", "32x64", "--budget", "20k", "--epochs", "2", "--quiet"]
    shared, single = tmp_path / "shared", tmp_path / "single"
    workers = [
        subprocess.Popen([*command, "--out", str(shared), "--worker", f"{i}/2"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [w.communicate() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    ran = [[line.split("]")[0][1:] for line in out.splitlines() if line.endswith(": running")] for out, _ in outputs]
    assert ran == [["1/2"], ["2/2"]]  # every unit (NeRV on the two clips), each by one worker
    records = [json.loads(p.read_text()) for p in sorted((shared / "results").rglob("*.json"))]
    assert sorted(r["worker"] for r in records) == ["0/2", "1/2"]
    # The last worker to finish wrote the tables; they are those of one worker alone.
    assert subprocess.run([*command, "--out", str(single)], capture_output=True).returncode == 0
    for name in ("quality_psnr.md", "quality_ms_ssim.md"):
        assert (shared / "tables" / name).read_text() == (single / "tables" / name).read_text()


def test_a_bench_with_a_time_a_unit_plans_each_units_epochs_in_it():
    from tnerv.bench.runner import _train_setup

    chosen = protocol("representation", "setting1", "cpu", unit_time=600.0)
    assert chosen.label.endswith("10.0 min a unit")
    unit = plan_units("representation", chosen, dataset_sequences("samples", None, ["bikes"]), ["hnerv"])[0]
    _, train = _train_setup(unit, chosen)
    assert train["time_budget"] == 600.0 and train["epochs"] == chosen.epochs  # the recipe the plan is costed against
    with pytest.raises(TnervError, match="--time and --epochs"):
        protocol("representation", "setting1", "cpu", epochs=3, unit_time=600.0)
