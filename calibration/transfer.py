"""Coupling and injection transfer: the gain of every bond, bias and nudge tile, from equilibrium angles.

Equilibria depend only on ratios of strengths, so gains are measured relative to each other and normalised to
a mean bias-tile gain of one. Every tile under test shows the same efficiency ``ETA``; the gray -> phase table
is loaded and spots are read with the spot map. Neighbouring spots' field tails leak into each other's
readout (1-5 % of a spot, more for displaced or wide spots); on an 8x8 lattice that biased some read angles
by 0.05 rad and their ratios by up to 25 %, so the readout's spot mixing K is measured first and inverted for every read
(``spots.measure_spot_mixing``); K's diagonal holds the path offsets too.

Probes. A *pair probe* lights bond b = (i, j) at phase beta, a field tile F of spin i at phase
S + beta + theta and a field tile N of spin j at phase theta (S = ``SEPARATION``); every other tile of i and j
stays dark, so (i, j) is an isolated two-spin system. With a = phi - theta (and a_i also less beta), the
torques of E = -W cos(beta) cos(phi_i - phi_j) - f_F cos(phi_i - S - beta - theta) - f_N cos(phi_j - theta)
balance at any equilibrium (beta = pi is beta = 0 with phi_i turned by pi), so

    W / f_F = sin(S - a_i) / sin(a_i - a_j),        W / f_N = sin(a_j) / sin(a_i - a_j).

F and N are a bias and a nudge tile in all four roles, else two nudge tiles, else two bias tiles: a bond and
a bias tile of equal strength (W / f = 1) sit near the point where a second, barely stable equilibrium appears,
which then jumps between the frames of one read. A *spin probe* lights spin i's bias tile at phase theta and
its nudge tile at S + theta: f_nudge / f_bias = sin(a_i) / sin(S - a_i). With S = 3 pi / 4 a read error of
delta rad moves log W / f by ~2.7 delta (nudge) and ~4 delta (bias); with fields pi / 2 apart it was 4.3 and
5.7 delta, as the two spins then sit only ~0.4 rad apart.

Many probes per frame. Probes shown together share no spin, no lit tile touches (shares an edge with, on the
SLM tile grid) a lit tile or a clamp tile of a spin in use, and no clamp tile of a spin in use touches a lit
tile (tile crosstalk would bias the ratios; a leak into a dark clamp tile, gain ~1000, would act as a strong
field). Probes are packed greedily into such configurations, each keeping a spin free for its zero: spins not
in use, each locked by one bias (else nudge) tile at ``ETA`` and phase theta, whose mean read phase is the
actual direction of a near field (the encoding's phase error depends on the efficiency). Every other spin
whose clamp tile touches only clamp tiles of spins not in use is clamped to theta, so the weak couplings that
lit tiles leak into neighbouring dark bond tiles reach only locked spins. Each configuration is shown at
``ROTATIONS`` rotations theta = 2 pi k / ROTATIONS, odd k with beta = pi (bonds show both signs training
uses). S is a multiple of 2 pi / ROTATIONS, so far and near fields run through the same phases: the encoding's
piston-dependent efficiency and phase errors (up to +-4 % and ~0.01 rad at ``ETA`` on an 8-bit SLM) average
out alike. Each read gives ratios (every equilibrium balances its torques); reads whose phase-shifting residual
exceeds the readout's ``MISMATCH_RATIO`` times the calibrated one are dropped, and log ratios are averaged
over the reads.

Fit. Each measured ratio divided by its nominal value (the kinds' gain ratio, at equal efficiency) is a ratio
of squared tile gains: log g_A^2 - log g_B^2 = log(measured / nominal). These are solved by weighted least
squares (sparse normal equations over the largest connected set of tiles), each weighted by the inverse of
its read-noise scale |d log ratio / d angles| / sqrt(reads), normalised to a mean log bias gain of zero;
ratios whose residual exceeds ``REJECT_SIGMAS`` robust standard deviations are dropped and the fit repeated
once. A bond none of whose field-tile choices keeps its lit tiles apart is reported as not measurable and
keeps gain 1. Finally the bonds of one configuration are measured at several efficiencies to check that
strength stays proportional to the encoded efficiency across the range (quality ``range_max_rel_deviation``,
over its first four bonds). The result is ``efficiency_scale`` per tile (1 where not measured, e.g. clamp
tiles, which only need to be strong), which the encoding divides every target efficiency by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from xyoptics.hil.readout import MISMATCH_RATIO

from .session import CalibrationFailed, RigSession
from .spots import MIN_MODULATION, SpotMixing, measure_spot_mixing

ETA = 0.25  # efficiency of every tile under test
SEPARATION = 3 * np.pi / 4  # phase between the two fields of a probe (rad)
ROTATIONS = 8  # rotations of every probe per configuration, theta = 2 pi k / ROTATIONS
REPEATS = 1  # phase-shifting reads per rotation
REJECT_SIGMAS = 6.0  # ratios further off the fit than this many robust standard deviations are dropped
MAX_INVALID = 0.1  # fail when more than this fraction of reads give ratios of the wrong sign


@dataclass(frozen=True)
class Probe:
    """Tiles lit for one isolated measurement: ``far`` (phase S + theta) on ``spins[0]``, ``near`` (phase
    theta) on ``spins[-1]``, and for a pair probe the bond tile ``bond`` between them."""

    spins: tuple[int, ...]
    far: int | None
    near: int
    bond: int | None = None

    @property
    def lit(self) -> set[int]:
        return {t for t in (self.bond, self.far, self.near) if t is not None}


class _Grid:
    """Edge neighbours of every tile on the SLM tile grid."""

    def __init__(self, layout):
        cells = layout.tile_origin // layout.config.tile_px
        index = {tuple(c): k for k, c in enumerate(cells.tolist())}
        self.neighbours = [[index[(r + dr, c + dc)] for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
                            if (r + dr, c + dc) in index] for r, c in cells.tolist()]

    def near(self, tiles) -> set[int]:
        """``tiles`` and every tile sharing an edge with one of them."""
        out = set(tiles)
        for t in tiles:
            out.update(self.neighbours[t])
        return out

    def apart(self, tiles) -> bool:
        """No two of ``tiles`` share an edge."""
        tiles = set(tiles)
        return not any(tiles.intersection(self.neighbours[t]) for t in tiles)


def _probes(session: RigSession, grid: _Grid) -> list[Probe]:
    """Every bond's pair probes -- a bias against a nudge tile in all four roles (either spin, either kind far),
    else two nudge tiles, else two bias tiles -- and every spin's own probe (nudge far, bias near), each only
    if its lit tiles touch neither each other nor its spins' clamp tiles."""
    layout = session.layout
    bias, nudge, clamp = layout.bias_tile, layout.nudge_tile, layout.clamp_tile

    def ok(probe: Probe) -> bool:
        return grid.apart(probe.lit) and not grid.near(probe.lit) & {int(clamp[s]) for s in probe.spins}

    probes = []
    for b, (i, j) in enumerate(session.topology.bonds):
        for kinds in (((bias, nudge), (nudge, bias)), ((nudge, nudge),), ((bias, bias),)):
            found = [probe for far, near in kinds for p, q in ((i, j), (j, i))
                     if ok(probe := Probe((p, q), int(far[p]), int(near[q]), b))]
            if found:
                probes += found
                break
    probes += [p for p in (Probe((i,), int(nudge[i]), int(bias[i])) for i in range(session.n_spins)) if ok(p)]
    return probes


class _Config:
    """Probes shown together (module docstring), the spins that give their zero (``zeros``: spin, lit tile) and
    the other spins, held by their clamp tiles (``held``); tracks the spins in use and the tiles next to lit
    tiles and to guarded clamp tiles (those of spins in use)."""

    def __init__(self, layout, grid: _Grid):
        self.layout, self.grid = layout, grid
        self.probes: list[Probe] = []
        self.zeros, self.held = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
        self.spins, self.near_lit, self.near_guard = set(), set(), set()

    def _guard(self, probe: Probe) -> set[int]:
        return {int(self.layout.clamp_tile[s]) for s in probe.spins}

    def fits(self, probe: Probe, other: Probe | None = None) -> bool:
        """Whether ``probe`` can join (with ``other`` joined too): no spin shared, no lit tile of it next to a
        lit tile or a guarded clamp tile, no clamp tile of its spins next to a lit tile."""
        guard = self._guard(probe)
        ok = (self.spins.isdisjoint(probe.spins) and self.near_lit.isdisjoint(probe.lit)
              and self.near_guard.isdisjoint(probe.lit) and self.near_lit.isdisjoint(guard))
        if ok and other is not None:
            near_other = self.grid.near(other.lit)
            ok = (set(other.spins).isdisjoint(probe.spins) and near_other.isdisjoint(probe.lit | guard)
                  and self.grid.near(self._guard(other)).isdisjoint(probe.lit))
        return ok

    def add(self, probe: Probe, member: bool = True) -> None:
        if member:
            self.probes.append(probe)
        self.spins.update(probe.spins)
        self.near_lit.update(self.grid.near(probe.lit))
        self.near_guard.update(self.grid.near(self._guard(probe)))

    def zero_candidates(self, other: Probe | None = None):
        """Spins not in use, each with its bias (else nudge) tile, that could be zero spins (with ``other``)."""
        layout = self.layout
        for k in range(len(layout.bias_tile)):
            for tile in (int(layout.bias_tile[k]), int(layout.nudge_tile[k])):
                if self.fits(zero := Probe((k,), None, tile), other):
                    yield zero
                    break


def _configurations(session: RigSession, grid: _Grid, probes: list[Probe]) -> list[_Config]:
    """Greedy first-fit packing of probes into configurations that can be shown together and leave a spin free to
    be a zero (module docstring); then each configuration's zero and held spins."""
    layout = session.layout
    configs: list[_Config] = []
    for probe in probes:
        config = next((c for c in configs if c.fits(probe) and next(c.zero_candidates(probe), None)), None)
        if config is None:
            config = _Config(layout, grid)
            configs.append(config)
        config.add(probe)
    clamp = layout.clamp_tile
    for config in configs:
        tested = set(config.spins)
        zeros = []
        for zero in config.zero_candidates():  # each checked against the zeros added before it
            zeros.append((zero.spins[0], zero.near))
            config.add(zero, member=False)
        if not zeros:
            raise CalibrationFailed("no spin is free to serve as the phase zero (too few spins on this rig)")
        config.zeros = np.array(zeros)
        free = [k for k in range(session.n_spins) if k not in config.spins]
        allowed = set(clamp[free].tolist())  # a held spin's clamp touches only clamp tiles of spins not in use
        config.held = np.array([k for k in free if allowed.issuperset(grid.neighbours[clamp[k]])], dtype=np.int64)
        config.spins = tested
    return configs


def _angles(session: RigSession, config: _Config, mixing: SpotMixing, bond_eta: float = ETA,
            repeats: int = REPEATS) -> np.ndarray:
    """Angles (reads, len(probes), 2) of each probe's first and last spin against its own rotation, its bond's
    sign and the zero spins' direction, for ``ROTATIONS`` rotations times ``repeats`` reads."""
    layout = session.layout
    probes, zeros = config.probes, config.zeros
    residual_ref = layout.calibration.spot_residual
    first = np.array([p.spins[0] for p in probes])
    last = np.array([p.spins[-1] for p in probes])
    far, near = np.array([p.far for p in probes]), np.array([p.near for p in probes])
    bonds = np.array([p.bond for p in probes if p.bond is not None], dtype=np.int64)
    paired = np.array([p.bond is not None for p in probes])
    reads = []
    for _ in range(repeats):
        for k in range(ROTATIONS):
            theta, sign = 2 * np.pi * k / ROTATIONS, np.pi * (k % 2)  # odd rotations: negative couplings
            flip = sign * paired  # a negative coupling turns the far field by pi (module docstring)
            eta, alpha = session.settings()
            eta[far], eta[near], eta[bonds], eta[zeros[:, 1]] = ETA, ETA, bond_eta, ETA
            alpha[far], alpha[near], alpha[bonds], alpha[zeros[:, 1]] = SEPARATION + flip + theta, theta, sign, theta
            eta[layout.clamp_tile[config.held]], alpha[layout.clamp_tile[config.held]] = 1.0, theta
            frames, steps = session.phase_stack(eta, alpha)
            est = session.read_spots(frames, steps)
            session.require_light(frames, est.modulation, MIN_MODULATION)
            phase = np.exp(1j * mixing.unmix(est.theta, est.modulation))
            # the readout's own rule: a spot whose frames do not follow the reference steps is not read
            bad = np.zeros(len(phase), bool) if residual_ref is None else est.residual > MISMATCH_RATIO * residual_ref
            good = zeros[:, 0][~bad[zeros[:, 0]]]
            zero = np.mean(phase[good if len(good) else zeros[:, 0]])
            turned = np.where(bad, np.nan, phase * np.conj(zero / abs(zero)))
            reads.append(np.stack([turned[first] * np.exp(-1j * flip), turned[last]], 1))  # zeros turn with theta
    return np.angle(np.array(reads))


def _ratios(probe: Probe, a: np.ndarray) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(tile A, tile B, strength ratios A / B, |d log ratio / d angles|) from a probe's angles a (reads, 2) (module
    docstring), one value per read; ratios of the wrong sign are returned as they are, for the caller to drop."""
    s, ai, aj = SEPARATION, a[:, 0], a[:, 1]
    if probe.bond is None:
        return [(probe.far, probe.near, np.sin(ai) / np.sin(s - ai), np.abs(1 / np.tan(ai) + 1 / np.tan(s - ai)))]
    d = np.sin(ai - aj)
    cot_d = np.cos(ai - aj) / d
    j_far = np.hypot(1 / np.tan(s - ai) + cot_d, cot_d)
    j_near = np.hypot(cot_d, 1 / np.tan(aj) + cot_d)
    return [(probe.bond, probe.far, np.sin(s - ai) / d, j_far), (probe.bond, probe.near, np.sin(aj) / d, j_near)]


def _nominal(session: RigSession) -> np.ndarray:
    """Nominal strength of every tile kind at equal efficiency (its kind's gain)."""
    layout, gains = session.layout, session.layout.config.gains
    nominal = np.full(layout.n_tiles, gains.coupling)
    nominal[layout.bias_tile], nominal[layout.nudge_tile] = gains.bias, gains.nudge
    nominal[layout.clamp_tile] = gains.clamp
    return nominal


def _fit(n_tiles: int, ratios: np.ndarray, norm_tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of log gains from rows (tile A, tile B, log ratio, sigma) over the largest
    connected set of tiles, normalised to a zero mean over its ``norm_tiles``. Returns log gains (n_tiles; nan
    where not determined), the rows used (mask) and their residuals."""
    a, b = ratios[:, 0].astype(np.int64), ratios[:, 1].astype(np.int64)
    graph = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_tiles, n_tiles))
    _, label = connected_components(graph, directed=False)
    main = np.bincount(label[a]).argmax()
    use = label[a] == main
    x = np.full(n_tiles, np.nan)
    for _ in range(2):  # fit, then refit without the outliers
        rows = np.flatnonzero(use)
        tiles = np.unique(np.concatenate([a[rows], b[rows]]))
        col = np.full(n_tiles, -1)
        col[tiles] = np.arange(len(tiles))
        w = 1 / ratios[rows, 3] ** 2
        m = sparse.coo_matrix((np.r_[np.ones(len(rows)), -np.ones(len(rows))],
                               (np.r_[np.arange(len(rows)), np.arange(len(rows))], np.r_[col[a[rows]], col[b[rows]]])),
                              shape=(len(rows), len(tiles))).tocsr()
        pin = sparse.coo_matrix(([w.mean()], ([0], [0])), shape=(len(tiles), len(tiles)))  # fixes the constant
        sol = spsolve((m.T @ sparse.diags(w) @ m + pin).tocsc(), m.T @ (w * ratios[rows, 2]))
        inside = col[norm_tiles][col[norm_tiles] >= 0]
        sol -= sol[inside].mean() if len(inside) else sol.mean()
        residual = m @ sol - ratios[rows, 2]
        x[:] = np.nan
        x[tiles] = sol
        z = residual / ratios[rows, 3]
        keep = np.abs(z) <= REJECT_SIGMAS * 1.4826 * np.median(np.abs(z))  # robust sigma from the median
        if keep.all() or not keep.any():
            break
        use[rows[~keep]] = False
    return x, use, residual


def measure_transfer(session: RigSession) -> tuple[dict, dict]:
    """Gains of every bond, bias and nudge tile as ``efficiency_scale`` (module docstring)."""
    layout = session.layout
    grid = _Grid(layout)
    probes = _probes(session, grid)
    configs = _configurations(session, grid, probes)
    nominal = _nominal(session)
    mixing = measure_spot_mixing(session)
    rows, invalid, flagged, total = [], 0, 0, 0
    for config in configs:
        for probe, a in zip(config.probes, _angles(session, config, mixing).transpose(1, 0, 2)):
            for tile_a, tile_b, ratio, slope in _ratios(probe, a):
                ok = ratio > 0
                flagged += np.count_nonzero(np.isnan(ratio))
                invalid, total = invalid + np.count_nonzero(ratio <= 0), total + len(ratio)
                if ok.any():  # the mean log ratio, and its read-noise scale: rms slope / sqrt(reads)
                    rows.append((tile_a, tile_b, np.mean(np.log(ratio[ok] * nominal[tile_b] / nominal[tile_a])),
                                 np.sqrt(np.mean(slope[ok] ** 2) / np.count_nonzero(ok))))
    if invalid > MAX_INVALID * total:
        raise CalibrationFailed(f"{invalid} of the measured ratios have the wrong sign: equilibrium angles "
                                f"inconsistent with positive couplings and fields")
    if not rows:
        raise CalibrationFailed("no bond or field tile of this rig could be measured")
    x, used, residual = _fit(layout.n_tiles, np.array(rows, dtype=float), layout.bias_tile)
    measured = np.flatnonzero(np.isfinite(x))
    scale = np.ones(layout.n_tiles)
    scale[measured] = np.exp(x[measured])
    first = next((c for c in configs if any(p.bond is not None for p in c.probes)), None)
    linearity = _range_check(session, mixing, first)
    n_bonds = len(session.topology.bonds)
    return {"efficiency_scale": scale, "measured_tiles": measured}, {
        "fit_rms_log": float(np.sqrt(np.mean(residual ** 2))), "n_ratios": int(used.sum()),
        "ratios_rejected": int(len(used) - used.sum()), "reads_wrong_sign": int(invalid),
        "reads_flagged": int(flagged), "n_bonds": n_bonds,
        "bonds_not_measurable": int(np.count_nonzero(~np.isfinite(x[:n_bonds]))), "configurations": len(configs),
        "probes": len(probes), "range_max_rel_deviation": linearity, "spot_mixing_max": mixing.max_leak}


def _range_check(session: RigSession, mixing: SpotMixing, config: _Config | None, settings=(0.1, 0.5, 0.9),
                 repeats: int = 2) -> float:
    """Largest relative departure from proportionality, W(eta)/W(ETA) against eta/ETA, over a few bonds measured
    together (W against the geometric mean of the two fields): how well the encoding's setting -> strength map
    holds across the range (nan if no bond could be checked)."""
    if config is None:
        return float("nan")
    checked = [k for k, p in enumerate(config.probes) if p.bond is not None][:4]

    def strength(eta):  # every bond of the configuration at eta, the first few evaluated
        a = _angles(session, config, mixing, eta, repeats).transpose(1, 0, 2)
        r = np.array([[ratio for *_, ratio, _ in _ratios(config.probes[k], a[k])] for k in checked])
        return np.exp(np.nanmean(np.log(np.where(r > 0, r, np.nan)), axis=(1, 2)))  # (bonds,) of (bonds, 2, reads)

    base = strength(ETA)
    worst = [np.abs(strength(e) / base / (e / ETA) - 1) for e in settings]
    return float(np.nanmax(worst))


def transfer_truth_error(truth, arrays: dict) -> dict:
    """Relative rms error of the measured gains against the hidden ones (same normalisation). The rig's hidden
    gain g multiplies a tile's first-order amplitude, so its efficiency -- the strength -- by g^2."""
    tiles = arrays["measured_tiles"]
    scale = arrays["efficiency_scale"][tiles]
    true = truth.tile_gain[tiles] ** 2
    ratio = scale / true
    ratio /= np.exp(np.mean(np.log(ratio)))
    return {"gain_rms_rel": float(np.sqrt(np.mean((ratio - 1) ** 2)))}
