"""Coupling and injection transfer: the gain of every bond, bias and nudge tile, from equilibrium angles.

Equilibria depend only on ratios of strengths, so gains are measured relative to each other and normalised to
a mean bias-tile gain of one. Spins are read by phase shifting with the spot map, path offsets and gray ->
phase table already applied; a gauge spin k, locked to phase 0 by its clamp tile and far (in tile order) from
the spins under test, fixes the global phase.

* Bond b = (i, j), everything else dark: a field f_i at phase pi/2 on i and f_j at phase 0 on j (each from the
  spin's bias or nudge tile, whichever touches neither the other nor the bond tile). The equilibrium of
  E = -W cos(phi_i - phi_j) - f_i sin(phi_i) - f_j cos(phi_j) gives
  W/f_i = cos(phi_i) / sin(phi_i - phi_j) and W/f_j = sin(phi_j) / sin(phi_i - phi_j).
* Nudge of spin i: bias h_i at phase 0 and nudge n_i at phase pi/2 on an otherwise dark spin: n_i/h_i = tan(phi_i).
  (The bond field tiles alternate between bias and nudge tiles, which links the two kinds as well.)

All tiles under test show the same efficiency, so encoding errors common to a setting cancel; each measured
ratio divided by the nominal one is a ratio of tile gains, and log-gains follow by least squares over all of
them. Tiles that share an edge on the SLM are never lit together, nor next to the (strong-gain) clamp tile of a
spin under test: crosstalk would bias the ratio. A bond whose tile cannot be kept apart is reported as not
measurable and keeps gain 1. Finally a few bonds are measured at several efficiencies to check that strength
stays proportional to the encoded efficiency across the range (quality ``range_max_rel_deviation``). The result is ``efficiency_scale`` per tile (1 where not measured, e.g. clamp tiles, which
only need to be strong), which the encoding divides every target efficiency by.
"""

from __future__ import annotations

import numpy as np

from .session import CalibrationFailed, RigSession
from .spots import MIN_MODULATION

ETA = 0.25  # efficiency used for the tiles under test
REPEATS = 2  # phase-shifting reads averaged per configuration


def _read(session: RigSession, eta, alpha, gauge: int, repeats: int = REPEATS) -> np.ndarray:
    """Spin angles relative to the gauge spin, circular mean over ``repeats`` phase-shifting reads."""
    layout = session.layout
    offsets = layout.calibration.path_offsets
    reads = []
    for _ in range(repeats):
        frames, steps = session.phase_stack(eta, alpha)
        est = session.read_spots(frames, steps)
        session.require_light(frames, est.modulation, MIN_MODULATION)
        theta = est.theta - (0.0 if offsets is None else np.asarray(offsets))
        reads.append(theta - theta[gauge])
    return np.angle(np.mean(np.exp(1j * np.array(reads)), axis=0))


def _touching(session: RigSession, tiles) -> np.ndarray:
    """Boolean (len(tiles), n_tiles): which tiles share an edge with each of ``tiles`` in the SLM tile grid."""
    layout = session.layout
    origin = layout.tile_origin // layout.config.tile_px
    d = np.abs(origin[np.asarray(tiles)][:, None, :] - origin[None, :, :]).sum(-1)
    return d == 1


def _gauge_for(session: RigSession, busy: set[int], active: np.ndarray) -> int:
    """A spin whose clamp tile touches no active tile, and whose clamp's leak into its neighbouring clamp tiles
    (spins k +- 1) cannot reach a spin under test."""
    clamps = session.layout.clamp_tile
    touching = _touching(session, clamps)
    for k in range(session.n_spins):
        if all(abs(k - i) > 1 for i in busy) and not touching[k, active].any():
            return k
    raise CalibrationFailed("no spin is free to serve as the phase gauge (too few spins on this rig)")


def _apart(session: RigSession, tiles) -> bool:
    """True when no two of ``tiles`` share an edge (so tile crosstalk cannot couple them)."""
    return not _touching(session, tiles)[:, np.asarray(tiles)].any()


def measure_transfer(session: RigSession) -> tuple[dict, dict]:
    layout, gains = session.layout, session.layout.config.gains
    n_bonds, n = len(session.topology.bonds), session.n_spins
    rows, rhs, skipped = [], [], []
    strength = {"coupling": gains.coupling * ETA, "bias": gains.bias * ETA, "nudge": gains.nudge * ETA}
    kind_of = {**{int(t): "bias" for t in layout.bias_tile}, **{int(t): "nudge" for t in layout.nudge_tile}}

    def equation(bond_or_field: int, field: int, ratio: float) -> None:
        """log g[first] - log g[field] = log(measured / nominal strength ratio)."""
        row = np.zeros(layout.n_tiles)
        row[bond_or_field], row[field] = 1.0, -1.0
        first = "coupling" if bond_or_field < n_bonds else kind_of[bond_or_field]
        rows.append(row)
        rhs.append(np.log(ratio * strength[kind_of[field]] / strength[first]))

    for b, pair in enumerate(session.topology.bonds):
        for i, j in (pair, pair[::-1]):  # both roles, so piston-dependent encoding errors average out
            # field on i at phase pi/2, on j at phase 0, from tiles touching neither each other nor the bond
            options = [(layout.bias_tile[i], layout.nudge_tile[j]), (layout.nudge_tile[i], layout.bias_tile[j]),
                       (layout.bias_tile[i], layout.bias_tile[j]), (layout.nudge_tile[i], layout.nudge_tile[j])]
            guard = [layout.clamp_tile[i], layout.clamp_tile[j]]  # a leak into these would act on i or j
            choice = next((o for o in options if _apart(session, [b, *o, *guard])), None)
            if choice is None:
                skipped.append(b)
                continue
            fi, fj = choice
            eta, alpha = session.settings()
            eta[[b, fi, fj]] = ETA
            alpha[fi] = np.pi / 2
            k = _gauge_for(session, {i, j}, np.flatnonzero(eta))
            eta[layout.clamp_tile[k]] = 1.0
            phi = _read(session, eta, alpha, k)
            s = np.sin(phi[i] - phi[j])
            r_i, r_j = np.cos(phi[i]) / s, np.sin(phi[j]) / s
            if min(r_i, r_j) <= 0:
                raise CalibrationFailed(f"bond {b} ({i}-{j}): equilibrium angles inconsistent with a positive "
                                        f"coupling")
            equation(b, fi, r_i)
            equation(b, fj, r_j)
    linearity = _range_check(session, [b for b in range(n_bonds) if b not in skipped][:4])
    for i in range(n):  # nudge against bias of the same spin: n_i/h_i = tan(phi_i)
        if not _apart(session, [layout.bias_tile[i], layout.nudge_tile[i], layout.clamp_tile[i]]):
            continue
        eta, alpha = session.settings()
        eta[[layout.bias_tile[i], layout.nudge_tile[i]]] = ETA
        alpha[layout.nudge_tile[i]] = np.pi / 2
        k = _gauge_for(session, {i}, np.flatnonzero(eta))
        eta[layout.clamp_tile[k]] = 1.0
        phi = _read(session, eta, alpha, k)
        equation(layout.nudge_tile[i], layout.bias_tile[i], np.tan(phi[i]))
    rows = np.array(rows)
    measured = np.flatnonzero(np.abs(rows).sum(0))
    norm = np.zeros(layout.n_tiles)
    norm[layout.bias_tile] = 1.0 / n
    x, *_ = np.linalg.lstsq(np.vstack([rows[:, measured], norm[measured]]), np.append(rhs, 0.0), rcond=None)
    scale = np.ones(layout.n_tiles)
    scale[measured] = np.exp(x)
    fit = rows[:, measured] @ x - np.array(rhs)
    return {"efficiency_scale": scale, "measured_tiles": measured}, {
        "fit_rms_log": float(np.sqrt(np.mean(fit ** 2))), "n_ratios": len(rhs), "n_bonds": n_bonds,
        "bonds_not_measurable": len(set(skipped)), "range_max_rel_deviation": linearity}


def _bond_ratio(session: RigSession, b: int, eta_bond: float) -> float | None:
    """W/f_i for bond b at bond efficiency ``eta_bond`` (fields at ETA), or None if the tiles touch."""
    layout = session.layout
    i, j = session.topology.bonds[b]
    fi, fj = layout.bias_tile[i], layout.nudge_tile[j]
    if not _apart(session, [b, fi, fj, layout.clamp_tile[i], layout.clamp_tile[j]]):
        return None
    eta, alpha = session.settings()
    eta[b], eta[[fi, fj]], alpha[fi] = eta_bond, ETA, np.pi / 2
    k = _gauge_for(session, {i, j}, np.flatnonzero(eta))
    eta[layout.clamp_tile[k]] = 1.0
    phi = _read(session, eta, alpha, k)
    return float(np.cos(phi[i]) / np.sin(phi[i] - phi[j]))


def _range_check(session: RigSession, bonds: list[int], settings=(0.1, 0.5, 0.9)) -> float:
    """Largest relative departure from proportionality, W(eta)/W(ETA) against eta/ETA, over a few bonds: how
    well the encoding's setting -> strength map holds across the range (nan if no bond could be checked)."""
    worst = []
    for b in bonds:
        base = _bond_ratio(session, b, ETA)
        if base is None:
            continue
        for e in settings:
            worst.append(abs(_bond_ratio(session, b, e) / base / (e / ETA) - 1))
    return float(max(worst)) if worst else float("nan")


def transfer_truth_error(truth, arrays: dict) -> dict:
    """Relative rms error of the measured gains against the hidden ones (same normalisation). The rig's hidden
    gain g multiplies a tile's first-order amplitude, so its efficiency -- the strength -- by g^2."""
    tiles = arrays["measured_tiles"]
    scale = arrays["efficiency_scale"][tiles]
    true = truth.tile_gain[tiles] ** 2
    ratio = scale / true
    ratio /= np.exp(np.mean(np.log(ratio)))
    return {"gain_rms_rel": float(np.sqrt(np.mean((ratio - 1) ** 2)))}
