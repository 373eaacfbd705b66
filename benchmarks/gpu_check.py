"""The course's GPU path in one command: notebooks 03-07, training and inference speed, sampling, Lab.

    python benchmarks/gpu_check.py --out runs/gpu_check                   # one H100/H200: at most 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny --out DIR          # the same code paths at tiny sizes (< 2 min, 2 cores)
    python benchmarks/gpu_check.py --notebooks 05 07 --no-compile         # a part of it

A GPU is lent for 15 minutes at a time, so this is one prepared command that must work the first time.
It writes DIR/gpu_check.json and DIR/gpu_check.md (after every section, so a run stopped from outside
keeps what it measured) and prints the Markdown: a table per section, the course's goals, a summary.

1. Notebooks 03-07 through papermill: GPU mode `PRESET="full"`, `MAX_STEPS=30`, `DATA` a folder of
   random smooth color PNGs at 256 x 256 that the script writes (train/ and val/); tiny mode
   `PRESET="smoke"`, `MAX_STEPS=2`, the same kind of folder at 48 px, two notebooks at a time with
   one thread each. Executed copies go to DIR/notebooks/, the runs to DIR/notebook_runs/. Every
   notebook has a deadline (a cell still running then is stopped); a notebook whose preset calls
   do not all take `steps=MAX_STEPS` trains some model for the full preset's steps, so it runs
   last, on what time is left (the table says so).
2. Training throughput: every model of notebooks 03-07 (and Li's code at Swin-T's widths) built
   from its preset (`full`; tiny: `smoke`), trained through `colorkit.train.Trainer` with the
   model's own `training_step` on random images at the preset's size and batch: images/s and ms
   per step after one warm-up step (from the engine's per-step records), the peak memory of the run
   (`colorkit.profiling.peak_memory_bytes`). Then each model again with the engine's
   `channels_last` and with its `device_cache` (one option at a time), and compiled (GPU by
   default; `--train-compile` forces it): what the `workshop` and `full` presets should turn on.
3. Inference latency at batch 1, at the preset's size: eager, `torch.compile` (default mode) and,
   for the widget's model (Li et al.'s T), `mode="reduce-overhead"` (CUDA graphs; CUDA only), with
   10 hints for the hint models. Beside T: Li's S and a Swin-T-shaped configuration of the same code
   (embed_dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), Swin's 1x1 merge reduction) at 224
   (tiny: 32 px at small widths). Sun et al.'s model is timed by its one-pass head (its sampling
   is section 4). Median of repeats after warm-up (`colorkit.profiling.seconds_per_call`); on
   CUDA under bf16 autocast, as the training engine and benchmarks/li_speed.py run.
4. Sun et al.'s sampling (benchmarks/sun2023_sampling.py's measure): 20 gray 64 x 64 images with the
   course-size model, cached in full, naive timed on its first row and extrapolated per pixel
   (tiny: batch 2 at 8 x 8, naive in full).
5. Lab conversion as a share of memory bandwidth: `colorkit.color.rgb_to_lab` on a large batch on the
   device in MP/s and GB/s (3 float32 read + 3 written per pixel = 24 bytes), beside the measured copy
   bandwidth (`copy_` of a large buffer, read + write counted) and, on CUDA, the card's nominal
   bandwidth when its name is known.

The course's goals (GPU mode; tiny mode on a CPU measures none of them):
- Li et al.'s T trains at least as many images/s as the Swin-T-shaped configuration of its code;
- a compiled widget update (T, batch 1, 224 x 224, hints) takes under 2 ms;
- SMSANet trains at >= 80 % of BaseNet's images/s;
- Sun et al.'s cached sampling of 20 images at 64 x 64 takes under 5 s;
- Lab conversion moves at least half the device's copy bandwidth.

Each section is wrapped: one that fails records its error and the others still run; the exit
status is 1 when any section (or any notebook or model in it) failed. `--seconds-budget` (480 on a
GPU, 110 tiny) bounds the whole run: optional work (compiled variants) that would run over it is
skipped, and the output says what was skipped. Sections run in the order 1, 4, 5, 2, 3 so that the
compiled variants come last.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))               # run from a checkout without installing

from colorkit import evaluate, models, presets  # noqa: E402
from colorkit.color import rgb_to_lab  # noqa: E402
from colorkit.data import toyworld_batch  # noqa: E402
from colorkit.profiling import peak_memory_bytes, seconds_per_call, synchronize  # noqa: E402
from colorkit.runs import resolve_device  # noqa: E402
from colorkit.train import Trainer, TrainConfig  # noqa: E402

NOTEBOOKS = ("03", "04", "05", "06", "07")
# Li et al.'s code at Swin-T's widths with Swin's 1x1 reduction in patch merging (li.PatchMerging)
SWIN_T = {"embed_dim": 96, "depths": [2, 2, 6, 2], "heads": [3, 6, 12, 24], "merge_reduction": True}
SWIN_T_TINY = {"embed_dim": 24, "depths": [1, 1, 1, 1], "heads": [3, 6, 12, 24], "merge_reduction": True}
# (label, preset name, model changes, tiny model changes): the models of notebooks 03-07
MODELS = [
    ("sun2023", "sun2023", {}, {}),
    ("sun2023_upgrader", "sun2023_upgrader", {}, {}),
    ("narkhede", "narkhede", {}, {}),
    ("lakhani", "lakhani", {}, {}),
    ("jiang (SMSANet)", "jiang", {}, {}),
    ("jiang (BaseNet)", "jiang", {"attention": None}, {"attention": None}),
    ("zhang2017", "zhang2017", {}, {}),
    ("li T", "li", {}, {}),
    ("li Swin-T-shaped", "li", SWIN_T, SWIN_T_TINY),
]
LI_S = ("li S", "li", {"arch": "S"}, {"arch": "S", "depths": [1, 1, 1, 1]})
HINT_MODELS = ("li", "zhang2017")
WIDGET_MODEL = "li T"
# Nominal memory bandwidth in GB/s by the card's name (the vendors' data sheets)
NOMINAL_GB_PER_S = (("H200", None, 4800.0), ("H100", "PCIE", 2000.0), ("H100", "HBM3", 3350.0), ("H100", "SXM", 3350.0))
LAB_BYTES_PER_PIXEL = 24                    # 3 float32 read + 3 float32 written
COMPILE_GUESS_S = {"cuda": 60.0, "cpu": 40.0}   # a first compile's cost before one was measured


# ---------------------------------------------------------------------------------------------
# Pure helpers: bandwidth arithmetic, goals, Markdown
# ---------------------------------------------------------------------------------------------

def lab_gb_per_s(pixels: int, seconds: float) -> float:
    """GB/s that converting `pixels` RGB pixels to Lab in `seconds` moves: 24 bytes a pixel."""
    return pixels * LAB_BYTES_PER_PIXEL / seconds / 1e9


def copy_gb_per_s(nbytes: int, seconds: float) -> float:
    """GB/s of copying `nbytes` in `seconds`: every byte is read once and written once."""
    return 2 * nbytes / seconds / 1e9


def nominal_gb_per_s(device_name: str) -> float | None:
    """The card's nominal memory bandwidth in GB/s when its name is known (H100 SXM / PCIe, H200), else None."""
    name = device_name.upper()
    for model, variant, gb_per_s in NOMINAL_GB_PER_S:
        if model in name and (variant is None or variant in name):
            return gb_per_s
    return None


def _row(rows: list[dict], label: str) -> dict:
    return next((r for r in rows if r.get("model") == label), {})


def evaluate_goals(sections: dict[str, dict], *, measured: bool, why_not: str = "cpu tiny") -> list[dict]:
    """The course's goals with the measured value and "pass", "fail" or "not measured (...)".

    `measured` False (tiny mode) marks every goal "not measured (why_not)"; a missing value is
    "not measured" too.
    """
    train = sections.get("training", {}).get("rows", [])
    infer = sections.get("inference", {}).get("rows", [])
    sampling = (sections.get("sampling", {}).get("rows") or [{}])[0]
    lab = (sections.get("lab", {}).get("rows") or [{}])[0]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    li_t, swin = _row(train, "li T").get("images_per_s"), _row(train, "li Swin-T-shaped").get("images_per_s")
    smsa, base = _row(train, "jiang (SMSANet)").get("images_per_s"), _row(train, "jiang (BaseNet)").get("images_per_s")
    widget = _row(infer, WIDGET_MODEL)
    compiled = [v for v in (widget.get("compiled_ms"), widget.get("reduce_overhead_ms")) if v]
    goals = [
        ("Li T trains >= the Swin-T-shaped images/s (ratio T / Swin-T)", ratio(li_t, swin), lambda v: v >= 1.0),
        ("compiled widget update (Li T, batch 1, 224 px) < 2 ms (best compiled ms)", min(compiled) if compiled else None,
         lambda v: v < 2.0),
        ("SMSANet trains at >= 80 % of BaseNet's images/s (ratio)", ratio(smsa, base), lambda v: v >= 0.8),
        ("Sun et al. cached sampling, 20 images at 64 x 64 < 5 s (s)",
         sampling.get("cached_s") if sampling.get("batch") == 20 and sampling.get("size") == 64 else None,
         lambda v: v < 5.0),
        ("Lab conversion >= half the copy bandwidth (share)", lab.get("share_of_copy"), lambda v: v >= 0.5),
    ]
    out = []
    for goal, value, passes in goals:
        if not measured:
            status = f"not measured ({why_not})"
        elif value is None:
            status = "not measured"
        else:
            status = "pass" if passes(value) else "fail"
        out.append({"goal": goal, "value": None if not measured else value, "status": status})
    return out


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table of `rows` with `columns` = [(key, header, format spec)]; missing values read "-"."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(key), spec) for key, _, spec in columns) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running: the budget, the sections' wrapper, the environment
# ---------------------------------------------------------------------------------------------

class Budget:
    """The run's wall-clock budget in seconds, counted from its creation; `skipped` says what it cut,
    and `checkpoint()` writes the report so far (set by main), so a run stopped from outside keeps it."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self.skipped = seconds, time.perf_counter(), []
        self.checkpoint: Callable[[], None] = lambda: None

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def allows(self, seconds: float, what: str) -> bool:
        """Whether `seconds` more fit; if not, `what` is recorded as skipped."""
        if self.left() >= seconds:
            return True
        self.skipped.append(f"{what}: skipped, {max(0.0, self.left()):.0f} s left of the {self.seconds:.0f} s budget "
                            f"and it would take about {seconds:.0f} s")
        return False


def last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def error_line(err: BaseException) -> str:
    """One line for an error: for papermill's, the notebook's own exception and its cell."""
    name, value = getattr(err, "ename", None), getattr(err, "evalue", None)
    if name is not None:                                    # PapermillExecutionError
        cell = getattr(err, "cell_index", None)
        return f"{name}: {last_line(value)}" + (f" (cell {cell})" if cell is not None else "")
    return f"{type(err).__name__}: {last_line(err)}"


def run_section(key: str, title: str, fn: Callable[[dict], None], report: dict, save: Callable[[], None]) -> None:
    """Run one section: fn(section) fills section["rows"] and ["notes"]; an exception is recorded, not raised."""
    section = {"title": title, "status": "ok", "rows": [], "notes": []}
    report["sections"][key] = section
    start = time.perf_counter()
    print(f"[gpu_check] {title} ...", file=sys.stderr, flush=True)
    try:
        fn(section)
    except Exception as err:  # keep going: one failing section must not hide the others
        section["status"] = "failed"
        section["error"] = error_line(err)
        section["traceback"] = traceback.format_exc()[-4000:]
    failed_rows = [r for r in section["rows"] if str(r.get("status", "ok")).startswith(("failed", "timed out"))]
    if failed_rows and section["status"] == "ok":
        section["status"] = "failed"
        section["error"] = f"{len(failed_rows)} of {len(section['rows'])} rows failed"
    section["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[gpu_check] {title}: {section['status']} in {section['seconds']} s", file=sys.stderr, flush=True)
    save()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
        return done.stdout.strip() if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        return found.group(1).strip() if found else platform.processor() or platform.machine()
    except OSError:
        return platform.processor() or platform.machine()


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    status = _git("status", "--porcelain")
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]), "mode": "tiny" if args.tiny else "full",
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
            "device_name": device_name(device), "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": bool(status) if status is not None else None,
            "train_config_new_fields": [f for f in ("compile", "channels_last", "device_cache")
                                        if f in TrainConfig.__dataclass_fields__]}


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as the training engine and benchmarks/li_speed.py run), nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# 1. Notebooks 03-07 through papermill
# ---------------------------------------------------------------------------------------------

def write_image_folder(folder: Path, *, train: int, val: int, size: int, seed: int = 0) -> Path:
    """train/ and val/ of random smooth color PNGs (size x size): a 4 x 4 grid of random colors, upsampled bicubically."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            grid = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
            Image.fromarray(grid).resize((size, size), Image.BICUBIC).save(folder / split / f"{i:04d}.png")
    return folder


def uncapped_presets(notebook: Path) -> list[str]:
    """Models whose `presets.preset(name, PRESET, ...)` call in the notebook does not take steps=MAX_STEPS:
    at the full preset they train for the preset's own steps whatever MAX_STEPS says. (A call with a
    literal preset, e.g. presets.preset("jiang", "full")["model"], only builds a model to show it.)"""
    source = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
    calls = re.findall(r"presets\.preset\(\s*\"(\w+)\"\s*,\s*PRESET\b([^)]*)\)", source)
    return sorted({name for name, rest in calls if "MAX_STEPS" not in rest})


def notebook_deadline(now: float, section_deadline: float, *, capped: bool, uncapped_left: int, workers: int) -> float:
    """When a notebook starting `now` must end. One whose training MAX_STEPS caps may use the rest of
    the section's time; one that trains for the full preset's steps (it runs after those) gets a fair
    share of what is left among the `uncapped_left` such notebooks from it on, `workers` at a time."""
    if capped or uncapped_left <= 1:
        return section_deadline
    return now + (section_deadline - now) * min(workers, uncapped_left) / uncapped_left


def notebooks_section(section: dict, args: argparse.Namespace, device: torch.device, out: Path, budget: Budget) -> None:
    import papermill
    from colorkit.course import kernel_name, select_notebooks

    preset = "smoke" if args.tiny else "full"
    size, train, val = (48, 16, 8) if args.tiny else (256, 128, 32)
    data_dir = write_image_folder(out / "data", train=train, val=val, size=size)
    executed, runs_dir = out / "notebooks", out / "notebook_runs"
    executed.mkdir(parents=True, exist_ok=True)
    selected = select_notebooks(args.notebooks)
    uncapped = {nb.name: uncapped_presets(nb) for nb in selected}
    if preset == "full":       # those that can finish at full first; the others run on what is left
        selected.sort(key=lambda nb: bool(uncapped[nb.name]))
    workers = args.notebook_workers or (1 if device.type == "cuda" else min(2, os.cpu_count() or 1))
    section_seconds = min(args.notebook_seconds or budget.seconds * (0.8 if args.tiny else 0.5), budget.left())
    deadline = time.monotonic() + section_seconds
    kernel = kernel_name()
    section["notes"] += [
        f"PRESET={preset!r}, MAX_STEPS={args.max_steps}, DEVICE={str(device)!r}, DATA = {train} train + {val} val "
        f"random smooth PNGs at {size} px ({data_dir}); kernel {kernel!r}; {workers} at a time"
        + (" with one thread each" if workers > 1 and device.type == "cpu" else "") + f"; {section_seconds:.0f} s for all",
        "no notebook needs a weights file at these settings: 04 FEATURE_NETWORK, 05 GLOBAL = EfficientNet-Lite0 "
        "(ships offline), 06 SALIENCY_WEIGHTS = ZHANG_WEIGHTS = None (the stand-in, from scratch)"]

    finished, finished_lock = [], threading.Lock()

    def run_one(nb: Path, index: int) -> dict:
        capped_by_max_steps = not (preset == "full" and uncapped[nb.name])
        now = time.monotonic()
        later_uncapped = sum(1 for later in selected[index:] if preset == "full" and uncapped[later.name])
        until = notebook_deadline(now, deadline, capped=capped_by_max_steps, uncapped_left=later_uncapped, workers=workers)
        row = {"notebook": nb.name, "status": "skipped", "seconds": 0.0, "error": None,
               "output": str(executed / nb.name),
               "note": None if capped_by_max_steps else f"MAX_STEPS does not cap {', '.join(uncapped[nb.name])}: "
                                                        f"the full preset's steps, so it may not finish"}
        if until - now < 5:
            row["error"] = "no time left in the notebooks' share of the budget"
            budget.skipped.append(f"notebook {nb.name}: {row['error']}")
            return row
        params = {"PRESET": preset, "DEVICE": str(device), "DATA": str(data_dir), "MAX_STEPS": args.max_steps,
                  "OUT_DIR": str(runs_dir / nb.stem), "SEED": 0}
        running = {}

        def cell_timeout(cell) -> float:                       # nbclient asks as each cell starts
            running["cell"] = cell
            return max(1.0, until - time.monotonic())

        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(nb), str(executed / nb.name), parameters=params, cwd=str(nb.parent),
                                       kernel_name=kernel, progress_bar=False, log_output=False, timeout_func=cell_timeout)
            row["status"] = "ok"
        except Exception as err:  # one failing notebook never stops the others
            row["error"] = error_line(err)
            if type(err).__name__ == "CellTimeoutError":
                source = "".join(running.get("cell", {}).get("source", ""))
                first = next((line.strip() for line in source.splitlines() if line.strip() and line[0] != "#"), "")
                row["status"], row["error"] = "timed out", f"still running at its deadline: the cell starting {first[:80]!r}"
            else:
                row["status"] = "failed"
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(f"[gpu_check]   {nb.name}: {row['status']} in {row['seconds']} s", file=sys.stderr, flush=True)
        with finished_lock:                                  # a new list each time: a save in progress keeps its own
            finished.append(row)
            section["rows"] = sorted(finished, key=lambda r: r["notebook"])
        budget.checkpoint()
        return row

    saved_env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "COLORKIT_OUT_ROOT")}
    os.environ["COLORKIT_OUT_ROOT"] = str(out)              # a relative path a notebook writes lands in DIR
    if workers > 1 and device.type == "cpu":                # two kernels on two cores: one thread each
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    try:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(run_one, selected, range(len(selected))))
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    section["rows"] = sorted(rows, key=lambda r: r["notebook"])       # in the course's order again
    if any(r["status"] == "skipped" for r in rows):
        section["status"] = "failed"
        section["error"] = "some notebooks did not run (budget)"


# ---------------------------------------------------------------------------------------------
# 2. Training throughput through the engine
# ---------------------------------------------------------------------------------------------

class RandomImages(Dataset):
    """`count` random RGB images (3, size, size) in [0, 1], made once: a step's time does not depend on them."""

    def __init__(self, count: int, size: int, seed: int = 0):
        # 8-bit values, as decoded images have: the device cache keeps them as uint8
        self.rgb = torch.randint(0, 256, (count, 3, size, size), generator=torch.Generator().manual_seed(seed)).float() / 255

    def __len__(self) -> int:
        return len(self.rgb)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"rgb": self.rgb[i]}


def model_config(name: str, changes: dict, level: str) -> tuple[dict, dict]:
    cfg = presets.preset(name, level)
    return {**cfg["model"], **changes}, cfg


def step_name(step: Callable) -> str:
    """'narkhede.make_gan_step' for a step function made by narkhede.make_gan_step()."""
    module = step.__module__.rsplit(".", 1)[-1]
    return f"{module}.{step.__qualname__.split('.<locals>')[0]}"


def steps_per_second(records: list[dict], warmup: int) -> tuple[float, int]:
    """(seconds per step, steps) over the engine's per-step records after the first `warmup` steps."""
    train = {r["step"]: r["seconds"] for r in records if r.get("kind") == "train"}
    last = max(train)
    if warmup not in train or last <= warmup:
        raise ValueError(f"need per-step records beyond step {warmup}; have steps {sorted(train)}")
    return (train[last] - train[warmup]) / (last - warmup), last - warmup


def train_once(label: str, name: str, changes: dict, args: argparse.Namespace, device: torch.device, out: Path,
               *, compile_mode: Any = None, options: dict | None = None) -> dict:
    level = "smoke" if args.tiny else "full"
    config, cfg = model_config(name, changes, level)
    size, batch = cfg["data"]["size"], cfg["train"]["batch_size"]
    torch.manual_seed(0)
    net = models.build(config)
    step = type(net).training_step
    warmup = 2 if compile_mode else 1                       # a compiled run records CUDA graphs on its 2nd call
    fields = {**cfg["train"], "steps": warmup + args.train_steps, "log_every": 1, "val_every": 0, "ckpt_every": 0,
              "num_workers": 0, "device": str(device), "seed": 0}
    if compile_mode:
        fields["compile"] = compile_mode
    fields.update(options or {})
    slug = (re.sub(r"[^\w]+", "_", label).strip("_") + ("_compiled" if compile_mode else "")
            + "".join(f"_{k}" for k, v in (options or {}).items() if v))
    trainer = Trainer(net.training_models(), step, RandomImages(max(2 * batch, 4), size), TrainConfig(**fields),
                      out_dir=out / "train" / slug, resume=False)
    with open(out / "train" / f"{slug}.log", "w") as log, contextlib.redirect_stderr(log):   # the engine's progress bar
        peak, how = peak_memory_bytes(trainer.fit, device)
    seconds, timed = steps_per_second(trainer.records, warmup)
    return {"model": label, "size": size, "batch": batch, "step_fn": step_name(step), "timed_steps": timed,
            "images_per_s": batch / seconds, "step_ms": 1000 * seconds,
            "peak_memory_gib": peak / 2**30 if peak is not None else None, "memory_how": how,
            "parameters": sum(p.numel() for m in net.training_models().values() for p in m.parameters())}


def training_section(section: dict, args: argparse.Namespace, device: torch.device, out: Path, budget: Budget) -> None:
    can_compile = "compile" in TrainConfig.__dataclass_fields__
    want_compile = args.train_compile or (device.type == "cuda" and not args.no_compile)
    section["notes"].append(f"{args.train_steps} timed steps after 1 warm-up step at each preset's batch and size "
                            f"({'smoke' if args.tiny else 'full'}), random images; peak memory: of the whole run above "
                            "the weights (optimizer state, activations)"
                            + ("; CUDA under the engine's bf16 autocast" if device.type == "cuda" else ""))
    for label, name, changes, tiny_changes in MODELS:
        try:
            row = train_once(label, name, tiny_changes if args.tiny else changes, args, device, out)
            row["status"] = "ok"
        except Exception as err:  # one model failing never stops the others
            row = {"model": label, "status": f"failed: {error_line(err)}"}
        section["rows"].append(row)
        budget.checkpoint()
        print(f"[gpu_check]   train {label}: {row.get('images_per_s', 0):.1f} images/s", file=sys.stderr, flush=True)
    # The engine's other speed options, one at a time against the plain run: what the presets should turn on
    for option in ("channels_last", "device_cache"):
        if option not in TrainConfig.__dataclass_fields__:
            section["notes"].append(f"{option} not measured: colorkit.train.TrainConfig has no `{option}` field")
            continue
        for row, (label, name, changes, tiny_changes) in zip(section["rows"], MODELS):
            if row["status"] != "ok" or not budget.allows(args.reserve_seconds + 5, f"{option} training of {label}"):
                continue
            try:
                row[f"{option}_images_per_s"] = train_once(label, name, tiny_changes if args.tiny else changes, args,
                                                           device, out, options={option: True})["images_per_s"]
            except Exception as err:
                row[f"{option}_error"] = error_line(err)
            budget.checkpoint()
    if not can_compile:
        section["notes"].append("compiled training not measured: colorkit.train.TrainConfig has no `compile` field yet")
    elif not want_compile:
        section["notes"].append("compiled training not measured: off on a CPU (pass --train-compile) or --no-compile")
    else:
        spent = []
        for row, (label, name, changes, tiny_changes) in zip(section["rows"], MODELS):
            guess = max(spent, default=COMPILE_GUESS_S.get(device.type, 60.0)) * 1.2
            if row["status"] != "ok" or not budget.allows(guess + args.reserve_seconds, f"compiled training of {label}"):
                continue
            start = time.perf_counter()
            try:
                compiled = train_once(label, name, tiny_changes if args.tiny else changes, args, device, out,
                                      compile_mode=True)
                row["compiled_images_per_s"] = compiled["images_per_s"]
            except Exception as err:
                row["status"] = f"failed (compiled): {error_line(err)}"
            spent.append(time.perf_counter() - start)
            budget.checkpoint()


# ---------------------------------------------------------------------------------------------
# 3. Batch-1 inference latency, eager and compiled
# ---------------------------------------------------------------------------------------------

def forward_and_inputs(name: str, model: torch.nn.Module, size: int, device: torch.device) -> tuple[Callable, tuple]:
    """(fn, inputs): fn(*inputs) runs the model once on one image of `size`, with 10 hints for a hint model."""
    torch.manual_seed(0)
    L = torch.rand(1, 1, size, size, device=device) * 100
    if name in HINT_MODELS:
        hints = {k: v.to(device) for k, v in evaluate.fixed_hints(torch.rand(1, 3, size, size), 10).items()}

        def forward(L, hint_ab, hint_mask):
            return model(L, hint_ab=hint_ab, hint_mask=hint_mask)

        return forward, (hints["L"], hints["hint_ab"], hints["hint_mask"])
    if name == "sun2023":
        def forward(L):
            return model.predict_parallel(L)               # the one-pass head; sampling is section 4

        return forward, (L,)
    if name == "sun2023_upgrader":
        coarse = torch.rand(1, 3, model.coarse_size, model.coarse_size, device=device)

        def forward(L, coarse_rgb):
            return model(L, coarse_rgb=coarse_rgb)

        return forward, (L, coarse)

    def forward(L):
        return model(L)

    return forward, (L,)


def milliseconds(fn: Callable, inputs: tuple, device: torch.device, repeats: int) -> float:
    with torch.no_grad(), autocast(device):
        return 1000 * seconds_per_call(lambda: fn(*inputs), device, repeats=repeats)


def compiled_milliseconds(fn: Callable, inputs: tuple, device: torch.device, repeats: int,
                          mode: str | None) -> tuple[float, float]:
    """(ms per call, seconds the first call took: the compile) of torch.compile(fn, mode=mode)."""
    torch._dynamo.reset()                  # every model's forward shares one code object: start its cache afresh
    compiled = torch.compile(fn, mode=mode)
    start = time.perf_counter()
    with torch.no_grad(), autocast(device):
        compiled(*inputs)
        synchronize(device)
    compile_seconds = time.perf_counter() - start
    return milliseconds(compiled, inputs, device, repeats), compile_seconds


def inference_section(section: dict, args: argparse.Namespace, device: torch.device, out: Path, budget: Budget) -> None:
    level = "smoke" if args.tiny else "full"
    repeats = 3 if args.tiny else 10
    built = {}
    for label, name, changes, tiny_changes in [*MODELS, LI_S]:
        row = {"model": label, "status": "ok"}
        try:
            config, cfg = model_config(name, tiny_changes if args.tiny else changes, level)
            torch.manual_seed(0)
            model = models.build(config).to(device).eval()
            size = cfg["data"]["size"]
            fn, inputs = forward_and_inputs(name, model, size, device)
            row.update(size=size, parameters=sum(p.numel() for p in model.parameters()),
                       eager_ms=milliseconds(fn, inputs, device, repeats))
            built[label] = (fn, inputs, row["parameters"])
        except Exception as err:
            row["status"] = f"failed: {error_line(err)}"
        section["rows"].append(row)
    rows = {r["model"]: r for r in section["rows"]}
    section["notes"].append(f"batch 1 at each preset's size ({level}); 10 hints for li and zhang2017; sun2023: its one-pass "
                            f"head; median of {repeats} repeats after warm-up"
                            + ("; CUDA under bf16 autocast" if device.type == "cuda" else ""))
    t, swin = rows.get(WIDGET_MODEL, {}).get("eager_ms"), rows.get("li Swin-T-shaped", {}).get("eager_ms")
    if t and swin:
        section["ratios"] = {"li_T_over_swin_T_eager_latency": t / swin}
        section["notes"].append(f"eager latency Li T / Swin-T-shaped: {t / swin:.2f}")

    compile_on = args.compile if args.compile is not None else not args.tiny
    if not compile_on:
        section["notes"].append("torch.compile not measured: off in tiny mode (a cold compile of the smallest smoke model "
                                "took 36 s on 2 CPU cores, 4 s with a warm inductor cache; --compile measures it)")
        return
    # the widget's model first, then Li's other two, then the rest; tiny mode: the smallest model only
    order = [WIDGET_MODEL, "li Swin-T-shaped", "li S"] + [m[0] for m in MODELS if not m[0].startswith("li ")]
    order = [label for label in order if label in built]
    if args.tiny:
        order = [min(order, key=lambda label: built[label][2])][:1] if order else []
        section["notes"].append(f"tiny mode compiles the smallest model only: {', '.join(order)}")
    variants = [(label, None) for label in order]
    if WIDGET_MODEL in order:                               # the widget's model with CUDA graphs, right after its compile
        variants.insert(1, (WIDGET_MODEL, "reduce-overhead"))
    spent = []
    for label, mode in variants:
        row = rows[label]
        key = "reduce_overhead_ms" if mode else "compiled_ms"
        if label not in built:
            continue
        if mode == "reduce-overhead" and device.type != "cuda":
            row["note"] = "reduce-overhead (CUDA graphs): CUDA only"
            continue
        guess = max(spent, default=COMPILE_GUESS_S.get(device.type, 60.0)) * 1.2
        if not budget.allows(guess + args.reserve_seconds, f"torch.compile({label}{', mode=' + mode if mode else ''})"):
            continue
        fn, inputs, _ = built[label]
        start = time.perf_counter()
        try:
            row[key], row["compile_s" if not mode else "reduce_overhead_compile_s"] = compiled_milliseconds(
                fn, inputs, device, repeats, mode)
        except Exception as err:
            row["status"] = f"failed ({mode or 'compiled'}): {error_line(err)}"
        spent.append(time.perf_counter() - start)
        budget.checkpoint()
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------
# 4. Sun et al.'s sampling, 5. Lab conversion
# ---------------------------------------------------------------------------------------------

def _sampling_benchmark():
    """benchmarks/sun2023_sampling.py as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location("sun2023_sampling", ROOT / "benchmarks" / "sun2023_sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sampling_section(section: dict, args: argparse.Namespace, device: torch.device, out: Path, budget: Budget) -> None:
    bench = _sampling_benchmark()
    batch, size, naive_rows = (2, 8, 0) if args.tiny else (20, 64, 1)       # the benchmark's --quick and its defaults
    torch.manual_seed(0)
    model = models.build({"name": "sun2023", "image_size": size}).eval().to(device)
    L = rgb_to_lab(toyworld_batch(batch, size)["rgb"])[:, :1].to(device)    # (B, 1, S, S)

    def timed(fn: Callable[[], object]) -> float:                           # the benchmark's clock, waiting for the device
        return bench.timed(lambda: (fn(), synchronize(device)))

    model.sample(L, generator=torch.Generator().manual_seed(0), cached=True, rows=1)   # warm-up: kernels, allocator
    synchronize(device)
    pixels = size * size
    rows = size if naive_rows <= 0 else min(naive_rows, size)
    parallel = timed(lambda: model.predict_parallel(L))
    cached = timed(lambda: model.sample(L, generator=torch.Generator().manual_seed(0), cached=True))
    naive_part = timed(lambda: model.sample(L, generator=torch.Generator().manual_seed(0), cached=False, rows=rows))
    naive = naive_part * pixels / (rows * size)
    section["rows"].append({"batch": batch, "size": size, "model": "course-size sun2023 (untrained)",
                            "parallel_s": parallel, "cached_s": cached, "naive_s": naive,
                            "naive": "in full" if rows == size else f"extrapolated from {rows} row(s)",
                            "speedup": naive / cached})
    section["notes"].append("benchmarks/sun2023_sampling.py's measure on the device, fp32: cached in full; naive "
                            + ("in full" if rows == size else
                               f"timed on its first {rows} row(s), x {pixels // (rows * size)}"))


def lab_section(section: dict, args: argparse.Namespace, device: torch.device, out: Path, budget: Budget) -> None:
    batch, side = (4, 512) if args.tiny else (8, 2048)
    copy_bytes = (64 if args.tiny else 2048) * 2**20
    rgb = torch.rand(batch, 3, side, side, device=device)
    pixels = batch * side * side
    with torch.no_grad():
        lab_s = seconds_per_call(lambda: rgb_to_lab(rgb), device, repeats=5)
    del rgb
    source = torch.empty(copy_bytes // 4, device=device).uniform_()
    target = torch.empty_like(source)
    copy_s = seconds_per_call(lambda: target.copy_(source), device, repeats=5)
    del source, target
    lab_bw, copy_bw = lab_gb_per_s(pixels, lab_s), copy_gb_per_s(copy_bytes, copy_s)
    nominal = nominal_gb_per_s(device_name(device)) if device.type == "cuda" else None
    section["rows"].append({"device": device_name(device), "megapixels": pixels / 1e6, "lab_mp_per_s": pixels / lab_s / 1e6,
                            "lab_gb_per_s": lab_bw, "copy_gb_per_s": copy_bw, "nominal_gb_per_s": nominal,
                            "share_of_copy": lab_bw / copy_bw, "share_of_nominal": lab_bw / nominal if nominal else None})
    section["notes"].append(f"rgb_to_lab on {batch} x 3 x {side} x {side} float32 ({LAB_BYTES_PER_PIXEL} bytes a pixel); "
                            f"copy: {copy_bytes / 2**20:.0f} MiB with copy_ (read + write); nominal: "
                            + ("the card's data sheet" if nominal else "unknown for this device"))


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

SECTIONS = [  # key, title, function, Markdown columns
    ("notebooks", "1. Notebooks 03-07 through papermill", notebooks_section,
     [("notebook", "notebook", ""), ("status", "status", ""), ("seconds", "seconds", ".1f"), ("error", "error", ""),
      ("note", "note", "")]),
    ("training", "2. Training throughput (colorkit.train.Trainer)", training_section,
     [("model", "model", ""), ("size", "px", ""), ("batch", "batch", ""), ("step_fn", "step", ""),
      ("images_per_s", "images/s", ".1f"), ("step_ms", "ms/step", ".1f"),
      ("channels_last_images_per_s", "channels-last images/s", ".1f"),
      ("device_cache_images_per_s", "device-cache images/s", ".1f"),
      ("compiled_images_per_s", "compiled images/s", ".1f"),
      ("peak_memory_gib", "peak GiB", ".3f"), ("status", "status", "")]),
    ("inference", "3. Inference latency, batch 1", inference_section,
     [("model", "model", ""), ("size", "px", ""), ("parameters", "parameters", ""), ("eager_ms", "eager ms", ".2f"),
      ("compiled_ms", "compiled ms", ".2f"), ("compile_s", "compile s", ".1f"),
      ("reduce_overhead_ms", "reduce-overhead ms", ".2f"), ("status", "status", ""), ("note", "note", "")]),
    ("sampling", "4. Sun et al.'s sampling", sampling_section,
     [("batch", "batch", ""), ("size", "px", ""), ("parallel_s", "parallel s", ".3f"), ("cached_s", "cached s", ".3f"),
      ("naive_s", "naive s", ".2f"), ("naive", "naive", ""), ("speedup", "cached speed-up", ".1f")]),
    ("lab", "5. Lab conversion vs memory bandwidth", lab_section,
     [("device", "device", ""), ("lab_mp_per_s", "Lab MP/s", ".1f"), ("lab_gb_per_s", "Lab GB/s", ".2f"),
      ("copy_gb_per_s", "copy GB/s", ".2f"), ("nominal_gb_per_s", "nominal GB/s", ".0f"),
      ("share_of_copy", "share of copy", ".3f"), ("share_of_nominal", "share of nominal", ".3f")]),
]
RUN_ORDER = ("notebooks", "sampling", "lab", "training", "inference")   # compiled variants last


def summary_line(report: dict) -> str:
    sections = report["sections"]
    failed = [k for k, s in sections.items() if s["status"] != "ok"]
    goals = report.get("goals", [])
    passed = sum(g["status"] == "pass" for g in goals)
    measured = sum(g["status"] in ("pass", "fail") for g in goals)
    return (f"gpu_check: {len(sections) - len(failed)} of {len(sections)} sections ok"
            + (f" (failed: {', '.join(failed)})" if failed else "")
            + f"; goals {passed} of {measured} measured passed"
            + (f" ({len(goals) - measured} not measured)" if len(goals) > measured else "")
            + f"; {report.get('seconds', 0):.0f} s; skipped {len(report.get('skipped', []))} optional item(s)")


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check ({env['mode']} mode, {env['date']})", "",
             f"`{env['command']}`: torch {env['torch']}, CUDA {env['cuda']}, {env['device']} ({env['device_name']}), "
             f"git {(env['git_commit'] or 'unknown')[:10]}{' (uncommitted changes)' if env['git_dirty'] else ''}", ""]
    for key, title, _, columns in SECTIONS:
        section = report["sections"].get(key)
        if section is None:
            continue
        lines += [f"## {title}", "", f"status: {section['status']}, {section.get('seconds', 0)} s"
                  + (f"; error: {section['error']}" if section.get("error") else ""), ""]
        lines += [markdown_table(section["rows"], columns), ""]
        lines += [f"- {note}" for note in section.get("notes", [])] + [""]
    lines += ["## Goals", "", markdown_table(report.get("goals", []), [("goal", "goal", ""), ("value", "value", ".3f"),
                                                                    ("status", "status", "")]), ""]
    if report.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {item}" for item in report["skipped"]] + [""]
    lines += [report.get("summary", ""), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json / .md and every run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="smoke presets and tiny sizes: the same code paths on a CPU")
    parser.add_argument("--seconds-budget", type=float, default=None, help="the whole run's budget (default 480; tiny 110)")
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), help="notebook prefixes (default 03-07)")
    parser.add_argument("--notebook-seconds", type=float, default=None,
                        help="seconds for all the notebooks (default half the budget; tiny 80 %%)")
    parser.add_argument("--notebook-workers", type=int, default=None,
                        help="notebooks at a time (default 1 on CUDA, 2 on a CPU)")
    parser.add_argument("--max-steps", type=int, default=None, help="the notebooks' MAX_STEPS (default 30; tiny 2)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps per model (default 10; tiny 2)")
    parser.add_argument("--train-compile", action="store_true",
                        help="time compiled training on a CPU too (needs TrainConfig.compile)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="compiled inference in tiny mode too (the smallest model)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="no torch.compile at all")
    parser.add_argument("--reserve-seconds", type=float, default=10.0, help="kept free at the end of the budget")
    parser.add_argument("--skip", nargs="*", default=[], choices=[s[0] for s in SECTIONS], help="sections to leave out")
    args = parser.parse_args(argv)
    args.no_compile = args.compile is False
    args.max_steps = args.max_steps or (2 if args.tiny else 30)
    args.train_steps = args.train_steps or (2 if args.tiny else 10)
    budget = Budget(args.seconds_budget or (110.0 if args.tiny else 480.0))
    device = resolve_device(args.device)
    out = Path(args.out).expanduser()
    out = (out if out.is_absolute() else ROOT / out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cpu" and not args.tiny:
        print("[gpu_check] full sizes on a CPU: expect the budget to cut most of it (use --tiny)", file=sys.stderr)

    report: dict[str, Any] = {"environment": environment(device, args), "sections": {}, "goals": [],
                              "skipped": budget.skipped}

    writing = threading.Lock()                              # notebooks report from two threads

    def save() -> None:
        with writing:
            report["seconds"] = round(time.perf_counter() - budget.start, 1)
            report["goals"] = evaluate_goals(report["sections"], measured=not args.tiny)
            report["summary"] = summary_line(report)
            (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
            (out / "gpu_check.md").write_text(markdown(report))

    budget.checkpoint = save

    by_key = {key: (title, fn) for key, title, fn, _ in SECTIONS}
    for key in RUN_ORDER:
        title, fn = by_key[key]
        if key in args.skip:
            budget.skipped.append(f"section {title}: --skip")
            continue
        run_section(key, title, lambda section, fn=fn: fn(section, args, device, out, budget), report, save)
    # the sections in their numbered order
    report["sections"] = {key: report["sections"][key] for key, *_ in SECTIONS if key in report["sections"]}
    save()
    print(markdown(report))
    return 0 if all(s["status"] == "ok" for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
