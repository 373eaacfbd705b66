"""The course runner: execute every notebook with papermill and collect what each run recorded.

    python -m colorkit course [--preset P] [--device D] [--data DIR] [--only 00 02] [-p NAME VALUE ...]
    python -m colorkit.course clean        # strip outputs, execution counts and widget state
    python -m colorkit.course pin [NB ...] # run notebooks, store what their check cells print
    python -m colorkit.course timeouts     # per-cell test timeouts from runs/executed's measured cell times

Notebooks are committed without outputs, so what a `# NBVAL_CHECK_OUTPUT` cell must print lives in
that cell's metadata (`colorkit.expected_outputs`); `conftest.py` hands it to nbval as the
reference output. `pin` records it from a real run at the default preset.

Each notebook runs with its own folder as the working directory; its executed copy goes to
`runs/executed/`, its config, metrics and checkpoints to `runs/<notebook stem>/`, and the trained
models it records to `runs/results.json` and `runs/results.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from colorkit.runs import PRESETS, _write_json_atomic, project_root, resolve_out

NOTEBOOKS_DIR = "notebooks"


def notebooks(root: Path | None = None) -> list[Path]:
    """The course notebooks in order (00_..., 01_..., ...)."""
    folder = (root or project_root()) / NOTEBOOKS_DIR
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {folder}")
    return found


KERNEL_NAME = "colorkit"  # registered in the venv by ./course.sh setup


def kernel_name() -> str:
    """The venv's own kernel when setup registered it, else the default python3 kernel.

    A user-level "python3" kernelspec (common on laptops) may point at another interpreter;
    the "colorkit" kernel always runs the venv's Python.
    """
    from jupyter_client.kernelspec import find_kernel_specs

    return KERNEL_NAME if KERNEL_NAME in find_kernel_specs() else "python3"


def _parse_value(text: str):
    """-p values: JSON literals where they parse (numbers, null, true), else plain strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


RESULT_COLUMNS = ("notebook", "model", "variant", "preset", "parameters", "train_seconds", "psnr", "ssim", "colorfulness",
                  "gray_psnr", "checkpoint")


def _matches(nb: Path, key: str) -> bool:
    return nb.name.startswith(key) or nb.stem == key


def select_notebooks(only: list[str] | None, root: Path | None = None) -> list[Path]:
    """The notebooks `--only` names (all when `only` is None); a name matching none, or an empty
    `--only`, is an error that lists the notebooks."""
    found = notebooks(root)
    listing = ", ".join(nb.stem for nb in found)
    if only is None:
        return found
    if not only:
        raise ValueError(f"--only needs notebook names or prefixes, e.g. --only 00 02; the notebooks are: {listing}")
    unmatched = [key for key in only if not any(_matches(nb, key) for nb in found)]
    if unmatched:
        raise ValueError(f"--only {' '.join(unmatched)}: no notebook matches; the notebooks are: {listing}")
    return [nb for nb in found if any(_matches(nb, key) for key in only)]


CALLER_CWD_ENV = "COLORKIT_CALLER_CWD"   # set by course.sh, which runs from the project root


def resolve_data(data: str | None, cwd: str | os.PathLike | None = None) -> str | None:
    """DATA for the notebooks: a dataset name as it is; a folder as an absolute path, a relative one
    taken from the folder the user ran the command in (notebooks run in notebooks/), and checked
    before any notebook starts."""
    from colorkit.data import DATA_NAMES, IMAGE_EXTENSIONS, _cache_state, walk_files
    from colorkit.fetch import DATASETS, fetched

    if str(data) in ("photos", "corpus"):
        from colorkit.corpus import corpus_dir

        if not (corpus_dir() / "manifest.json").is_file():
            raise FileNotFoundError(f"--data {data}: no photo corpus in {corpus_dir()}; run `python -m colorkit data "
                                    "prepare` (./course.sh setup does)")
    if data is None or str(data) in DATA_NAMES:
        return data
    if str(data) in DATASETS:
        if fetched(str(data)) is None:
            raise FileNotFoundError(f"--data {data}: not fetched yet; run `python -m colorkit data fetch {data}`")
        return str(data)
    base = Path(cwd or os.environ.get(CALLER_CWD_ENV) or os.getcwd())
    folder = (base / Path(data).expanduser()).resolve()
    if not folder.exists():
        raise FileNotFoundError(f"--data {data}: no folder {folder} (a relative path is taken from {base}); "
                                f"DATA is one of {', '.join(DATA_NAMES)} or a folder of images")
    if not folder.is_dir():
        raise NotADirectoryError(f"--data {data}: {folder} is not a folder")
    if _cache_state(str(folder)) is None and _cache_state(str(folder / "train")) is None:
        has_image = any(path.lower().endswith(IMAGE_EXTENSIONS) for path in walk_files(folder))
        if not has_image:
            raise ValueError(f"--data {data}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return str(folder)


def _error_line(err: BaseException) -> str:
    """One line for a failed notebook's status: the notebook's own exception for papermill's error."""
    name, value = getattr(err, "ename", None), getattr(err, "evalue", None)
    if name is None:
        name, value = type(err).__name__, str(err)
    lines = [line.strip() for line in str(value or "").splitlines() if line.strip()]
    return f"{name}: {lines[0]}" if lines else name


def run(preset: str | None = None, out: str = "runs", only: list[str] | None = None, *,
        device: str | None = None, data: str | None = None, extra: dict | None = None) -> list[dict]:
    """Execute the notebooks with papermill and collect what they recorded; one row per notebook.

    Executed copies go to `<out>/executed/`, each notebook's own files (config, metrics, figures,
    checkpoints) to `<out>/<notebook stem>/`. Every trained model a notebook records (see
    `colorkit.runs.save_run(..., trained_models=...)`) becomes a row of `<out>/results.json` and of
    the table `<out>/results.md`; `<out>/summary.json` holds each notebook's status and time.
    The tables are rewritten (atomically) before and after every notebook: a notebook that is running
    shows as "running", one stopped by Ctrl-C as "interrupted" (and a "running" row that a killed run
    left behind becomes "interrupted" at the next run); its earlier results are dropped when it starts.
    Arguments are checked before any notebook starts: the preset, `only`, the device and the data folder.
    """
    import papermill

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets are {', '.join(PRESETS)}")
    root = project_root()
    selected = select_notebooks(only, root)
    if device:
        from colorkit.runs import resolve_device

        resolve_device(device)                           # a missing GPU or a typo: one line, before any notebook
    extra = dict(extra or {})
    if data is None and isinstance(extra.get("DATA"), str):       # -p DATA FOLDER is --data FOLDER
        data = extra.pop("DATA")
    data = resolve_data(data)
    out_root = resolve_out(out).resolve()
    executed = out_root / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    overrides = {**({"PRESET": preset} if preset else {}), **({"DEVICE": device} if device else {}),
                 **({"DATA": str(data)} if data else {}), **(extra or {})}
    rows = {r["notebook"]: r for r in _read_json_list(out_root / "summary.json") if "notebook" in r}
    for row in rows.values():
        if row.get("status") == "running":                # a run that was killed (kill -9, a closed terminal)
            row["status"] = "interrupted"
    results = [r for r in _read_json_list(out_root / "results.json") if "notebook" in r]
    ran = []
    for nb in selected:
        out_dir = out_root / nb.stem
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").unlink(missing_ok=True)     # never report a previous run's numbers
        results = [r for r in results if r["notebook"] != nb.name]
        rows[nb.name] = {"notebook": nb.name, "status": "running", "seconds": 0.0, "out_dir": str(out_dir),
                         "metrics": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        ran.append(nb.name)
        _write_tables(out_root, rows, results)
        params = {"OUT_DIR": str(out_dir), **overrides}
        print(f"[course] {nb.name} -> {out_dir}", flush=True)
        start = time.perf_counter()
        status = "ok"
        try:
            papermill.execute_notebook(str(nb), str(executed / nb.name), parameters=params,
                                       cwd=str(nb.parent), kernel_name=kernel_name(), progress_bar=False)
        except KeyboardInterrupt:
            rows[nb.name].update(status="interrupted", seconds=round(time.perf_counter() - start, 1))
            _write_tables(out_root, rows, results)
            print(f"[course] {nb.name}: interrupted; the tables in {out_root} say so", flush=True)
            raise
        except Exception as err:  # keep going: one failing notebook should not hide the others
            status = f"failed: {_error_line(err)}"
        seconds = time.perf_counter() - start
        metrics_file = out_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() and status == "ok" else {}
        results += [{"notebook": nb.name, **model} for model in metrics.get("trained_models", [])]
        rows[nb.name] = {"notebook": nb.name, "status": status, "seconds": round(seconds, 1),
                         "out_dir": str(out_dir), "metrics": metrics}
        _write_tables(out_root, rows, results)
        print(f"[course] {nb.name}: {status} in {seconds:.1f} s", flush=True)
    print(f"\n{'notebook':<36} {'status':<8} {'seconds':>8}")
    for name in ran:
        row = rows[name]
        print(f"{row['notebook']:<36} {row['status'][:8]:<8} {row['seconds']:>8.1f}")
        if row["status"] != "ok":
            print(f"    {row['status']}")
    print(f"results: {out_root / 'results.md'}")
    return sorted(rows.values(), key=lambda r: r["notebook"])


def _write_tables(out_root: Path, rows: dict[str, dict], results: list[dict]) -> None:
    """summary.json, results.json and results.md, each replaced atomically."""
    ordered = sorted(rows.values(), key=lambda r: r["notebook"])
    results = sorted(results, key=lambda r: r["notebook"])
    _write_json_atomic(out_root / "summary.json", ordered)
    _write_json_atomic(out_root / "results.json", results)
    table = out_root / "results.md.tmp"
    table.write_text(results_table(results, ordered))
    os.replace(table, out_root / "results.md")


def _read_json_list(path: Path) -> list[dict]:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return value if isinstance(value, list) else []


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    return "" if value is None else str(value)


def results_table(results: list[dict], rows: list[dict]) -> str:
    """The results as a Markdown table: one line per trained model, then each notebook's status."""
    lines = ["# Course results", "", "Metrics on the shared validation split of each run's DATA "
             "(`colorkit.evaluate.validation_set`); gray_psnr is the same images with ab = 0.", ""]
    lines.append("| " + " | ".join(RESULT_COLUMNS) + " |")
    lines.append("|" + "---|" * len(RESULT_COLUMNS))
    for result in results:
        flat = {**result, **result.get("val", {})}
        lines.append("| " + " | ".join(_cell(flat.get(col)) for col in RESULT_COLUMNS) + " |")
    if not results:
        lines.append("| (no notebook recorded a trained model) |" + " |" * (len(RESULT_COLUMNS) - 1))
    lines += ["", "| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| {row['notebook']} | {row['status']} | {row['seconds']} |" for row in rows]
    return "\n".join(lines) + "\n"


CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
EXPECTED_KEY = "expected_outputs"


def is_check_cell(cell) -> bool:
    """A code cell nbval checks: the marker on any of its comment lines, or the `nbval-check-output` tag."""
    if cell.cell_type != "code":
        return False
    marked = any(line.strip() == CHECK_MARKER for line in cell.source.splitlines())
    return marked or "nbval-check-output" in cell.get("metadata", {}).get("tags", [])


def comparable_outputs(outputs) -> list[dict]:
    """The parts of a cell's outputs that nbval compares: stdout/stderr text and plain-text results."""
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream":
            kept.append({"output_type": "stream", "name": out["name"], "text": out["text"]})
        elif out.get("output_type") in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            kept.append({"output_type": out["output_type"], "data": {"text/plain": out["data"]["text/plain"]},
                         "metadata": {}, **({"execution_count": None} if out["output_type"] == "execute_result" else {})})
    return kept


def pin(paths: list[Path] | None = None, timeout: int = 600) -> dict[str, int]:
    """Execute each notebook at its default preset and store its check cells' outputs in their metadata."""
    import nbformat
    from nbclient import NotebookClient

    pinned = {}
    for path in paths or notebooks():
        path = Path(path)
        nb = nbformat.read(path, as_version=4)
        executed = nbformat.read(path, as_version=4)
        NotebookClient(executed, timeout=timeout, kernel_name=kernel_name(),
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        count = 0
        for cell, ran in zip(nb.cells, executed.cells):
            if is_check_cell(cell):
                cell.metadata.setdefault("colorkit", {})[EXPECTED_KEY] = comparable_outputs(ran.outputs)
                count += 1
        path.write_text(nbformat.writes(nb))
        clean([path])
        pinned[path.name] = count
        print(f"pinned {count} check cells in {path.name}")
    return pinned


CELL_TIMEOUT_KEY = "timeout"   # a cell's own nbval timeout in seconds (colorkit.nbcheck reads it)
DEFAULT_CELL_TIMEOUT = 300     # --nbval-cell-timeout in pyproject.toml
TIMEOUT_MARGIN = 3.0           # a cell may take this many times its measured cost (a loaded or slower machine)


def set_cell_timeouts(executed: Path, root: Path | None = None, *, margin: float = TIMEOUT_MARGIN,
                      default: int = DEFAULT_CELL_TIMEOUT) -> dict[str, dict[int, int]]:
    """Give each notebook cell whose measured cost times `margin` exceeds `default` seconds a
    timeout of its own (that product, rounded up to a minute), from the papermill durations in a
    course run's executed copies (`runs/executed/`, best a cold run: no checkpoints). Cells that fit
    the default lose any timeout of their own. Returns {notebook: {cell index: timeout}}."""
    import math

    import nbformat

    set_to = {}
    for path in notebooks(root):
        ran = Path(executed) / path.name
        if not ran.is_file():
            print(f"{path.name}: no executed copy in {executed}, left as it is")
            continue
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        ran_cells = [c for c in nbformat.read(ran, as_version=4).cells
                     if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
        if len(ran_cells) != len(nb.cells) or any(a.source != b.source for a, b in zip(ran_cells, nb.cells)):
            raise ValueError(f"{ran} was run from another version of {path.name}: run the course again first")
        limits = {}
        for i, (cell, done) in enumerate(zip(nb.cells, ran_cells)):
            cost = done.get("metadata", {}).get("papermill", {}).get("duration") or 0.0
            own = cell.metadata.get("colorkit", {})
            if cost * margin > default:
                limits[i] = 60 * math.ceil(cost * margin / 60)
                cell.metadata.setdefault("colorkit", {})[CELL_TIMEOUT_KEY] = limits[i]
            elif CELL_TIMEOUT_KEY in own:
                del own[CELL_TIMEOUT_KEY]
                if not own:
                    del cell.metadata["colorkit"]
        if nbformat.writes(nb) != before:                 # untouched notebooks keep their bytes
            path.write_text(nbformat.writes(nb) + "\n")
        set_to[path.name] = limits
        print(f"{path.name}: " + (", ".join(f"cell {i} {t} s" for i, t in limits.items()) or f"every cell within {default} s"))
    return set_to


def clean(paths: list[Path] | None = None) -> list[Path]:
    """Strip outputs, execution counts and widget state; return the notebooks that changed."""
    import nbformat

    changed = []
    for path in paths or notebooks():
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
            cell.metadata.pop("execution", None)
        nb.metadata.pop("widgets", None)
        after = nbformat.writes(nb)
        if after != before:
            path.write_text(after)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """`python -m colorkit.course {run,clean,pin}`; `python -m colorkit course` is the same as `run`."""
    parser = argparse.ArgumentParser(prog="python -m colorkit.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="execute every notebook with papermill"))
    sub.add_parser("clean", help="strip outputs from the notebooks")
    p_pin = sub.add_parser("pin", help="run notebooks and store their check cells' expected outputs")
    p_pin.add_argument("paths", nargs="*", type=Path)
    p_timeouts = sub.add_parser("timeouts", help="set per-cell nbval timeouts from a course run's measured cell times")
    p_timeouts.add_argument("executed", nargs="?", type=Path, default=Path("runs/executed"),
                            help="folder of executed notebooks (default runs/executed)")
    args = parser.parse_args(argv)
    if args.command == "timeouts":
        set_cell_timeouts(resolve_out(args.executed))
        return 0
    if args.command == "run":
        return run_from_arguments(args)
    if args.command == "pin":
        pin(args.paths or None)
        return 0
    for path in clean():
        print(f"cleaned {path}")
    return 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="override each notebook's PRESET (default: the notebook's own, 'course')")
    parser.add_argument("--device", default=None, help="DEVICE for every notebook: auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--data", default=None, help="DATA for every notebook: toyworld, photos or a folder")
    parser.add_argument("--out", default="runs", help="results folder, relative to the project root")
    parser.add_argument("--only", nargs="*", help="notebook prefixes or stems to run, e.g. 00 02")
    parser.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        help="extra notebook parameter, e.g. -p MAX_STEPS 500")


def run_from_arguments(args: argparse.Namespace) -> int:
    try:
        rows = run(args.preset, args.out, args.only, device=args.device, data=args.data,
                   extra={k: _parse_value(v) for k, v in args.p})
    except (ValueError, OSError) as err:                 # bad arguments: one line, before any notebook ran
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    ran = [r for r in rows if r["notebook"] in {nb.name for nb in select_notebooks(args.only)}]
    return 0 if ran and all(r["status"] == "ok" for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
