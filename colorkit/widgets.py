"""Interactive pieces of the course: pure logic first, a thin ipywidgets layer on top.

Blind A/B test (Narkhede et al. sec. 3.2, "human subjective evaluation"): a person sees two
colorizations of the same gray image, side by side, without knowing which model made which, and
picks the one that looks more real. `BlindABTest` holds the trials and the choices (no widgets,
so tests and papermill drive it with a list of choices); `ab_test_widget` shows it in Jupyter.
"""

from __future__ import annotations

import io
import itertools
import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["Trial", "blind_trials", "tally", "BlindABTest", "ab_test_widget"]

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
