"""Physics engine of the simulated optical XY rig (DESIGN.md section 3).

Its only input is the integer image an SLM displays; its only output the camera frames. In between:

* SLM: gray level g (of 2^bits) becomes phase sign * 2 pi f(g / 2^bits) with a hidden, slightly nonlinear
  f(x) = x + a sin(2 pi x) / (2 pi). The liquid crystal follows a write exponentially: a pixel's phase is
  p(t) = p_new + (p_then - p_new) exp(-(t - t_write) / tau), where p_then is what the pixel showed at the write,
  so a write during settling starts from a partly updated image. ``settle_time_s`` is the time to a 1 %
  residual, tau = settle_time_s / ln 100; a residual under 1e-6 (after 3 settle times) counts as settled.
  Only tile pixels diffract into the network, so the state is kept per tile: a tile whose gray levels a write
  leaves unchanged keeps moving as before (the exponential is memoryless), and only moving tiles are re-read.
* Tiles (see ``xyoptics.hil.layout``): each tile's first diffraction order, plus crosstalk chi times its four
  neighbours' orders, times a hidden per-tile gain, sets the physical couplings W_b = G eta cos(arg) and the
  injected fields (bias, clamp, nudge) G eta e^{i arg} on each spin.
* Spins relax (overdamped) to a minimum of E = -sum W cos(phi_i - phi_j) - sum |F_i| cos(phi_i - arg F_i),
  starting from their present rest state; each camera frame sees them with fresh thermal noise. They relax again
  only when a field or coupling on a spin changed by more than ``RELAX_TOL`` of the spin's stiffness
  K_i = |F_i| + sum_j |W_ij|, which bounds the shift of its angle to ~1e-3 rad (the tail of a liquid-crystal
  transition, 1e-4 of a strength, moves it by ~1e-4 rad, below the thermal noise). With every field and
  coupling below ``DARK_FIELD`` nothing holds a phase against spontaneous emission: the phases are random then. A spin whose injected field exceeds ``LOCK_RATIO``
  times its couplings is injection-locked: phi = arg F plus the first-order pull of its neighbours. With every
  field off, spontaneous emission leaves random phases.
* Camera: spot i carries sqrt(P) b_i e^{i(phi_i + o_i)} g_i(x) (hidden path offsets o_i, spot centres and
  widths; g_i is drawn out to ``PROFILE_CUT`` of its peak), the reference sqrt(P) r e^{i(delta + k.x)} overlaps all spots; the reference phase delta and power P
  drift as random walks in time. Frames get shot noise, read noise, a dark offset, quantisation and saturation.

Every imperfection can be switched off (``Imperfections.none()``); the hidden truth is exposed only through the
``truth`` attribute, which tests may read and training code never does.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from xyoptics.core.network import Params, XYNetwork
from xyoptics.core.relax import build_landscape, minimise
from xyoptics.core.schema import Strict
from xyoptics.hil.clock import VirtualClock
from xyoptics.hil.layout import Layout, LayoutConfig, RigTopology, nominal_spot_centres, tile_amplitude
from xyoptics.hil.patches import SpotPatches

LOCK_RATIO = 20.0
RELAX_TOL = 1e-3  # spins re-relax when a force on them changes by more than this fraction of their stiffness
PROFILE_CUT = 1e-4  # spot field profiles end here (fraction of their peak; a cross term under 1 count)
SETTLED_RESIDUAL = 0.01  # residual of the liquid-crystal response at the settle time
SNAP_RESIDUAL = 1e-6  # below this residual the new image is in effect exactly
_ENGINES: "weakref.WeakValueDictionary[str, XYRigEngine]" = weakref.WeakValueDictionary()


def find_engine(rig_name: str):
    """The live simulated rig of that name (its simulated shutter blocks its light), or None."""
    return _ENGINES.get(rig_name)
DARK_FIELD = 1e-3  # strength (XY energy units) too weak to hold a phase against spontaneous emission


class Imperfections(Strict):
    """Hidden imperfections of the simulated rig; zero switches each one off."""

    gamma_nonlinearity: float = Field(default=0.08, ge=0, lt=1, description="a in f(x) = x + a sin(2 pi x)/2pi")
    gain_spread: float = Field(default=0.03, ge=0, description="relative rms spread of tile gains")
    crosstalk: float = Field(default=0.02, ge=0, description="amplitude leaking in from each neighbouring tile")
    path_offset_rad: float = Field(default=0.5, ge=0, description="rms per-spin optical path offset")
    spot_jitter_px: float = Field(default=0.6, ge=0, description="rms error of spot centres")
    spot_width_spread: float = Field(default=0.1, ge=0, description="relative rms spread of spot widths")
    drift_phase_rad: float = Field(default=0.02, ge=0, description="reference phase random walk per sqrt(s)")
    drift_power: float = Field(default=0.01, ge=0, description="relative power random walk per sqrt(s)")
    thermal_noise_rad: float = Field(default=0.003, ge=0, description="rms thermal phase fluctuation")
    shot_noise: bool = True
    read_noise_counts: float = Field(default=2.0, ge=0)
    dark_offset_counts: float = Field(default=40.0, ge=0)
    quantise: bool = True
    settle_factor: float = Field(default=1.0, gt=0, description="true settle time / the SLM's nominal one")

    @classmethod
    def none(cls) -> "Imperfections":
        return cls(gamma_nonlinearity=0, gain_spread=0, crosstalk=0, path_offset_rad=0, spot_jitter_px=0,
                   spot_width_spread=0, drift_phase_rad=0, drift_power=0, thermal_noise_rad=0, shot_noise=False,
                   read_noise_counts=0, dark_offset_counts=0, quantise=False, settle_factor=1.0)


@dataclass
class RigTruth:
    """The simulated rig's hidden state (for tests and calibration error reports only)."""

    gamma_a: float
    tile_gain: np.ndarray
    path_offsets: np.ndarray
    spot_centres: np.ndarray
    spot_sigma: np.ndarray
    spot_brightness: np.ndarray
    settle_time_s: float
    dark_offset_counts: float = 0.0
    read_noise_counts: float = 0.0
    reference_phase: float = 0.0
    power: float = 1.0
    phases: np.ndarray | None = None
    relax_converged: bool = True


class XYRigEngine:
    """Shared physics of ``RigSLM`` and ``RigCamera``."""

    def __init__(self, topology: RigTopology, layout: LayoutConfig, slm_shape: tuple[int, int],
                 camera_shape: tuple[int, int], *, imperfections: Imperfections, settle_time_s: float,
                 seed: int, clock=None, photons_per_unit: float = 4000.0, counts_per_photon: float = 0.15,
                 camera_bitdepth: int = 12, reference_amplitude: float = 1.0, rig_name: str = "simulated-xy-rig"):
        topology = topology.physical()  # replicas are further spins and bonds of one routing
        self.topology, self.layout_config, self.imp = topology, layout, imperfections
        self.rng = np.random.default_rng(seed)
        self.clock = clock if clock is not None else VirtualClock()
        self.camera_shape = tuple(camera_shape)
        n = topology.n_spins
        # tile bookkeeping reuses the encoder's geometry on an all-bonds network of the rig
        routing = XYNetwork(n, np.array(topology.bonds, dtype=np.int64).reshape(-1, 2), np.arange(len(topology.bonds)),
                            [], [], name="rig")
        self.tiles = Layout(routing, topology, layout, slm_shape, camera_shape)
        self.routing = routing
        imp, rng = imperfections, self.rng
        centres = nominal_spot_centres(n, layout, camera_shape) + rng.normal(0, imp.spot_jitter_px, (n, 2))
        self.truth = RigTruth(
            gamma_a=imp.gamma_nonlinearity,
            tile_gain=1.0 + rng.normal(0, imp.gain_spread, self.tiles.n_tiles),
            path_offsets=rng.normal(0, imp.path_offset_rad, n),
            spot_centres=centres,
            spot_sigma=layout.spot_sigma_px * (1.0 + rng.normal(0, imp.spot_width_spread, n)).clip(0.5, 2.0),
            spot_brightness=np.ones(n),
            settle_time_s=settle_time_s * imperfections.settle_factor,
            dark_offset_counts=imperfections.dark_offset_counts, read_noise_counts=imperfections.read_noise_counts,
            phases=rng.uniform(-np.pi, np.pi, n))
        self.photons_per_unit, self.counts_per_photon = photons_per_unit, counts_per_photon
        self.full_scale = 2 ** camera_bitdepth - 1
        self.reference_amplitude = reference_amplitude
        self.light = True  # False: beam blocked (the simulated shutter xyshutter://<rig_name> switches this)
        _ENGINES[rig_name] = self
        self._pixels = self.tiles.tile_pixels()
        n_tiles, t = self.tiles.n_tiles, layout.tile_px
        self._gray: np.ndarray | None = None  # gray levels of the tile pixels last displayed (None: nothing yet)
        self._target = np.zeros((n_tiles, t, t))  # phase each tile pixel moves to (rad)
        self._from = np.zeros((n_tiles, t, t))  # what it showed at its tile's last change
        self._changed_at = np.full(n_tiles, -np.inf)  # time of each tile's last change
        self._target_orders = np.zeros(n_tiles, dtype=complex)  # first-order amplitude of each tile's target
        self._neighbours = _edge_neighbours(self.tiles.tile_origin // t)
        self._strengths: tuple | None = None  # (couplings, fields) the spins last relaxed under
        self._failing_frames = 0
        self._reference = 0.0 + 0.0j
        self._last_time = self.clock.now()
        self._networks: dict[tuple, XYNetwork] = {}
        k = 2 * np.pi / layout.carrier_period_px
        self._carrier = np.broadcast_to(np.exp(1j * k * np.arange(camera_shape[1])), camera_shape)
        # field profile exp(-d^2 / (4 sigma^2)): a Gaussian of width sqrt(2) sigma, cut where it is negligible
        cut = np.sqrt(2 * np.log(1 / PROFILE_CUT))
        profiles = SpotPatches.gaussian(centres, np.sqrt(2) * self.truth.spot_sigma, camera_shape, cut)
        spot, entry = np.nonzero(profiles.weight)  # the pixels each spot's field reaches, as one flat list
        self._profile_spot, self._profile_pixel = spot, profiles.index[spot, entry]
        self._profile_value = profiles.weight[spot, entry]

    # -- SLM side -------------------------------------------------------------------------------------
    def display(self, gray: np.ndarray, gamma_sign: float, bitresolution: int) -> None:
        """Receive a displayed integer image. The pixels of every tile whose gray levels changed start moving
        from what they show now (which may be a partly settled earlier image) towards it, with the liquid
        crystal's exponential response."""
        self._advance()
        now = self.clock.now()
        levels = np.asarray(gray)[self._pixels]
        if self._gray is None:
            changed = np.arange(len(levels))
        else:
            changed = np.flatnonzero((levels != self._gray).any(axis=(1, 2)))
        if len(changed):
            x = levels[changed].astype(np.float64) / bitresolution
            f = x + self.truth.gamma_a * np.sin(2 * np.pi * x) / (2 * np.pi)
            self._from[changed] = self._shown_tiles(changed, now)
            self._target[changed] = gamma_sign * 2 * np.pi * f
            self._changed_at[changed] = now
            self._target_orders[changed] = tile_amplitude(self._target[changed], self.layout_config.period_px)
        self._gray = levels

    def _residuals(self, now: float) -> np.ndarray:
        """Residual of each tile's last change, exp(-(t - t_change) / tau); 0 once under ``SNAP_RESIDUAL``."""
        tau = self.truth.settle_time_s / np.log(1 / SETTLED_RESIDUAL)
        residual = np.exp(-np.maximum(now - self._changed_at, 0.0) / tau)
        return np.where(residual < SNAP_RESIDUAL, 0.0, residual)

    def _shown_tiles(self, tiles: np.ndarray, now: float) -> np.ndarray:
        r = self._residuals(now)[tiles, None, None]
        return self._target[tiles] + r * (self._from[tiles] - self._target[tiles])

    def shown(self, now: float) -> np.ndarray | None:
        """The phases (n_tiles, tile_px, tile_px; rad) the tile pixels show at time ``now`` (hidden truth; None:
        nothing written yet)."""
        return None if self._gray is None else self._shown_tiles(np.arange(self.tiles.n_tiles), now)

    def displayed(self) -> np.ndarray | None:
        """The tile phases (n_tiles, tile_px, tile_px) most recently written, as they show once settled (hidden
        truth: after the gray -> phase response)."""
        return None if self._gray is None else self._target

    # -- dynamics -------------------------------------------------------------------------------------
    def _orders(self, amplitudes: np.ndarray) -> np.ndarray:
        """First orders with the crosstalk of the four edge neighbours and the hidden tile gains."""
        chi = self.imp.crosstalk
        if chi:
            padded = np.append(amplitudes, 0.0)
            amplitudes = amplitudes + chi * padded[self._neighbours].sum(axis=1)
        return amplitudes * self.truth.tile_gain

    def tile_strengths(self, tile_phases: np.ndarray) -> np.ndarray:
        """True efficiency times phase factor, eta e^{i arg}, of every tile showing ``tile_phases`` (n_tiles,
        tile_px, tile_px) (hidden truth: gains and crosstalk included)."""
        c = self._orders(tile_amplitude(tile_phases, self.layout_config.period_px))
        return np.abs(c) * c

    def _strengths_now(self, now: float) -> np.ndarray:
        amplitudes = self._target_orders.copy()
        moving = np.flatnonzero(self._residuals(now))
        if len(moving):
            amplitudes[moving] = tile_amplitude(self._shown_tiles(moving, now), self.layout_config.period_px)
        c = self._orders(amplitudes)
        return np.abs(c) * c

    def _apply(self, eta_phase: np.ndarray) -> None:
        """Let the spins settle under the tile strengths ``eta_phase`` (eta e^{i arg} per tile)."""
        g, t = self.layout_config.gains, self.tiles
        w = g.coupling * eta_phase[:len(self.topology.bonds)].real
        field = (g.bias * eta_phase[t.bias_tile] + g.clamp * eta_phase[t.clamp_tile]
                 + g.nudge * eta_phase[t.nudge_tile])
        self._reference = eta_phase[t.reference_tile]
        phases = self.truth.phases
        if np.abs(field).max(initial=0) < DARK_FIELD and np.abs(w).max(initial=0) < DARK_FIELD:
            self.truth.phases = self.rng.uniform(-np.pi, np.pi, len(phases))  # spontaneous emission
            self._strengths = None
            return
        edges = self.routing.edges
        coupling_sum = np.zeros(len(phases))
        np.add.at(coupling_sum, edges[:, 0], np.abs(w))
        np.add.at(coupling_sum, edges[:, 1], np.abs(w))
        if self._strengths is not None:  # shifts of an equilibrium angle are ~ (change of a force) / stiffness
            stiffness = np.abs(field) + coupling_sum
            moved = (np.abs(field - self._strengths[1]) > RELAX_TOL * stiffness).any() or (
                np.abs(w - self._strengths[0]) > RELAX_TOL * np.minimum(*stiffness[edges.T])).any()
            if not moved:
                return  # nothing the spins feel has changed measurably: they stay at rest
        self._strengths = (w, field)
        locked = np.abs(field) > LOCK_RATIO * np.maximum(coupling_sum, DARK_FIELD)
        phases = phases.copy()
        phases[locked] = np.angle(field[locked])
        net = self._network(tuple(np.flatnonzero(locked)))
        params = Params(w, np.abs(field), np.angle(field))
        if net.n_free:
            land = build_landscape(net, params, phases[None, net.inputs], dtype=np.float64)
            # FIRE's damped inertial dynamics stand in for the optical system's own settling (kept, not L-BFGS)
            res = minimise(land, phases[None, net.free], solver="fire", tol=1e-7, max_iter=100000)
            phases[net.free] = res.phases[0]
            self.truth.relax_converged = bool(res.converged[0])
        if locked.any():  # first-order pull of the neighbours on locked spins
            pull = np.zeros(len(phases))
            i, j = edges[:, 0], edges[:, 1]
            np.add.at(pull, i, w * np.sin(phases[j] - phases[i]))
            np.add.at(pull, j, w * np.sin(phases[i] - phases[j]))
            phases[locked] += pull[locked] / np.abs(field[locked])
        self.truth.phases = np.angle(np.exp(1j * phases))

    def _network(self, locked: tuple) -> XYNetwork:
        if locked not in self._networks:
            r = self.routing
            self._networks[locked] = XYNetwork(r.n_spins, r.edges, r.edge_param, np.array(locked, dtype=np.int64),
                                               [], name="rig")
        return self._networks[locked]

    def _advance(self) -> None:
        now = self.clock.now()
        dt = max(now - self._last_time, 0.0)
        self._last_time = now
        if dt:
            self.truth.reference_phase += self.imp.drift_phase_rad * np.sqrt(dt) * self.rng.normal()
            self.truth.power *= float(np.exp(self.imp.drift_power * np.sqrt(dt) * self.rng.normal()))
        if self._gray is not None:  # the spins relax under the image shown now
            self._apply(self._strengths_now(now))

    # -- replay and faults -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The dynamic state -- noise generator, spin phases, drifts, the tiles in transition and, on a virtual
        clock, the time -- so that a checkpointed simulation continues exactly as it would have."""
        tr = self.truth
        state = {"rng": self.rng.bit_generator.state, "phases": tr.phases.copy(),
                 "reference_phase": float(tr.reference_phase), "power": float(tr.power),
                 "reference": [float(self._reference.real), float(self._reference.imag)]}
        if isinstance(self.clock, VirtualClock):
            state.update(time=self.clock.t, last_time=float(self._last_time))
        if self._gray is not None:
            state.update(tile_gray=self._gray.copy(), tile_target=self._target.copy(), tile_from=self._from.copy(),
                         tile_changed_at=self._changed_at.copy())
        if self._strengths is not None:
            state.update(couplings=self._strengths[0].copy(), fields=self._strengths[1].copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        tr = self.truth
        self.rng.bit_generator.state = state["rng"]
        tr.phases = np.array(state["phases"], dtype=np.float64)
        tr.reference_phase, tr.power = float(state["reference_phase"]), float(state["power"])
        self._reference = complex(*state["reference"])
        if "time" in state and isinstance(self.clock, VirtualClock):
            self.clock.t, self._last_time = float(state["time"]), float(state["last_time"])
        if "target_image" in state:
            raise ValueError("this simulated-rig state predates per-tile replay (xyoptics before issue 13); start "
                             "the run again or resume it with the version that wrote it")
        self._gray = np.array(state["tile_gray"]) if "tile_gray" in state else None
        if self._gray is not None:
            self._target = np.array(state["tile_target"], dtype=np.float64)
            self._from = np.array(state["tile_from"], dtype=np.float64)
            self._changed_at = np.array(state["tile_changed_at"], dtype=np.float64)
            self._target_orders = tile_amplitude(self._target, self.layout_config.period_px)
        self._strengths = ((np.array(state["couplings"]), np.array(state["fields"]).astype(complex))
                           if "couplings" in state else None)

    def fail_next_frames(self, n: int) -> None:
        """Fault injection: the next ``n`` frame grabs time out (TimeoutError), as a stalled camera would."""
        self._failing_frames = int(n)

    # -- camera side ----------------------------------------------------------------------------------
    def frame(self, exposure_s: float, reference_scale: float = 1.0) -> np.ndarray:
        """One camera frame (rows, cols) in counts, float64 (integer-valued when quantised). Each frame sees the
        spins with fresh thermal noise around their rest state."""
        if self._failing_frames > 0:
            self._failing_frames -= 1
            raise TimeoutError("simulated camera: no frame within the timeout")
        self._advance()
        tr, imp = self.truth, self.imp
        phases = tr.phases
        if imp.thermal_noise_rad:
            phases = phases + self.rng.normal(0, imp.thermal_noise_rad, len(phases))
        spots = tr.spot_brightness * np.exp(1j * (phases + tr.path_offsets))
        amplitude = spots[self._profile_spot] * self._profile_value
        size, index = self.camera_shape[0] * self.camera_shape[1], self._profile_pixel
        total = (np.bincount(index, amplitude.real, size) + 1j * np.bincount(index, amplitude.imag, size)).reshape(
            self.camera_shape)
        total += self.reference_amplitude * reference_scale * self._reference * np.exp(1j * tr.reference_phase) \
            * self._carrier
        photons = tr.power * self.light * (total.real ** 2 + total.imag ** 2) * (
            self.photons_per_unit * exposure_s / 1e-3)
        if imp.shot_noise:
            photons = self.rng.poisson(photons).astype(np.float64)
        counts = photons * self.counts_per_photon + imp.dark_offset_counts
        if imp.read_noise_counts:
            counts += self.rng.normal(0, imp.read_noise_counts, counts.shape)
        if imp.quantise:
            np.rint(counts, out=counts)
        return np.clip(counts, 0, self.full_scale, out=counts)


def _edge_neighbours(cells: np.ndarray) -> np.ndarray:
    """(n_tiles, 4) indices of the tiles left, right, above and below each tile's grid cell (row, col), or
    n_tiles where there is none."""
    lookup = {tuple(c): k for k, c in enumerate(cells.tolist())}
    missing = len(cells)
    return np.array([[lookup.get((r + dr, c + dc), missing) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))]
                     for r, c in cells.tolist()], dtype=np.intp).reshape(-1, 4)
