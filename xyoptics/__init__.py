"""xyoptics: train physical XY spin networks with equilibrium propagation, optical hardware in the loop."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xyoptics")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

from .architectures import LocalLayer, all_to_all, graph, layered, local_layers, square_lattice
from .costs import CosineCost, LogCosineCost, predict, targets_for
from .digital import DigitalXYMachine
from .ep import EPEstimate, ep_gradient
from .machine import Equilibrium, Nudge, XYMachine
from .network import Params, XYNetwork

__all__ = ["__version__", "all_to_all", "graph", "layered", "square_lattice", "local_layers", "LocalLayer", "CosineCost", "LogCosineCost", "predict",
           "targets_for", "DigitalXYMachine", "EPEstimate", "ep_gradient", "Equilibrium", "Nudge", "XYMachine",
           "Params", "XYNetwork"]
