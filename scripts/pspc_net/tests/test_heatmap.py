"""Tests of the gradient heatmaps and the locality figure (pspc_net.heatmap, docs/science.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pspc_net.heatmap import draw_samples, gradient_heatmaps, locality, locality_sides, range_sides
from pspc_net.model import EDMPrecond


def images(n: int = 5, c: int = 1, h: int = 6, w: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


class ConvToy:
    """D(z, t) = conv(z, k) with zero padding: a locally connected network whose Jacobian is known."""

    def __init__(self, kernel: torch.Tensor, nonlinear: bool = False):
        self.kernel, self.nonlinear = kernel, nonlinear

    def __call__(self, z, t):
        pad = self.kernel.shape[-1] // 2
        out = F.conv2d(z, self.kernel, padding=pad) * t[:, None, None, None]
        return torch.tanh(out) if self.nonlinear else out


def expected_conv_maps(kernel: np.ndarray, h: int, w: int) -> np.ndarray:
    """maps[y, x, y', x'] = sum_c sum_c' |k[c, c', y' - y + r, x' - x + r]| inside the image."""
    r = kernel.shape[-1] // 2
    k = np.abs(kernel).sum(axis=(0, 1))
    maps = np.zeros((h, w, h, w))
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        maps[y, x, y + dy, x + dx] = k[dy + r, dx + r]
    return maps


@pytest.mark.parametrize("method", ["vmap", "replicate", "auto"])
@pytest.mark.parametrize("channels", [1, 2])
def test_linear_conv_maps_are_the_kernel(method, channels):
    torch.manual_seed(0)
    kernel = torch.randn(channels, channels, 3, 3)
    h, w = 5, 7
    maps = gradient_heatmaps(
        ConvToy(kernel), images(3, channels, h, w), 1.0, 3, seed=1, batch=8, method=method
    )
    assert maps.shape == (h, w, h, w) and maps.dtype == np.float64
    np.testing.assert_allclose(maps, expected_conv_maps(kernel.numpy(), h, w), rtol=1e-6, atol=1e-7)


def test_nonlinear_local_network_has_local_maps():
    torch.manual_seed(1)
    k1, k2 = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3)

    def two_layers(z, t):
        return F.conv2d(torch.tanh(F.conv2d(z, k1, padding=1)), k2, padding=1)

    maps = gradient_heatmaps(two_layers, images(4, 1, 9, 9), 0.5, 4, seed=2, batch=16)
    ys, xs = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    for y in range(9):
        for x in range(9):
            outside = (np.abs(ys - y) > 2) | (np.abs(xs - x) > 2)
            assert np.all(maps[y, x][outside] == 0)  # receptive field 5x5
            assert maps[y, x].sum() > 0
    assert np.all(locality_sides(maps) <= 5)


def test_edm_network_vmap_and_replicate_agree_and_batch_does_not_matter():
    torch.manual_seed(0)
    net = EDMPrecond.from_preset("tiny", img_resolution=6)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.eval().requires_grad_(False)
    imgs = images(4, 1, 6, 6)
    a = gradient_heatmaps(net, imgs, 2.0, 3, seed=5, batch=64, method="vmap")
    b = gradient_heatmaps(net, imgs, 2.0, 3, seed=5, batch=1, method="replicate")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    c = gradient_heatmaps(net, imgs, 2.0, 3, seed=6, batch=64, method="vmap")
    assert not np.allclose(a, c)  # the seed matters
    assert np.all(a >= 0) and np.isfinite(a).all()


def test_draws_come_from_the_images_and_their_flips():
    imgs = images(2, 1, 4, 4)
    x0 = imgs.to(torch.float32) / 127.5 - 1
    candidates = torch.cat([x0, x0.flip(-1)])
    blocks = list(draw_samples(imgs, 1e-9, 150, seed=3, xflip=True))
    assert [b.shape[0] for b in blocks] == [64, 64, 22]
    z = torch.cat(blocks)
    dist = (z[:, None] - candidates[None]).abs().amax(dim=(2, 3, 4))
    hits = dist.argmin(dim=1)
    assert torch.all(dist.min(dim=1).values < 1e-6)
    assert set(hits.tolist()) == {0, 1, 2, 3}
    same = torch.cat(list(draw_samples(imgs, 1e-9, 150, seed=3, xflip=True)))
    assert torch.equal(z, same)


# MARK: ranges of output pixels


def small_edm(res: int) -> EDMPrecond:
    torch.manual_seed(0)
    net = EDMPrecond.from_preset("tiny", img_resolution=res)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval().requires_grad_(False)


@pytest.mark.parametrize("method", ["vmap", "replicate"])
@pytest.mark.parametrize("channels, batch", [(1, 7), (2, 10), (2, 1)])
def test_ranged_maps_are_the_slices_of_the_full_map_bit_for_bit(method, channels, batch):
    torch.manual_seed(2)
    k1, k2 = torch.randn(channels, channels, 3, 3), torch.randn(channels, channels, 3, 3)

    def two_layers(z, t):
        return F.conv2d(torch.tanh(F.conv2d(z, k1, padding=1)), k2, padding=1) * t[:, None, None, None]

    imgs = images(4, channels, 5, 6)
    full = gradient_heatmaps(two_layers, imgs, 0.7, 5, seed=4, batch=batch, method=method)
    flat = full.reshape(30, 5, 6)
    for start, count in [(0, 30), (0, 1), (3, 7), (10, 11), (29, 1), (13, 17)]:
        part = gradient_heatmaps(
            two_layers, imgs, 0.7, 5, seed=4, batch=batch, method=method, outputs=(start, count)
        )
        assert part.shape == (count, 5, 6)
        np.testing.assert_array_equal(part, flat[start : start + count])


def test_ranged_edm_maps_equal_the_full_map_and_sides_average_to_the_locality():
    net = small_edm(6)
    imgs = images(3, 1, 6, 6)
    full = gradient_heatmaps(net, imgs, 1.3, 3, seed=9, batch=20)
    parts, sides = [], []
    for start in range(0, 36, 10):
        count = min(10, 36 - start)
        part = gradient_heatmaps(net, imgs, 1.3, 3, seed=9, batch=20, outputs=(start, count))
        parts.append(part)
        sides.append(range_sides(part, start))
    np.testing.assert_array_equal(np.concatenate(parts).reshape(full.shape), full)
    sides = np.concatenate(sides)
    np.testing.assert_array_equal(sides, locality_sides(full).reshape(36, 3))
    np.testing.assert_array_equal(sides.sum(axis=0) / 36, locality(full))


def test_bad_ranges_are_refused():
    for outputs in [(0, 0), (30, 1), (25, 6), (-1, 2)]:
        with pytest.raises(ValueError, match="output pixels"):
            gradient_heatmaps(ConvToy(torch.ones(1, 1, 3, 3)), images(2, 1, 5, 6), 1.0, 1, 0, outputs=outputs)
    with pytest.raises(ValueError):
        range_sides(np.zeros((4, 3, 3)), 6)


def test_images_in_order_take_image_i_for_sample_i_and_the_same_noise():
    imgs = images(70, 1, 4, 4)
    z = torch.cat(list(draw_samples(imgs, 0.5, 70, seed=3, in_order=True)))
    x0 = imgs.to(torch.float32) / 127.5 - 1
    g = torch.Generator().manual_seed(3)
    eps = torch.cat([torch.randn((64, 1, 4, 4), generator=g), torch.randn((6, 1, 4, 4), generator=g)])
    assert torch.equal(z, x0 + 0.5 * eps)
    with pytest.raises(ValueError, match="in order"):
        list(draw_samples(imgs, 0.5, 69, seed=3, in_order=True))
    with pytest.raises(ValueError, match="in order"):
        list(draw_samples(imgs, 0.5, 70, seed=3, xflip=True, in_order=True))
    # In order, the maps are those of the images drawn in that order.
    net = ConvToy(torch.randn(1, 1, 3, 3), nonlinear=True)
    picked = imgs[[5, 2, 5]]
    a = gradient_heatmaps(net, picked, 0.5, 3, seed=1, in_order=True, outputs=(2, 5))
    b = gradient_heatmaps(net, picked, 0.5, 3, seed=1, in_order=True)
    np.testing.assert_array_equal(a, b.reshape(16, 4, 4)[2:7])


# MARK: locality


def delta_maps(h: int, w: int) -> np.ndarray:
    maps = np.zeros((h, w, h, w))
    for y in range(h):
        for x in range(w):
            maps[y, x, y, x] = 1.0
    return maps


def brute_force_sides(maps: np.ndarray, fractions) -> np.ndarray:
    h, w = maps.shape[:2]
    out = np.zeros((h, w, len(fractions)))
    for y in range(h):
        for x in range(w):
            total = maps[y, x].sum()
            for j, q in enumerate(fractions):
                r = 0
                while maps[y, x, max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].sum() < q * total * (1 - 1e-12):
                    r += 1
                out[y, x, j] = 2 * r + 1
    return out


def test_delta_maps_have_side_one():
    assert np.array_equal(locality(delta_maps(4, 5)), [1.0, 1.0, 1.0])


def test_hand_made_map_centre_and_ring():
    # Output pixel (2, 2) of a 5x5 image: 50 % at the centre, 30 % on the 3x3 ring, 20 % on the 5x5 ring.
    maps = delta_maps(5, 5)
    m = np.zeros((5, 5))
    m[2, 2] = 0.5
    m[1, 1:4] = m[3, 1:4] = 0.3 / 8
    m[2, 1] = m[2, 3] = 0.3 / 8
    m[0, :] = m[4, :] = 0.2 / 16
    m[1:4, 0] = m[1:4, 4] = 0.2 / 16
    maps[2, 2] = m * 7  # the scale does not matter
    sides = locality_sides(maps)
    assert sides[2, 2].tolist() == [1.0, 3.0, 5.0]
    other = np.ones((5, 5), bool)
    other[2, 2] = False
    assert np.all(sides[other] == 1)
    assert np.allclose(locality(maps), [1.0, (24 + 3) / 25, (24 + 5) / 25])


def test_corner_pixel_spread_over_the_image_needs_the_largest_square():
    maps = delta_maps(4, 4)
    maps[0, 0] = 0
    maps[0, 0, 3, 3] = 1.0  # all of (0, 0)'s mass in the opposite corner
    assert locality_sides(maps)[0, 0].tolist() == [7.0, 7.0, 7.0]  # 2 max(H, W) - 1


def test_zero_map_has_side_one():
    maps = np.zeros((3, 3, 3, 3))
    assert np.array_equal(locality(maps), [1.0, 1.0, 1.0])


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 4)])
def test_locality_matches_brute_force(shape):
    h, w = shape
    maps = np.random.default_rng(h * 10 + w).exponential(size=(h, w, h, w)) ** 3
    fractions = (0.5, 0.75, 0.95)
    np.testing.assert_array_equal(locality_sides(maps, fractions), brute_force_sides(maps, fractions))
    assert locality(maps).shape == (3,)


def test_locality_rejects_bad_shapes():
    with pytest.raises(ValueError):
        locality_sides(np.zeros((3, 3, 3, 4)))
