"""Figures of a network's site and bond maps and of training curves, written as PNG files.

Sites are drawn at ``XYNetwork.positions`` (dimensionless layout units: one lattice spacing = 1). Every figure
is a ``matplotlib.figure.Figure`` rendered by the Agg canvas directly, so importing this module touches no
global matplotlib state (backend, pyplot figure registry).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from scipy.spatial import cKDTree

from ..core.network import XYNetwork

DPI = 120
MAX_UNDERLAY_BONDS = 20000  # site maps draw the bonds as a faint underlay up to this many


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _norm(values: np.ndarray) -> Normalize:
    """Colour range over the finite values; a constant map gets a unit-wide range so the colourbar is readable."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5 * max(abs(lo), 1.0), hi + 0.5 * max(abs(hi), 1.0)
    return Normalize(lo, hi)


class _Layout:
    """Figure and axes sized to the network's layout, and the marker / line scale in points per layout unit.

    Equal aspect is used unless the layout is more than 4x taller than wide or vice versa (e.g. a layered
    network of one column per layer); then both axes stretch to fill the figure."""

    def __init__(self, net: XYNetwork, title: str, width: float = 6.0):
        if net.positions is None:
            raise ValueError(f"network {net.name!r} has no site positions to plot")
        self.pos = pos = net.positions
        lo, hi = pos.min(axis=0), pos.max(axis=0)
        if len(pos) > 1:
            dist = cKDTree(pos).query(pos, k=2)[0][:, 1]
            self.spacing = float(np.median(dist[dist > 0])) if np.any(dist > 0) else 1.0
        else:
            self.spacing = 1.0
        span = np.maximum(hi - lo, self.spacing)
        ratio = span[1] / span[0]
        self.equal = 0.25 <= ratio <= 4.0
        if not self.equal:
            height = 5.0
        elif ratio <= 1.0:
            height = float(np.clip(width * ratio, 2.6, 7.0))
        else:  # tall layouts: fix the height, narrow the figure
            height, width = 7.0, float(np.clip(7.0 / ratio, 3.2, width))
        self.fig = Figure(figsize=(width + 1.4, height + 0.9), layout="constrained")
        self.ax = ax = self.fig.add_subplot()
        pad = 0.7 * self.spacing
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(lo[1] - pad, hi[1] + pad)
        if self.equal:
            ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(title, fontsize=10)
        axes_in = np.array([width, height]) * 0.85
        self.pt_per_unit = float(np.min(axes_in * 72.0 / (span + 2 * pad)))

    def marker_area(self, fraction: float = 0.7) -> float:
        """Scatter marker area (pt^2) for a marker ``fraction`` of the typical site spacing across."""
        return float(np.clip((fraction * self.spacing * self.pt_per_unit) ** 2, 2.0, 300.0))

    def segments(self, net: XYNetwork) -> np.ndarray:
        return self.pos[net.edges]  # (n_bonds, 2 endpoints, xy)


def plot_site_map(net: XYNetwork, values, path, title: str = "", cmap: str = "viridis", label: str = "") -> Path:
    """Sites coloured by ``values`` (n_spins,): hidden sites as discs, outputs as stars (coloured), inputs as
    hollow squares (not coloured; the colour range covers non-input sites only). ``label`` names the colourbar.
    Raises ValueError when the network has no positions."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (net.n_spins,):
        raise ValueError(f"expected {net.n_spins} site values, got {values.shape}")
    lay = _Layout(net, title)
    ax, pos = lay.ax, lay.pos
    if 0 < net.n_couplings <= MAX_UNDERLAY_BONDS:
        alpha = float(np.clip(300.0 / net.n_couplings, 0.08, 0.6))
        ax.add_collection(LineCollection(lay.segments(net), colors="0.6", linewidths=0.6, alpha=alpha, zorder=0))
    hidden = net.free.copy()
    hidden[net.outputs] = False
    norm = _norm(values[net.free]) if net.n_free else _norm(values)
    s = lay.marker_area()
    sc = ax.scatter(pos[hidden, 0], pos[hidden, 1], c=values[hidden], cmap=cmap, norm=norm, s=s,
                    marker="o", linewidths=0, zorder=2)
    ax.scatter(pos[net.inputs, 0], pos[net.inputs, 1], s=s, marker="s", facecolors="none",
               edgecolors="0.35", linewidths=0.9, zorder=2)
    ax.scatter(pos[net.outputs, 0], pos[net.outputs, 1], c=values[net.outputs], cmap=cmap, norm=norm,
               s=min(3.0 * s, 500.0), marker="*", edgecolors="k", linewidths=0.6, zorder=3)
    lay.fig.colorbar(sc, ax=ax, shrink=0.85, label=label)
    handles = [Line2D([], [], ls="", marker="s", mfc="none", mec="0.35", label="input"),
               Line2D([], [], ls="", marker="o", mfc="0.5", mec="none", label="hidden"),
               Line2D([], [], ls="", marker="*", mfc="0.5", mec="k", ms=10, label="output")]
    lay.fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _save(lay.fig, path)


def plot_bond_map(net: XYNetwork, values, path, title: str = "", cmap: str = "viridis", label: str = "") -> Path:
    """Bonds as line segments between their end sites, coloured by ``values`` (n_bonds,); larger values are
    drawn on top. Sites are small grey dots. Raises ValueError when the network has no positions."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (net.n_couplings,):
        raise ValueError(f"expected {net.n_couplings} bond values, got {values.shape}")
    lay = _Layout(net, title)
    ax, pos = lay.ax, lay.pos
    ax.set_facecolor("0.82")
    order = np.argsort(np.where(np.isfinite(values), values, -np.inf), kind="stable")
    # thinner lines where bonds are long (dense, overlapping fans between layers)
    segs = lay.segments(net)
    length = float(np.median(np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1))) if len(segs) else 1.0
    thin = np.sqrt(min(1.0, lay.spacing / max(length, 1e-12)))
    width = float(np.clip(0.18 * lay.pt_per_unit * lay.spacing * thin, 0.6, 4.0))
    lines = LineCollection(segs[order], array=values[order], cmap=cmap, norm=_norm(values),
                           linewidths=width, capstyle="round", zorder=1)
    ax.add_collection(lines)
    ax.scatter(pos[:, 0], pos[:, 1], s=lay.marker_area(0.15), c="0.3", linewidths=0, zorder=2)
    lay.fig.colorbar(lines, ax=ax, shrink=0.85, label=label)
    return _save(lay.fig, path)


def plot_learning_curves(metrics: list[dict], path) -> Path:
    """Two panels against epoch from ``metrics.jsonl`` records: train / test accuracy (fraction) and the mean
    train cost (plus test cost where recorded). Missing keys are skipped."""
    if not metrics:
        raise ValueError("no metrics records to plot")
    fig = Figure(figsize=(9.0, 3.4))  # fixed margins: a constrained layout would double the drawing time
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.15, top=0.9, wspace=0.25)
    ax_acc, ax_cost = fig.subplots(1, 2)
    marker = "o" if len(metrics) <= 30 else None

    def series(ax, key, name, **kw):
        pts = [(m["epoch"], m[key]) for m in metrics if m.get(key) is not None]
        if pts:
            e, v = np.array(pts, dtype=np.float64).T
            ax.plot(e, v, marker=marker, ms=3, label=name, **kw)

    series(ax_acc, "train_accuracy", "train")
    series(ax_acc, "test_accuracy", "test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02), title="accuracy")
    series(ax_cost, "train_cost", "train")
    series(ax_cost, "test_cost", "test", ls="--")
    ax_cost.set(xlabel="epoch", ylabel="cost per sample", title="cost")
    for ax in (ax_acc, ax_cost):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def render_diagnostics(net: XYNetwork, arrays: dict, out_dir) -> list[Path]:
    """Draw the last snapshot of ``DiagnosticsRecorder.arrays()`` (or ``read_arrays_h5`` of its file) into
    ``out_dir``: nudge_response.png, input_sensitivity.png, abs_w.png, abs_dw.png. Returns their paths."""
    out_dir = Path(out_dir)
    epochs = arrays.get("epochs")
    when = f", epoch {int(np.asarray(epochs).reshape(-1)[-1])}" if epochs is not None and np.size(epochs) else ""

    def last(key):
        return np.atleast_2d(np.asarray(arrays[key]))[-1]

    return [
        plot_site_map(net, last("nudge_response"), out_dir / "nudge_response.png",
                      f"{net.name}: nudge response{when}", label=r"$\langle|\phi^\beta-\phi^0|\rangle$ (rad)"),
        plot_site_map(net, last("input_sensitivity"), out_dir / "input_sensitivity.png",
                      f"{net.name}: input sensitivity{when}", cmap="magma",
                      label=r"$\langle|\partial\phi^0/\partial x_k|\rangle$ (rad/rad)"),
        plot_bond_map(net, last("abs_w"), out_dir / "abs_w.png", f"{net.name}: coupling strength{when}",
                      label=r"$|W_b|$"),
        plot_bond_map(net, last("abs_dw"), out_dir / "abs_dw.png", f"{net.name}: coupling change{when}",
                      cmap="magma", label=r"$|\Delta W_b|$ since previous snapshot"),
    ]
