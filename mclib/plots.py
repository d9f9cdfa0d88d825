"""One figure style for the whole book: palette, fonts, sizes, and small plotting helpers."""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

#: Colour-blind-safe palette (Okabe & Ito), used in this order by every figure.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def use_style() -> None:
    """Apply the book's matplotlib style (called by :func:`mclib.config.setup`)."""
    mpl.rcParams.update({
        "figure.figsize": (6.4, 3.6),
        "figure.dpi": 110,
        "savefig.dpi": 110,
        # sizes for a figure scaled to a phone's column: the smallest text a figure draws is "small"
        # (10 pt), which mclib.cards.figure_html keeps at 9 CSS px or more at 400 px and 11 px at 1400 px
        "font.size": 12,
        "axes.titlesize": 12,
        "axes.labelsize": 12,
        "xtick.labelsize": 11,
        "ytick.labelsize": 11,
        "legend.fontsize": 11,
        "figure.titlesize": 13,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "image.cmap": "viridis",
    })


def images(ax_row, imgs, titles=None) -> None:
    """Show a row of [0, 1] images (C, H, W tensors or arrays) on the given axes, without ticks."""
    for i, ax in enumerate(ax_row):
        img = imgs[i]
        img = img.detach().cpu().numpy() if hasattr(img, "detach") else img
        if img.ndim == 3 and img.shape[0] in (1, 3):
            img = img.transpose(1, 2, 0)
        ax.imshow(img.squeeze(), cmap="gray" if img.squeeze().ndim == 2 else None, vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        ax.grid(False)
        if titles is not None:
            ax.set_title(titles[i])


def subplots(*args, **kwargs):
    """``plt.subplots`` with ``constrained_layout`` on by default."""
    kwargs.setdefault("constrained_layout", True)
    return plt.subplots(*args, **kwargs)
