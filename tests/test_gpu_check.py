"""benchmarks/gpu_check.py: its tiny mode runs every section on a CPU, and its helpers compute what they say."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("notebooks", "training", "inference", "sampling", "lab")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_mode_checks_every_section_on_a_cpu(tmp_path):
    start = time.perf_counter()
    # one notebook through the section's papermill path: every notebook's smoke run is tests/test_project.py's
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--notebooks", "06", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    print(f"gpu_check.py --device cpu --tiny: {time.perf_counter() - start:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert tuple(sections) == SECTIONS
    assert all(s["status"] == "ok" for s in sections.values()), {k: s.get("error") for k, s in sections.items()}

    notebooks = sections["notebooks"]["rows"]
    assert [r["notebook"][:2] for r in notebooks] == ["06"]
    assert all(r["status"] == "ok" and r["seconds"] > 0 and Path(r["output"]).is_file() for r in notebooks), notebooks
    training = sections["training"]["rows"]
    assert {"li T", "li Swin-T-shaped", "jiang (SMSANet)", "jiang (BaseNet)"} <= {r["model"] for r in training}
    assert len(training) == 9 and all(r["images_per_s"] > 0 and r["step_ms"] > 0 for r in training), training
    inference = sections["inference"]["rows"]
    assert {"li T", "li S", "li Swin-T-shaped"} <= {r["model"] for r in inference}
    assert all(r["eager_ms"] > 0 for r in inference), inference
    sampling = sections["sampling"]["rows"][0]
    assert (sampling["batch"], sampling["size"]) == (2, 8)
    assert sampling["parallel_s"] > 0 and sampling["cached_s"] > 0 and sampling["naive_s"] > 0
    lab = sections["lab"]["rows"][0]
    assert lab["lab_mp_per_s"] > 0 and lab["copy_gb_per_s"] > 0 and 0 < lab["share_of_copy"] < 10

    assert len(report["goals"]) == 5 and all(g["status"] == "not measured (cpu tiny)" for g in report["goals"])
    assert {"torch", "device_name", "cuda", "date", "command", "git_commit"} <= report["environment"].keys()
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown.strip() in done.stdout and report["summary"] in markdown
    blocks = markdown.split("\n## ")[1:]
    for key in SECTIONS:                                  # a Markdown table under each section's heading
        block = next(b for b in blocks if b.startswith(sections[key]["title"]))
        assert "\n| --- |" in block and block.count("\n| ") >= 3, block


def test_bandwidth_arithmetic(gpu_check):
    # 1 M pixels in 10 ms: 24 bytes each (3 float32 read, 3 written) = 24 MB / 0.01 s = 2.4 GB/s
    assert gpu_check.lab_gb_per_s(1_000_000, 0.01) == pytest.approx(2.4)
    # copying 1 GiB in 0.5 s reads and writes it: 2 * 2^30 B / 0.5 s = 4.294967296 GB/s
    assert gpu_check.copy_gb_per_s(2**30, 0.5) == pytest.approx(4.294967296)
    assert gpu_check.nominal_gb_per_s("NVIDIA H200") == 4800
    assert gpu_check.nominal_gb_per_s("NVIDIA H100 80GB HBM3") == 3350
    assert gpu_check.nominal_gb_per_s("NVIDIA H100 PCIe") == 2000
    assert gpu_check.nominal_gb_per_s("NVIDIA A100-SXM4-80GB") is None
    assert gpu_check.nominal_gb_per_s("AMD EPYC") is None


def test_goals_against_hand_computed_values(gpu_check):
    sections = {
        "training": {"rows": [{"model": "li T", "images_per_s": 120.0},
                              {"model": "li Swin-T-shaped", "images_per_s": 100.0},
                              {"model": "jiang (SMSANet)", "images_per_s": 70.0},
                              {"model": "jiang (BaseNet)", "images_per_s": 100.0}]},
        "inference": {"rows": [{"model": "li T", "eager_ms": 9.0, "compiled_ms": 2.5, "reduce_overhead_ms": 1.5}]},
        "sampling": {"rows": [{"batch": 20, "size": 64, "cached_s": 4.0}]},
        "lab": {"rows": [{"share_of_copy": 0.4}]},
    }
    goals = gpu_check.evaluate_goals(sections, measured=True)
    assert [g["value"] for g in goals] == pytest.approx([1.2, 1.5, 0.7, 4.0, 0.4])
    assert [g["status"] for g in goals] == ["pass", "pass", "fail", "pass", "fail"]
    tiny = gpu_check.evaluate_goals(sections, measured=False)
    assert all(g["status"] == "not measured (cpu tiny)" and g["value"] is None for g in tiny)
    # nothing measured (a section failed), or sampling at another size: "not measured", never a pass
    sections["sampling"]["rows"][0]["size"] = 8
    partial = gpu_check.evaluate_goals({"sampling": sections["sampling"]}, measured=True)
    assert [g["status"] for g in partial] == ["not measured"] * 5


def test_notebook_deadlines_and_uncapped_presets(gpu_check, tmp_path):
    # capped notebooks may use the rest of the section; two uncapped ones left, one at a time: half each
    assert gpu_check.notebook_deadline(100.0, 200.0, capped=True, uncapped_left=2, workers=1) == 200.0
    assert gpu_check.notebook_deadline(100.0, 200.0, capped=False, uncapped_left=2, workers=1) == 150.0
    assert gpu_check.notebook_deadline(150.0, 200.0, capped=False, uncapped_left=1, workers=1) == 200.0
    notebook = tmp_path / "nb.ipynb"
    cells = ['CFG = presets.preset("li", PRESET, steps=MAX_STEPS, seed=SEED)\n'
             'B = presets.preset("baseline", PRESET, seed=SEED)',
             'X = presets.preset("sun2023_upgrader", PRESET)\nshown = models.build(presets.preset("jiang", "full")["model"])']
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": [c]} for c in cells]
                                    + [{"cell_type": "markdown", "source": ['presets.preset("narkhede", PRESET)']}]}))
    assert gpu_check.uncapped_presets(notebook) == ["baseline", "sun2023_upgrader"]


def test_markdown_table(gpu_check):
    table = gpu_check.markdown_table([{"a": 1.23456, "b": None}, {"a": 2.0, "b": "x|y"}],
                                     [("a", "A", ".2f"), ("b", "B", "")])
    assert table.splitlines() == ["| A | B |", "| --- | --- |", "| 1.23 | - |", "| 2.00 | x\\|y |"]
