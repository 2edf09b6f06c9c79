"""Where a network lives on the optical rig: SLM tiles for its bonds and sites, camera spots for its spins, and
the encoding of parameters, inputs and nudges into one SLM phase image.

Tiles. The SLM image (rows x cols pixels) is cut into square tiles of ``tile_px`` pixels, numbered row-major.
Tile order: one per rig bond (the rig's fixed optical routing), then per rig spin a bias tile, a clamp tile
(strong injection: input clamps, and seeding a state) and a nudge tile (weak injection), then the reference
tile whose piston steps the readout phase (see ``tile_cells`` for where each tile sits).

Encoding. Every tile shows a blazed grating along x with period ``period_px`` pixels, depth m in [0, 2 pi] and a
piston p: phi(x) = p + m (x mod period) / period. Its first diffraction order carries the complex amplitude
c1(m) e^{i p} with c1(m) = (1/period) sum_x exp(i m x/period - 2 pi i x/period), so the efficiency eta = |c1|^2
rises from 0 (m = 0) to 1 (m = 2 pi) -- for a continuous ramp eta(m) = sinc^2(1 - m/2pi). A tile of target
efficiency eta and target phase alpha uses m = eta^-1(eta) and p = alpha - arg c1(m). The rig turns efficiency
into physical strength with its nominal gains (dimensionless, energy units of the XY model):

    W_b = G_coupling eta_b cos(alpha_b)  (alpha in {0, pi} sets the sign),
    bias h_i e^{i psi_i} = G_bias eta e^{i alpha},  clamp = G_clamp eta e^{i alpha},  nudge = G_nudge eta e^{i alpha}.

A nudge of strength beta toward target y adds -beta cos(phi_o - y): the cosine cost, the only one an optical
field can make. Calibration replaces the nominal transfer and spot positions (identity until then).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ..core.network import Params, XYNetwork
from ..core.schema import Strict
from .patches import SpotPatches


class TileGains(Strict):
    """Physical strength at full efficiency (eta = 1) of each tile kind, in units of the XY energy."""

    coupling: float = Field(default=2.0, gt=0)
    bias: float = Field(default=2.0, gt=0)
    clamp: float = Field(default=1000.0, gt=0)
    nudge: float = Field(default=1.0, gt=0)


class LayoutConfig(Strict):
    """Geometry of tiles on the SLM and spots on the camera (pixels)."""

    tile_px: int = Field(default=8, ge=4)
    period_px: int = Field(default=4, ge=2)
    gains: TileGains = TileGains()
    spot_pitch_px: float = Field(default=12.0, gt=0)
    spot_margin_px: float = Field(default=10.0, ge=0)
    spot_sigma_px: float = Field(default=2.0, gt=0)
    carrier_period_px: float = Field(default=3.0, gt=2, description="reference fringe period along x")


class RigTopology(Strict):
    """The rig's fixed optical routing: how many spins, and which spin pair each bond tile couples -- in each of
    ``replicas`` identical copies, each with its own tiles and spots, which equilibrate different samples of a
    batch in the same frames."""

    n_spins: int = Field(ge=1)
    bonds: list[tuple[int, int]]
    replicas: int = Field(default=1, ge=1, description="copies of this routing on the rig")

    def physical(self) -> "RigTopology":
        """Every copy as one routing (replica r's spin i is spin r * n_spins + i, its bonds follow in turn)."""
        if self.replicas == 1:
            return self
        bonds = [(r * self.n_spins + i, r * self.n_spins + j) for r in range(self.replicas) for i, j in self.bonds]
        return RigTopology(n_spins=self.replicas * self.n_spins, bonds=bonds)


def grating_amplitude(depth: np.ndarray, period: int) -> np.ndarray:
    """First-order complex amplitude c1(m) of a zero-piston blazed grating of depth m (radians)."""
    x = np.arange(period)
    m = np.asarray(depth, dtype=np.float64)[..., None]
    return np.mean(np.exp(1j * (m - 2 * np.pi) * x / period), axis=-1)


def tile_amplitude(phase: np.ndarray, period: int) -> np.ndarray:
    """First-order complex amplitude of displayed tile phases (..., tile, tile): mean of exp(i phi) against
    the grating carrier exp(-2 pi i x / period)."""
    x = np.arange(phase.shape[-1])
    return np.mean(np.exp(1j * phase) * np.exp(-2j * np.pi * x / period), axis=(-2, -1))


@dataclass(frozen=True)
class Calibration:
    """What the encoding and readout know about the real rig. Identity (nominal values) until measured:
    ``efficiency_scale`` multiplies each tile's nominal efficiency (n_tiles,), ``spot_centres`` (n_spins, 2) and
    ``spot_sigma`` (n_spins,) in camera pixels (row, col), ``path_offsets`` (n_spins,) radians subtracted from
    read angles; ``dark`` and ``pixel_noise`` (camera rows, cols; counts) from the dark frame; and, with every
    spin clamped, each spot's pooled fringe modulation ``spot_modulation`` and phase-shifting residual
    ``spot_residual`` (n_spins,; counts), the references of the readout's quality floors."""

    efficiency_scale: np.ndarray | None = None
    spot_centres: np.ndarray | None = None
    path_offsets: np.ndarray | None = None
    spot_sigma: np.ndarray | None = None
    dark: np.ndarray | None = None
    pixel_noise: np.ndarray | None = None
    spot_modulation: np.ndarray | None = None
    spot_residual: np.ndarray | None = None


class Layout:
    """Assigns a network's bonds and spins to the rig's tiles and spots (in every replica of the routing), and
    encodes SLM images.

    With R replicas the tiles and spots are those of ``topology.physical()``: network spin i of replica r sits on
    rig spin ``spin_index[r, i]`` = r * n + i (n spins per replica) and network bond e on tile
    ``bond_tile[r, e]``; parameters are the same in every replica, inputs, seeds and nudges per replica."""

    def __init__(self, net: XYNetwork, topology: RigTopology, config: LayoutConfig,
                 slm_shape: tuple[int, int], camera_shape: tuple[int, int], calibration: Calibration = Calibration()):
        self.net, self.topology, self.config, self.calibration = net, topology, config, calibration
        n_rig, replicas = topology.n_spins, topology.replicas
        if net.n_spins > n_rig:
            raise ValueError(f"network has {net.n_spins} spins but the rig only {n_rig}")
        pairs = {tuple(sorted(b)): k for k, b in enumerate(topology.bonds)}
        missing = [tuple(e) for e in net.edges.tolist() if tuple(sorted(e)) not in pairs]
        if missing:
            raise ValueError(f"{len(missing)} bonds of the network are not routed on this rig, e.g. {missing[:3]}")
        per_copy = np.array([pairs[tuple(sorted(e))] for e in net.edges.tolist()], dtype=np.int64)
        self.replicas = replicas
        self.bond_tile = np.arange(replicas)[:, None] * len(topology.bonds) + per_copy  # (replicas, n_edges)
        self.spin_index = np.arange(replicas)[:, None] * n_rig + np.arange(net.n_spins)  # (replicas, n_net)
        n_bond_tiles, n_spots = replicas * len(topology.bonds), replicas * n_rig
        self.bias_tile = n_bond_tiles + np.arange(n_spots)
        self.clamp_tile = self.bias_tile + n_spots
        self.nudge_tile = self.clamp_tile + n_spots
        self.reference_tile = n_bond_tiles + 3 * n_spots
        self.n_tiles = self.reference_tile + 1
        t = config.tile_px
        self.slm_shape = tuple(slm_shape)
        cells = tile_cells(self.n_tiles, self.clamp_tile, self.reference_tile, self.slm_shape[0] // t,
                           self.slm_shape[1] // t)
        if cells is None:
            raise ValueError(f"the rig needs {self.n_tiles} tiles of {t} px, its clamp tiles with guard cells and a "
                             f"free corner for the reference, but a {self.slm_shape[1]}x{self.slm_shape[0]} SLM "
                             f"holds {(self.slm_shape[1] // t) * (self.slm_shape[0] // t)} tiles")
        self.tile_origin = cells * t  # (row, col) pixels
        rows, cols = self.tile_pixels()
        self.tile_flat_pixels = (rows * self.slm_shape[1] + cols).reshape(self.n_tiles, t * t)  # row-major
        depths = np.linspace(0.0, 2 * np.pi, 4097)
        c1 = grating_amplitude(depths, config.period_px)
        self._depths, self._eta, self._arg_unwrapped = depths, np.abs(c1) ** 2, np.unwrap(np.angle(c1))
        self.camera_shape = tuple(camera_shape)
        self.spot_centres = nominal_spot_centres(n_spots, config, camera_shape) \
            if calibration.spot_centres is None else np.asarray(calibration.spot_centres, float)

    # -- encoding ---------------------------------------------------------------------------------------
    @property
    def max_nudge(self) -> float:
        """The strongest nudge every output's nudge tile can inject (eta = 1), in energy units."""
        scale = self.calibration.efficiency_scale
        tiles = self.nudge_tile[self.spin_index[:, self.net.outputs]]
        return float(self.config.gains.nudge * (1.0 if scale is None else np.min(np.asarray(scale)[tiles])))

    def tile_settings(self, params: Params, inputs: np.ndarray, *, nudge_beta: float | np.ndarray = 0.0,
                      targets: np.ndarray | None = None, seed: np.ndarray | None = None,
                      reference_piston: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
        """Target efficiency eta and phase alpha for every tile, and how many were clipped at eta = 1.

        ``inputs`` (k, n_inputs) clamp the input spins of the first k replicas; ``seed`` (k, n_spins) instead
        clamps every spin of them (used to prepare a start state); the nudge pulls their outputs toward
        ``targets`` (k, n_outputs) with strength ``nudge_beta`` (a number, or (k, n_outputs) per output).
        One-dimensional arrays are one replica's.
        Couplings and biases are the same in every replica; replicas beyond k get no clamp and no nudge."""
        g = self.config.gains
        net = self.net
        eta = np.zeros(self.n_tiles)
        alpha = np.zeros(self.n_tiles)
        w = net.bond_weights(params)
        eta[self.bond_tile] = np.abs(w) / g.coupling
        alpha[self.bond_tile] = np.where(w < 0, np.pi, 0.0)
        spins = self.spin_index
        h = np.where(net.free, params.h, 0.0)
        eta[self.bias_tile[spins]] = np.abs(h) / g.bias
        alpha[self.bias_tile[spins]] = params.psi + np.where(h < 0, np.pi, 0.0)
        if seed is not None:
            seed = np.atleast_2d(seed)
            used = spins[:len(seed)]
            eta[self.clamp_tile[used]], alpha[self.clamp_tile[used]] = 1.0, seed
        else:
            inputs = np.atleast_2d(inputs)
            used = spins[:len(inputs)][:, net.inputs]
            eta[self.clamp_tile[used]], alpha[self.clamp_tile[used]] = 1.0, inputs
        if np.any(nudge_beta):
            targets = np.atleast_2d(targets)
            used = self.nudge_tile[spins[:len(targets)][:, net.outputs]]
            eta[used] = np.abs(nudge_beta) / g.nudge
            alpha[used] = targets + np.where(np.asarray(nudge_beta) < 0, np.pi, 0.0)
        eta[self.reference_tile], alpha[self.reference_tile] = 1.0, reference_piston
        if self.calibration.efficiency_scale is not None:
            eta = eta / np.asarray(self.calibration.efficiency_scale)
        clipped = int(np.count_nonzero(eta > 1.0 + 1e-12))
        return np.clip(eta, 0.0, 1.0), alpha, clipped

    def tile_phases(self, eta: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Phase pixels (k, tile_px, tile_px), radians, of k tiles of efficiency eta and phase alpha: the blazed
        grating p + m (x mod period) / period with m = eta^-1(eta) and p = alpha - arg c1(m)."""
        depth = np.interp(eta, self._eta, self._depths)
        piston = alpha - np.interp(depth, self._depths, self._arg_unwrapped)
        t, p = self.config.tile_px, self.config.period_px
        ramp = (np.arange(t) % p) / p
        return np.broadcast_to(piston[:, None, None] + depth[:, None, None] * ramp[None, None, :],
                               (len(piston), t, t))

    def tile_pixels(self, tiles=None) -> tuple[np.ndarray, np.ndarray]:
        """Index arrays (rows (k, t, 1), cols (k, 1, t)) of the SLM pixels of ``tiles`` (default all)."""
        origin = self.tile_origin if tiles is None else self.tile_origin[np.asarray(tiles)]
        t = np.arange(self.config.tile_px)
        return (origin[:, 0, None] + t)[:, :, None], (origin[:, 1, None] + t)[:, None, :]

    def image(self, eta: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """SLM phase image (rows, cols), radians, showing each tile's grating; unused pixels stay flat."""
        img = np.zeros(self.slm_shape)
        img[self.tile_pixels()] = self.tile_phases(eta, alpha)
        return img

    def read_tiles(self, phase_image: np.ndarray) -> np.ndarray:
        """First-order complex amplitude of every tile of a displayed phase image."""
        return tile_amplitude(phase_image[self.tile_pixels()], self.config.period_px)

    # -- readout geometry -------------------------------------------------------------------------------
    def spot_patches(self, sigma_px=None) -> SpotPatches:
        """Gaussian weights around every spot centre, cut at 3 sigma (sparse, ``patches.SpotPatches``); sigma
        (px) is ``sigma_px``, else the calibrated spot widths, else the layout's nominal width."""
        if sigma_px is None:
            sigma_px = self.config.spot_sigma_px if self.calibration.spot_sigma is None else self.calibration.spot_sigma
        return SpotPatches.gaussian(self.spot_centres, sigma_px, self.camera_shape)

    @property
    def carrier(self) -> tuple[float, float]:
        """Reference wave vector (k_row, k_col) in rad/pixel."""
        return 0.0, 2 * np.pi / self.config.carrier_period_px


def tile_cells(n_tiles: int, clamp_tiles: np.ndarray, reference_tile: int, rows: int, per_row: int):
    """Grid cells (row, col) of every tile, or None when they do not fit.

    Tile crosstalk leaks a little of each tile's first order into its edge neighbours. Two kinds of tile must
    not have neighbours: clamp tiles, whose strong gain would turn a neighbour's leak into a sizeable field,
    and the reference tile, whose piston steps between phase-shifting frames. So the other tiles fill rows from
    the top; after a guard row the clamp tiles take every other cell of every other row; the reference sits
    alone in the last corner."""
    cells = np.zeros((n_tiles, 2), dtype=np.int64)
    is_clamp = np.zeros(n_tiles, dtype=bool)
    is_clamp[clamp_tiles] = True
    plain = [k for k in range(n_tiles) if not is_clamp[k] and k != reference_tile]
    cells[plain] = np.stack(np.divmod(np.arange(len(plain)), per_row), 1)
    first = (len(plain) - 1) // per_row + 2
    slots = (per_row + 1) // 2
    k = np.arange(len(clamp_tiles))
    cells[clamp_tiles] = np.stack([first + 2 * (k // slots), 2 * (k % slots)], 1)
    cells[reference_tile] = rows - 1, per_row - 1
    others = np.delete(cells, reference_tile, axis=0)
    if (cells[:, 0].max() >= rows or np.any(np.abs(others - cells[reference_tile]).sum(1) <= 1)):
        return None
    return cells


def nominal_spot_centres(n_spins: int, config: LayoutConfig, camera_shape: tuple[int, int]) -> np.ndarray:
    """Spots on a square grid of pitch ``spot_pitch_px`` from ``spot_margin_px``, row-major, as (row, col)."""
    per_row = int((camera_shape[1] - 2 * config.spot_margin_px) // config.spot_pitch_px) + 1
    r, c = np.divmod(np.arange(n_spins), max(per_row, 1))
    centres = config.spot_margin_px + config.spot_pitch_px * np.stack([r, c], 1).astype(float)
    if centres.size and (centres[:, 0].max() > camera_shape[0] - config.spot_margin_px):
        raise ValueError(f"{n_spins} spots of pitch {config.spot_pitch_px} px do not fit a "
                         f"{camera_shape[1]}x{camera_shape[0]} camera")
    return centres


def fitting_shapes(topology: RigTopology, config: LayoutConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """The smallest SLM (rows, cols) of the usual 1:2 format with power-of-two sides, and a camera (rows, cols)
    rounded up to 16 px, that hold the routing's tiles and spots (all replicas): for sizing simulated rigs."""
    phys = topology.physical()
    n, n_tiles = phys.n_spins, len(phys.bonds) + 3 * phys.n_spins + 1
    clamps = len(phys.bonds) + phys.n_spins + np.arange(n)
    rows = 16
    while tile_cells(n_tiles, clamps, n_tiles - 1, rows // config.tile_px, 2 * rows // config.tile_px) is None:
        rows *= 2
    per_row = int(np.ceil(np.sqrt(n)))  # a square camera holding per_row x per_row spots holds them all
    side = int(16 * np.ceil((2 * config.spot_margin_px + config.spot_pitch_px * (per_row - 1) + 1) / 16))
    return (rows, 2 * rows), (side, side)
