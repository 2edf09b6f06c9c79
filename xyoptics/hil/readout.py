"""Camera readout of spin phases: phase shifting, off-axis demodulation, spot integration, gauge fixing.

Model (DESIGN.md section 3). Spot i carries the field a_i e^{i theta_i} g(x - x_i), theta_i = phi_i + offset_i;
the reference r e^{i(delta + k_c.x)} overlaps all spots. Per pixel x (row, col, in pixels from the frame origin):

    I(x) = A(x) + B(x) cos(theta - delta - k_c.x),   A = |a g|^2 + r^2,   B = 2 |a g| r      (intensity units)

Phase shifting fits, per pixel or per spot-integrated value, I_n = A + B cos(theta - delta_n)
= A + C cos(delta_n) + S sin(delta_n) with C = B cos(theta), S = B sin(theta), so theta = atan2(S, C).
All angles are radians; theta is wrapped to (-pi, pi]. The phase noise of N equal steps over one period with
Gaussian intensity noise sigma_I is sigma_theta ~ sqrt(2/N) sigma_I / B (valid for B >> sigma_I).

Spot weights: ``spots`` is ``SpotPatches`` (each spot's weights on its own pixels, patches.py) or an array
(n_spots, H, W) of non-negative weights (e.g. the spot profile g, or a 0/1 disc mask). A pixel "contributes"
to a spot if its weight exceeds ``patches.CONTRIB_REL`` times the spot's largest weight. Spot integration of a tilted-reference scene washes out the fringes (the carrier averages to ~0 over a
spot): integrate with ``spot_values`` only for an on-axis reference (k_c = 0); otherwise phase-shift pixel-wise
and combine with ``pool_spots(..., carrier)`` (``pooled_phase_shifting`` does both on the spots' pixels only),
or use ``off_axis`` on a single frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.angles import wrap
from .patches import SpotPatches

MAX_COND = 1e10  # largest accepted condition number of the 3x3 normal matrix
QUALITY_EPS = 1e-12  # intensity units, keeps quality finite for exact (N = 3 or noiseless) fits


@dataclass
class PhaseEstimate:
    """Per-spot (or per-pixel) readout; all arrays share one shape.

    theta: phase in radians, wrapped to (-pi, pi]; modulation: fringe amplitude B >= 0 (intensity units);
    background: A (intensity units); residual: estimate of the per-frame intensity noise from the fit
    residuals, sqrt(sum_n r_n^2 / (N - 3)) (0 when N = 3, NaN where unavailable, e.g. single-shot off-axis).
    """

    theta: np.ndarray
    modulation: np.ndarray
    background: np.ndarray
    residual: np.ndarray

    @property
    def quality(self) -> np.ndarray:
        """Signal-to-noise figure B / (residual + QUALITY_EPS): ~ B / sigma_I; sigma_theta ~ sqrt(2/N) / quality.

        The residual has N - 3 degrees of freedom, so single values scatter widely for small N; uninformative
        for N = 3 (residual identically 0) and NaN for off-axis estimates.
        """
        return self.modulation / (self.residual + QUALITY_EPS)


def _estimate(frames, deltas, a, c, s) -> PhaseEstimate:
    """Build a PhaseEstimate from fitted A, C, S; residual = sqrt(SSR / (N - 3)), 0 for N = 3."""
    d = deltas.reshape((-1,) + (1,) * (frames.ndim - 1))
    model = a + c * np.cos(d) + s * np.sin(d)
    n = frames.shape[0]
    ssr = np.sum((frames - model) ** 2, axis=0)
    res = np.sqrt(ssr / (n - 3)) if n > 3 else np.zeros_like(ssr)
    return PhaseEstimate(wrap(np.arctan2(s, c)), np.hypot(c, s), a, res)


def _check(frames, deltas):
    frames = np.asarray(frames, dtype=float)
    return frames, _check_steps(frames.shape[0] if frames.ndim else 0, deltas)


def _check_steps(n_frames: int, deltas) -> np.ndarray:
    deltas = np.asarray(deltas, dtype=float).ravel()
    if n_frames < 3:
        raise ValueError(f"phase shifting needs at least 3 frames, got {n_frames}")
    if deltas.shape[0] != n_frames:
        raise ValueError(f"got {n_frames} frames but {deltas.shape[0]} reference pistons")
    if not np.all(np.isfinite(deltas)):
        raise ValueError("reference pistons must be finite")
    return deltas


def _design(deltas) -> tuple[np.ndarray, np.ndarray]:
    """X = [1, cos delta, sin delta] (N, 3) and the normal matrix X^T X; refuses degenerate steps."""
    x = np.stack([np.ones_like(deltas), np.cos(deltas), np.sin(deltas)], axis=1)
    m = x.T @ x
    cond = np.linalg.cond(m)
    if not np.isfinite(cond) or cond > MAX_COND:
        raise ValueError(f"degenerate reference pistons (normal matrix condition number {cond:.3g}): need at "
                         "least 3 distinct steps mod 2 pi that span the circle")
    return x, m


def phase_shifting(frames, deltas) -> PhaseEstimate:
    """Least-squares N-step phase shifting for arbitrary known reference pistons.

    frames: (N, ...) intensities, frame n taken at reference piston deltas[n] (radians); trailing dims are
    anything ((n_spots,) spot sums or (H, W) pixels). Fits I_n = A + C cos(delta_n) + S sin(delta_n) by solving the
    3x3 normal equations M [A, C, S] = X^T I once (X = [1, cos delta, sin delta]), vectorised over trailing dims;
    theta = atan2(S, C), B = hypot(C, S), so I_n = A + B cos(theta - delta_n).
    For N equal steps over one period this reduces to theta = atan2(sum I_n sin delta_n, sum I_n cos delta_n).
    Raises ValueError for N < 3 or degenerate steps (cond(M) > MAX_COND, e.g. all pistons equal mod 2 pi).
    """
    frames, deltas = _check(frames, deltas)
    x, m = _design(deltas)
    flat = frames.reshape(frames.shape[0], -1)
    a, c, s = np.linalg.solve(m, x.T @ flat).reshape((3,) + frames.shape[1:])
    return _estimate(frames, deltas, a, c, s)


def pooled_phase_shifting(values, deltas, patches: SpotPatches, carrier=(0.0, 0.0)) -> PhaseEstimate:
    """Phase shifting of every patch pixel pooled per spot: ``values`` (N, n_spots, P) are frames gathered at the
    patches (``SpotPatches.gather``). Equals ``pool_patches(phase_shifting(values), ...)``, computed by linearity
    without per-pixel angles: with K = M^-1 X^T (rows k_A, k_C, k_S), each pixel's fit is [A, C, S] = K I, so

        Z_i = sum_x w_i (C + i S) e^{i k_c.x} / sum_x w_i = sum_n (k_C,n + i k_S,n) V_n,i,
        V_n,i = sum_x w_i e^{i k_c.x} I_n(x) / sum_x w_i,

    the background is sum_n k_A,n U_n,i (U the plain weighted means), and each pixel's squared residual is
    |(1 - X K) I|^2 (1 - X K projects onto the fit's residual space). float32 values are contracted in float32
    (counts below 2^16 over ~100 pixels: 1e-6 relative), anything else in float64."""
    values = np.asarray(values)
    dtype = values.dtype if values.dtype in (np.float32, np.float64) else np.float64
    values, deltas = np.asarray(values, dtype=dtype), _check_steps(len(values), deltas)
    x, m = _design(deltas)
    k = np.linalg.inv(m) @ x.T  # (3, N)
    weights = patches.pooling_weights(carrier, dtype)  # (spots, P, 3)
    sums = np.matmul(values.transpose(1, 0, 2), weights).astype(np.float64)  # (spots, N, 3)
    plain, v_re, v_im = sums[:, :, 0], sums[:, :, 1], sums[:, :, 2]
    z = (v_re @ k[1] - v_im @ k[2]) + 1j * (v_im @ k[1] + v_re @ k[2])
    n = values.shape[0]
    if n > 3:
        projector = (np.eye(n) - x @ k).astype(dtype)
        residuals = (projector @ values.reshape(n, -1)).reshape(values.shape)
        res2 = np.einsum("sp,sp->s", weights[:, :, 0], np.einsum("nsp,nsp->sp", residuals, residuals)).astype(
            float) / (n - 3)
    else:
        res2 = np.zeros(len(patches))
    return PhaseEstimate(wrap(np.angle(z)), np.abs(z), plain @ k[0], np.sqrt(res2))


def three_step(i1, i2, i3) -> PhaseEstimate:
    """Closed form for pistons (0, 2 pi/3, 4 pi/3): theta = atan2(sqrt(3) (I2 - I3), 2 I1 - I2 - I3).

    C = (2 I1 - I2 - I3) / 3, S = (I2 - I3) / sqrt(3), A = (I1 + I2 + I3) / 3, B = hypot(C, S);
    identical to ``phase_shifting`` (exactly determined, so the residual is 0).
    """
    f = np.asarray([i1, i2, i3], dtype=float)
    c, s, a = (2 * f[0] - f[1] - f[2]) / 3, (f[1] - f[2]) / np.sqrt(3), f.mean(axis=0)
    return _estimate(f, np.array([0, 2, 4]) * np.pi / 3, a, c, s)


def four_step(i1, i2, i3, i4) -> PhaseEstimate:
    """Closed form for pistons (0, pi/2, pi, 3 pi/2): theta = atan2(I2 - I4, I1 - I3).

    C = (I1 - I3) / 2, S = (I2 - I4) / 2, A = (I1 + I2 + I3 + I4) / 4; equals the least-squares fit.
    """
    f = np.asarray([i1, i2, i3, i4], dtype=float)
    c, s, a = (f[0] - f[2]) / 2, (f[1] - f[3]) / 2, f.mean(axis=0)
    return _estimate(f, np.arange(4) * np.pi / 2, a, c, s)


def five_step(i1, i2, i3, i4, i5) -> PhaseEstimate:
    """Hariharan 5-step for pistons (-pi, -pi/2, 0, pi/2, pi) in the model I_n = A + B cos(theta - delta_n).

    Then I2 - I4 = -2 B sin(theta) and 2 I3 - I1 - I5 = 4 B cos(theta), so here
        theta = atan2(2 (I4 - I2), 2 I3 - I1 - I5).
    The textbook form atan2(2 (I2 - I4), 2 I3 - I5 - I1) assumes I = A + B cos(theta + delta_n) and gives -theta
    in this convention. C = (2 I3 - I1 - I5) / 4, S = (I4 - I2) / 2, A = (I1 + 2 I2 + 2 I3 + 2 I4 + I5) / 8.
    Insensitive to a linear piston-calibration error; equals the least-squares fit on noiseless data only.
    """
    f = np.asarray([i1, i2, i3, i4, i5], dtype=float)
    c, s = (2 * f[2] - f[0] - f[4]) / 4, (f[3] - f[1]) / 2
    a = (f[0] + 2 * f[1] + 2 * f[2] + 2 * f[3] + f[4]) / 8
    return _estimate(f, np.arange(-2, 3) * np.pi / 2, a, c, s)


def as_patches(spots, shape=None) -> SpotPatches:
    """Spot weights as ``SpotPatches`` (dense (n_spots, H, W) weights are converted), checked against a frame
    ``shape`` (H, W) when given."""
    patches = spots if isinstance(spots, SpotPatches) else SpotPatches.from_dense(spots)
    if shape is not None and patches.shape != tuple(shape):
        raise ValueError(f"spots must be weights of shape (n_spots, {shape[0]}, {shape[1]}), got spots on a "
                         f"{patches.shape[1]}x{patches.shape[0]} frame")
    return patches


def spot_values(frames, spots, saturation=None):
    """Integrate camera frames over spot weights: values[..., i] = sum_x w_i(x) I(x).

    frames: (..., H, W) (one frame or a stack); spots: ``SpotPatches`` or (n_spots, H, W) non-negative weights.
    Returns (values (..., n_spots), saturated (n_spots,) bool): a spot is saturated if any contributing pixel
    (weight > CONTRIB_REL x its max weight) is >= saturation in any of the frames (all False if saturation None).
    """
    frames = np.asarray(frames, dtype=float)
    patches = as_patches(spots, frames.shape[-2:])
    gathered = patches.gather(frames)
    values = np.einsum("...np,np->...n", gathered, patches.weight)
    sat = np.zeros(len(patches), bool) if saturation is None else patches.saturated(gathered, saturation)
    return values, sat


def off_axis(frame, carrier, spots, piston=0.0) -> PhaseEstimate:
    """Single-shot off-axis demodulation of one frame (H, W) taken at reference piston ``piston`` (radians).

    carrier (ky, kx) in rad/pixel, pixel coordinates x = (row, col) from the frame origin. With
    I = A + B cos(theta - piston - k_c.x), the weighted low-pass of the demodulated frame is
        Z_i = sum_x w_i I e^{+i k_c.x} / sum_x w_i  ~  (<B>_i / 2) e^{i (theta_i - piston)},
    so theta = arg(Z) + piston, modulation = 2 |Z| (weight-averaged B), background = weighted mean of I.
    (Demodulating with e^{-i k_c.x} as is also common gives -theta; we use the conjugate.)
    Requirements: carrier period 2 pi / |k_c| of several pixels (well below Nyquist, |k_c| < pi), and each spot
    spanning several carrier periods so that its weight suppresses the DC and 2 k_c terms. Residual is NaN.
    """
    frame = np.asarray(frame, dtype=float)
    if frame.ndim != 2:
        raise ValueError(f"off_axis takes one frame (H, W), got shape {frame.shape}")
    patches = as_patches(spots, frame.shape)
    return off_axis_patches(patches.gather(frame), carrier, patches, piston)


def off_axis_patches(values, carrier, patches: SpotPatches, piston=0.0) -> PhaseEstimate:
    """``off_axis`` of one frame gathered at the patches (``values`` (n_spots, P))."""
    z = patches.average(values * patches.carrier(carrier))
    return PhaseEstimate(wrap(np.angle(z) + piston), 2 * np.abs(z), patches.average(values),
                         np.full(len(patches), np.nan))


def pool_spots(estimate: PhaseEstimate, spots, carrier=(0.0, 0.0)) -> PhaseEstimate:
    """Combine a pixel-wise estimate (fields of shape (H, W)) into per-spot estimates (``pool_patches``)."""
    b = np.asarray(estimate.modulation, dtype=float)
    patches = as_patches(spots, b.shape)
    on_patches = PhaseEstimate(*(patches.gather(np.asarray(getattr(estimate, f), dtype=float))
                                 for f in ("theta", "modulation", "background", "residual")))
    return pool_patches(on_patches, patches, carrier)


def pool_patches(estimate: PhaseEstimate, patches: SpotPatches, carrier=(0.0, 0.0)) -> PhaseEstimate:
    """Per-spot estimates from a pixel-wise estimate on the patch pixels (fields of shape (n_spots, P)).

    Z_i = sum_x w_i B e^{i (theta + k_c.x)} / sum_x w_i (removes the carrier tilt theta(x) = theta_i - k_c.x);
    theta = arg Z, modulation = |Z| (weight-averaged B, as in ``off_axis``), background and residual are
    weight-averaged (residual as rms: sqrt(sum w res^2 / sum w)).
    """
    field = np.asarray(estimate.modulation) * np.exp(1j * np.asarray(estimate.theta)) * patches.carrier(carrier)
    z = patches.average(field)
    return PhaseEstimate(wrap(np.angle(z)), np.abs(z), patches.average(np.asarray(estimate.background)),
                         np.sqrt(patches.average(np.asarray(estimate.residual) ** 2)))


#: Quality floors of a spot measurement (absolute, from the calibration where there is one).
MIN_SNR = 5.0  # dead spot: fringe modulation below this many standard deviations of its noise ...
DEAD_FRACTION = 0.05  # ... or below this fraction of the spot's calibrated modulation (only leaked light left)
LOW_MODULATION_FRACTION = 0.25  # low modulation: below this fraction of the spot's calibrated modulation
MISMATCH_RATIO = 4.0  # reference mismatch: fit residual above this multiple of the calibrated residual


def pooled_noise(spots, pixel_noise) -> np.ndarray:
    """Standard deviation (counts) of a weight-averaged spot value sum_x w_i I(x) / sum_x w_i when every pixel
    has independent noise ``pixel_noise`` (scalar or (H, W)): sqrt(sum_x w_i^2 sigma(x)^2) / sum_x w_i."""
    patches = as_patches(spots)
    var = np.broadcast_to(np.asarray(pixel_noise, dtype=float) ** 2, patches.shape)
    return np.sqrt(np.einsum("np,np->n", patches.weight ** 2, patches.gather(var))) / patches.norm


def modulation_noise(est: PhaseEstimate, n_frames: int, noise_factor, dark_noise=None) -> np.ndarray:
    """Standard deviation sigma_B (counts) of each spot's pooled fringe modulation: sqrt(2 / n_frames) * sigma_I,
    sigma_I the larger of the fit's pooled residual (``est.residual * noise_factor``, noise_factor =
    sqrt(sum w^2) / sum w) and the calibrated dark noise pooled over the spot (``dark_noise``, counts)."""
    residual = np.nan_to_num(np.asarray(est.residual, dtype=float), nan=0.0)
    sigma_i = residual * np.asarray(noise_factor, dtype=float)
    if dark_noise is not None:
        sigma_i = np.maximum(sigma_i, np.asarray(dark_noise, dtype=float))
    return np.sqrt(2.0 / max(n_frames, 1)) * sigma_i


def spot_flags(est: PhaseEstimate, saturated, *, n_frames: int, noise_factor, dark_noise=None,
               modulation_ref=None, residual_ref=None, min_modulation=None) -> dict[str, np.ndarray]:
    """Boolean flags per spot of a pooled phase-shifting (or off-axis) estimate.

    * ``saturated``: passed through (a contributing pixel at the camera's full scale); a saturated spot gets no
      other flag (its clipped fringes do not fit the model, which says nothing more);
    * ``dead_spot``: B < MIN_SNR * sigma_B (``modulation_noise``): the fringe is not measurably there;
      or B < DEAD_FRACTION * ``modulation_ref``: what is left is light leaking in from neighbouring spots;
    * ``low_modulation``: B < LOW_MODULATION_FRACTION * ``modulation_ref`` (the spot's calibrated modulation);
      without one, B < ``min_modulation`` or, if that is None too, B < 0.1 * median(B) of the same frame;
    * ``reference_mismatch``: the residual exceeds MISMATCH_RATIO * ``residual_ref`` (the calibrated residual):
      the frames do not follow the reference steps (reference or SLM changed during the sequence).
    """
    b = np.asarray(est.modulation, dtype=float)
    residual = np.nan_to_num(np.asarray(est.residual, dtype=float), nan=0.0)
    dead = ~(b >= MIN_SNR * modulation_noise(est, n_frames, noise_factor, dark_noise)) | (b <= 0)
    if modulation_ref is not None:
        ref = np.asarray(modulation_ref, dtype=float)
        dead |= b < DEAD_FRACTION * ref
        low = b < LOW_MODULATION_FRACTION * ref
    else:
        low = b < (0.1 * np.median(b) if min_modulation is None else float(min_modulation))
    mismatch = np.zeros(b.shape, bool)
    if residual_ref is not None and n_frames > 3:
        mismatch = residual > MISMATCH_RATIO * np.asarray(residual_ref, dtype=float)
    sat = np.broadcast_to(np.asarray(saturated, bool), b.shape).copy()
    dead &= ~sat  # a clipped spot's fringes do not fit, but it is bright, not dead
    return {"saturated": sat, "dead_spot": dead, "low_modulation": low & ~dead & ~sat,
            "reference_mismatch": mismatch & ~dead & ~sat}


def fix_gauge(theta, reference_index=None, reference_phase=0.0):
    """Remove the global phase: theta - theta_ref + reference_phase, wrapped to (-pi, pi].

    theta_ref is theta[..., reference_index] if given, else the circular mean arg(sum_i e^{i theta_i}) over the
    last axis. The circular mean's error grows like 1 / |mean_i e^{i theta_i}|, so it is ill-conditioned when the
    phases are spread around the circle (as for a few random spins); prefer a bright reference spot then.
    """
    theta = np.asarray(theta, dtype=float)
    if reference_index is not None:
        ref = theta[..., reference_index]
    else:
        ref = np.angle(np.sum(np.exp(1j * theta), axis=-1))
    return wrap(theta - np.expand_dims(ref, -1) + reference_phase)


def expected_phase_noise(n_frames, sigma_i, modulation):
    """sigma_theta = sqrt(2 / N) sigma_I / B (radians) for N equal steps over one period, B >> sigma_I."""
    return np.sqrt(2.0 / n_frames) * np.asarray(sigma_i, float) / np.asarray(modulation, float)
