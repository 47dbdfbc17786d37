"""The model card's figures (matplotlib, Agg): loss curve, samples, nearest neighbours, heatmaps, locality.

Images are `[N, 1, H, W]` in [-1, 1] (float) or uint8; drawn in grey, black = -1, white = 1.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

_PNG = {"dpi": 100, "metadata": {"Software": None}}


def _unit(images: Any) -> np.ndarray:
    """`[N, H, W]` float in [-1, 1] from uint8 or float images `[N, 1, H, W]`."""
    x = np.asarray(images)
    x = x.astype(np.float64) / 127.5 - 1 if x.dtype == np.uint8 else x.astype(np.float64)
    return x.reshape(x.shape[0], x.shape[-2], x.shape[-1])


def grid(images: np.ndarray, cols: int, gap: int = 2, fill: float = 0.0) -> np.ndarray:
    """Tile `[N, H, W]` into rows of `cols` with `gap` pixels of `fill` between and around them."""
    n, h, w = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), fill)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = img
    return out


def loss_figure(loss: dict[str, np.ndarray], smoothed: np.ndarray, metrics: dict[str, Any], path: str) -> None:
    tr = metrics["training"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(loss["step"], loss["loss"], color="tab:blue", alpha=0.35, lw=0.8,
            label=f"mean over each {tr['log_every_steps']} steps (loss.csv)")
    ax.plot(loss["step"], smoothed, color="tab:blue", lw=2,
            label=f"centred moving average over {tr['smoothing_rows']} rows")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss (weighted MSE)")
    ax.set_title(f"Training loss, {tr['steps']:,} steps, batch {tr['train_config']['batch_size']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, **_PNG)
    plt.close(fig)


def samples_figure(samples: np.ndarray, path: str, cols: int = 8) -> None:
    x = _unit(samples)
    fig, ax = plt.subplots(figsize=(6, 6 * (-(-len(x) // cols)) / cols))
    ax.imshow(grid(x, cols), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    fig.savefig(path, **_PNG)
    plt.close(fig)


def nearest_figure(samples: np.ndarray, train: Any, nn: dict[str, np.ndarray], copies: np.ndarray, path: str,
                   cols: int = 8) -> None:
    """Each sample next to its nearest training image (x-flips included), the distance above the pair."""
    x, t = _unit(samples), _unit(np.asarray(train)[nn["index_flip"]])
    t = np.where(nn["flipped"][:, None, None], t[:, :, ::-1], t)
    rows = -(-len(x) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 1.25 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(len(x)):
        ax = axes.flat[i]
        pair = np.concatenate([x[i], np.ones((x.shape[1], 1)), t[i]], axis=1)
        ax.imshow(pair, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        label = f"#{i}  d = {nn['dist_flip'][i]:.2f}" + ("  flip" if nn["flipped"][i] else "")
        ax.set_title(label + ("  COPY" if copies[i] else ""), fontsize=9, color="red" if copies[i] else "black")
    fig.suptitle("sample (left) | nearest training image by L2 (right)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, **_PNG)
    plt.close(fig)


def heatmaps_figure(maps: list[np.ndarray], sides: list[np.ndarray], loc: dict[str, Any], path: str) -> None:
    """Rows: output pixels; columns: t. Each map scaled to its maximum, colour ~ its square root so that diffuse
    tails (which can hold most of the mass) show; the box is the 50 % square."""
    pixels, ts = loc["pixels"], loc["t"]
    fig, axes = plt.subplots(len(pixels), len(ts), figsize=(2.6 * len(ts), 2.6 * len(pixels)), squeeze=False)
    for j, (m, s) in enumerate(zip(maps, sides)):
        for i, (y, x) in enumerate(pixels):
            ax = axes[i, j]
            g = m[y, x]
            ax.imshow(g / g.max() if g.max() > 0 else g, cmap="magma", norm=PowerNorm(0.5, vmin=0, vmax=1),
                      interpolation="nearest")
            side = int(s[y, x, 0])
            r = side // 2
            ax.add_patch(Rectangle((x - r - 0.5, y - r - 0.5), side, side, fill=False, ec="cyan", lw=1.2))
            ax.plot([x], [y], marker="+", color="lime", ms=8, mew=1.5)
            # The square may reach past the image; keep the axes on the image.
            ax.set_xlim(-0.5, g.shape[1] - 0.5)
            ax.set_ylim(g.shape[0] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t = {ts[j]:g}, 50 %: {side}x{side}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"pixel ({y}, {x})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, **_PNG)
    plt.close(fig)


def locality_figure(loc: dict[str, Any], image_side: int, path: str) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    sides = np.array(loc["mean_side"])
    for k, q in enumerate(loc["fractions"]):
        ax.plot(loc["t"], sides[:, k], marker="o", color=f"C{k}", label=f"{100 * q:g} % of the mass, mean over pixels")
    ax.plot(loc["t"], np.array(loc["median_side"])[:, 0], marker=".", ls=":", color="C0",
            label="50 %, median over pixels")
    paper = np.array(loc["paper_50"]["points"], dtype=float)
    ps = loc["paper_50"]["image_side"]
    ax.plot(paper[:, 0], paper[:, 1], "kx", ms=10, mew=2, ls="none",
            label=f"paper, 50 %, CIFAR-10 {ps}x{ps} (docs/science.md s.4)")
    ax.axhline(image_side, color="gray", ls="--", lw=1, label=f"image side {image_side}")
    ax.set_xscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("side of the centred square (pixels)")
    ax.set_title(f"Locality of the gradient heatmaps ({loc['samples']} draws per t)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, **_PNG)
    plt.close(fig)
