"""The `full` presets are the papers' settings, and every value a paper does not give is listed as ours."""

import pytest

from colorkit import presets

MODELS = sorted(presets.PRESETS)


@pytest.mark.parametrize("model", MODELS)
def test_every_full_preset_uses_what_its_paper_states(model):
    values = presets.flat_fields(presets.preset(model, "full"))
    stated = presets.PAPER[model]["values"]
    assert stated, f"{model}: no paper values listed"
    wrong = {field: (value, values.get(field, "(absent)")) for field, value in stated.items()
             if values.get(field, "(absent)") != value}
    assert not wrong, f"{model}: the full preset differs from {presets.PAPER[model]['source']}: {wrong}"


@pytest.mark.parametrize("model", MODELS)
def test_every_other_value_of_a_full_preset_is_listed_as_ours_with_a_reason(model):
    """Nothing reaches a full run silently: each result-changing value (the engine's defaults included)
    is the paper's or in OURS, and each OURS entry names a field that exists."""
    cfg = presets.preset(model, "full")
    values = presets.flat_fields(cfg)
    stated, ours = presets.PAPER[model]["values"], presets.OURS[model]
    silent = sorted(field for field in values if field not in stated and field not in ours)
    assert not silent, f"{model}: values neither the paper's nor listed as ours: {silent}"
    assert not set(stated) & set(ours), f"{model}: both the paper's and ours: {set(stated) & set(ours)}"
    assert sorted(set(ours) - set(values)) == [], f"{model}: OURS names fields the preset does not have"
    assert all(isinstance(why, str) and why for why in ours.values())
    # what preset() hands a notebook (and its run's config.json): the source, the values and the list
    assert cfg["paper"]["source"] and [row["field"] for row in cfg["ours"]] == list(ours)
    assert all(row["value"] == values[row["field"]] for row in cfg["ours"])


def test_no_full_preset_clips_gradients_and_the_single_rate_papers_keep_one_rate():
    for model in MODELS:
        assert presets.flat_fields(presets.preset(model, "full"))["train.grad_clip"] is None, model
    for model in ("sun2023", "sun2023_upgrader", "jiang"):      # one learning rate, no schedule given
        values = presets.flat_fields(presets.preset(model, "full"))
        assert values["train.schedule"] == "constant" and values["train.warmup_steps"] == 0, model


def test_course_and_smoke_presets_carry_no_paper_list():
    for model in MODELS:
        for level in ("smoke", "course", "workshop"):
            assert "ours" not in presets.preset(model, level) and "paper" not in presets.preset(model, level)


def test_settings_prints_the_papers_values_and_ours_for_full_and_says_so_for_the_course():
    text = presets.settings(presets.preset("sun2023_upgrader", "full"))
    assert presets.PAPER["sun2023_upgrader"]["source"] in text and "train.betas = (0.0, 0.9)" in text
    assert "model.disc_layers = 4: ours: 142-px patches" in text
    assert "not the paper's settings" in presets.settings(presets.preset("sun2023_upgrader", "course"))
