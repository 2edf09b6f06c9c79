"""``OpticalXYMachine``: the XYMachine seam over an slmsuite SLM and camera.

For each sample it writes an SLM image, waits the settle time, discards stale frames, grabs frames and reads
the spin angles (readout.py). A rig whose routing holds R replicas of the network settles R samples of a batch
in the same frames (ceil(batch / R) readouts). Writes re-encode only the tiles that changed (slmwriter.py) and
frames are read only at the spots' pixels (patches.py), so the controller's own work per frame stays around a
millisecond at 1,024 spins (benchmarks/optical_scale.py). Starts are physical:

* a fresh start (``start=None``) draws uniform random angles from ``rng`` and prepares them as a given start
  (so a seeded run is reproducible, and the same whatever the number of replicas); without ``rng`` it shows a
  dark image -- no couplings, fields or injections -- so spontaneous emission scrambles every phase, then the
  working image;
* a given start (an earlier ``Equilibrium``) is prepared by injection-locking every spin to those angles with
  the clamp tiles, then releasing all clamps but the inputs' together with the nudge.

Inputs are clamped by strong injection; a nudge is a weak injection of strength beta toward the target, which
adds beta (1 - cos(phi_o - y_o)) to the energy: only the cosine cost exists on hardware. The global phase gauge
is fixed by the clamped inputs: the circular mean of (read - commanded) input angles is removed.

Measurement quality travels with the angles: ``converged`` is False for a sample with any flagged spot;
``residual`` is the largest per-spot fit residual (counts); ``quality`` holds the per-spot modulation, the
per-spin flags ``FLAGS`` (batch, n_spins) of ``readout.spot_flags`` -- saturated, dead spot (modulation
not above its noise), low modulation (below a quarter of the spot's calibrated modulation), reference mismatch
(fit residual far above the calibrated one) -- and how many tiles had to be clipped at full efficiency. With a
calibration the frames are read with the dark frame subtracted and with the calibrated spot widths.

Liveness and drift: a phase-shifting measurement in which no spot followed the reference steps (every spot dead)
means the rig did not respond to the SLM image, and raises ``DeviceFault`` (training retries, then stops
safely). Every measurement is re-referenced by the clamped inputs; the global phase removed
(``quality["reference_phase"]``, rad) and the median ratio of the spots' modulation to their calibrated one
(``quality["modulation_ratio"]``, tracks laser power and reference drift) are reported per sample.

Settling: after a reference step (one tile moved by a fraction of a wave) the machine waits the settle time;
after a write that changes the network's tiles (a new sample, a released start) it waits ``SWAP_SETTLE_FACTOR``
times as long. A liquid crystal relaxes exponentially, so the longer wait squares the residual of a large change
(e.g. strong start clamps, whose leftover field would still move the spins between the frames of one stack).

A device that fails (an SLM write or a frame grab raising, e.g. a camera timeout) raises ``DeviceFault``.
``park()`` leaves the SLM blank (flat phase: no couplings, fields or injections). Devices that can be replayed
(the simulated rig) lend their state to ``state_dict()`` for training checkpoints.
"""

from __future__ import annotations

import numpy as np

from ..core.angles import wrap
from ..core.costs import CosineCost
from ..core.machine import FLAGS, DeviceFault, Equilibrium, Nudge, check_inputs
from ..core.network import Params, XYNetwork
from .clock import RealClock
from .layout import Calibration, Layout, LayoutConfig, RigTopology
from .readout import PhaseEstimate, off_axis_patches, pooled_noise, pooled_phase_shifting, spot_flags
from .slmwriter import TileWriter

READOUTS = ("phase_shifting", "off_axis")
SWAP_SETTLE_FACTOR = 2.0


class OpticalXYMachine:
    """Settles an XY network on an optical rig. ``topology`` is the rig's optical routing; ``readout`` is
    "phase_shifting" (``n_steps`` reference pistons 2 pi n / n_steps) or "off_axis" (one frame)."""

    def __init__(self, network: XYNetwork, slm, camera, topology: RigTopology,
                 layout: LayoutConfig = LayoutConfig(), *, calibration: Calibration = Calibration(),
                 readout: str = "phase_shifting", n_steps: int = 4, settle_time_s: float | None = None,
                 min_modulation: float | None = None, clock=None):
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}")
        if readout == "phase_shifting" and n_steps < 3:
            raise ValueError("phase shifting needs at least 3 steps")
        self.network, self.slm, self.camera, self.topology, self.layout_config = network, slm, camera, topology, layout
        self.readout, self.n_steps = readout, int(n_steps)
        self.clock = clock if clock is not None else getattr(slm, "clock", None) or RealClock()
        self.min_modulation = min_modulation
        self.saturation = 2 ** camera.bitdepth - 1
        self.frames_read = 0
        self.last_frame: np.ndarray | None = None  # the latest camera frame, whole (for a live monitor)
        self.last_spot_phases: np.ndarray | None = None  # the raw phase read at each spot in use, latest readout
        self.use_calibration(calibration, settle_time_s)

    def use_calibration(self, calibration: Calibration, settle_time_s: float | None = None) -> None:
        """Encode and read with ``calibration`` (and wait ``settle_time_s`` after each write, default the
        SLM's own). Nothing is written to the SLM here."""
        self.layout = Layout(self.network, self.topology, self.layout_config, self.slm.shape, self.camera.shape,
                             calibration)
        self.writer = TileWriter(self.slm, self.layout)
        self.calibration = calibration
        self.replicas = self.layout.replicas
        spots = self.layout.spin_index.ravel()  # the rig spots of the network's spins, replica after replica
        self.patches = self.layout.spot_patches().select(spots)
        w = self.patches.weight
        self.noise_factor = np.sqrt((w ** 2).sum(axis=1)) / w.sum(axis=1)
        self.dark_noise = None if calibration.pixel_noise is None else pooled_noise(self.patches,
                                                                                    calibration.pixel_noise)
        self.dark_patches = (None if calibration.dark is None
                             else self.patches.gather(calibration.dark).astype(np.float32))
        self.modulation_ref = None if calibration.spot_modulation is None else calibration.spot_modulation[spots]
        self.residual_ref = None if calibration.spot_residual is None else calibration.spot_residual[spots]
        self.settle_time_s = float(self.slm.settle_time_s if settle_time_s is None else settle_time_s)

    # -- devices ----------------------------------------------------------------------------------------
    def _show(self, eta: np.ndarray, alpha: np.ndarray, settle_factor: float = 1.0) -> None:
        try:
            self.writer.write(eta, alpha)
        except (TimeoutError, OSError, RuntimeError) as exc:
            self.writer.invalidate()
            raise DeviceFault(f"SLM {self.slm.name!r} write failed: {exc}") from exc
        self.clock.sleep(settle_factor * self.settle_time_s)
        try:
            self.camera.flush()
        except (TimeoutError, OSError, RuntimeError) as exc:
            raise DeviceFault(f"camera {self.camera.name!r} could not discard stale frames: {exc}") from exc

    def _write(self, phase: np.ndarray) -> None:
        self.writer.invalidate()
        try:
            self.slm.set_phase(phase, settle=False)
        except (TimeoutError, OSError, RuntimeError) as exc:
            raise DeviceFault(f"SLM {self.slm.name!r} write failed: {exc}") from exc

    def _grab(self) -> np.ndarray:
        """One camera frame, read only at the spots' pixels: (spots, P) counts in the camera's dtype."""
        try:
            frame = self.camera.get_image()
        except (TimeoutError, OSError, RuntimeError) as exc:
            raise DeviceFault(f"camera {self.camera.name!r}: {exc}") from exc
        self.last_frame = frame
        return self.patches.gather(frame)

    def park(self) -> None:
        """Blank the SLM: a flat phase image diffracts nothing into the tiles."""
        self._write(np.zeros(self.slm.shape))

    def state_dict(self) -> dict | None:
        """The SLM's replay state where it has one (a simulator), else None."""
        return self.slm.state_dict() if hasattr(self.slm, "state_dict") else None

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None and hasattr(self.slm, "load_state_dict"):
            self.slm.load_state_dict(state)

    def _read(self, settings) -> tuple[PhaseEstimate, np.ndarray, int]:
        """Show ``settings`` (tile eta, alpha, clipped count) with the reference piston stepped, grab one frame
        per step and estimate every spot in use: (estimate, saturated per spot, clipped tiles)."""
        steps = (2 * np.pi * np.arange(self.n_steps) / self.n_steps) if self.readout == "phase_shifting" else [0.0]
        eta, alpha, clipped = settings
        values = np.empty((len(steps),) + self.patches.weight.shape, np.float32)  # counts: exact in float32
        for k, delta in enumerate(steps):
            alpha = alpha.copy()
            alpha[self.layout.reference_tile] = delta  # only the reference piston steps
            self._show(eta, alpha, SWAP_SETTLE_FACTOR if k == 0 else 1.0)
            values[k] = self._grab()
        self.frames_read += len(steps)
        saturated = self.patches.saturated(values.max(axis=0), self.saturation)
        if self.dark_patches is not None:
            values -= self.dark_patches
        if self.readout == "phase_shifting":
            est = pooled_phase_shifting(values, np.asarray(steps), self.patches, self.layout.carrier)
        else:
            est = off_axis_patches(values[0], self.layout.carrier, self.patches)
        self.last_spot_phases = est.theta
        return est, saturated, clipped

    def read_clamped(self, phases: np.ndarray) -> tuple[PhaseEstimate, np.ndarray]:
        """Lock every spin of the network (in every replica) to ``phases`` (radians) with its clamp tile,
        couplings and biases off, and read the spots: the rig's answer to a known SLM state (self-tests,
        liveness). Returns the raw estimate (path offsets and gauge not removed; spots replica after replica)
        and the saturated flag per spot."""
        net = self.network
        off = Params(np.zeros(net.n_coupling_params), np.zeros(net.n_spins), np.zeros(net.n_spins))
        seed = np.broadcast_to(np.asarray(phases, dtype=float), (self.replicas, net.n_spins))
        est, saturated, _ = self._read(self.layout.tile_settings(off, np.zeros(len(net.inputs)), seed=seed))
        return est, saturated

    def _measure(self, params: Params, x: np.ndarray, beta: float | np.ndarray, targets
                 ) -> tuple[np.ndarray, dict, int]:
        """Angles (k, n_spins) of the network's spins in the first k replicas, which hold inputs ``x``
        (k, n_inputs) and nudge targets (k, n_outputs), with quality figures per replica and spin."""
        k, n = len(x), self.network.n_spins
        est, saturated, clipped = self._read(self.layout.tile_settings(params, x, nudge_beta=beta, targets=targets))
        flags = spot_flags(est, saturated, n_frames=self.n_steps if self.readout == "phase_shifting" else 1,
                           noise_factor=self.noise_factor, dark_noise=self.dark_noise,
                           modulation_ref=self.modulation_ref, residual_ref=self.residual_ref,
                           min_modulation=self.min_modulation)

        def used(values):
            return np.asarray(values).reshape(self.replicas, n)[:k]

        flags = {name: used(f) for name, f in flags.items()}
        if flags["dead_spot"].all() and self.readout == "phase_shifting":
            raise DeviceFault(f"the rig did not respond to the SLM: no spot followed the reference steps "
                              f"(largest fringe modulation {float(np.max(est.modulation)):.3g} counts); a frozen "
                              f"SLM, a blocked beam or a camera that no longer sees the spots")
        theta = used(est.theta)
        if self.calibration.path_offsets is not None:
            theta = theta - used(np.asarray(self.calibration.path_offsets)[self.layout.spin_index.ravel()])
        inputs = self.network.inputs
        gauge = (np.angle(np.mean(np.exp(1j * (theta[:, inputs] - x)), axis=1)) if len(inputs)
                 else np.zeros(k))
        ratio = (np.median(used(est.modulation / self.modulation_ref), axis=1) if self.modulation_ref is not None
                 else np.full(k, np.nan))
        quality = {"modulation": used(est.modulation), "residual": used(est.residual), "reference_phase": gauge,
                   "modulation_ratio": ratio, **flags}
        return wrap(theta - gauge[:, None]), quality, clipped

    @property
    def max_nudge_strength(self) -> float:
        """The strongest per-output nudge the rig can inject (an adaptive nudge is capped here)."""
        return self.layout.max_nudge

    # -- the seam -------------------------------------------------------------------------------------
    def equilibrate(self, params: Params, inputs: np.ndarray, *, nudge: Nudge | None = None,
                    start: Equilibrium | np.ndarray | None = None,
                    rng: np.random.Generator | None = None) -> Equilibrium:
        """Settle the batch on the rig, ``replicas`` samples at a time (ceil(batch / replicas) readouts).
        Fresh starts are drawn from ``rng`` (uniform angles) where given, else scrambled physically."""
        net = self.network
        inputs = check_inputs(net, inputs)
        if nudge is not None and not isinstance(nudge.cost, CosineCost):
            raise ValueError("an optical nudge is an injected field: it realises the cosine cost only "
                             "(set ep.cost: cosine)")
        n = len(inputs)
        if start is None and rng is not None:
            start = rng.uniform(-np.pi, np.pi, (n, net.n_spins))
        starts = None if start is None else (start.phases if isinstance(start, Equilibrium) else np.atleast_2d(start))
        phases = np.zeros((n, net.n_spins))
        residual = np.zeros(n)
        clipped = np.zeros(n, dtype=np.int64)
        per_sample = {"reference_phase": np.zeros(n), "modulation_ratio": np.zeros(n),
                      "modulation": np.zeros((n, net.n_spins))}
        flags = {name: np.zeros((n, net.n_spins), dtype=bool) for name in FLAGS}
        for first in range(0, n, self.replicas):
            rows = np.arange(first, min(first + self.replicas, n))
            beta, targets = (0.0, None) if nudge is None else (nudge.beta, np.atleast_2d(nudge.targets)[rows])
            if nudge is not None and nudge.gains is not None:  # an adaptive nudge: one strength per output
                beta = nudge.beta * np.atleast_2d(nudge.gains)[rows]
            if starts is None:
                self._show(np.zeros(self.layout.n_tiles), np.zeros(self.layout.n_tiles), SWAP_SETTLE_FACTOR)
            else:
                eta, alpha, _ = self.layout.tile_settings(params, inputs[rows], seed=starts[rows])
                self._show(eta, alpha)
            phases[rows], q, clipped[rows] = self._measure(params, inputs[rows], beta, targets)
            for name in FLAGS:
                flags[name][rows] = q[name]
            residual[rows] = np.max(q["residual"], axis=1, initial=0.0)
            for name in per_sample:
                per_sample[name][rows] = q[name]
        ok = ~np.any([flags[name].any(axis=1) for name in FLAGS], axis=0)
        frames = self.n_steps if self.readout == "phase_shifting" else 1
        return Equilibrium(phases, ok, np.full(n, frames), residual,
                           {"clipped_tiles": clipped, **per_sample, **flags})
