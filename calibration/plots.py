"""PNG diagnostics of calibration results (matplotlib Figure + Agg canvas, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_result(kind: str, arrays: dict, layout, out_dir: Path) -> Path:
    """One figure per result: spot centres against nominal, offsets per spin, or the settle time."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if kind == "spot_map":
        nominal, found = layout.spot_centres, arrays["centres"]
        ax.scatter(nominal[:, 1], nominal[:, 0], marker="+", s=60, color="grey", label="nominal")
        ax.scatter(found[:, 1], found[:, 0], s=30 * arrays["widths"] ** 2, facecolors="none",
                   edgecolors="tab:blue", label="measured (size ~ width)")
        ax.set(xlim=(0, layout.camera_shape[1]), ylim=(layout.camera_shape[0], 0), aspect="equal",
               xlabel="camera column (px)", ylabel="camera row (px)", title="spot map")
        ax.legend(loc="lower right", fontsize=8)
    elif kind == "gray_phase":
        levels, gamma = arrays["levels"], arrays["gamma"]
        bitres = float(arrays["bitresolution"])
        ax.plot(levels, gamma, ".-", label="measured")
        ax.plot([0, bitres], [0, 1], color="grey", lw=0.8, label="linear")
        ax.set(xlabel="gray level", ylabel="phase (units of 2$\\pi$)", title="SLM gray -> phase response")
        ax.legend()
    elif kind == "dark":
        image = ax.imshow(arrays["noise"], cmap="magma")
        fig.colorbar(image, ax=ax, label="per-pixel noise (counts)")
        ax.set(title=f"dark frame: mean {arrays['dark'].mean():.1f} counts", xlabel="column (px)", ylabel="row (px)")
    elif kind == "transfer":
        tiles, scale = arrays["measured_tiles"], arrays["efficiency_scale"]
        ax.plot(tiles, scale[tiles], ".", color="tab:blue")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xlabel="SLM tile", ylabel="relative gain", title="tile gains (bonds, biases, nudges)")
    elif kind == "path_offsets":
        offsets = arrays["offsets"]
        ax.bar(np.arange(len(offsets)), offsets, color="tab:blue")
        ax.set(xlabel="spin", ylabel="path offset (rad)", title="per-spin optical path offsets")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"{kind}: " + ", ".join(f"{k} = {np.asarray(v).item():.4g}" for k, v in arrays.items()),
                ha="center", va="center")
    path = Path(out_dir) / f"{kind}.png"
    fig.savefig(path, dpi=110)
    return path
