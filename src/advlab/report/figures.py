"""Figures for reports: grouped bars, line plots, small multiples and image grids (PNG, 150 dpi).

Each function takes plain data and an output path, writes the image atomically and returns the
path. Nothing here touches pyplot's global state: figures are built with the object-oriented
API on the Agg canvas, so no window ever opens, no figure is left open, and an interactive
backend chosen by the caller is not changed. The image size in pixels is ``figsize * dpi``.

These are the figures of the two source documents: accuracy bar charts per model (clean vs
adversarial), fine-tuning curves, success rate vs decay factor / iterations / eps and cosine
similarity of perturbations (Dong et al., "Boosting Adversarial Attacks with Momentum",
CVPR 2018, Figs. 2-4), and grids of original vs adversarial images.

Example::

    >>> import tempfile, os
    >>> out = tempfile.mkdtemp()
    >>> p = bar_chart(["AlexNet", "Basic-CNN"], {"clean": [99.05, 99.05], "FGSM": [8.70, 8.47]},
    ...               os.path.join(out, "acc.png"), "Accuracy under FGSM (eps = 0.35)",
    ...               "accuracy", percent=True)
    >>> p.name
    'acc.png'
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, PercentFormatter

from advlab._io import atomic_savefig

from .tables import DEFAULT_FLOAT_FORMAT, format_value

__all__ = ["DPI", "PALETTE", "bar_chart", "image_grid", "line_plot", "multi_line_grid"]

logger = logging.getLogger(__name__)

DPI = 150
# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in grayscale print.
PALETTE = [
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: weak on white)
]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
CORRECT_COLOR = "#1a7f37"
WRONG_COLOR = "#cf222e"
NEUTRAL_COLOR = "#24292f"

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "axes.grid": False,
    "grid.color": "#d0d7de",
    "grid.linewidth": 0.8,
    "legend.fontsize": 9.5,
    "legend.frameon": False,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
}


@contextmanager
def _figure(figsize: tuple[float, float], dpi: float):
    """A fresh Agg figure with the house style; style applies while drawing and saving."""
    w, h = figsize
    if not (w > 0 and h > 0):
        raise ValueError(f"figsize must be two positive numbers, got {figsize!r}")
    if not dpi > 0:
        raise ValueError(f"dpi must be > 0, got {dpi!r}")
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(w, h), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def _save(fig: Figure, path: str | os.PathLike[str], dpi: float) -> Path:
    return atomic_savefig(fig, path, dpi=dpi)


def _floats(values: Sequence[Any], what: str) -> np.ndarray:
    """Values as a float array; None -> nan. Raises naming ``what`` on anything else."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().tolist()
    out = []
    for v in values:
        if v is None:
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise TypeError(f"{what} must hold numbers, got {v!r}") from None
    return np.asarray(out, dtype=float)


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _percent_axis(ax: Any, values: np.ndarray, *, bars: bool, headroom: float = 1.09) -> None:
    """A 0..100 % y axis (stretched if the data leave it), with headroom for labels on bars."""
    finite = values[np.isfinite(values)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(100.0, float(finite.max())) if finite.size else 100.0
    ax.set_ylim(lo - (0 if bars else 3), hi * (headroom if bars else 1.03))
    ax.set_yticks([t for t in range(0, int(hi) + 1, 20) if t >= lo])
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))


def _set_numeric_xticks(ax: Any, x: np.ndarray) -> None:
    uniq = np.unique(x[np.isfinite(x)])
    if 0 < uniq.size <= 12:
        ax.set_xticks(uniq)
        if np.allclose(uniq, np.round(uniq)):
            ax.set_xticklabels([str(int(round(v))) for v in uniq])
        else:
            ax.set_xticklabels([f"{v:g}" for v in uniq])


def _x_values(x: Sequence[Any]) -> tuple[np.ndarray, list[str] | None]:
    """Numeric x as floats; categorical (string) x as positions 0..n-1 plus their labels."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().tolist()
    x = list(x)
    if x and all(isinstance(v, str) for v in x):
        return np.arange(len(x), dtype=float), x
    return _floats(x, "x"), None


# --------------------------------------------------------------------------- bar chart
def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    title: str,
    ylabel: str,
    *,
    xlabel: str = "",
    percent: bool = False,
    value_format: str = DEFAULT_FLOAT_FORMAT,
    figsize: tuple[float, float] | None = None,
    dpi: float = DPI,
    intervals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series, value on each bar.

    Args:
        groups: x-axis categories (e.g. model names).
        series: series name -> one value per group (e.g. ``{"clean": [...], "FGSM": [...]}``);
            None / nan draws no bar and labels it ``n/a``.
        percent: values are percentages (0..100): the y axis shows 0 % .. 100 %.
        value_format: format spec of the labels on the bars; the default is the tables'
            (``.2f``), so a bar reads exactly like the same number in a report table.
        intervals: series name -> one ``(lo, hi)`` per group (e.g. a 95 % interval), drawn
            as an error bar on that bar; series without an entry get none.

    Example: the accuracy chart of the VOneNet-FGSM report::

        bar_chart(["AlexNet", "ConvNet"], {"clean": [99.05, 98.90], "FGSM": [8.70, 15.07]},
                  "acc.png", "MNIST accuracy, FGSM eps = 0.35", "accuracy", percent=True)
    """
    groups = [_check_str(g, "each group name") for g in groups]
    if not groups:
        raise ValueError("groups must not be empty")
    if not series:
        raise ValueError("series must hold at least one series, got {}")
    arrays = {}
    for name, vals in series.items():
        _check_str(name, "each series name")
        arr = _floats(vals, f"series {name!r}")
        if arr.size != len(groups):
            raise ValueError(
                f"series {name!r} has {arr.size} values but there are {len(groups)} groups"
            )
        arrays[name] = arr
    spans: dict[str, np.ndarray] = {}
    for name, ivs in (intervals or {}).items():
        if name not in arrays:
            raise ValueError(f"intervals name series {name!r}, which is not among "
                             f"{list(arrays)}")
        iv = np.asarray([[np.nan, np.nan] if v is None else v for v in ivs], dtype=float)
        if iv.shape != (len(groups), 2):
            raise ValueError(f"intervals of {name!r} must hold one (lo, hi) per group "
                             f"({len(groups)}), got shape {iv.shape}")
        spans[name] = iv
    labels = {
        name: ["n/a" if not np.isfinite(v) else format_value(float(v), value_format) for v in arr]
        for name, arr in arrays.items()
    }
    n_groups, n_series = len(groups), len(arrays)
    n_bars = n_groups * n_series
    if figsize is None:
        figsize = (min(11.0, max(6.4, 1.6 + n_groups * (0.5 * n_series + 0.45))), 4.4)
    width = 0.8 / n_series
    label_size = 8.5 if n_bars <= 16 else 7.5
    # Rotate the value labels when the widest one (digits are about 0.65 em wide) would not fit
    # in the slot of one bar (the axes take roughly the figure width less 1.2 in of margins).
    slot_inches = (figsize[0] - 1.2) / n_groups * width
    widest = max(len(t) for ts in labels.values() for t in ts)
    rotate_values = widest * 0.65 * label_size / 72 > slot_inches * 0.95
    with _figure(figsize, dpi) as fig:
        ax = fig.add_subplot()
        centers = np.arange(n_groups, dtype=float)
        for k, (name, vals) in enumerate(arrays.items()):
            offs = centers + (k - (n_series - 1) / 2) * width
            heights = np.nan_to_num(vals, nan=0.0)
            bars = ax.bar(
                offs,
                heights,
                width * 0.92,
                label=name,
                color=PALETTE[k % len(PALETTE)],
                edgecolor="white",
                linewidth=0.6,
                zorder=2,
            )
            if name in spans:
                iv = spans[name]
                ok = np.isfinite(iv).all(1) & np.isfinite(vals)
                err = np.abs(np.stack([vals - iv[:, 0], iv[:, 1] - vals]))
                ax.errorbar(offs[ok], vals[ok], yerr=err[:, ok], fmt="none",
                            ecolor="#24292f", elinewidth=0.9, capsize=2.5, zorder=3)
            if name in spans:  # the error bar sits on the bar's top: the value goes inside
                ax.bar_label(bars, labels=labels[name], label_type="center",
                             fontsize=label_size, rotation=90 if rotate_values else 0,
                             color="white", fontweight="bold")
            else:
                ax.bar_label(
                    bars,
                    labels=labels[name],
                    padding=2,
                    fontsize=label_size,
                    rotation=90 if rotate_values else 0,
                    color="#24292f",
                )
        ax.set_xticks(centers)
        long_names = max(len(g) for g in groups) * n_groups > 9 * figsize[0]
        ax.set_xticklabels(
            groups, rotation=25 if long_names else 0, ha="right" if long_names else "center"
        )
        ax.set_xlim(-0.6, n_groups - 0.4)
        all_vals = np.concatenate(list(arrays.values()))
        if percent:
            _percent_axis(ax, all_vals, bars=True, headroom=1.18 if rotate_values else 1.09)
        else:
            finite = all_vals[np.isfinite(all_vals)]
            hi = float(finite.max()) if finite.size else 1.0
            lo = float(finite.min()) if finite.size else 0.0
            span = (max(hi, 0.0) - min(lo, 0.0)) or 1.0
            top = 0.22 if rotate_values else 0.12
            ax.set_ylim(min(lo, 0.0) - (0.08 * span if lo < 0 else 0.0), max(hi, 0.0) + top * span)
        ax.axhline(0, color="#57606a", linewidth=0.8, zorder=3)
        ax.yaxis.grid(True)
        ax.set_ylabel(ylabel)
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.set_title(title)
        if n_series > 1:
            fig.legend(loc="outside lower center", ncols=min(n_series, 5))
        return _save(fig, path, dpi)


# --------------------------------------------------------------------------- line plots
def _plot_series(
    ax: Any,
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    k: int,
    markers: bool,
) -> None:
    ax.plot(
        x,
        y,
        label=name,
        color=PALETTE[k % len(PALETTE)],
        marker=MARKERS[k % len(MARKERS)] if markers else None,
        markersize=5,
        linewidth=1.8,
        clip_on=False,
        zorder=3,
    )


def line_plot(
    x: Sequence[Any],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    title: str,
    xlabel: str,
    ylabel: str,
    markers: bool = True,
    *,
    percent: bool = False,
    xscale: str = "linear",
    ylim: tuple[float, float] | None = None,
    figsize: tuple[float, float] = (7.0, 4.3),
    dpi: float = DPI,
) -> Path:
    """Lines sharing one x axis: fine-tuning curves, success rate vs decay factor mu, vs the
    number of iterations, vs eps, cosine similarity of successive perturbations.

    Args:
        x: x values (numbers, or strings for categories).
        series: series name -> y values, one per x (None / nan leaves a gap).
        markers: draw a distinct marker per series (readable in grayscale).
        percent: y values are percentages: the y axis shows 0 % .. 100 %.
        xscale: ``"linear"`` or ``"log"``.

    Example: success rate vs decay factor (Dong et al. 2018, Fig. 2)::

        line_plot([0, 0.25, 0.5, 0.75, 1.0], {"Inc-v3 (white-box)": [...], "Inc-v4": [...]},
                  "decay.png", "MI-FGSM success vs decay factor", "decay factor mu",
                  "success rate", percent=True)
    """
    xs, categories = _x_values(x)
    if xs.size == 0:
        raise ValueError("x must not be empty")
    if not series:
        raise ValueError("series must hold at least one series, got {}")
    if xscale not in ("linear", "log"):
        raise ValueError(f"xscale must be 'linear' or 'log', got {xscale!r}")
    arrays = {}
    for name, vals in series.items():
        _check_str(name, "each series name")
        arr = _floats(vals, f"series {name!r}")
        if arr.size != xs.size:
            raise ValueError(f"series {name!r} has {arr.size} values but x has {xs.size}")
        arrays[name] = arr
    with _figure(figsize, dpi) as fig:
        ax = fig.add_subplot()
        for k, (name, arr) in enumerate(arrays.items()):
            _plot_series(ax, xs, arr, name, k, markers)
        ax.set_xscale(xscale)
        if categories is not None:
            ax.set_xticks(xs)
            ax.set_xticklabels(categories)
        else:
            _set_numeric_xticks(ax, xs)
            ax.xaxis.set_minor_formatter(NullFormatter())
        if percent:
            _percent_axis(ax, np.concatenate(list(arrays.values())), bars=False)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if len(arrays) > 4:  # "best" would sit on some line: put a long legend beside the axes
            fig.legend(loc="outside right center")
        elif len(arrays) > 1:
            ax.legend(loc="best")
        return _save(fig, path, dpi)


def multi_line_grid(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    path: str | os.PathLike[str],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    *,
    ncols: int | None = None,
    percent: bool = False,
    markers: bool = True,
    sharey: bool = True,
    panel_size: tuple[float, float] = (3.6, 2.7),
    dpi: float = DPI,
) -> Path:
    """Small multiples: one panel per key of ``panels``, each with its own lines.

    ``panels`` maps a panel title to ``{series name: (x, y)}``. A series name keeps the same
    colour and marker in every panel, and one legend below the grid explains them all.

    Example: fine-tuning curves, one panel per model (the VOneNet-FGSM report)::

        multi_line_grid({"AlexNet": {"clean": (epochs, clean_acc), "FGSM": (epochs, fgsm_acc)},
                         "ConvNet": {...}},
                        "finetune.png", "Adversarial fine-tuning", "epoch", "accuracy",
                        percent=True)
    """
    if not panels:
        raise ValueError("panels must hold at least one panel, got {}")
    names: dict[str, int] = {}
    data: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for panel, lines in panels.items():
        _check_str(panel, "each panel title")
        if not isinstance(lines, Mapping):
            raise TypeError(f"panel {panel!r} must map series names to (x, y), got {lines!r}")
        data[panel] = []
        for name, xy in lines.items():
            _check_str(name, "each series name")
            if not isinstance(xy, (tuple, list)) or len(xy) != 2:
                raise TypeError(f"panel {panel!r}, series {name!r} must be an (x, y) pair")
            xs = _floats(xy[0], f"x of {panel!r}/{name!r}")
            ys = _floats(xy[1], f"y of {panel!r}/{name!r}")
            if xs.size != ys.size:
                raise ValueError(
                    f"panel {panel!r}, series {name!r}: x has {xs.size} values, y has {ys.size}"
                )
            names.setdefault(name, len(names))
            data[panel].append((name, xs, ys))
    n = len(data)
    if ncols is None:
        ncols = min(n, 3 if n != 4 else 2)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    figsize = (panel_size[0] * ncols + 0.6, panel_size[1] * nrows + 1.1)
    with _figure(figsize, dpi) as fig:
        axes = fig.subplots(nrows, ncols, sharex=False, sharey=sharey, squeeze=False)
        all_y = np.concatenate([ys for lines in data.values() for _, _, ys in lines] or [[]])
        for i, (panel, lines) in enumerate(data.items()):
            ax = axes[i // ncols][i % ncols]
            for name, xs, ys in lines:
                _plot_series(ax, xs, ys, name, names[name], markers)
            all_x = np.concatenate([xs for _, xs, _ in lines] or [[]])
            if all_x.size and np.allclose(all_x, np.round(all_x)):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
            if percent:
                _percent_axis(ax, all_y, bars=False)
            ax.grid(True)
            ax.set_title(panel, fontsize=11)
        for j in range(n, nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        if xlabel:
            # On each panel with no panel below it (a figure-level x label would collide with
            # the legend underneath).
            for i in range(n):
                if i + ncols >= n:
                    axes[i // ncols][i % ncols].set_xlabel(xlabel)
        fig.suptitle(title)
        if ylabel:
            fig.supylabel(ylabel, fontsize=10.5)
        handles, labels = [], []
        for i in range(n):
            for h, lab in zip(*axes[i // ncols][i % ncols].get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if len(labels) > 1:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5))
        return _save(fig, path, dpi)


# --------------------------------------------------------------------------- image grid
def _images(x: Any, what: str) -> np.ndarray:
    """[N, C, H, W] (C = 1 or 3) or [N, H, W] tensor / array -> float numpy [N, C, H, W]."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"{what} must have shape [N, 1 or 3, H, W], got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} must hold at least one image")
    return arr


def _labels(labels: Any, n: int, what: str, class_names: Any) -> list[str]:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().tolist()
    elif hasattr(labels, "tolist"):
        labels = labels.tolist()
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{what} has {len(labels)} labels but there are {n} images")
    out = []
    for lab in labels:
        if class_names is not None and not isinstance(lab, str):
            try:
                lab = class_names[lab]
            except (IndexError, KeyError):
                raise ValueError(f"{what}: label {lab!r} is not in class_names") from None
        out.append(str(lab))
    return out


def _show(ax: Any, img: np.ndarray) -> None:
    """Show one [C, H, W] image in [0, 1]; nearest-neighbour for small images."""
    interp = "nearest" if max(img.shape[1:]) <= 64 else "antialiased"
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation=interp)
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)), interpolation=interp)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#d0d7de")


def image_grid(
    originals: Any,
    adversarials: Any,
    path: str | os.PathLike[str],
    orig_labels: Sequence[Any],
    adv_labels: Sequence[Any],
    true_labels: Sequence[Any] | None = None,
    title: str = "Original vs adversarial images",
    *,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    show_perturbation: bool = False,
    max_images: int | None = 10,
    image_size: float = 1.3,
    dpi: float = DPI,
) -> Path:
    """Original images on the top row, their adversarial versions below, predictions as captions.

    Args:
        originals, adversarials: ``[N, 1 or 3, H, W]`` tensors or arrays in [0, 1] (shown
            clipped to [0, 1]; ``[N, H, W]`` is read as one channel).
        orig_labels, adv_labels: the model's predictions on each row.
        true_labels: ground truth. With it, a caption is green when the prediction is correct
            and red when it is wrong. Without it, adversarial captions are red when the
            prediction changed from the original's and green when it did not.
        class_names: maps integer labels to names for the captions.
        show_perturbation: add a third row with ``adversarial - original`` magnified so the
            largest change spans the full range (gray = no change); the row label gives the
            magnification.
        max_images: show at most this many (the first ones); None shows all.

    Example::

        image_grid(x[:8], x_adv[:8], "grid.png", clean_pred[:8], adv_pred[:8], y[:8],
                   "FGSM, eps = 0.35", show_perturbation=True)
    """
    orig = _images(originals, "originals")
    adv = _images(adversarials, "adversarials")
    if orig.shape != adv.shape:
        raise ValueError(
            f"originals and adversarials must have the same shape, got {list(orig.shape)} "
            f"and {list(adv.shape)}"
        )
    n_all = orig.shape[0]
    o_lab = _labels(orig_labels, n_all, "orig_labels", class_names)
    a_lab = _labels(adv_labels, n_all, "adv_labels", class_names)
    t_lab = None if true_labels is None else _labels(true_labels, n_all, "true_labels", class_names)
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
        if n_all > max_images:
            logger.info("image_grid: showing the first %d of %d images", max_images, n_all)
    n = n_all if max_images is None else min(n_all, max_images)
    orig, adv, o_lab, a_lab = orig[:n], adv[:n], o_lab[:n], a_lab[:n]
    t_lab = None if t_lab is None else t_lab[:n]

    delta = adv - orig
    peak = float(np.abs(delta).max())
    gain = 0.5 / peak if peak > 0 else 1.0
    rows = 3 if show_perturbation else 2
    # Height: the images (square, a little narrower than image_size once padded), the caption
    # lines above the first two rows, the title and the colour key.
    caption_h = (0.4 if t_lab is not None else 0.24) + 0.24
    fig_w = max(5.0, 1.6 + n * image_size)
    fig_h = rows * 0.96 * image_size + caption_h + 0.75
    with _figure((fig_w, fig_h), dpi) as fig:
        axes = fig.subplots(rows, n, squeeze=False)
        row_names = ["Original", "Adversarial"]
        if show_perturbation:
            if peak > 0:
                row_names.append(f"Perturbation\n(×{gain:.3g}, gray = 0)")
            else:
                row_names.append("Perturbation\n(none: all zero)")
        for i in range(n):
            _show(axes[0][i], np.clip(orig[i], 0.0, 1.0))
            _show(axes[1][i], np.clip(adv[i], 0.0, 1.0))
            if t_lab is not None:
                ok = o_lab[i] == t_lab[i]
                axes[0][i].set_title(
                    f"true {t_lab[i]}\npred {o_lab[i]}",
                    fontsize=9.5,
                    color=CORRECT_COLOR if ok else WRONG_COLOR,
                    fontweight="normal" if ok else "bold",
                )
                adv_ok = a_lab[i] == t_lab[i]
            else:
                axes[0][i].set_title(
                    f"pred {o_lab[i]}", fontsize=9.5, color=NEUTRAL_COLOR, fontweight="normal"
                )
                adv_ok = a_lab[i] == o_lab[i]
            axes[1][i].set_title(
                f"pred {a_lab[i]}",
                fontsize=9.5,
                color=CORRECT_COLOR if adv_ok else WRONG_COLOR,
                fontweight="normal" if adv_ok else "bold",
            )
            if show_perturbation:
                _show(axes[2][i], np.clip(0.5 + gain * delta[i], 0.0, 1.0))
        for r, name in enumerate(row_names):
            axes[r][0].set_ylabel(
                name, rotation=0, ha="right", va="center", fontsize=10.5, labelpad=8
            )
        fig.suptitle(title)
        if t_lab is not None:
            key = "Caption colour: green = prediction correct, red = wrong."
        else:
            key = "Caption colour: red = prediction changed by the attack, green = unchanged."
        fig.supxlabel(key, fontsize=9, color="#57606a")
        return _save(fig, path, dpi)
