# Check cells of the (clean) notebooks compare against outputs pinned in their metadata.
pytest_plugins = ("colorkit.nbcheck",)

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
USER_RUNS = ROOT / "runs"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under `folder` (empty when it does not exist)."""
    found = {}
    for path in folder.rglob("*") if folder.is_dir() else []:
        try:
            if path.is_file():
                stat = path.stat()
                found[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            continue
    return found


def pytest_configure(config):
    """The test command writes every run (the notebooks' OUT_DIR "runs/...", their checkpoints) into a
    folder of its own, never into the user's `runs/`: testing neither changes nor reads a user's results.
    Notebook kernels (nbval, papermill) inherit the variable."""
    config._colorkit_out_root = tempfile.mkdtemp(prefix="colorkit-test-runs-")
    os.environ["COLORKIT_OUT_ROOT"] = config._colorkit_out_root
    config._colorkit_user_runs = _snapshot(USER_RUNS)


def pytest_report_header(config):
    return f"colorkit: runs of this test session go to {config._colorkit_out_root} (removed at the end), not to runs/"


def pytest_sessionfinish(session, exitstatus):
    before = session.config._colorkit_user_runs
    after = _snapshot(USER_RUNS)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        print(f"\nFAILED: {USER_RUNS} changed during the tests (they must write elsewhere; was a course run going on?): "
              f"{changed[:10]}")
        session.exitstatus = 1


def pytest_unconfigure(config):
    folder = getattr(config, "_colorkit_out_root", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
