"""Rig configuration: which slmsuite devices, the optical routing, tile and spot geometry, readout -- and
opening it all as an ``OpticalXYMachine``.

A rig YAML names each device by import path and keyword arguments (``devices.DeviceSpec``); device kwargs may
reference ``"@topology"`` and ``"@layout"`` (this file's values; a simulated rig is built from them) and the
camera ``"@slm"``. ``topology: network`` means the rig's routing is exactly the trained network's bonds, which
only a simulated rig built for that network can promise; a lab lists its routing explicitly. Either form takes
``replicas: R`` (``topology: {routing: network, replicas: 4}``): R copies of the routing, each with its own
tiles and spots, settle R samples of a batch in the same frames.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..core.architectures import graph
from ..core.network import XYNetwork
from ..core.schema import ConfigError, Strict, load_yaml_model
from .devices import DeviceSpec, check_rig_devices, open_devices
from .layout import LayoutConfig, RigTopology
from .optical import OpticalXYMachine
from .selftest import SelfTestFailed, light_path_check
from .site import Milliwatts

EXAMPLES = Path(__file__).resolve().parents[2] / "experiments" / "rigs"


class ReadoutConfig(Strict):
    method: Literal["phase_shifting", "off_axis"] = "phase_shifting"
    n_steps: int = Field(default=4, ge=3)
    min_modulation: float | None = Field(default=None, gt=0, description="counts; default 0.1 x median")


class LaserConfig(Strict):
    """The rig's laser controller (pyvisa): resource name, VISA backend ("" system VISA, "sim" the bundled
    simulated twin, or "file.yaml@sim"), the power to run at (mW) and optionally a maximum (mW). The limit
    itself comes from the site safety file (``site``) and the laser's own reported maximum; ``max_power_mw``
    here can only lower it, never raise it (``drivers/laser.py`` runs at the smallest of the three)."""

    resource: str
    backend: str = ""
    power_mw: Milliwatts
    max_power_mw: Milliwatts | None = None

    @model_validator(mode="after")
    def _within_limit(self):
        if self.max_power_mw is not None and self.power_mw > self.max_power_mw:
            raise ValueError(f"power_mw {self.power_mw} exceeds max_power_mw {self.max_power_mw}")
        return self


class NetworkRouting(Strict):
    """Routing built for the trained network (``topology: network``), in ``replicas`` copies."""

    routing: Literal["network"]
    replicas: int = Field(default=1, ge=1)


class RigConfig(Strict):
    """One optical rig: devices, routing, geometry, readout."""

    name: str
    slm: DeviceSpec
    camera: DeviceSpec
    topology: RigTopology | NetworkRouting | Literal["network"]
    layout: LayoutConfig = LayoutConfig()
    readout: ReadoutConfig = ReadoutConfig()
    settle_time_s: float | None = Field(default=None, gt=0, description="overrides the SLM's own settle time")
    shutter: str | None = Field(default=None, description="beam shutter's serial port or pyserial URL")
    laser: LaserConfig | None = None
    calibration_dir: Path | None = Field(default=None, description="calibration store used unless --calibration "
                                                                   "names another")
    wavelength_nm: float | None = Field(default=None, gt=0)


def load_rig(path: str | Path) -> RigConfig:
    """Read and validate a rig YAML; raises ConfigError naming every bad field."""
    return load_yaml_model(path, RigConfig, "rig config")


def simulated_rig() -> RigConfig:
    """The embedded default: the simulated optical rig with its default imperfections."""
    return load_rig(EXAMPLES / "simulated.yaml")


def follows_network(cfg: RigConfig) -> bool:
    """Whether the rig's routing is built for the trained network (only a simulated rig can be)."""
    return cfg.topology == "network" or isinstance(cfg.topology, NetworkRouting)


def rig_topology(cfg: RigConfig, network: XYNetwork | None) -> RigTopology:
    if not follows_network(cfg):
        return cfg.topology
    replicas = 1 if cfg.topology == "network" else cfg.topology.replicas
    if network is None:  # a bare device check: one spin, no bonds
        return RigTopology(n_spins=1, bonds=[], replicas=replicas)
    return RigTopology(n_spins=network.n_spins, bonds=[tuple(e) for e in network.edges.tolist()],
                       replicas=replicas)


def device_refs(cfg: RigConfig, topology: RigTopology) -> dict:
    """Values device kwargs may reference: \"@topology\" and \"@layout\"."""
    return {"topology": topology.model_dump(), "layout": cfg.layout.model_dump()}


@contextmanager
def open_optical_machine(cfg: RigConfig, network: XYNetwork, trusted=(), topology: RigTopology | None = None):
    """Open the rig's devices and yield an ``OpticalXYMachine`` for ``network`` (on ``topology``, default the
    rig's routing for it); devices close on exit."""
    topology = rig_topology(cfg, network) if topology is None else topology
    with open_devices(cfg.slm, cfg.camera, trusted, device_refs(cfg, topology)) as (slm, camera):
        try:
            machine = OpticalXYMachine(network, slm, camera, topology, cfg.layout, readout=cfg.readout.method,
                                       n_steps=cfg.readout.n_steps, settle_time_s=cfg.settle_time_s,
                                       min_modulation=cfg.readout.min_modulation)
        except ValueError as exc:
            raise ConfigError(f"rig {cfg.name!r} cannot hold {network.name}: {exc}") from None
        yield machine


def probe_network(topology: RigTopology) -> XYNetwork:
    """A network with no bonds on every spot of the rig (all replicas), for self-tests: spin 0 serves as gauge,
    the last as pilot."""
    n = topology.physical().n_spins
    return graph(n, np.zeros((0, 2), dtype=np.int64), inputs=[0], outputs=[n - 1], name="probe")


def check_rig(cfg: RigConfig, trusted=(), shutter=None) -> dict:
    """Open the devices, grab a frame, write a flat phase and close; then open the optical machine on a probe
    network and run the light-path self-test (``selftest``; ``shutter`` for its dark stage). Returns the report;
    a failed stage raises ``SelfTestFailed`` with the report so far in its ``report`` attribute."""
    topology = rig_topology(cfg, None)
    if follows_network(cfg):  # a probe of two spins per replica stands in for the network
        topology = RigTopology(n_spins=2, bonds=[], replicas=topology.replicas)
    report = check_rig_devices(cfg.slm, cfg.camera, trusted, device_refs(cfg, topology))
    report["rig"] = cfg.name
    copies = f" in {topology.replicas} replicas" if topology.replicas > 1 else ""
    report["topology"] = ("the trained network's bonds" if follows_network(cfg)
                          else f"{topology.n_spins} spins, {len(topology.bonds)} bonds") + copies
    try:
        with open_optical_machine(cfg, probe_network(topology), trusted, topology.physical()) as machine:
            report["self_test"] = light_path_check(machine, shutter)
    except SelfTestFailed as exc:
        exc.report = report
        raise
    return report
