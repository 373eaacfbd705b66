"""colorkit.metrics against scikit-image, scipy and plain numpy written from the definitions."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.color import rgb2lab
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from colorkit import metrics


def image_pair(b=4, c=3, h=48, w=40, noise=0.1, seed=0):
    """A target batch and a noisy prediction, both in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, c, h, w, generator=g)
    # smooth the target a little so SSIM sees structure, not only noise
    target = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    pred = (target + noise * torch.randn(b, c, h, w, generator=g)).clamp(0, 1)
    return pred, target


def hwc(x):
    return x.permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------- PSNR


def test_psnr_matches_skimage_per_image():
    pred, target = image_pair()
    ours = metrics.psnr(pred, target, reduction="none")
    ref = np.array([sk_psnr(target[i].numpy(), pred[i].numpy(), data_range=1) for i in range(len(pred))])
    assert np.abs(ours.numpy() - ref).max() < 1e-3
    assert abs(metrics.psnr(pred, target) - ref.mean()) < 1e-3


def test_psnr_identical_images_is_inf_or_capped():
    _, target = image_pair(b=2)
    assert metrics.psnr(target, target) == math.inf
    assert metrics.psnr(target, target, max_db=100.0) == 100.0


def test_psnr_single_image_and_data_range():
    pred, target = image_pair(b=1)
    assert metrics.psnr(pred[0], target[0]) == pytest.approx(metrics.psnr(pred, target))
    ref = sk_psnr(255 * target[0].double().numpy(), 255 * pred[0].double().numpy(), data_range=255)
    assert metrics.psnr(255 * pred, 255 * target, data_range=255) == pytest.approx(ref, abs=1e-3)


# ---------------------------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_ssim_matches_skimage_rgb(noise):
    pred, target = image_pair(h=37, w=52, noise=noise)
    ours = metrics.ssim(pred, target, reduction="none")
    ref = np.array([sk_ssim(hwc(target[i]), hwc(pred[i]), channel_axis=-1, data_range=1.0)
                    for i in range(len(pred))])
    assert np.abs(ours.numpy() - ref).max() < 1e-3
    assert abs(metrics.ssim(pred, target) - ref.mean()) < 1e-3


def test_ssim_matches_skimage_gray_and_float64():
    pred, target = image_pair(c=1, h=30, w=30)
    pred, target = pred.double(), target.double()
    ours = metrics.ssim(pred, target, reduction="none")
    ref = np.array([sk_ssim(target[i, 0].numpy(), pred[i, 0].numpy(), data_range=1.0) for i in range(len(pred))])
    assert np.abs(ours.numpy() - ref).max() < 1e-6


def test_ssim_identical_is_one_and_too_small_errors():
    _, target = image_pair(b=2)
    assert metrics.ssim(target, target) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim(torch.rand(1, 3, 6, 20), torch.rand(1, 3, 6, 20))


# ---------------------------------------------------------------------------------------------- PEV


def pev_reference(pred, target, patch):
    """Variance over whole patches of the per-patch MSE on the 0-255 scale, averaged over images."""
    values = []
    for p, t in zip(pred.double().numpy(), target.double().numpy()):
        _, h, w = p.shape
        mses = [np.mean((255 * (p[:, y:y + patch, x:x + patch] - t[:, y:y + patch, x:x + patch])) ** 2)
                for y in range(0, h - patch + 1, patch) for x in range(0, w - patch + 1, patch)]
        values.append(np.var(mses))
    return float(np.mean(values))


@pytest.mark.parametrize("patch, h, w", [(16, 64, 48), (8, 50, 37)])
def test_pev_matches_numpy(patch, h, w):
    pred, target = image_pair(h=h, w=w)
    ref = pev_reference(pred, target, patch)
    assert metrics.patch_error_variance(pred, target, patch=patch) == pytest.approx(ref, rel=1e-4)


def test_pev_constant_error_is_zero_and_one_bad_patch_is_known():
    target = torch.full((1, 3, 32, 32), 0.5)
    assert metrics.patch_error_variance(target + 0.1, target, patch=16) == pytest.approx(0.0, abs=1e-6)
    pred = target.clone()
    pred[..., :16, :16] += 0.2  # one of four patches has MSE (0.2 * 255)^2 = 51^2, the rest 0
    mse = 51.0**2
    expected = np.var([mse, 0, 0, 0])
    assert metrics.patch_error_variance(pred, target, patch=16) == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------------------------- B-PSNR


def seam_mask_reference(h, w, patch, width, image_border):
    """A pixel is on a seam when a pixel `width` steps away (up/down/left/right) is in another patch."""
    mask = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            for pos, n in ((y, h), (x, w)):
                for step in (-width, width):
                    other = pos + step
                    crosses = other // patch != pos // patch
                    inside = 0 <= other < n
                    if crosses and (inside or image_border):
                        mask[y, x] = True
    return mask


@pytest.mark.parametrize("patch, width, image_border", [(8, 1, False), (8, 2, False), (8, 1, True), (16, 3, True)])
def test_boundary_mask_matches_definition(patch, width, image_border):
    h, w = 4 * patch, 3 * patch
    ours = metrics.patch_boundary_mask((h, w), patch, width, image_border=image_border).numpy()
    assert (ours == seam_mask_reference(h, w, patch, width, image_border)).all()


def test_boundary_psnr_matches_numpy_and_ignores_ragged_edge():
    patch, width = 8, 1
    pred, target = image_pair(h=8 * 5 + 3, w=8 * 4 + 5)  # ragged remainder is dropped
    mask = seam_mask_reference(40, 32, patch, width, image_border=False)
    ref = [sk_psnr(t[:, :40, :32][:, mask], p[:, :40, :32][:, mask], data_range=1)
           for p, t in zip(pred.numpy(), target.numpy())]
    ours = metrics.boundary_psnr(pred, target, patch=patch, width=width, reduction="none")
    assert np.abs(ours.numpy() - ref).max() < 1e-3
    # the remainder really is ignored: corrupting it changes nothing
    spoiled = pred.clone()
    spoiled[..., 40:, :] = 1 - spoiled[..., 40:, :]
    assert metrics.boundary_psnr(spoiled, target, patch=patch) == pytest.approx(np.mean(ref), abs=1e-3)


def test_boundary_psnr_full_band_equals_psnr_and_seam_errors_count():
    pred, target = image_pair(h=32, w=32)
    full = metrics.boundary_psnr(pred, target, patch=8, width=4, image_border=True)
    assert full == pytest.approx(metrics.psnr(pred, target), abs=1e-4)
    # an error only in patch interiors leaves B-PSNR infinite; PSNR does not
    target = torch.full((1, 3, 32, 32), 0.5)
    pred = target.clone()
    pred[..., 3:5, 3:5] = 0.9
    assert metrics.boundary_psnr(pred, target, patch=8) == math.inf
    assert metrics.psnr(pred, target) < 100
    with pytest.raises(ValueError, match="no seams"):
        metrics.boundary_psnr(pred[..., :8, :8], target[..., :8, :8], patch=8)
    with pytest.raises(ValueError, match="at least one patch"):
        metrics.boundary_psnr(pred[..., :4, :], target[..., :4, :], patch=8)


# ---------------------------------------------------------------------------------------------- Frechet


def scipy_frechet(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n, d", [(400, 16), (200, 64), (40, 64), (12, 32)])  # the last two: N < D
def test_frechet_matches_scipy(n, d):
    rng = np.random.default_rng(n + d)
    a = rng.normal(size=(n, d))
    b = 0.3 * rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 0.5
    ref = scipy_frechet(a, b)
    assert metrics.frechet_distance(a, b) == pytest.approx(ref, rel=1e-4)
    # torch float32 input gives the same (computed in float64 inside)
    assert metrics.frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(
        scipy_frechet(a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)), rel=1e-4)


def test_frechet_same_set_is_zero_and_shift_is_squared_norm():
    a = np.random.default_rng(0).normal(size=(100, 8))
    assert abs(metrics.frechet_distance(a, a)) < 1e-8
    assert metrics.frechet_distance(a, a + 2.0) == pytest.approx(8 * 4.0, rel=1e-8)


def test_frechet_shape_errors():
    with pytest.raises(ValueError, match=r"\(10, 4\).*\(10, 5\)"):
        metrics.frechet_distance(np.zeros((10, 4)), np.zeros((10, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_distance(np.zeros((1, 4)), np.zeros((10, 4)))


def test_random_conv_features_are_seeded_and_named():
    images = image_pair(b=6, h=40, w=40)[1]
    f1, f2 = metrics.RandomConvFeatures(dim=64, seed=0), metrics.RandomConvFeatures(dim=64, seed=0)
    assert torch.equal(f1(images), f2(images))
    assert f1(images).shape == (6, 64)
    assert not torch.equal(f1(images), metrics.RandomConvFeatures(dim=64, seed=1)(images))
    assert f1.name == "random-conv-64 (seed 0, untrained stand-in for Inception)"


def test_frechet_score_names_extractor_and_reacts_to_color():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(24, 3, 32, 32, generator=g)
    b = torch.rand(24, 3, 32, 32, generator=g)
    extractor = metrics.RandomConvFeatures(dim=32)
    same = metrics.frechet_score(a, b, extractor, batch_size=10)
    tinted = metrics.frechet_score(a, (b * torch.tensor([1.0, 0.3, 0.3]).view(3, 1, 1)), extractor)
    assert same["extractor"] == extractor.name and same["n_a"] == 24 and same["n_b"] == 24
    assert tinted["value"] > 5 * same["value"]
    # an iterable of batches gives the same value as one tensor
    batched = metrics.frechet_score(list(a.split(5)), list(b.split(7)), extractor)
    assert batched["value"] == pytest.approx(same["value"], rel=1e-6)
    default = metrics.frechet_score(a[:4], b[:4])
    assert default["extractor"].startswith("efficientnet-lite0 pooled features (1280-d, ImageNet)")
    assert "not Inception's FID" in default["extractor"]


def test_pretrained_pool_features_tell_photos_of_one_kind_from_another():
    """ImageNet features separate cats from coffee cups far more than two crops of each."""
    import skimage.data

    def crops(photo):
        x = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        h, w = x.shape[-2:]
        return torch.stack([x[:, i:i + h // 2, j:j + w // 2] for i in (0, h // 4, h // 2) for j in (0, w // 4, w // 2)])

    features = metrics.PretrainedPoolFeatures()
    cats, cups = features(crops(skimage.data.chelsea())), features(crops(skimage.data.coffee()))
    assert cats.shape == (9, 1280)
    within = (torch.cdist(cats, cats).sum() / 72 + torch.cdist(cups, cups).sum() / 72) / 2   # 9 x 8 pairs each
    between = torch.cdist(cats, cups).mean()
    assert between > 1.5 * within


class TinyFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1)  # (N, 5, 1, 1)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_features_load_from_local_file(tmp_path):
    path = tmp_path / "tiny_inception.pt"
    module = TinyFeatures().eval()
    torch.jit.script(module).save(str(path))
    extractor = metrics.TorchScriptFeatures(path, size=20)
    assert extractor.name == "torchscript:tiny_inception.pt"
    images = torch.rand(3, 3, 24, 24)
    feats = extractor(images)
    assert feats.shape == (3, 5)
    resized = torch.nn.functional.interpolate(images, size=(20, 20), mode="bilinear", antialias=True)
    assert torch.allclose(feats, module(resized).flatten(1), atol=1e-6)
    result = metrics.frechet_score(torch.rand(6, 3, 24, 24), torch.rand(6, 3, 24, 24), extractor)
    assert result["extractor"] == "torchscript:tiny_inception.pt"


def test_exported_program_features_load_from_pt2(tmp_path):
    path = tmp_path / "tiny.pt2"
    module = TinyFeatures().eval()
    images = torch.rand(2, 3, 16, 16)
    program = torch.export.export(module, (images,), dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(program, str(path))
    extractor = metrics.TorchScriptFeatures(path)
    assert extractor.name == "export:tiny.pt2"
    more = torch.rand(5, 3, 16, 16)
    assert torch.allclose(extractor(more), module(more).flatten(1), atol=1e-6)


def test_torchscript_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope" / "inception.pt"
    with pytest.raises(FileNotFoundError, match="inception.pt"):
        metrics.TorchScriptFeatures(missing)


# ---------------------------------------------------------------------------------------------- colorfulness


def colorfulness_reference(images):
    values = []
    for img in images.double().numpy():
        r, g, b = 255 * img
        rg, yb = r - g, 0.5 * (r + g) - b
        values.append(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    return np.array(values)


def test_colorfulness_matches_numpy_gray_is_zero_saturated_is_larger():
    images = image_pair(b=5)[1]
    ref = colorfulness_reference(images)
    ours = metrics.colorfulness(images, reduction="none")
    assert np.abs(ours.numpy() - ref).max() < 1e-3
    gray = images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    assert metrics.colorfulness(gray) == pytest.approx(0.0, abs=1e-4)
    muted = 0.5 + 0.1 * (images - 0.5)
    assert metrics.colorfulness(images) > 5 * metrics.colorfulness(muted)
    with pytest.raises(ValueError, match="RGB"):
        metrics.colorfulness(torch.rand(2, 1, 8, 8))


# ---------------------------------------------------------------------------------------------- diversity


def diversity_reference(samples):
    """samples (S, B, 3, H, W) -> per-pixel mean pairwise ab distance (B, H, W), via skimage."""
    ab = np.stack([[rgb2lab(hwc(img.double()))[..., 1:] for img in sample] for sample in samples])  # (S,B,H,W,2)
    pairs = [np.linalg.norm(ab[i] - ab[j], axis=-1) for i, j in itertools.combinations(range(len(ab)), 2)]
    return np.mean(pairs, axis=0)


def test_diversity_identical_samples_and_gray_levels_are_zero():
    img = image_pair(b=2, h=12, w=12)[1]
    assert metrics.diversity(torch.stack([img, img, img]))["overall"] == pytest.approx(0.0, abs=1e-5)
    # different lightness, no color: ab distance is ~0 although the RGB differs (the D65 white
    # constants leave gray at |ab| ~ 1e-3, in skimage too)
    grays = torch.stack([torch.full((3, 8, 8), v) for v in (0.2, 0.5, 0.9)])  # (S, 3, H, W)
    assert metrics.diversity(grays)["overall"] == pytest.approx(0.0, abs=1e-2)


def test_diversity_constant_colors_equal_hand_computed_pairs():
    colors = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.5)]
    ab = [rgb2lab(np.array([[c]]))[0, 0, 1:] for c in colors]
    expected = np.mean([np.linalg.norm(ab[0] - ab[1]), np.linalg.norm(ab[0] - ab[2]), np.linalg.norm(ab[1] - ab[2])])
    samples = torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, 6, 6) for c in colors])  # (3, 3, 6, 6)
    assert metrics.diversity(samples)["overall"] == pytest.approx(expected, rel=1e-4)


def test_diversity_matches_skimage_reference():
    g = torch.Generator().manual_seed(1)
    samples = torch.rand(4, 2, 3, 10, 9, generator=g)
    ref = diversity_reference(samples)
    assert metrics.diversity(samples)["overall"] == pytest.approx(ref.mean(), rel=1e-4)


def test_diversity_per_class_isolates_classes():
    g = torch.Generator().manual_seed(2)
    base = torch.rand(2, 3, 8, 8, generator=g)
    samples = torch.stack([base, base.clone(), base.clone()])  # (S=3, B=2, 3, 8, 8)
    samples[1, :, :, :, 4:] = torch.rand(2, 3, 8, 4, generator=g)  # only the right half varies
    samples[2, :, :, :, 4:] = torch.rand(2, 3, 8, 4, generator=g)
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, 4:] = 3
    out = metrics.diversity(samples, mask)
    ref = diversity_reference(samples)
    assert set(out["per_class"]) == {0, 3}
    assert out["per_class"][0] == pytest.approx(0.0, abs=1e-4)
    assert out["per_class"][3] == pytest.approx(ref[:, :, 4:].mean(), rel=1e-4)
    assert out["overall"] == pytest.approx(ref.mean(), rel=1e-4)
    with_all = metrics.diversity(samples, mask.expand(2, 8, 8), num_classes=5)
    assert set(with_all["per_class"]) == {0, 1, 2, 3, 4} and math.isnan(with_all["per_class"][1])
    with pytest.raises(ValueError, match="num_classes"):
        metrics.diversity(samples, mask, num_classes=2)


def test_diversity_shape_errors():
    with pytest.raises(ValueError, match="S >= 2"):
        metrics.diversity(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        metrics.diversity(torch.rand(2, 3, 4, 4), torch.zeros(5, 5, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.patch_error_variance, metrics.boundary_psnr])
def test_mismatched_shapes_name_both(fn):
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\).*\(2, 3, 32, 24\)"):
        fn(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 24))


# --- paired bootstrap -----------------------------------------------------------------------------

def test_paired_bootstrap_matches_the_normal_interval_and_its_edge_cases():
    rng = np.random.default_rng(0)
    b = rng.normal(20.0, 2.0, 400)
    a = b + 0.3 + rng.normal(0.0, 1.0, 400)                        # a beats b by 0.3 dB, noise sd 1
    out = metrics.paired_bootstrap(a, b, samples=4000)
    diff = a - b
    half = 1.959964 * diff.std(ddof=1) / math.sqrt(diff.size)       # the normal approximation's half-width
    assert out["n"] == 400 and out["mean"] == pytest.approx(diff.mean())
    assert out["low"] == pytest.approx(diff.mean() - half, abs=0.2 * half)
    assert out["high"] == pytest.approx(diff.mean() + half, abs=0.2 * half)
    assert out["excludes_zero"]
    same = metrics.paired_bootstrap(b + rng.normal(0.0, 1.0, 400) * 0.01, b)  # no real difference
    assert same["low"] < 0 < same["high"] and not same["excludes_zero"]
    constant = metrics.paired_bootstrap(torch.full((5,), 3.0), torch.ones(5))
    assert constant["low"] == constant["high"] == constant["mean"] == 2.0
    with pytest.raises(ValueError, match="equal-length .* got 3 and 4"):
        metrics.paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


def test_evaluate_per_image_scores_match_the_metrics_and_their_means():
    """evaluate(per_image=True): one score per image, in dataset order, equal to the metric on that
    image alone; the reported means are their means (batches of uneven size included)."""
    from colorkit import data, evaluate
    from colorkit.color import lab_to_rgb

    class Tint(torch.nn.Module):                       # a fixed colorizer: ab = (L - 50) / 5 * (1, -1)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.2, -0.2]))

        def forward(self, L):
            return (L - 50) * self.w.view(1, 2, 1, 1)

    images = torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    dataset = [{"rgb": img} for img in images]
    model = Tint()
    out = evaluate.evaluate(model, dataset, batch_size=3, device="cpu", per_image=True)
    assert set(out["per_image"]) == {"psnr", "ssim", "colorfulness", "gray_psnr", "gray_ssim", "true_colorfulness"}
    for i, img in enumerate(images):
        lab = data.lab_batch(img[None])
        with torch.no_grad():
            pred = lab_to_rgb(torch.cat([lab["L"], model(lab["L"])], dim=1))
        assert out["per_image"]["psnr"][i].item() == pytest.approx(metrics.psnr(pred, img[None]), abs=1e-6)
        assert out["per_image"]["ssim"][i].item() == pytest.approx(metrics.ssim(pred, img[None]), abs=1e-6)
    for key, values in out["per_image"].items():
        assert values.shape == (7,) and out[key] == pytest.approx(values.mean().item())
    assert "per_image" not in evaluate.evaluate(model, dataset, batch_size=3, device="cpu")
