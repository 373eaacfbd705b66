"""The project's own rules: setup files agree, notebooks are clean and parameterised, runs leave a record."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from colorkit import course, runs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED_PARAMETERS = {"PRESET", "DEVICE", "DATA", "MAX_STEPS", "OUT_DIR", "SEED"}


def _requirement(text: str) -> tuple[str, str]:
    """'scikit-image>=0.20' -> ('scikit-image', '>=0.20'); conda's pytorch is pip's torch."""
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", text).groups()
    name = name.lower().replace("_", "-")
    return ("torch" if name == "pytorch" else name), spec.replace(" ", "")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the check is the same on every version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in ("course", "dev") for r in project["optional-dependencies"][extra]]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_deps = {_requirement(d) for d in conda if _requirement(d)[0] not in {"python", "pip"}}
    pip_deps = {_requirement(line.split("#")[0].strip()) for line in pip_section if not line.startswith("-")}
    assert conda_deps | pip_deps == {_requirement(r) for r in wanted}
    assert any("[course,dev]" in line and ("-e " in line or "--editable" in line) for line in pip_section)
    python_floor = next(_requirement(d)[1] for d in conda if d.startswith("python"))
    assert python_floor == project["requires-python"]


def test_readme_and_ci_name_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./course.sh test" in readme and "./course.sh run" in readme
    assert "./course.sh test" in (ROOT / ".ci" / "run").read_text()
    setup = (ROOT / "course.sh").read_text().split("setup() {", 1)[1].split("\n}\n", 1)[0]
    assert "-m colorkit data prepare" in setup          # setup gathers the photo corpus DATA="photos" needs
    syntax = subprocess.run(["bash", "-n", str(ROOT / "course.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    for prefix in ("00_", "01_attention_math", "02_lab_and_quantized_color"):
        assert any(n.startswith(prefix) for n in names), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `./course.sh clean`"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_of_literals(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    names = {}
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell may only assign literals"
        names[node.targets[0].id] = ast.literal_eval(node.value)  # raises unless a plain literal
    assert REQUIRED_PARAMETERS <= names.keys(), f"{path.name} lacks {REQUIRED_PARAMETERS - names.keys()}"
    assert names["PRESET"] == "course"
    # claims a student relies on are pinned: each check cell carries the output it must reproduce
    checks = [c for c in nb.cells if course.is_check_cell(c)]
    assert checks, f"{path.name} has no # NBVAL_CHECK_OUTPUT cell"
    unpinned = [c.source[:80] for c in checks if not c.metadata.get("colorkit", {}).get(course.EXPECTED_KEY)]
    assert not unpinned, f"{path.name}: check cells without pinned output (run `python -m colorkit.course pin`): {unpinned}"


@pytest.fixture(scope="session")
def smoke_course_run(tmp_path_factory):
    """`python -m colorkit course --preset smoke` (what `./course.sh run` calls, at the smoke preset)."""
    out = tmp_path_factory.mktemp("course")
    result = subprocess.run([sys.executable, "-m", "colorkit", "course", "--preset", "smoke", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    return out, result


def test_every_notebook_runs_under_papermill_at_the_smoke_preset(smoke_course_run):
    out, result = smoke_course_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [row["notebook"] for row in summary] == [p.name for p in course.notebooks()]
    for row in summary:
        folder = Path(row["out_dir"])
        assert row["status"] == "ok"
        config = json.loads((folder / "config.json").read_text())
        assert config["PRESET"] == "smoke"
        assert json.loads((folder / "metrics.json").read_text()), f"{row['notebook']} recorded no metrics"
        assert (out / "executed" / row["notebook"]).exists()


def test_course_run_writes_a_results_table_of_trained_models(smoke_course_run):
    out, _ = smoke_course_run
    results = json.loads((out / "results.json").read_text())
    assert results, "no notebook recorded a trained model"
    for row in results:
        assert {"notebook", "model", "preset", "parameters", "train_seconds", "checkpoint", "val"} <= row.keys()
        assert Path(row["checkpoint"]).is_file() and str(out) in row["checkpoint"]
        assert row["preset"] == "smoke" and row["parameters"] > 0
        assert all(isinstance(row["val"][key], float) for key in ("psnr", "ssim"))
    table = (out / "results.md").read_text()
    assert len({row["checkpoint"] for row in results}) == len(results), "two rows share a checkpoint"
    for row in results:
        # several variants of one model (an ablation) are told apart by their variant and checkpoint
        line = next(line for line in table.splitlines()
                    if line.startswith(f"| {row['notebook']} | {row['model']} |") and f" {row['checkpoint']} " in line)
        assert f"{row['val']['psnr']:.2f}" in line and f"| {row['variant']} |" in line


def test_cli_colorizes_with_a_checkpoint_the_course_run_left(smoke_course_run, tmp_path):
    out, _ = smoke_course_run
    checkpoint = json.loads((out / "results.json").read_text())[0]["checkpoint"]
    source, target = tmp_path / "gray.png", tmp_path / "colorized.png"
    from PIL import Image
    import numpy as np
    Image.fromarray(np.linspace(0, 255, 50 * 70).reshape(50, 70).astype(np.uint8)).save(source)
    result = subprocess.run([sys.executable, "-m", "colorkit", "colorize", checkpoint, str(source), str(target)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Image.open(target).size == (70, 50)


def test_every_checkpoint_in_the_results_table_colorizes_through_load_and_colorize(smoke_course_run):
    """How others evaluate the course's models: colorkit.load(row["checkpoint"]) then colorkit.colorize
    on an image of any size, for every row of results.json (a model that needs another model's output,
    like Sun et al.'s upgrader, is listed as the pipeline that holds both)."""
    import numpy as np

    import colorkit

    out, _ = smoke_course_run
    image = (np.random.default_rng(0).random((45, 61, 3)) * 255).astype(np.uint8)
    for row in json.loads((out / "results.json").read_text()):
        model = colorkit.load(row["checkpoint"])
        colorized = colorkit.colorize(model, image)
        assert colorized.shape == (45, 61, 3) and colorized.dtype == np.uint8, row["checkpoint"]
    assert any(row["model"] == "sun2023_pipeline" for row in json.loads((out / "results.json").read_text()))


def test_every_notebook_runs_a_second_time_into_the_same_folder(smoke_course_run):
    """A student who runs a notebook again (or `./course.sh test` after `./course.sh run`): every
    training resumes its finished checkpoint, and the notebook reports what it reported the first time."""
    out, first = smoke_course_run
    before = json.loads((out / "results.json").read_text())
    again = subprocess.run([sys.executable, "-m", "colorkit", "course", "--preset", "smoke", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert [row["status"] for row in json.loads((out / "summary.json").read_text())] == ["ok"] * len(course.notebooks())
    after = json.loads((out / "results.json").read_text())
    assert [(r["notebook"], r["variant"], r["checkpoint"], r["train_seconds"], r["val"]) for r in after] == \
        [(r["notebook"], r["variant"], r["checkpoint"], r["train_seconds"], r["val"]) for r in before]


def test_course_run_with_only_keeps_the_other_notebooks_results(smoke_course_run):
    out, _ = smoke_course_run
    before = json.loads((out / "results.json").read_text())
    course.run(preset="smoke", out=str(out), only=["01"])
    assert json.loads((out / "results.json").read_text()) == before     # notebook 01 trains nothing
    assert len(json.loads((out / "summary.json").read_text())) == len(course.notebooks())


def test_course_runner_rejects_an_unknown_preset():
    with pytest.raises(ValueError, match="smoke, course, workshop, full"):
        course.run(preset="huge")


def test_clean_strips_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1")
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    cell.execution_count = 1
    nb.cells.append(cell)
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert course.clean([path]) == [path]
    again = nbformat.read(path, as_version=4)
    assert again.cells[0].outputs == [] and again.cells[0].execution_count is None and "widgets" not in again.metadata
    assert course.clean([path]) == []


# --- colorkit.runs --------------------------------------------------------------------------------

def test_choose_picks_by_preset_and_names_valid_ones():
    assert runs.choose("smoke", smoke=1, course=2, workshop=4, full=3) == 1
    with pytest.raises(ValueError, match="'tiny'.*smoke, course, workshop, full"):
        runs.choose("tiny", smoke=1, course=2, workshop=4, full=3)


def test_save_run_writes_config_and_metrics(tmp_path):
    import numpy as np
    import torch

    folder = runs.save_run(tmp_path / "r", {"PRESET": "smoke"},
                           {"psnr": np.float32(21.5), "t": torch.tensor([1.0, 2.0]), "same_image_psnr": float("inf")})
    assert json.loads((folder / "config.json").read_text()) == {"PRESET": "smoke"}
    assert json.loads((folder / "metrics.json").read_text()) == {"psnr": 21.5, "t": [1.0, 2.0], "same_image_psnr": "inf"}
    assert not list(folder.glob("*.tmp"))


def test_a_full_run_stores_the_papers_settings_and_ours_with_each_trained_model(tmp_path):
    from colorkit import presets

    cfg = presets.preset("jiang", "full")
    record = {"model": "jiang", "variant": "", "preset": "full", "val": {"psnr": 20.0}}
    other = {"model": "baseline", "variant": "", "preset": "full", "val": {"psnr": 19.0}}
    folder = runs.save_run(tmp_path / "r", {"PRESET": "full", "jiang": cfg}, {}, trained_models=[record, other])
    stored = json.loads((folder / "metrics.json").read_text())["trained_models"]
    assert stored[0]["paper"]["source"] == cfg["paper"]["source"]
    assert [row["field"] for row in stored[0]["ours"]] == list(presets.OURS["jiang"])
    assert "ours" not in stored[1]                           # no full preset for it in this run's config


def test_seeded_runs_repeat():
    import torch

    runs.seed_everything(3)
    a = torch.rand(4)
    runs.seed_everything(3)
    assert torch.equal(a, torch.rand(4))



def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runs.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runs.resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runs.resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="sees no CUDA device"):
        runs.resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'foo'"):
        runs.resolve_device("foo")


def _run_nbval(tmp_path, source, expected_text=None, *extra):
    """Run nbval (as the test command does, with our plugin) on a one-claim notebook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(source)
    if expected_text is not None:
        cell.metadata["colorkit"] = {course.EXPECTED_KEY: [{"output_type": "stream", "name": "stdout", "text": expected_text}]}
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), cell]
    path = tmp_path / "claim.ipynb"
    nbformat.write(nb, path)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "colorkit.nbcheck", "--nbval-lax",
                           "--nbval-current-env", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *extra, str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("source, expected, passes", [
    ("# NBVAL_CHECK_OUTPUT\nprint(1 + 1 == 2)", "True\n", True),
    ("# NBVAL_CHECK_OUTPUT\nprint(1 + 1 == 2)", "False\n", False),
    ("# NBVAL_CHECK_OUTPUT\nprint(1 + 1 == 2)", None, False),
    ("y = 2\n# NBVAL_CHECK_OUTPUT\nprint(1 + 1 == 3)", "True\n", False),   # the marker need not come first
], ids=["pinned-right", "pinned-wrong", "not-pinned", "marker-on-a-later-line"])
def test_check_cells_compare_against_their_pinned_output(tmp_path, source, expected, passes):
    result = _run_nbval(tmp_path, source, expected)
    assert (result.returncode == 0) == passes, result.stdout[-2000:]


def test_a_hanging_cell_fails_at_the_cell_timeout(tmp_path):
    result = _run_nbval(tmp_path, "import time\ntime.sleep(60)", None, "--nbval-cell-timeout=3")
    assert result.returncode != 0 and "Timeout" in result.stdout, result.stdout[-2000:]


def test_a_cell_with_its_own_timeout_gets_it(tmp_path):
    # the default (3 s here) stops the slow cell; its own timeout in its metadata lets it finish
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    slow = nbformat.v4.new_code_cell("import time\ntime.sleep(6)")
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), slow]
    for own, passes in ((None, False), (30, True)):
        if own:
            slow.metadata["colorkit"] = {course.CELL_TIMEOUT_KEY: own}
        nbformat.write(nb, tmp_path / "slow.ipynb")
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "colorkit.nbcheck", "--nbval-lax",
                                 "--nbval-current-env", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                                 "--nbval-cell-timeout=3", str(tmp_path / "slow.ipynb")],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert (result.returncode == 0) == passes, result.stdout[-2000:]


def test_cell_timeouts_are_set_from_measured_cell_times(tmp_path):
    (tmp_path / "notebooks").mkdir()
    executed = tmp_path / "executed"
    executed.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("PRESET = 'course'"), nbformat.v4.new_code_cell("train()"),
                nbformat.v4.new_code_cell("plot()")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells[2].metadata["colorkit"] = {course.CELL_TIMEOUT_KEY: 900}      # stale: the cell got cheap
    nbformat.write(nb, tmp_path / "notebooks" / "00_x.ipynb")
    ran = nbformat.v4.new_notebook()
    injected = nbformat.v4.new_code_cell("OUT_DIR = 'x'")
    injected.metadata["tags"] = ["injected-parameters"]
    ran.cells = [nbformat.from_dict(dict(nb.cells[0])), injected, nbformat.from_dict(dict(nb.cells[1])),
                 nbformat.from_dict(dict(nb.cells[2]))]
    for cell, seconds in zip([ran.cells[0], ran.cells[2], ran.cells[3]], [0.1, 130.0, 2.0]):
        cell.metadata["papermill"] = {"duration": seconds}
    nbformat.write(ran, executed / "00_x.ipynb")
    assert course.set_cell_timeouts(executed, tmp_path) == {"00_x.ipynb": {1: 420}}     # 3 x 130 s, up to a minute
    cells = nbformat.read(tmp_path / "notebooks" / "00_x.ipynb", as_version=4).cells
    assert cells[1].metadata["colorkit"][course.CELL_TIMEOUT_KEY] == 420
    assert "colorkit" not in cells[2].metadata and "colorkit" not in cells[0].metadata
    ran.cells[2].source = "train(more=True)"                                   # an executed copy of other code
    nbformat.write(ran, executed / "00_x.ipynb")
    with pytest.raises(ValueError, match="another version of 00_x.ipynb"):
        course.set_cell_timeouts(executed, tmp_path)


def test_each_seed_gets_its_own_checkpoint_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORKIT_OUT_ROOT", str(tmp_path))
    first = runs.run_dir("runs/nb")
    assert runs.run_dir("runs/nb", seed=0) == first and first.is_dir()
    assert runs.run_dir("runs/nb", seed=3) == first / "seed_3" and (first / "seed_3").is_dir()
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        runs.run_dir("runs/nb", seed=-1)


def test_the_test_command_keeps_out_of_the_users_runs_folder(tmp_path, monkeypatch):
    # conftest.py points relative OUT_DIRs at a folder of the test session's own
    assert not str(runs.run_dir("runs/probe")).startswith(str(ROOT / "runs"))
    assert runs.run_dir("runs/probe") == Path(os.environ["COLORKIT_OUT_ROOT"]).resolve() / "runs" / "probe"
    monkeypatch.setenv("COLORKIT_OUT_ROOT", str(tmp_path))
    assert runs.resolve_out("runs/x") == tmp_path.resolve() / "runs" / "x"
    assert runs.resolve_out(tmp_path / "abs") == tmp_path / "abs"
    monkeypatch.delenv("COLORKIT_OUT_ROOT")
    assert runs.resolve_out("runs/x") == ROOT / "runs" / "x"           # a user's own runs: the project's runs/
