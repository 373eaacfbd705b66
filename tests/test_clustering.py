"""colorkit.clustering: balanced binary clustering (Li et al. eq. 11-12) is a balanced, invertible
permutation that groups similar tokens."""

import pytest
import torch

from colorkit.clustering import (
    balanced_binary_clustering,
    cluster_padding_mask,
    cluster_windows,
    gather_tokens,
    invert_permutation,
    scatter_tokens,
    token_brightness,
    uncluster_windows,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def clusters_of(perm, cluster_size):
    """Sets of token ids per cluster for each batch item."""
    return [[set(row[i:i + cluster_size].tolist()) for i in range(0, len(row), cluster_size)] for row in perm]


@pytest.mark.parametrize("n,cluster_size", [(64, 4), (48, 4), (49, 49), (196, 49), (50, 8), (7, 3), (5, 8)])
@pytest.mark.parametrize("similarity", ["brightness", "cosine"])
def test_perm_is_a_permutation_with_balanced_clusters(gen, n, cluster_size, similarity):
    x = torch.randn(3, n, 6, generator=gen)
    light = torch.rand(3, n, generator=gen) * 100
    perm = balanced_binary_clustering(x, cluster_size, brightness=light, similarity=similarity)
    assert perm.shape == (3, n) and perm.dtype == torch.long
    for row in perm:                                     # every token exactly once
        assert torch.equal(row.sort().values, torch.arange(n))
    sizes = [len(c) for c in clusters_of(perm, cluster_size)[0]]
    full, rest = divmod(n, cluster_size)
    assert sizes == [cluster_size] * full + ([rest] if rest else [])  # only the last can be short


def test_brightness_without_map_uses_features(gen):
    x = torch.randn(2, 32, 5, generator=gen)
    perm = balanced_binary_clustering(x, 8)
    for row in perm:
        assert torch.equal(row.sort().values, torch.arange(32))


def test_gather_then_scatter_is_identity(gen):
    x = torch.randn(2, 40, 5, generator=gen)
    perm = balanced_binary_clustering(x, 8, similarity="cosine")
    inv = invert_permutation(perm)
    assert torch.equal(perm.gather(1, inv), torch.arange(40).expand(2, 40))
    y = gather_tokens(x, perm)
    assert torch.equal(y[1, 3], x[1, perm[1, 3]])
    assert torch.equal(scatter_tokens(y, perm), x)
    assert torch.equal(gather_tokens(scatter_tokens(x, perm), perm), x)


def test_brightness_separates_two_obvious_groups(gen):
    # 32 tokens of lightness ~10 and 32 of ~90, interleaved; features are noise
    light = torch.where(torch.arange(64) % 2 == 0, 10.0, 90.0) + torch.rand(64, generator=gen)
    x = torch.randn(1, 64, 8, generator=gen)
    perm = balanced_binary_clustering(x, 16, brightness=light[None])
    dark = set(torch.nonzero(light < 50).flatten().tolist())
    for cluster in clusters_of(perm, 16)[0]:
        assert cluster <= dark or not (cluster & dark), "a cluster mixes dark and bright tokens"
    # the first split (32 | 32) is exactly dark | bright
    first_half = set(perm[0, :32].tolist())
    assert first_half == dark or not (first_half & dark)


def test_cosine_separates_two_direction_groups(gen):
    a, b = torch.zeros(8), torch.zeros(8)
    a[0], b[1] = 1.0, 1.0
    direction = torch.randperm(40, generator=gen) < 20           # which tokens point along a
    scale = torch.rand(40, 1, generator=gen) * 5 + 0.5           # lengths differ; directions decide
    x = torch.where(direction[:, None], a, b) * scale + 0.01 * torch.randn(40, 8, generator=gen)
    perm = balanced_binary_clustering(x[None], 10, similarity="cosine")
    group_a = set(torch.nonzero(direction).flatten().tolist())
    for cluster in clusters_of(perm, 10)[0]:
        assert cluster <= group_a or not (cluster & group_a)


def test_deterministic_and_batch_items_independent(gen):
    x = torch.randn(3, 48, 6, generator=gen)
    light = torch.rand(3, 48, generator=gen)
    for similarity in ("brightness", "cosine"):
        perm = balanced_binary_clustering(x, 8, brightness=light, similarity=similarity)
        assert torch.equal(perm, balanced_binary_clustering(x, 8, brightness=light, similarity=similarity))
        for i in range(3):
            alone = balanced_binary_clustering(x[i:i + 1], 8, brightness=light[i:i + 1], similarity=similarity)
            assert torch.equal(perm[i:i + 1], alone)
        # changing one batch item leaves the others alone
        x2, light2 = x.clone(), light.clone()
        x2[0], light2[0] = torch.randn(48, 6, generator=gen), torch.rand(48, generator=gen)
        perm2 = balanced_binary_clustering(x2, 8, brightness=light2, similarity=similarity)
        assert torch.equal(perm2[1:], perm[1:])


def test_ties_are_deterministic():
    perm = balanced_binary_clustering(torch.ones(2, 16, 3), 4, brightness=torch.zeros(2, 16))
    assert torch.equal(perm[0].sort().values, torch.arange(16))
    assert torch.equal(perm, balanced_binary_clustering(torch.ones(2, 16, 3), 4, brightness=torch.zeros(2, 16)))


@pytest.mark.parametrize("n,cluster_size", [(64, 16), (50, 8)])
def test_cluster_windows_round_trip(gen, n, cluster_size):
    x = torch.randn(2, n, 5, generator=gen, requires_grad=True)
    perm = balanced_binary_clustering(x, cluster_size)
    windows = cluster_windows(x, perm, cluster_size)
    groups = -(-n // cluster_size)
    assert windows.shape == (2 * groups, cluster_size, 5)
    mask = cluster_padding_mask(n, cluster_size)
    assert mask.shape == (groups, cluster_size) and int(mask.sum()) == n
    padded = ~mask.repeat(2, 1)                                  # (B * G, cluster_size)
    assert torch.all(windows[padded] == 0)
    assert torch.equal(windows[1 * groups, 0], x[1, perm[1, 0]])  # batch-major rows
    back = uncluster_windows(windows * 2, perm, cluster_size)
    assert torch.equal(back, x * 2)
    back.sum().backward()                                        # gradients flow through gather/scatter
    assert torch.equal(x.grad, torch.full_like(x, 2.0))


def test_token_brightness_matches_patch_means():
    light = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8)
    tb = token_brightness(light, 4)
    assert tb.shape == (2, 4)
    assert tb[1, 1] == light[1, :4, 4:].mean() and tb[0, 2] == light[0, 4:, :4].mean()


def test_clear_errors():
    x = torch.randn(2, 16, 4)
    with pytest.raises(ValueError, match="features"):
        balanced_binary_clustering(x[0], 4)
    with pytest.raises(ValueError, match="similarity"):
        balanced_binary_clustering(x, 4, similarity="l2")
    with pytest.raises(ValueError, match="brightness"):
        balanced_binary_clustering(x, 4, brightness=torch.zeros(2, 15))
    with pytest.raises(ValueError, match="cluster_size"):
        balanced_binary_clustering(x, 0)
    with pytest.raises(ValueError, match="perm"):
        gather_tokens(x, torch.zeros(2, 15, dtype=torch.long))
    with pytest.raises(ValueError, match="windows"):
        uncluster_windows(torch.zeros(3, 4, 4), torch.zeros(2, 16, dtype=torch.long), 4)
