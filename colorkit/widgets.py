"""Interactive pieces of the course: pure logic first, a thin ipywidgets layer on top.

Blind A/B test (Narkhede et al. sec. 3.2, "human subjective evaluation"): a person sees two
colorizations of the same gray image, side by side, without knowing which model made which, and
picks the one that looks more real. `BlindABTest` holds the trials and the choices (no widgets,
so tests and papermill drive it with a list of choices); `ab_test_widget` shows it in Jupyter.

Interactive colorization from color hints (Li et al.; Zhang et al. 2017): a person clicks on a gray
image to place a hint, picks its color and sees the colorization update. `HintSession` holds the
image, the hints with their undo history and the hint-capable models (`hint_capable_runs` finds
them in runs/); `parse_hints` reads hints given as a list ("Y,X,#RRGGBB" or tuples), so papermill
and tests drive the same code path as clicks; `hint_widget` shows it in Jupyter.

    session = HintSession(gray, hint_capable_runs())        # {label: checkpoint}, loaded when used
    session.apply(["12,40,#ff8800"]); rgb = session.render()
    hint_widget(session)
"""

from __future__ import annotations

import html
import io
import itertools
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from colorkit.inference import parse_hints   # one parser for every place hints come from (re-exported here)

if TYPE_CHECKING:
    from colorkit.models import Colorizer

__all__ = ["Trial", "blind_trials", "tally", "BlindABTest", "ab_test_widget",
           "parse_hints", "click_to_pixel", "hint_capable_runs", "HintSession", "hint_widget"]

Hint = tuple[int, int, tuple[int, int, int]]    # (row y, column x, (r, g, b)), as colorkit.colorize takes

SIDES = ("left", "right")


@dataclass(frozen=True)
class Trial:
    """One screen: image `image` colorized by model `left` (shown left) and `right` (shown right)."""

    image: int
    left: str
    right: str


def blind_trials(models: Sequence[str], n_images: int, *, seed: int = 0) -> list[Trial]:
    """Every pair of `models` on every image, in a seeded random order, sides drawn at random.

    For m models and n images that is n * m (m - 1) / 2 trials; each model is shown equally
    often, and a model's side carries no information about which it is.
    """
    names = list(models)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"blind_trials needs at least two distinct model names, got {names}")
    if n_images < 1:
        raise ValueError(f"blind_trials needs at least one image, got n_images={n_images}")
    rng = random.Random(seed)
    trials = []
    for image in range(n_images):
        for a, b in itertools.combinations(names, 2):
            trials.append(Trial(image, a, b) if rng.random() < 0.5 else Trial(image, b, a))
    rng.shuffle(trials)
    return trials


def tally(trials: Sequence[Trial], choices: Sequence[str]) -> dict[str, Any]:
    """Count the choices made so far ("left" / "right" for the first len(choices) trials).

    Returns {"answered", "wins": {model: n}, "shown": {model: n}, "rate": {model: wins / shown},
    "left_rate": fraction of answers that were "left" (a bias check)}.
    """
    if len(choices) > len(trials):
        raise ValueError(f"{len(choices)} choices for {len(trials)} trials")
    models = sorted({m for t in trials for m in (t.left, t.right)})
    wins = dict.fromkeys(models, 0)
    shown = dict.fromkeys(models, 0)
    for trial, choice in zip(trials, choices):
        if choice not in SIDES:
            raise ValueError(f"a choice is 'left' or 'right', got {choice!r}")
        shown[trial.left] += 1
        shown[trial.right] += 1
        wins[trial.left if choice == "left" else trial.right] += 1
    return {"answered": len(choices), "wins": wins, "shown": shown,
            "rate": {m: wins[m] / shown[m] if shown[m] else float("nan") for m in models},
            "left_rate": sum(c == "left" for c in choices) / len(choices) if choices else float("nan")}


class BlindABTest:
    """The state of a blind A/B test over colorizations `images`: {model name: (N, H, W, 3) uint8}.

        test = BlindABTest({"baseline": a, "GAN": b}, seed=0)
        trial, left, right = test.current()      # two images, model names hidden from the viewer
        test.choose("left"); test.undo(); test.results()
    """

    def __init__(self, images: Mapping[str, Any], *, seed: int = 0):
        arrays = {name: np.asarray(batch) for name, batch in images.items()}
        shapes = {name: a.shape for name, a in arrays.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"every model needs colorizations of the same images and size; got shapes {shapes}")
        for name, a in arrays.items():
            if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
                raise ValueError(f"images of {name!r} must be uint8 shaped (N, H, W, 3), got {a.dtype} {a.shape}")
        first = next(iter(arrays.values()))
        self.images = arrays
        self.trials = blind_trials(list(arrays), first.shape[0], seed=seed)
        self.choices: list[str] = []

    @property
    def done(self) -> bool:
        return len(self.choices) == len(self.trials)

    def current(self) -> tuple[Trial, np.ndarray, np.ndarray] | None:
        """The trial to answer next with its left and right images, or None when all are answered."""
        if self.done:
            return None
        trial = self.trials[len(self.choices)]
        return trial, self.images[trial.left][trial.image], self.images[trial.right][trial.image]

    def choose(self, side: str) -> None:
        if side not in SIDES:
            raise ValueError(f"choose 'left' or 'right', got {side!r}")
        if self.done:
            raise ValueError(f"all {len(self.trials)} trials are answered")
        self.choices.append(side)

    def undo(self) -> None:
        if self.choices:
            self.choices.pop()

    def results(self) -> dict[str, Any]:
        return tally(self.trials, self.choices)


def _png(image: np.ndarray, scale: int) -> bytes:
    from PIL import Image

    picture = Image.fromarray(image)
    picture = picture.resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def ab_test_widget(test: BlindABTest, *, scale: int = 4):
    """Two images and three buttons (left, right, undo) over `test`; the tally updates as you click."""
    import ipywidgets as w

    left, right = w.Image(format="png"), w.Image(format="png")
    status = w.HTML()
    buttons = {side: w.Button(description=f"{side} looks more real") for side in SIDES}
    undo = w.Button(description="undo")

    def show() -> None:
        step = test.current()
        counts = test.results()
        rates = ", ".join(f"{m}: {counts['wins'][m]}/{counts['shown'][m]}" for m in counts["wins"])
        if step is None:
            status.value = f"<b>done</b>: {counts['answered']} answers; preferred {rates}"
            return
        trial, a, b = step
        left.value, right.value = _png(a, scale), _png(b, scale)
        # blind: no running tally until the end, or the viewer would learn which model is which
        status.value = f"trial {counts['answered'] + 1} of {len(test.trials)}"

    def on_choice(side: str):
        def handler(_: Any) -> None:
            if not test.done:
                test.choose(side)
            show()
        return handler

    for side, button in buttons.items():
        button.on_click(on_choice(side))
    undo.on_click(lambda _: (test.undo(), show()))
    show()
    return w.VBox([w.HBox([left, right]), w.HBox([buttons["left"], buttons["right"], undo]), status])


# --- interactive colorization from color hints -------------------------------------------------

def click_to_pixel(x: float, y: float, shown_width: float, shown_height: float,
                   image_height: int, image_width: int) -> tuple[int, int]:
    """(row, column) of the image pixel under a click at (x, y) on the image shown at
    shown_width x shown_height (widget pixels, origin top left); a click outside is clamped in."""
    if not (shown_width > 0 and shown_height > 0):
        raise ValueError(f"the shown image has no area: {shown_width} x {shown_height}")
    if image_height < 1 or image_width < 1:
        raise ValueError(f"the image has no pixels: {image_height} x {image_width}")
    # pixel c covers [c, c + 1) * shown_width / image_width on screen
    row = math.floor(y * image_height / shown_height)
    col = math.floor(x * image_width / shown_width)
    return min(max(row, 0), image_height - 1), min(max(col, 0), image_width - 1)


def hint_capable_runs(runs_dir: str | os.PathLike = "runs") -> dict[str, Path]:
    """{label: checkpoint} for every checkpoint.pt under `runs_dir` whose model takes hints, by label.

    The label is the folder relative to `runs_dir` ("07_li_dual_local_attention/li_T_course_photos");
    a relative `runs_dir` is taken from the project root, as `colorkit.runs.run_dir` does. Only the
    stored config is looked at (no model is built); the model is the one `colorkit.load` picks.
    An unreadable checkpoint, or one of a model this version does not know, is skipped with a warning.
    """
    from colorkit.inference import checkpoint_model_name
    from colorkit.models import _REGISTRY, legacy_config, registered
    from colorkit.runs import resolve_out
    from colorkit.train import load_checkpoint

    root = resolve_out(runs_dir)
    registered()                             # imports every model file, filling _REGISTRY
    found = {}
    for path in root.rglob("checkpoint.pt"):
        try:
            models = load_checkpoint(path)["models"]
        except (OSError, ValueError) as err:
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            continue
        try:
            chosen = models[checkpoint_model_name(models, path)]
        except ValueError:                   # several models and no default: `load` needs name=
            continue
        config = chosen.get("config")
        if not config:
            continue
        config = legacy_config(config, chosen.get("state") or {})
        cls = _REGISTRY.get(config.get("name"))
        if cls is None:
            warnings.warn(f"skipping {path}: unknown model {config.get('name')!r}", stacklevel=2)
            continue
        if cls.takes_hints:
            found[path.parent.relative_to(root).as_posix()] = path
    return dict(sorted(found.items()))


class HintSession:
    """An image, its hints (with an undo history) and the hint-capable models to colorize it with.

        session = HintSession(gray, {"zhang": "runs/07_li_dual_local_attention/zhang2017_course_photos/checkpoint.pt", "mine": model})
        session.add(12, 40, "#ff8800"); session.undo(); session.clear(); session.undo()
        rgb = session.render()                   # colorkit.colorize(model, image, hints)

    `image` is anything `colorkit.colorize` takes (uint8 or float, gray or RGB); the model sees only
    its lightness, and so does the person (`gray`). A model given as a checkpoint path is loaded with
    `colorkit.load` the first time it is selected, then kept.
    """

    def __init__(self, image: Any, models: Mapping[str, "Colorizer | str | os.PathLike"], *,
                 model: str | None = None, hint_patch: int = 2):
        if not models:
            raise ValueError("HintSession needs at least one model")
        self._sources = dict(models)
        self._loaded: dict[str, Colorizer] = {}
        for name, source in self._sources.items():
            if not isinstance(source, (str, os.PathLike)):
                self._loaded[name] = self._check_takes_hints(name, source)
        self.hint_patch = hint_patch
        self.last_render_seconds: float | None = None
        self.set_image(image)
        self._model_name = ""
        self.select(next(iter(self._sources)) if model is None else model)

    @staticmethod
    def _check_takes_hints(name: str, model: "Colorizer") -> "Colorizer":
        if not getattr(model, "takes_hints", False):
            raise ValueError(f"model {name!r} ({type(model).__name__}) takes no hints")
        return model

    # --- the image and the hints ---

    def set_image(self, image: Any) -> None:
        """A new image: its hints are cleared and the undo history starts again."""
        from colorkit.inference import _to_float_image

        pixels = _to_float_image(image)                     # checks the shape and range: (H, W, C) in [0, 1]
        self._image = np.array(image)                       # a copy: the caller may change theirs
        self._gray = _display_gray(pixels)
        self._hints: list[Hint] = []
        self._history: list[list[Hint]] = []                # the hints before each add or clear

    @property
    def gray(self) -> np.ndarray:
        """What the model sees, as an image: the lightness as an sRGB gray, uint8 (H, W, 3)."""
        return self._gray.copy()

    @property
    def hints(self) -> list[Hint]:
        return list(self._hints)

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def _checked_hint(self, y: Any, x: Any, color: Any) -> Hint:
        from colorkit.inference import _is_int, parse_color

        height, width = self._gray.shape[:2]
        if not (_is_int(y) and _is_int(x)):
            raise ValueError(f"a hint's row and column must be integers, got y={y!r}, x={x!r}")
        if not (0 <= y < height and 0 <= x < width):
            raise ValueError(f"hint at (y={y}, x={x}) is outside the {height} x {width} image")
        return int(y), int(x), parse_color(color)

    def add(self, y: int, x: int, color: Any) -> None:
        """A hint at row `y`, column `x`; color (r, g, b) or "#rrggbb"."""
        hint = self._checked_hint(y, x, color)
        self._history.append(list(self._hints))
        self._hints.append(hint)

    def apply(self, hints: Iterable[Any] | str) -> None:
        """Add hints in order, each as `parse_hints` reads it; none is added if one is bad."""
        checked = [self._checked_hint(*hint) for hint in parse_hints(hints)]
        for hint in checked:
            self.add(*hint)

    def clear(self) -> None:
        """Remove every hint (one step that `undo` reverts)."""
        if self._hints:
            self._history.append(list(self._hints))
            self._hints = []

    def undo(self) -> None:
        """Revert the last add or clear; nothing happens when there is nothing to revert."""
        if self._history:
            self._hints = self._history.pop()

    # --- the models ---

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def model(self) -> "Colorizer":
        return self._loaded[self._model_name]

    def select(self, name: str) -> None:
        """Colorize with model `name` from now on, loading it now if it is a checkpoint path."""
        if name not in self._sources:
            raise ValueError(f"unknown model {name!r}; the session has {', '.join(map(repr, self._sources))}")
        if name not in self._loaded:
            from colorkit.inference import load

            self._loaded[name] = self._check_takes_hints(name, load(self._sources[name]))
        self._model_name = name

    # --- what the person sees ---

    def render(self) -> np.ndarray:
        """colorkit.colorize(model, image, hints), uint8 (H, W, 3); without hints, automatic."""
        from colorkit.inference import colorize

        start = time.perf_counter()
        rgb = colorize(self.model, self._image, self._hints or None, hint_patch=self.hint_patch)
        self.last_render_seconds = time.perf_counter() - start
        return rgb

    def overlay(self, image: np.ndarray | None = None, *, radius: int | None = None) -> np.ndarray:
        """A copy of `image` (default: `gray`) with a square of each hint's color centred on it, of
        side 2 radius + 1 (by default radius = 1/80 of the image's shorter side), inside a 1 px
        border that contrasts with the color, so the person sees where the hints are."""
        canvas = self.gray if image is None else np.array(image)
        if canvas.shape != self._gray.shape or canvas.dtype != np.uint8:
            raise ValueError(f"overlay draws on a uint8 {self._gray.shape} image, got {canvas.dtype} {canvas.shape}")
        r = round(min(canvas.shape[:2]) / 80) if radius is None else radius
        for y, x, color in self._hints:
            # Rec. 601 luma: a dark border around a light color, a light one around a dark color
            light = (0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]) / 255 > 0.5
            canvas[max(y - r - 1, 0):y + r + 2, max(x - r - 1, 0):x + r + 2] = (0, 0, 0) if light else (255, 255, 255)
            canvas[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1] = color
        return canvas


def _display_gray(pixels: np.ndarray) -> np.ndarray:
    """float (H, W, C) in [0, 1] -> the sRGB gray of its Lab lightness, uint8 (H, W, 3)."""
    import torch

    from colorkit.color import lab_to_rgb, rgb_to_lab

    if pixels.shape[-1] == 1:                                # already gray: R = G = B
        gray = pixels
    else:
        L = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1))[:1]   # (1, H, W)
        gray = lab_to_rgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)]))[:1].permute(1, 2, 0).numpy()
    return np.repeat((gray * 255 + 0.5).astype(np.uint8), 3, axis=-1)


def _shown_scale(height: int, width: int, scale: int, max_side: int = 1024) -> int:
    """`scale`, reduced so the shown image stays within `max_side` pixels (never below 1)."""
    return max(1, min(scale, max_side // max(height, width)))


def _clicked_pixel(event: Mapping[str, Any], height: int, width: int, shown_scale: int) -> tuple[int, int]:
    """(row, column) of an ipyevents click on an Image showing the image enlarged `shown_scale` times."""
    if "dataX" in event and "dataY" in event:
        # pixels of the PNG as sent (ipyevents' "data" coordinates of an Image), whatever size it is shown at
        return click_to_pixel(event["dataX"], event["dataY"], width * shown_scale, height * shown_scale, height, width)
    relative = ("relativeX", "relativeY", "boundingRectWidth", "boundingRectHeight")
    if not all(key in event for key in relative):
        raise ValueError(f"a click event needs dataX, dataY or {', '.join(relative)}; got {sorted(event)}")
    return click_to_pixel(*(event[key] for key in relative), height, width)


def hint_widget(session: HintSession, *, scale: int = 2):
    """The gray image with hint markers (click to add a hint) beside its colorization, a color picker,
    undo / clear, a model menu, an image upload and a status line, all over `session`.

    Clicks need the `ipyevents` package; without it, row and column sliders and an "add hint" button
    place hints instead. The returned box carries `session`, `parts` (its widgets by name) and the
    handlers `on_click(event)` (None without ipyevents) and `on_upload(change)`.
    """
    import ipywidgets as w

    try:
        import ipyevents
    except ImportError:
        ipyevents = None

    gray_view, color_view = w.Image(format="png"), w.Image(format="png")
    picker = w.ColorPicker(value="#ff0000", description="hint color")
    undo, clear = w.Button(description="undo"), w.Button(description="clear")
    menu = w.Dropdown(options=session.names, value=session.model_name, description="model")
    upload = w.FileUpload(accept="image/*", multiple=False, description="load image")
    status = w.HTML()
    height, width = session.gray.shape[:2]
    row = w.IntSlider(min=0, max=height - 1, description="row")
    column = w.IntSlider(min=0, max=width - 1, description="column")
    add = w.Button(description="add hint")
    note = "" if ipyevents else " · <i>ipyevents is not installed: place hints with the row and column sliders</i>"

    def shown_scale() -> int:
        return _shown_scale(*session.gray.shape[:2], scale)

    def show() -> None:
        shown = shown_scale()
        color_view.value = _png(session.render(), shown)
        gray_view.value = _png(session.overlay(), shown)
        undo.disabled = not session.can_undo
        count = len(session.hints)
        status.value = (f"{count} hint{'' if count == 1 else 's'} · model {html.escape(session.model_name)}"
                        f" · update took {session.last_render_seconds * 1000:.0f} ms{note}")

    def show_error(err: Exception) -> None:
        status.value = f"<span style='color:#b00020'>{html.escape(f'{type(err).__name__}: {err}')}</span>{note}"

    def guarded(action):
        # an error in a widget callback would only reach the log; the status line shows it instead
        def run(*args: Any) -> None:
            try:
                action(*args)
                show()
            except Exception as err:
                show_error(err)
        return run

    @guarded
    def on_click(event: Mapping[str, Any]) -> None:
        session.add(*_clicked_pixel(event, *session.gray.shape[:2], shown_scale()), picker.value)

    @guarded
    def on_upload(change: Mapping[str, Any]) -> None:
        files = change["new"]
        if files:
            from colorkit.inference import read_image     # as the command line reads files: EXIF, alpha, 16-bit

            session.set_image(read_image(bytes(files[-1]["content"])))
            row.max, column.max = session.gray.shape[0] - 1, session.gray.shape[1] - 1

    def on_model(change: Mapping[str, Any]) -> None:
        try:
            session.select(change["new"])
            show()
        except Exception as err:
            menu.value = session.model_name      # back to the model still in use
            show_error(err)

    undo.on_click(guarded(lambda _: session.undo()))
    clear.on_click(guarded(lambda _: session.clear()))
    add.on_click(guarded(lambda _: session.add(row.value, column.value, picker.value)))
    menu.observe(on_model, names="value")
    upload.observe(on_upload, names="value")

    controls = [w.HBox([picker, undo, clear, menu]), w.HBox([upload])]
    events = None
    if ipyevents is not None:
        events = ipyevents.Event(source=gray_view, watched_events=["click"])
        events.on_dom_event(on_click)
    else:
        controls.insert(1, w.HBox([row, column, add]))
    box = w.VBox([w.HBox([gray_view, color_view]), *controls, status])
    box.session, box.events = session, events
    box.on_click, box.on_upload = (on_click if events is not None else None), on_upload
    box.parts = {"gray": gray_view, "color": color_view, "picker": picker, "undo": undo, "clear": clear,
                 "model": menu, "upload": upload, "status": status, "row": row, "column": column, "add": add}
    guarded(lambda: None)()                      # the first picture
    return box
