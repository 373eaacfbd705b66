"""The hint widget (Li et al., interactive colorization from color hints): hint parsing, click
mapping, the session's state and renders, finding hint-capable runs, and the ipywidgets layer
driven without a browser (fake click events, button clicks, trait changes)."""

import argparse
import io
import sys
from datetime import datetime, timezone

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import colorkit
from colorkit import inference
from colorkit.color import rgb_to_lab
from colorkit.data import ToyWorld
from colorkit.models import build
from colorkit.train import Trainer, TrainConfig, supervised_step
from colorkit.widgets import HintSession, click_to_pixel, hint_capable_runs, hint_widget, parse_hints

TINY = {"name": "zhang2017", "width": 4, "image_size": 32}       # takes hints
NO_HINTS = {"name": "baseline", "width": 4, "depth": 2, "image_size": 32}
GRAY = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)        # H = 40, W = 30
RED, GREEN = (255, 0, 0), (0, 255, 0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models here are tiny: one thread is fastest, and far faster while other work holds the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed=0, **changes):
    torch.manual_seed(seed)
    return build({**TINY, **changes}).eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs/ folder: a hint model two levels down, a model without hints, and a broken file."""
    root = tmp_path_factory.mktemp("runs")
    mse = supervised_step(lambda model, batch: F.mse_loss(model(batch["L"]), batch["ab"]))
    for folder, config in (("07_li/li_T", TINY), ("00_welcome/baseline", NO_HINTS)):
        torch.manual_seed(0)
        Trainer({"model": build(config)}, mse, ToyWorld(32, length=4),
                TrainConfig(steps=1, batch_size=4, device="cpu", log_every=1), out_dir=root / folder).fit()
    (root / "broken").mkdir()
    (root / "broken" / "checkpoint.pt").write_bytes(b"not a checkpoint" * 8)
    return root


# --- parsing hints ---------------------------------------------------------------------------------

def test_parse_hints_reads_strings_tuples_and_json_lists():
    assert parse_hints(["12,4,#ff8800", " 3 , 5 , 00FF10 "]) == [(12, 4, (255, 136, 0)), (3, 5, (0, 255, 16))]
    assert parse_hints([(1, 2, (9, 8, 7)), (3, 4, "#0000ff"), [5, 6, [1, 2, 3]]]) == \
        [(1, 2, (9, 8, 7)), (3, 4, (0, 0, 255)), (5, 6, (1, 2, 3))]
    assert parse_hints([(np.int64(7), np.int32(1), np.array([1, 2, 3]))]) == [(7, 1, (1, 2, 3))]
    assert parse_hints("1,2,#000000") == [(1, 2, (0, 0, 0))]                 # one string is one hint
    assert parse_hints([]) == []
    # the command line's --hint reads the same format through the same function
    from colorkit.__main__ import parse_hint
    assert parse_hint("12,4,#ff8800") == (12, 4, (255, 136, 0))
    with pytest.raises(argparse.ArgumentTypeError, match="Y,X,#RRGGBB"):
        parse_hint("12,#ff8800")


@pytest.mark.parametrize("bad, message", [
    ("12,40", r"hint 1: a hint is Y,X,#RRGGBB .* got '12,40'"),
    ("12,40,#ff88", r"hint 1: .*'12,40,#ff88'"),
    ("a,40,#ff8800", r"hint 1: .*'a,40,#ff8800'"),
    ("1,2,#+f+f+f", r"hint 1: .*'1,2,#\+f\+f\+f'"),
    ((1, 2), r"hint 1: a hint is .* got \(1, 2\)"),
    ((1.5, 2, RED), r"hint 1: row and column must be integers, got \(1.5, 2"),
    ((True, 2, RED), r"hint 1: row and column must be integers"),
    ((1, 2, (256, 0, 0)), r"hint 1 \(1, 2, \(256, 0, 0\)\): a color is .* 0\.\.255"),
    ((1, 2, (1.0, 0, 0)), r"hint 1 .*: a color is"),
    ((1, 2, "#zzzzzz"), r"hint 1 .*'#zzzzzz'"),
    (7, r"hint 1: a hint is .* got 7"),
])
def test_parse_hints_errors_name_the_bad_item(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_hints(["0,0,#000000", bad])


# --- clicks to pixels ------------------------------------------------------------------------------

def test_click_to_pixel_maps_corners_centre_and_scale_and_clamps():
    h, w = 40, 30
    assert click_to_pixel(0, 0, 60, 80, h, w) == (0, 0)
    assert click_to_pixel(59.9, 79.9, 60, 80, h, w) == (h - 1, w - 1)
    assert click_to_pixel(59.9, 0, 60, 80, h, w) == (0, w - 1)
    assert click_to_pixel(30, 40, 60, 80, h, w) == (20, 15)                   # the centre
    # shown twice as large: each image pixel is a 2 x 2 block of screen pixels
    for row in range(h):
        for col in range(w):
            assert click_to_pixel(2 * col, 2 * row + 1, 60, 80, h, w) == (row, col)
            assert click_to_pixel(2 * col + 1.99, 2 * row, 60, 80, h, w) == (row, col)
    # stretched unevenly (3x wide, 1x high), as a browser may show it
    assert click_to_pixel(89, 39, 90, 40, h, w) == (39, 29)
    assert click_to_pixel(3 * 7 + 2, 5, 90, 40, h, w) == (5, 7)
    # outside the image, e.g. on the border: clamped to the nearest pixel
    assert click_to_pixel(-5, -1, 60, 80, h, w) == (0, 0)
    assert click_to_pixel(60, 80, 60, 80, h, w) == (h - 1, w - 1)
    assert click_to_pixel(1e6, 10, 60, 80, h, w) == (5, w - 1)
    with pytest.raises(ValueError, match="no area"):
        click_to_pixel(1, 1, 0, 80, h, w)


# --- the session -----------------------------------------------------------------------------------

def test_add_undo_clear_undo_of_clear_and_a_new_image():
    session = HintSession(GRAY, {"tiny": tiny()})
    assert session.hints == [] and not session.can_undo
    session.add(3, 4, RED)
    session.add(39, 29, "#00ff00")
    assert session.hints == [(3, 4, RED), (39, 29, GREEN)]
    session.hints.append((0, 0, RED))                                       # a copy: the session is unchanged
    assert len(session.hints) == 2
    session.undo()
    assert session.hints == [(3, 4, RED)]
    session.add(5, 6, GREEN)
    session.clear()
    assert session.hints == [] and session.can_undo
    session.undo()                                                          # the clear is undone
    assert session.hints == [(3, 4, RED), (5, 6, GREEN)]
    session.undo()
    session.undo()
    assert session.hints == [] and not session.can_undo
    session.undo()                                                          # nothing left: no change
    session.clear()                                                         # nothing to clear: no undo step
    assert session.hints == [] and not session.can_undo

    for y, x, color, message in [(40, 0, RED, "outside the 40 x 30 image"), (0, -1, RED, "outside"),
                                 (1.0, 2, RED, "integers"), (0, 0, (0, 0, 300), "0..255"), (0, 0, "red", "#rrggbb")]:
        with pytest.raises(ValueError, match=message):
            session.add(y, x, color)
    assert session.hints == [] and not session.can_undo                     # a rejected hint leaves no trace
    with pytest.raises(ValueError, match="outside"):
        session.apply(["1,1,#ff0000", "99,1,#ff0000"])
    assert session.hints == []                                              # all or nothing
    session.apply(["1,1,#ff0000", (2, 2, GREEN)])
    assert session.hints == [(1, 1, RED), (2, 2, GREEN)]

    session.set_image(np.zeros((50, 60), np.uint8))
    assert session.hints == [] and not session.can_undo and session.gray.shape == (50, 60, 3)
    session.add(45, 55, RED)                                                # inside the new image only
    with pytest.raises(ValueError, match="must be"):
        session.set_image(np.zeros((4, 4, 2)))


def test_gray_is_the_lightness_the_model_sees():
    session = HintSession(GRAY, {"tiny": tiny()})
    assert session.gray.dtype == np.uint8 and np.array_equal(session.gray, np.repeat(GRAY[..., None], 3, axis=-1))
    rgb = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    session.set_image(rgb)
    gray = session.gray
    assert gray.shape == (20, 24, 3) and (gray == gray[..., :1]).all()
    lab = lambda a: rgb_to_lab(torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    assert (lab(gray)[0] - lab(rgb)[0]).abs().max() < 0.5                   # the same L, rounded to 8 bits
    assert lab(gray)[1:].abs().max() < 0.5                                  # and no color
    session.set_image(GRAY / 255.0)                                         # float gray
    assert np.array_equal(session.gray[..., 0], GRAY)


def test_render_is_colorize_with_the_same_hints():
    model = tiny()
    session = HintSession(GRAY, {"tiny": model})
    hints = [(20, 15, RED), (5, 25, (0, 0, 255))]
    plain = session.render()
    assert np.array_equal(plain, colorkit.colorize(model, GRAY))             # no hints: automatic
    assert session.last_render_seconds > 0
    session.apply(hints)
    hinted = session.render()
    assert np.array_equal(hinted, colorkit.colorize(model, GRAY, hints))
    assert not np.array_equal(hinted, plain)
    wide = HintSession(GRAY, {"tiny": model}, hint_patch=4)
    wide.apply(hints)
    assert np.array_equal(wide.render(), colorkit.colorize(model, GRAY, hints, hint_patch=4))
    rgb = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    session.set_image(rgb)
    session.add(10, 10, RED)
    assert np.array_equal(session.render(), colorkit.colorize(model, rgb, [(10, 10, RED)]))


def test_the_model_receives_each_hint_at_its_place_and_color():
    model = tiny()
    received = []
    forward = model.forward

    def recording_forward(L, **kwargs):
        received.append(kwargs)
        return forward(L, **kwargs)

    model.forward = recording_forward
    session = HintSession(GRAY, {"tiny": model})
    session.render()
    assert received[-1] == {}                                               # no hints: none passed
    session.add(20, 15, RED)
    session.render()
    mask, ab = received[-1]["hint_mask"][0, 0], received[-1]["hint_ab"][0]    # (32, 32), (2, 32, 32)
    # (20, 15) of 40 x 30 is (16.4, 16.5) at the model's 32 x 32: the 2 x 2 patch from (15, 16)
    assert mask.sum() == 4 and mask[15:17, 16:18].all()
    red_ab = rgb_to_lab(torch.tensor(RED, dtype=torch.float32).view(3, 1, 1) / 255)[1:, 0, 0]
    assert red_ab[0] > 70                                                   # red: a* far from gray
    torch.testing.assert_close(ab[:, 15:17, 16:18], red_ab.view(2, 1, 1).expand(2, 2, 2))
    assert (ab[:, mask == 0] == 0).all()


def test_overlay_marks_each_hint_with_its_color_inside_a_contrasting_border():
    session = HintSession(GRAY, {"tiny": tiny()})
    session.apply([(20, 15, (0, 0, 255)), (30, 5, (255, 255, 0)), (0, 0, RED)])
    marked = session.overlay(radius=1)
    assert (marked[19:22, 14:17] == (0, 0, 255)).all()                      # 3 x 3 of the hint's color
    assert (marked[18, 13:18] == 255).all() and (marked[22, 13:18] == 255).all()   # white around dark blue
    assert (marked[28, 3:8] == 0).all() and (marked[29:32, 4:7] == (255, 255, 0)).all()   # black around yellow
    assert (marked[0:2, 0:2] == RED).all() and (marked[2, 0:3] == 255).all()
    # the rest is the gray image: a marker at the corner does not wrap around to the far side
    untouched = np.ones((40, 30), bool)
    untouched[17:24, 12:19] = untouched[27:34, 2:9] = untouched[0:3, 0:3] = False
    assert np.array_equal(marked[untouched], session.gray[untouched])
    assert np.array_equal(session.gray[..., 0], GRAY)                       # the session's image is unchanged
    big = HintSession(np.zeros((160, 200), np.uint8), {"tiny": tiny()})
    big.add(80, 100, RED)
    assert (big.overlay() == RED).all(axis=-1).sum() == 5 * 5               # default radius: 160 / 80 = 2
    with pytest.raises(ValueError, match="uint8"):
        session.overlay(np.zeros((40, 30, 3)))


def test_select_and_models_loaded_lazily_from_checkpoints(runs, monkeypatch):
    path = runs / "07_li" / "li_T" / "checkpoint.pt"
    loads = []
    real_load = inference.load
    monkeypatch.setattr(inference, "load", lambda p, **kw: loads.append(p) or real_load(p, **kw))
    model = tiny(seed=1)
    session = HintSession(GRAY, {"tiny": model, "saved": path, "no hints": runs / "00_welcome" / "baseline" / "checkpoint.pt"})
    assert session.names == ["tiny", "saved", "no hints"] and session.model_name == "tiny" and loads == []
    session.add(20, 15, RED)
    session.select("saved")
    assert loads == [path] and session.model_name == "saved"
    assert np.array_equal(session.render(), colorkit.colorize(real_load(path), GRAY, [(20, 15, RED)]))
    session.select("tiny")
    session.select("saved")
    assert loads == [path]                                                  # loaded once, then kept
    assert session.hints == [(20, 15, RED)]                                 # switching keeps the hints
    with pytest.raises(ValueError, match="takes no hints"):
        session.select("no hints")
    assert session.model_name == "saved"
    with pytest.raises(ValueError, match=r"unknown model 'big'; the session has 'tiny', 'saved', 'no hints'"):
        session.select("big")
    with pytest.raises(ValueError, match="takes no hints"):
        HintSession(GRAY, {"baseline": build(NO_HINTS)})
    assert HintSession(GRAY, {"a": model, "b": tiny()}, model="b").model_name == "b"
    with pytest.raises(ValueError, match="at least one model"):
        HintSession(GRAY, {})


def test_hint_capable_runs_finds_only_checkpoints_of_models_that_take_hints(runs):
    with pytest.warns(UserWarning, match=r"skipping .*broken.*checkpoint\.pt"):
        found = hint_capable_runs(runs)
    assert found == {"07_li/li_T": runs / "07_li" / "li_T" / "checkpoint.pt"}
    assert colorkit.load(found["07_li/li_T"]).takes_hints
    assert hint_capable_runs(runs / "00_welcome") == {}
    assert hint_capable_runs(runs / "missing") == {}


# --- the widget ------------------------------------------------------------------------------------

def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def enlarged(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def test_a_click_adds_a_hint_at_the_pixel_and_updates_both_images_and_the_status():
    pytest.importorskip("ipywidgets")
    pytest.importorskip("ipyevents")
    session = HintSession(GRAY, {"tiny": tiny()})
    box = hint_widget(session, scale=2)
    parts = box.parts
    assert box.events is not None and box.events.source is parts["gray"] and box.events.watched_events == ["click"]
    assert np.array_equal(png_pixels(parts["color"].value), enlarged(session.render(), 2))
    assert "0 hints" in parts["status"].value and parts["undo"].disabled
    before = parts["gray"].value, parts["color"].value

    box.on_click({"dataX": 2 * 15 + 1, "dataY": 2 * 20, "relativeX": 999})   # PNG pixels, as ipyevents sends them
    assert session.hints == [(20, 15, RED)]
    parts["picker"].value = "#00ff00"
    box.on_click({"relativeX": 100, "relativeY": 10, "boundingRectWidth": 150, "boundingRectHeight": 200})
    assert session.hints == [(20, 15, RED), (2, 20, GREEN)]                 # shown 5x: (10 / 5, 100 / 5)
    assert parts["gray"].value != before[0] and parts["color"].value != before[1]
    assert np.array_equal(png_pixels(parts["gray"].value), enlarged(session.overlay(), 2))
    assert np.array_equal(png_pixels(parts["color"].value), enlarged(session.render(), 2))
    assert "2 hints" in parts["status"].value and "update took" in parts["status"].value
    assert not parts["undo"].disabled

    box.on_click({"x": 3})                                                  # an event without positions
    assert session.hints == [(20, 15, RED), (2, 20, GREEN)] and "dataX" in parts["status"].value

    parts["undo"].click()
    assert session.hints == [(20, 15, RED)] and "1 hint " in parts["status"].value
    parts["clear"].click()
    assert session.hints == [] and "0 hints" in parts["status"].value
    assert np.array_equal(png_pixels(parts["gray"].value), enlarged(session.gray, 2))
    parts["undo"].click()
    assert session.hints == [(20, 15, RED)]


def test_the_menu_switches_models_and_an_upload_loads_another_image(runs):
    pytest.importorskip("ipywidgets")
    other = tiny(seed=3)
    session = HintSession(GRAY, {"tiny": tiny(), "other": other,
                                 "no hints": runs / "00_welcome" / "baseline" / "checkpoint.pt"})
    box = hint_widget(session, scale=1)
    parts = box.parts
    session.add(20, 15, RED)
    parts["model"].value = "other"
    assert session.model_name == "other" and "model other" in parts["status"].value
    assert np.array_equal(png_pixels(parts["color"].value), colorkit.colorize(other, GRAY, [(20, 15, RED)]))
    parts["model"].value = "no hints"                                       # fails: the menu goes back
    assert session.model_name == "other" and parts["model"].value == "other"
    assert "takes no hints" in parts["status"].value

    picture = (np.random.default_rng(2).random((24, 36, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    parts["upload"].value = ({"name": "new.png", "type": "image/png", "size": len(buffer.getvalue()),
                              "content": memoryview(buffer.getvalue()), "last_modified": datetime.now(timezone.utc)},)
    assert session.gray.shape == (24, 36, 3) and session.hints == []
    assert np.array_equal(png_pixels(parts["color"].value), colorkit.colorize(other, picture))
    assert (parts["row"].max, parts["column"].max) == (23, 35)
    box.on_upload({"new": ({"name": "notes.txt", "content": memoryview(b"not an image")},)})
    assert "cannot read the uploaded file" in parts["status"].value and session.gray.shape == (24, 36, 3)


def test_without_ipyevents_sliders_and_a_button_place_hints(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setitem(sys.modules, "ipyevents", None)                     # `import ipyevents` fails
    session = HintSession(GRAY, {"tiny": tiny()})
    box = hint_widget(session)
    parts = box.parts
    assert box.on_click is None and box.events is None
    assert "ipyevents is not installed" in parts["status"].value
    shown = [child for row in box.children[1:] for child in getattr(row, "children", ())]
    assert parts["row"] in shown and parts["column"] in shown and parts["add"] in shown
    assert (parts["row"].max, parts["column"].max) == (39, 29)
    parts["row"].value, parts["column"].value = 12, 7
    parts["picker"].value = "#0000ff"
    parts["add"].click()
    assert session.hints == [(12, 7, (0, 0, 255))]
    assert "1 hint " in parts["status"].value and "ipyevents is not installed" in parts["status"].value
    assert np.array_equal(png_pixels(parts["color"].value), enlarged(session.render(), 2))
