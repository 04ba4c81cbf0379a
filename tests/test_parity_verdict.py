"""benchmarks/parity.py's verdict: seed by seed where the same seed is the official start, medians elsewhere."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import parity  # noqa: E402


def rows(model: str, ours: list[float], theirs: list[float]) -> list[dict]:
    """Results of seeds 1.. at the paper's epochs, none collapsed or restarted."""
    return [{"model": model, "seed": seed, "psnr": a, "official_psnr": b, "epochs": parity.PAPER_EPOCHS,
             "tolerance": parity.TOLERANCE_DB, "restarts": [], "label": "", "official_label": ""}
            for seed, (a, b) in enumerate(zip(ours, theirs), start=1)]


def test_a_same_start_model_fails_on_one_seed_even_with_its_median_within():
    verdict = parity.model_verdict(rows("hnerv", [29.60, 28.95, 28.70], [29.02, 28.96, 28.68]))
    assert "FAILS: seed 1 MISSES" in verdict and "(-0.01)" in verdict


def test_another_start_is_judged_by_its_median():
    within = parity.model_verdict(rows("enerv", [29.43, 28.91, 28.90], [28.74, 28.67, 28.91]))
    assert "FAILS" not in within and "(+0.17)" in within
    missed = parity.model_verdict(rows("enerv", [29.43, 29.20, 28.90], [28.74, 28.67, 28.91]))
    assert "FAILS: the median MISSES" in missed


def test_no_verdict_away_from_the_official_epochs():
    short = rows("dnerv", [30.0], [30.59])
    short[0]["epochs"] = 2
    assert parity.model_verdict(short).startswith("no verdict")
