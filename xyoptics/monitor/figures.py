"""The monitor's Bokeh figures, each with the data sources the page fills: learning curves, cost per step,
measurement counts, reference drift, the camera frame with its spots, and spin angles and couplings drawn on
the network's geometry (``XYNetwork.positions``, layout units).
"""

from __future__ import annotations

import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearAxis, LinearColorMapper, Range1d
from bokeh.plotting import figure
from matplotlib import colormaps
from matplotlib.colors import to_hex
from scipy.spatial import cKDTree

from ..core.network import XYNetwork

WIDTH, HEIGHT = 420, 300
CYCLIC = [to_hex(c) for c in colormaps["twilight_shifted"](np.linspace(0, 1, 256))]  # angles: -pi and pi alike
DIVERGING = [to_hex(c) for c in colormaps["RdBu_r"](np.linspace(0, 1, 256))]  # couplings: < 0 blue, > 0 red
SPLITS = {"train": ("#1f77b4", "circle", "solid"), "validation": ("#ff7f0e", "triangle", "dashed"),
          "test": ("#2ca02c", "square", "dotted")}  # colour, marker, line: tell them apart where they coincide
COUNTS = {"unconverged": "#7f7f7f", "flagged": "#d62728", "remeasured": "#ff7f0e", "dropped": "#9467bd",
          "skipped": "#8c564b"}


def _figure(title: str, x_label: str, y_label: str, **kw):
    fig = figure(title=title, width=WIDTH, height=HEIGHT, x_axis_label=x_label, y_axis_label=y_label,
                 tools="pan,wheel_zoom,box_zoom,reset,save", **kw)
    fig.toolbar.logo = None
    return fig


def _finish_legend(fig) -> None:
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.6


def learning_curves(evals: ColumnDataSource):
    """Accuracy of each split at every evaluation (epoch)."""
    fig = _figure("accuracy at each evaluation", "epoch", "accuracy", y_range=Range1d(-0.03, 1.03))
    for split, (colour, marker, dash) in SPLITS.items():
        fig.line("epoch", split, source=evals, color=colour, legend_label=split, line_width=2, line_dash=dash)
        fig.scatter("epoch", split, source=evals, color=colour, legend_label=split, size=7, marker=marker,
                    fill_alpha=0.5)
    fig.add_tools(HoverTool(tooltips=[("epoch", "@epoch"), *((s, f"@{s}{{0.000}}") for s in SPLITS)]))
    _finish_legend(fig)
    return fig


def cost_per_step(steps: ColumnDataSource):
    fig = _figure("cost per EP step", "step", "cost (free phase, mean over kept samples)")
    fig.line("step", "cost", source=steps, color="#1f77b4", line_width=1.5)
    return fig


def counts(steps: ColumnDataSource):
    """Running totals of the measurements that were not clean."""
    fig = _figure("measurements: running totals", "step", "count")
    for name, colour in COUNTS.items():
        fig.line("step", f"total_{name}", source=steps, color=colour, legend_label=name, line_width=2)
    _finish_legend(fig)
    return fig


def drift(steps: ColumnDataSource):
    """The reference phase removed from every measurement (left axis) and the spots' modulation against its
    calibrated value (right axis): slow drift of the reference arm and of laser power."""
    fig = _figure("reference drift", "step", "reference phase (rad)")
    fig.line("step", "reference_phase_rad", source=steps, color="#1f77b4", legend_label="reference phase",
             line_width=1.5)
    fig.extra_y_ranges = {"ratio": Range1d(0.0, 1.5)}
    fig.add_layout(LinearAxis(y_range_name="ratio", axis_label="modulation / calibrated"), "right")
    fig.line("step", "modulation_ratio", source=steps, color="#d62728", y_range_name="ratio",
             legend_label="modulation ratio", line_width=1.5)
    _finish_legend(fig)
    return fig


def camera(frame: ColumnDataSource, spots: ColumnDataSource):
    """The latest camera frame (row 0 at the top) with the spots in use, coloured by the phase read there."""
    fig = _figure("camera frame", "column (px)", "row (px)", x_range=Range1d(0, 1), y_range=Range1d(1, 0))
    fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=frame,
              color_mapper=LinearColorMapper(palette="Greys256"))
    phase = LinearColorMapper(palette=CYCLIC, low=-np.pi, high=np.pi)
    fig.scatter("x", "y", source=spots, size=9, fill_color={"field": "phase", "transform": phase},
                line_color="#ffcc00", line_width=1.2)
    fig.add_tools(HoverTool(tooltips=[("spot", "@spot"), ("read phase (rad)", "@phase{0.00}")]))
    fig.add_layout(ColorBar(color_mapper=phase, width=8, title="rad"), "right")
    return fig


def _map_figure(title: str):
    fig = _figure(title, "", "", match_aspect=True)
    fig.xaxis.visible = fig.yaxis.visible = False
    fig.grid.visible = False
    return fig


def site_spacing(positions: np.ndarray) -> float:
    """The median distance from a site to its nearest neighbour (1 for a single site)."""
    if len(positions) < 2:
        return 1.0
    dist = cKDTree(positions).query(positions, k=2)[0][:, 1]
    return float(np.median(dist[dist > 0])) if np.any(dist > 0) else 1.0


def bond_columns(net: XYNetwork) -> dict:
    ends = net.positions[net.edges]
    return {"x0": ends[:, 0, 0], "y0": ends[:, 0, 1], "x1": ends[:, 1, 0], "y1": ends[:, 1, 1],
            "w": np.zeros(net.n_couplings), "width": np.ones(net.n_couplings)}


def site_columns(net: XYNetwork, angles: np.ndarray | None) -> dict:
    """Sites with a needle of length ~0.4 spacing pointing along each spin's angle (none, and grey, before the
    angles are known)."""
    pos = net.positions
    angles = np.full(net.n_spins, np.nan) if angles is None else np.asarray(angles, dtype=float)
    reach = 0.4 * site_spacing(pos)
    kind = np.full(net.n_spins, "hidden", dtype=object)
    kind[net.inputs], kind[net.outputs] = "input", "output"
    marker = np.where(kind == "input", "square", np.where(kind == "output", "star", "circle"))
    return {"x": pos[:, 0], "y": pos[:, 1], "angle": angles, "kind": kind, "marker": marker,
            "tip_x": pos[:, 0] + reach * np.cos(angles), "tip_y": pos[:, 1] + reach * np.sin(angles),
            "spin": np.arange(net.n_spins)}


def spin_map(bonds: ColumnDataSource, sites: ColumnDataSource):
    """Spin angles on the network's geometry: colour and needle direction give the angle."""
    fig = _map_figure("spin angles (free equilibrium, first sample of the step)")
    fig.segment("x0", "y0", "x1", "y1", source=bonds, color="#bbbbbb", line_width=1)
    angle = LinearColorMapper(palette=CYCLIC, low=-np.pi, high=np.pi)
    fig.scatter("x", "y", source=sites, marker="marker", size=16, line_color="#333333",
                fill_color={"field": "angle", "transform": angle})
    fig.segment("x", "y", "tip_x", "tip_y", source=sites, color="black", line_width=2)
    fig.add_tools(HoverTool(tooltips=[("spin", "@spin (@kind)"), ("angle (rad)", "@angle{0.00}")]))
    fig.add_layout(ColorBar(color_mapper=angle, width=8, title="rad"), "right")
    return fig


def coupling_map(bonds: ColumnDataSource, sites: ColumnDataSource, mapper: LinearColorMapper):
    """Couplings W of every bond on the network's geometry: colour gives the sign and size, width |W|."""
    fig = _map_figure("couplings W per bond")
    fig.segment("x0", "y0", "x1", "y1", source=bonds, line_width="width",
                color={"field": "w", "transform": mapper})
    fig.scatter("x", "y", source=sites, marker="marker", size=9, fill_color="white", line_color="#333333")
    fig.add_layout(ColorBar(color_mapper=mapper, width=8, title="W"), "right")
    return fig


def coupling_mapper() -> LinearColorMapper:
    return LinearColorMapper(palette=DIVERGING, low=-1.0, high=1.0)
