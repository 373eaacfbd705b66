"""The benchmark scripts still run (their numbers are printed, never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lab_throughput_quick_runs():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lab_throughput.py"), "--quick"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "MP/s" in done.stdout
    assert "colorkit cpu f32" in done.stdout and "skimage cpu f64" in done.stdout


def test_li_speed_quick_runs():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "li_speed.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Ours-T:" in done.stdout and "Ours-S:" in done.stdout and "images/s" in done.stdout


def test_baseline_features_quick_runs():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "baseline_features.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "plain CNN:" in done.stdout and "hypercolumn at 32 px:" in done.stdout and "by true color:" in done.stdout


def test_hint_ablation_quick_runs(tmp_path):
    for model, first_two in (("zhang2017", ["course", "global hints, no prior"]), ("li", ["course", "path width 16"])):
        out = tmp_path / f"{model}.json"
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hint_ablation.py"), "--quick", "--model", model,
                               "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert "mean hint color fill" in done.stdout and "gain at 10" in done.stdout and "over the spread" in done.stdout
        report = json.loads(out.read_text())
        assert report["model"] == model
        assert [r["recipe"] for r in report["rows"]] == first_two and all(r["train_seconds"] > 0 for r in report["rows"])
        assert set(report["spread"]) == set(report["fill"]) and all("over_spread_10" in r for r in report["rows"])