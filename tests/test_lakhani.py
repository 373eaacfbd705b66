"""Lakhani (2020): Luong and Bahdanau attention against naive loops, CoordConv, fusion, the frozen
global classifier, shapes for any input size, training through the engine, load + colorize."""

import json

import numpy as np
import pytest
import torch

import colorkit
import colorkit.models.lakhani  # noqa: F401  (registers "lakhani")
from colorkit import models, presets
from colorkit.attention import AttentionVector, BahdanauAttention, LuongAttention
from colorkit.data import SCENE_TYPES, ToyWorld
from colorkit.models import lakhani as lk
from colorkit.models.lakhani import (FusionLayer, LakhaniColorizer, SceneClassifier, add_coords, coord_channels,
                                     pretrain_classifier)
from colorkit.train import Trainer, TrainConfig

ATOL = 1e-5


def small(**kw) -> LakhaniColorizer:
    """A small model with the SceneClassifier stand-in (fast), unless kw names another global source."""
    torch.manual_seed(0)
    return models.build({"name": "lakhani", "width": 4, "image_size": 32, "classifier_width": 4,
                         "global_source": "scene", "global_feature": "penultimate", **kw})


def train_lakhani(tmp_path, config, *, steps=2, size=32, batch_size=4, length=16, **train):
    """Train a lakhani model through the engine on ToyWorld; returns (model, summary)."""
    torch.manual_seed(0)
    model = models.build(config)
    cfg = TrainConfig(**{"lr": 1e-3, "log_every": 1, **train, "steps": steps, "batch_size": batch_size,
                         "device": "cpu"})
    summary = Trainer(model.training_models(), models.training_step("lakhani"), ToyWorld(size, length=length), cfg,
                      out_dir=tmp_path).fit()
    return model, summary


# --- the attention modules against naive loops -------------------------------------------------

def naive_attention(query, source, score_fn):
    """alpha_ts = exp(score_ts) / sum_s' exp(score_ts'), c_t = sum_s alpha_ts hbar_s, one (b, t, s) at a time."""
    query, source = query.detach(), source.detach()
    b, n, m = query.shape[0], query.shape[1], source.shape[1]
    weights = torch.zeros(b, n, m, dtype=torch.float64)
    context = torch.zeros(b, n, source.shape[-1], dtype=torch.float64)
    for i in range(b):
        for t in range(n):
            with torch.no_grad():
                scores = [float(score_fn(query[i, t].double(), source[i, s].double())) for s in range(m)]
            top = max(scores)
            exps = [np.exp(x - top) for x in scores]
            for s in range(m):
                weights[i, t, s] = exps[s] / sum(exps)
                context[i, t] += weights[i, t, s] * source[i, s].double()
    return context, weights


@pytest.mark.parametrize("score, scaled", [("general", False), ("general", True), ("dot", False)])
def test_luong_attention_matches_a_naive_loop(score, scaled):
    torch.manual_seed(0)
    dq, ds = (6, 6) if score == "dot" else (6, 5)
    attn = LuongAttention(dq, ds, score=score, scaled=scaled).double()
    query, source = torch.randn(2, 4, dq, dtype=torch.float64), torch.randn(2, 7, ds, dtype=torch.float64)
    W = attn.W_a.weight if score == "general" else torch.eye(dq, dtype=torch.float64)   # (dq, ds)

    def score_fn(h_t, h_s):                                         # h_t^T W_a hbar_s (/ sqrt(d_q))
        return (h_t @ W @ h_s) / (np.sqrt(dq) if scaled else 1.0)

    context, weights = attn(query, source)
    ref_context, ref_weights = naive_attention(query, source, score_fn)
    assert context.shape == (2, 4, ds) and weights.shape == (2, 4, 7)
    torch.testing.assert_close(weights, ref_weights, atol=1e-10, rtol=0)
    torch.testing.assert_close(context, ref_context, atol=1e-10, rtol=0)


def test_bahdanau_attention_matches_a_naive_loop():
    torch.manual_seed(0)
    attn = BahdanauAttention(6, 5, attention_dim=3).double()
    query, source = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 7, 5, dtype=torch.float64)
    W1, b1, W2, v = attn.W_1.weight, attn.W_1.bias, attn.W_2.weight, attn.v.weight[0]

    def score_fn(h_t, h_s):                                         # v^T tanh(W_1 h_t + W_2 hbar_s)
        return v @ torch.tanh(W1 @ h_t + b1 + W2 @ h_s)

    context, weights = attn(query, source)
    ref_context, ref_weights = naive_attention(query, source, score_fn)
    torch.testing.assert_close(weights, ref_weights, atol=1e-10, rtol=0)
    torch.testing.assert_close(context, ref_context, atol=1e-10, rtol=0)


@pytest.mark.parametrize("attn", [LuongAttention(8), LuongAttention(8, score="dot"), BahdanauAttention(8, 8, 4)],
                         ids=["luong", "luong-dot", "bahdanau"])
def test_attention_weights_sum_to_one_over_sources_with_values_and_masks(attn):
    torch.manual_seed(1)
    query, source, values = torch.randn(3, 5, 8) * 4, torch.randn(3, 9, 8) * 4, torch.randn(3, 9, 2)
    context, weights = attn(query, source, values)
    assert context.shape == (3, 5, 2) and weights.shape == (3, 5, 9)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5), atol=ATOL, rtol=0)
    torch.testing.assert_close(context, weights @ values, atol=ATOL, rtol=0)
    # a mask: True = may attend; masked sources get zero weight, a row with none gets zeros (not NaN)
    mask = torch.rand(3, 5, 9) > 0.5
    mask[0, 0] = False
    mask[0, 1] = True
    _, masked = attn(query, source, mask=mask)
    assert torch.isfinite(masked).all() and (masked[~mask] == 0).all()
    sums = masked.sum(-1)
    assert torch.allclose(sums[mask.any(-1)], torch.ones(()), atol=ATOL) and (sums[~mask.any(-1)] == 0).all()
    with pytest.raises(ValueError, match="query must be shaped"):
        attn(torch.randn(3, 5, 7), source)
    with pytest.raises(ValueError, match="values must be"):
        attn(query, source, torch.randn(3, 8, 2))


def test_attention_vector_is_tanh_of_W_c_on_context_and_query():
    torch.manual_seed(0)
    vec = AttentionVector(5, 3, out_dim=4)
    c, h = torch.randn(2, 6, 5), torch.randn(2, 6, 3)
    W = vec.W_c.weight                                              # (4, 5 + 3), no bias
    assert vec.W_c.bias is None
    expected = torch.stack([torch.stack([torch.tanh(W @ torch.cat([c[i, t], h[i, t]])) for t in range(6)])
                            for i in range(2)])
    torch.testing.assert_close(vec(c, h), expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="must match"):
        vec(c, torch.randn(2, 5, 3))


# --- CoordConv, fusion, the encoder layout -----------------------------------------------------

def test_coord_channels_for_a_non_square_image():
    coords = coord_channels(2, 5, 9)                                # H = 5, W = 9
    assert coords.shape == (2, 2, 5, 9)
    x, y = coords[0, 0], coords[0, 1]
    # corners: x = -1 left, +1 right; y = -1 top, +1 bottom
    assert (x[0, 0], x[0, -1], x[-1, 0], x[-1, -1]) == (-1, 1, -1, 1)
    assert (y[0, 0], y[0, -1], y[-1, 0], y[-1, -1]) == (-1, -1, 1, 1)
    # x varies along W only (every row the same), y along H only (every column the same)
    assert (x == x[:1]).all() and (y == y[:, :1]).all()
    torch.testing.assert_close(x[0], torch.linspace(-1, 1, 9))
    torch.testing.assert_close(y[:, 0], torch.linspace(-1, 1, 5))
    assert torch.equal(add_coords(torch.zeros(2, 1, 5, 9))[:, 1:], coords)
    assert torch.equal(coord_channels(1, 1, 4)[0, 1], torch.zeros(1, 4))        # one row: y = 0


def test_model_feeds_coordinates_of_the_real_image_before_padding():
    model = small()
    seen = {}
    model.encoder.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    h, w = 13, 22                                                   # padded to 16 x 24
    model(torch.full((1, 1, h, w), 50.0))
    x = seen["x"]
    assert x.shape == (1, 3, 16, 24)
    torch.testing.assert_close(x[0, 1, :h, :w], torch.linspace(-1, 1, w).expand(h, w))
    torch.testing.assert_close(x[0, 2, :h, :w], torch.linspace(-1, 1, h)[:, None].expand(h, w))
    assert (x[0, 1, :, w:] == 1).all() and (x[0, 2, h:, :] == 1).all()        # replicate padding
    assert small(coords=False).encoder[0][0].in_channels == 1


def test_fusion_tiles_the_same_global_vector_everywhere():
    fusion = FusionLayer(channels=6, global_dim=3)
    features, g = torch.randn(2, 6, 4, 5), torch.randn(2, 3)
    cat = fusion.concat(features, g)
    assert cat.shape == (2, 9, 4, 5)
    assert torch.equal(cat[:, :6], features)
    assert torch.equal(cat[:, 6:], g[:, :, None, None].expand(2, 3, 4, 5))
    assert fusion(features, g).shape == (2, 6, 4, 5)
    with pytest.raises(ValueError, match="global vector must be"):
        fusion(features, torch.randn(2, 4))
    # inside the model: the vector that reaches the 1x1 conv is the classifier's, at every cell
    model = small().eval()
    seen = {}
    model.fusion.mix.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    L = torch.rand(2, 1, 24, 40) * 100
    model(L)
    g = model.global_features(L)                                    # (2, 16): penultimate, 4 x classifier_width
    assert g.shape == (2, 16)
    tiled = seen["x"][:, 16:]                                       # after the 4 x width = 16 encoder channels
    assert torch.equal(tiled, g[:, :, None, None].expand(2, 16, 3, 5))


def test_encoder_has_deep_koalarizations_layout():
    encoder = lk.koalarization_encoder(1, 64).to("meta")
    assert encoder(torch.empty(1, 1, 224, 224, device="meta")).shape == (1, 256, 28, 28)
    strides = [block[0].stride[0] for block in encoder]
    assert strides == [2, 1, 2, 1, 2, 1, 1, 1]
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)) for m in encoder.modules())


# --- the model: shapes, attention, decoder ----------------------------------------------------

@pytest.mark.parametrize("h, w", [(32, 32), (64, 48), (37, 53), (20, 70), (8, 8), (5, 3)])
@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
def test_shapes_for_square_and_non_square_inputs(h, w, attention):
    model = small(attention=attention)
    L = torch.rand(2, 1, h, w) * 100
    ab, weights = model(L, return_attention=True)
    gh, gw = model.grid_shape(h, w)
    assert (gh, gw) == (-(-h // 8), -(-w // 8))
    assert ab.shape == (2, 2, h, w) and ab.abs().max() <= lk.AB_SCALE
    assert weights.shape == (2, gh * gw, gh * gw)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, gh * gw), atol=ATOL, rtol=0)
    assert torch.equal(model.eval()(L), model(L, return_attention=True)[0])


@pytest.mark.parametrize("kw", [{"fusion": False}, {"attention": None}, {"coords": False},
                                {"fusion": False, "attention": None, "coords": False},
                                {"global_feature": "softmax"}, {"global_feature": "logits"},
                                {"global_classes": "photos"}])
def test_ablations_and_global_vectors_run(kw):
    model = small(**kw)
    assert model(torch.rand(2, 1, 27, 35) * 100).shape == (2, 2, 27, 35)
    if kw.get("fusion") is False:
        assert model.global_features is None and model.fusion is None and model.classifier is None
    if kw.get("global_classes") == "photos":
        assert model.global_features.classifier.classes[0] == "astronaut"


def test_decoder_has_xavier_init_and_the_paper_defaults():
    model = models.build({"name": "lakhani"})
    assert model.config == {"name": "lakhani", "width": 16, "image_size": 64, "fusion": True, "attention": "luong",
                            "coords": True, "attention_dim": 32, "global_source": "pretrained",
                            "global_network": "efficientnet-lite0", "global_classes": "scene",
                            "global_feature": "logits", "classifier_width": 16, "global_path": None,
                            "global_dim": 1000, "global_input_size": 224, "global_cache": 0}
    assert isinstance(model.classifier, lk.PretrainedClassifier) and model.global_features.dim == 1000
    convs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:                              # xavier_uniform_: |w| <= sqrt(6 / (fan_in + fan_out))
        fan_in, fan_out = conv.in_channels * 9, conv.out_channels * 9
        assert conv.weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5 + 1e-6
        assert conv.bias is None or (conv.bias == 0).all()
    assert convs[-1].out_channels == 2
    assert models.training_step("lakhani") is lk.lakhani_step


# --- the frozen global classifier ---------------------------------------------------------------

def test_global_classifier_is_frozen_and_stays_in_eval_mode():
    model = small()
    assert all(not p.requires_grad for p in model.classifier.parameters())
    model.train()
    assert model.encoder.training and not model.global_features.training
    assert not any(m.training for m in model.global_features.modules())
    L = torch.rand(2, 1, 32, 32) * 100
    model(L).square().mean().backward()
    assert all(p.grad is None for p in model.classifier.parameters())
    assert model.encoder[0][0].weight.grad is not None


def test_training_leaves_the_classifier_untouched_and_the_loss_decreases(tmp_path):
    config = {"name": "lakhani", "width": 8, "image_size": 32, "classifier_width": 4, "global_source": "scene"}
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in models.build(config).classifier.state_dict().items()}
    model, summary = train_lakhani(tmp_path, config, steps=30, batch_size=8, length=64, lr=3e-3,
                                   schedule="constant", ema_decay=0.9)
    after = model.classifier.state_dict()
    assert before.keys() == after.keys()
    for key in before:                                              # weights and BN buffers, running stats included
        assert torch.equal(before[key], after[key]), key
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"]["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    ckpt = torch.load(summary["checkpoint"], weights_only=True)
    shadow = ckpt["ema"]["model"]
    for key in before:                                              # the EMA copy of the frozen net is itself
        assert torch.equal(shadow["global_features.classifier." + key], before[key])


def test_pretrain_classifier_learns_scenes_and_load_classifier_copies_it_frozen(tmp_path):
    torch.manual_seed(0)
    classifier = SceneClassifier("scene", width=4)
    summary = pretrain_classifier(classifier, ToyWorld(32, length=64), out_dir=tmp_path, steps=6, batch_size=16,
                                  lr=3e-3, device="cpu", log_every=1)
    assert summary["steps"] == 6 and set(summary["losses"]) == {"loss", "accuracy"}
    assert classifier.classes == list(SCENE_TYPES) and not classifier.training
    model = small()
    model.load_classifier(classifier)
    for key, value in classifier.state_dict().items():
        assert torch.equal(model.classifier.state_dict()[key], value)
    assert all(not p.requires_grad for p in model.classifier.parameters()) and not model.classifier.training
    acc = lk.classifier_accuracy(model.classifier, ToyWorld(32, length=16, seed=5), batch_size=8)
    assert 0.0 <= acc <= 1.0
    with pytest.raises(ValueError, match="expected a SceneClassifier with classes"):
        model.load_classifier(SceneClassifier("photos", width=4))
    with pytest.raises(ValueError, match="needs a model with fusion=True"):
        small(fusion=False).load_classifier(classifier)
    with pytest.raises(ValueError, match="not among the classifier's classes"):
        lk._labels({"source": ["nope"]}, "source", ["a", "b"], torch.device("cpu"))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_a_users_torchscript_network_as_the_global_feature(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 5)

        def forward(self, x):                                       # (B, 3, S, S) -> (B, 5)
            return self.fc(x.mean(dim=(2, 3)))

    path = tmp_path / "net.pt"
    torch.jit.script(Net()).save(str(path))
    cfg = {"global_source": "torchscript", "global_path": str(path), "global_dim": 5, "global_input_size": 16,
           "global_feature": "softmax"}
    model = small(**cfg)
    g = model.global_features(torch.full((2, 1, 20, 30), 50.0))
    assert g.shape == (2, 5) and torch.allclose(g.sum(-1), torch.ones(2))
    assert model(torch.rand(2, 1, 20, 30) * 100).shape == (2, 2, 20, 30)
    assert not any(k.startswith("global_features") for k in model.state_dict())     # the file holds its weights
    # a checkpoint of it loads back when the user names the file (a checkpoint never opens it itself)
    _, summary = train_lakhani(tmp_path / "run", {"name": "lakhani", "width": 4, **cfg})
    assert colorkit.load(summary["checkpoint"], files={"global_path": path}).config["global_path"] == str(path)
    with pytest.raises(FileNotFoundError, match="no TorchScript file at"):
        small(**{**cfg, "global_path": str(tmp_path / "missing.pt")})
    (tmp_path / "junk.pt").write_bytes(b"not a torchscript file")
    with pytest.raises(ValueError, match="cannot load .* as TorchScript"):
        small(**{**cfg, "global_path": str(tmp_path / "junk.pt")})
    with pytest.raises(ValueError, match="set global_dim"):
        small(**{**cfg, "global_dim": 7})(torch.rand(1, 1, 16, 16) * 100)
    with pytest.raises(ValueError, match="needs global_path"):
        small(global_source="torchscript")
    with pytest.raises(ValueError, match="penultimate.*needs global_source 'pretrained' or 'scene'"):
        small(**{**cfg, "global_feature": "penultimate"})


# --- the pretrained ImageNet network as the global feature (the default) ----------------------------

def test_the_pretrained_global_vector_is_the_imagenet_networks_output_on_the_gray_image():
    from colorkit import pretrained
    from colorkit.color import lightness_to_gray

    model = small(global_source="pretrained", global_feature="logits", global_input_size=64).eval()
    L = torch.rand(2, 1, 40, 56) * 100
    reference = pretrained.features("efficientnet-lite0", layers=("logits",), size=64)
    torch.testing.assert_close(model.global_features(L), reference(lightness_to_gray(L))["logits"])
    pooled = small(global_source="pretrained", global_feature="penultimate", global_input_size=64)
    assert pooled.global_features(L).shape == (2, 1280) and pooled.fusion.global_dim == 1280
    assert "efficientnet-lite0" in model.classifier.name


def test_a_pretrained_checkpoint_is_self_contained_and_training_leaves_the_network_alone(tmp_path, monkeypatch):
    from colorkit import pretrained

    config = {"name": "lakhani", "width": 4, "image_size": 32, "global_input_size": 32}
    model, summary = train_lakhani(tmp_path, config, steps=3)
    untouched = pretrained.features("efficientnet-lite0", layers=("pool", "logits"), size=32).state_dict()
    for key, value in untouched.items():                          # frozen: weights and BN statistics as shipped
        assert torch.equal(model.classifier.net.state_dict()[key], value), key

    def refuse(*args, **kwargs):
        raise AssertionError("colorkit.load read the pretrained weights file")

    monkeypatch.setattr(pretrained, "weights_file", refuse)        # loading needs only the checkpoint
    loaded = colorkit.load(summary["checkpoint"]).eval()
    L = torch.rand(1, 1, 32, 32) * 100
    with torch.no_grad():
        torch.testing.assert_close(loaded(L), model.eval()(L))


def test_the_global_cache_changes_no_vector_and_skips_images_it_has_seen(monkeypatch):
    lk._GLOBAL_CACHE.clear()
    plain = small(global_source="pretrained", global_input_size=32)
    cached = small(global_source="pretrained", global_input_size=32, global_cache=6)
    calls = []
    original = cached.global_features._vectors
    monkeypatch.setattr(cached.global_features, "_vectors", lambda L: calls.append(len(L)) or original(L))
    L = torch.rand(4, 1, 24, 24) * 100
    torch.testing.assert_close(cached.global_features(L), plain.global_features(L))
    torch.testing.assert_close(cached.global_features(L[[2, 0]]), plain.global_features(L[[2, 0]]))
    assert calls == [4]                                            # the second call found both images
    more = torch.rand(3, 1, 24, 24) * 100
    cached.global_features(torch.cat([L[:1], more]))
    assert calls == [4, 3] and len(lk._GLOBAL_CACHE) == 6         # bounded: the least recently used went first
    with torch.no_grad():                                          # new weights: the old vectors no longer apply
        cached.classifier.net.net.fc.bias.add_(1.0)
    cached.global_features(L[:1])
    assert calls == [4, 3, 1]
    lk._GLOBAL_CACHE.clear()
    with pytest.raises(ValueError, match="global_cache must be an int >= 0"):
        small(global_cache=-1)


# --- errors ---------------------------------------------------------------------------------------

def test_bad_input_and_config_give_clear_errors():
    model = small()
    with pytest.raises(ValueError, match=r"L must be shaped \(B, 1, H, W\).*\(1, 32, 32\)"):
        model(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match=r"L must be shaped \(B, 1, H, W\)"):
        model(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match="float tensor"):
        model(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="takes no hints"):
        model(torch.rand(1, 1, 32, 32), hint_ab=torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match="return_attention=True needs a model built with attention"):
        small(attention=None)(torch.rand(1, 1, 32, 32), return_attention=True)
    with pytest.raises(ValueError, match="attention must be one of"):
        small(attention="dot")
    with pytest.raises(ValueError, match="global_source must be one of"):
        small(global_source="inception")
    with pytest.raises(ValueError, match="global_feature must be one of"):
        small(global_feature="pooled")
    with pytest.raises(ValueError, match="global_classes must be"):
        small(global_classes="imagenet")
    with pytest.raises(ValueError, match="width must be an int >= 2"):
        small(width=1)
    with pytest.raises(ValueError, match="valid parameters: width, image_size, fusion, attention, coords"):
        models.build({"name": "lakhani", "heads": 2})


# --- checkpoints, colorize, presets -----------------------------------------------------------------

def test_load_and_colorize_round_trip_on_a_checkpoint(tmp_path):
    model, summary = train_lakhani(tmp_path, {"name": "lakhani", "width": 4, "image_size": 32, "classifier_width": 4},
                                   steps=3)
    loaded = colorkit.load(summary["checkpoint"])
    assert isinstance(loaded, LakhaniColorizer) and loaded.config == model.config
    L = torch.rand(2, 1, 32, 40) * 100
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(L), model(L))
        assert torch.equal(loaded(L, return_attention=True)[1], model(L, return_attention=True)[1])
    image = np.random.default_rng(0).integers(0, 256, (45, 61), dtype=np.uint8)
    out = colorkit.colorize(loaded, image)
    assert out.shape == (45, 61, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="takes no hints"):
        colorkit.colorize(loaded, image, hints=[(1, 1, (255, 0, 0))])


def test_presets_have_the_course_format_and_the_papers_optimizer():
    baseline = presets.PRESETS["baseline"]
    assert set(presets.PRESETS["lakhani"]) == set(baseline)
    for name, entry in presets.PRESETS["lakhani"].items():
        assert set(entry) == {"model", "train", "data", "classifier"} and set(entry["data"]) == set(baseline[name]["data"])
        TrainConfig(**entry["train"])                               # valid training fields
        assert models.build(entry["model"]).config["name"] == "lakhani"
        assert {"steps", "batch_size", "lr"} <= set(entry["classifier"])
    full = presets.PRESETS["lakhani"]["full"]
    assert full["data"]["size"] == full["model"]["image_size"] == 256 and full["model"]["width"] == 64
    assert full["train"]["lr"] == 1e-3 and full["train"]["optimizer"] == "adam"


@pytest.mark.parametrize("preset", ["smoke", "full"])
def test_preset_model_trains_two_steps_on_the_cpu(tmp_path, preset):
    entry = presets.PRESETS["lakhani"][preset]
    train = {k: v for k, v in entry["train"].items() if k not in ("steps", "batch_size", "num_workers")}
    _, summary = train_lakhani(tmp_path, entry["model"], steps=2, batch_size=2, length=4, **train)
    assert summary["steps"] == 2 and all(np.isfinite(v) for v in summary["losses"].values())
    assert colorkit.load(summary["checkpoint"]).config == models.build(entry["model"]).config
