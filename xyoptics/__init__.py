"""xyoptics: train physical XY spin networks with equilibrium propagation, optical hardware in the loop.

The public API is one import away. The physics core is imported with the package; names from the layers above
it (data sets, the optical machine, training and lab sessions) are imported the first time they are used, so
``import xyoptics`` stays light and the layers keep their one direction of dependency (docs/architecture.md).

>>> from xyoptics import square_lattice
>>> square_lattice(3, 3, inputs=2, outputs=1).n_spins
9
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xyoptics")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

from .core.architectures import LocalLayer, all_to_all, graph, layered, local_layers, square_lattice
from .core.costs import CosineCost, LogCosineCost, predict, targets_for
from .core.digital import DigitalXYMachine
from .core.ep import EPEstimate, ep_gradient
from .core.machine import DeviceFault, Equilibrium, Nudge, XYMachine
from .core.network import Params, XYNetwork
from .core.optim import SGD, Adam, Momentum

# name -> module of the layer above core that defines it, imported on first use
_LAZY = {
    "Dataset": "xyoptics.data.datasets", "load_task": "xyoptics.data.datasets",
    "TrainConfig": "xyoptics.config", "load_config": "xyoptics.config", "ConfigError": "xyoptics.config",
    "OpticalXYMachine": "xyoptics.hil.optical", "RigConfig": "xyoptics.hil.rig", "load_rig": "xyoptics.hil.rig",
    "Trainer": "xyoptics.lab.trainer", "train": "xyoptics.lab.trainer", "run_session": "xyoptics.lab.session",
    "read_angles": "xyoptics.lab.anglelog",
}

__all__ = ["__version__", "all_to_all", "graph", "layered", "square_lattice", "local_layers", "LocalLayer",
           "CosineCost", "LogCosineCost", "predict", "targets_for", "DigitalXYMachine", "EPEstimate",
           "ep_gradient", "DeviceFault", "Equilibrium", "Nudge", "XYMachine", "Params", "XYNetwork", "SGD",
           "Momentum", "Adam", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xyoptics' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
