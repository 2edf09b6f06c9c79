"""Camera readout: phase shifting (least squares and closed forms), off-axis demodulation, flags, gauge."""

import numpy as np
import pytest

from xyoptics.core.angles import wrap
from xyoptics.hil import readout
from xyoptics.hil.readout import (expected_phase_noise, five_step, fix_gauge, four_step, off_axis, phase_shifting,
                                  pool_spots, pooled_noise, spot_flags, spot_values, three_step)


def angle_diff(a, b):
    return np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))


def fringes(a, b, theta, deltas):
    """I_n = A + B cos(theta - delta_n), shape (N,) + theta.shape."""
    d = np.asarray(deltas, float).reshape((-1,) + (1,) * np.ndim(theta))
    return a + b * np.cos(theta - d)


@pytest.mark.parametrize("n", range(3, 9))
def test_least_squares_exact_for_arbitrary_steps(n):
    rng = np.random.default_rng(100 + n)
    theta = rng.uniform(-np.pi, np.pi, 50)
    a, b = rng.uniform(2, 5, 50), rng.uniform(0.2, 1.5, 50)
    deltas = rng.uniform(0, 2 * np.pi, n)
    est = phase_shifting(fringes(a, b, theta, deltas), deltas)
    np.testing.assert_allclose(angle_diff(est.theta, theta), 0, atol=1e-10)
    np.testing.assert_allclose(est.modulation, b, atol=1e-10)
    np.testing.assert_allclose(est.background, a, atol=1e-10)
    np.testing.assert_allclose(est.residual, 0, atol=1e-10)
    assert np.all((est.theta > -np.pi) & (est.theta <= np.pi))


def test_least_squares_vectorised_over_pixels():
    rng = np.random.default_rng(1)
    theta = rng.uniform(-np.pi, np.pi, (7, 9))
    deltas = np.array([0.1, 1.3, 2.0, 4.4, 5.5])
    est = phase_shifting(fringes(1.0, 0.5, theta, deltas), deltas)
    assert est.theta.shape == (7, 9)
    np.testing.assert_allclose(angle_diff(est.theta, theta), 0, atol=1e-10)


@pytest.mark.parametrize("closed, deltas", [
    (three_step, np.arange(3) * 2 * np.pi / 3),
    (four_step, np.arange(4) * np.pi / 2),
    (five_step, np.arange(-2, 3) * np.pi / 2),
])
def test_closed_forms_equal_least_squares(closed, deltas):
    rng = np.random.default_rng(7)
    theta = rng.uniform(-np.pi, np.pi, 40)
    a, b = rng.uniform(2, 5, 40), rng.uniform(0.2, 1.5, 40)
    frames = fringes(a, b, theta, deltas)
    ls, cf = phase_shifting(frames, deltas), closed(*frames)
    for field in ("theta", "modulation", "background", "residual"):
        np.testing.assert_allclose(getattr(cf, field), getattr(ls, field), atol=1e-10, err_msg=field)
    np.testing.assert_allclose(angle_diff(cf.theta, theta), 0, atol=1e-10)


def test_four_and_five_step_textbook_formulas():
    theta, a, b = 0.7, 3.0, 1.0
    i1, i2, i3, i4 = fringes(a, b, theta, np.arange(4) * np.pi / 2)
    assert np.isclose(np.arctan2(i2 - i4, i1 - i3), theta)
    j1, j2, j3, j4, j5 = fringes(a, b, theta, np.arange(-2, 3) * np.pi / 2)
    # Textbook Hariharan sign assumes cos(theta + delta): it returns -theta in our cos(theta - delta) model.
    assert np.isclose(np.arctan2(2 * (j2 - j4), 2 * j3 - j5 - j1), -theta)
    assert np.isclose(five_step(j1, j2, j3, j4, j5).theta, theta)


@pytest.mark.parametrize("n", [4, 8])
def test_noise_matches_small_noise_formula(n):
    rng = np.random.default_rng(2024 + n)
    trials, a, b, sigma = 4000, 10.0, 1.0, 0.05  # B / sigma_I = 20
    theta = rng.uniform(-np.pi, np.pi, trials)
    deltas = np.arange(n) * 2 * np.pi / n
    frames = fringes(a, b, theta, deltas) + rng.normal(0, sigma, (n, trials))
    est = phase_shifting(frames, deltas)
    rms = np.sqrt(np.mean(angle_diff(est.theta, theta) ** 2))
    expected = expected_phase_noise(n, sigma, b)
    assert abs(rms / expected - 1) < 0.2, (rms, expected)
    # The residual estimates sigma_I (chi with N - 3 dof, so single values are noisy for small N).
    assert abs(np.sqrt(np.mean(est.residual ** 2)) / sigma - 1) < 0.1
    np.testing.assert_allclose(est.quality, est.modulation / (est.residual + readout.QUALITY_EPS))


# ---- synthetic camera scene -------------------------------------------------------------------------------

SHAPE = (64, 64)
CENTERS = np.array([[16.0, 16.0], [16.0, 47.0], [47.0, 17.0], [46.0, 46.0]])
WIDTH = 3.5  # Gaussian spot sigma, pixels
PERIOD = 4.2  # carrier period, pixels
CARRIER = 2 * np.pi / PERIOD * np.array([np.sin(0.5), np.cos(0.5)])  # (ky, kx) rad/pixel


def profiles(centers=CENTERS, width=WIDTH):
    rows, cols = np.indices(SHAPE)
    d2 = (rows - centers[:, 0, None, None]) ** 2 + (cols - centers[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * width ** 2))  # (n_spots, H, W)


def render(amps, thetas, delta, carrier=CARRIER, r=1.0):
    """I = |sum_i a_i e^{i theta_i} g_i + r e^{i (delta + k_c.x)}|^2."""
    rows, cols = np.indices(SHAPE)
    spots = np.tensordot(amps * np.exp(1j * thetas), profiles(), axes=1)
    ref = r * np.exp(1j * (delta + carrier[0] * rows + carrier[1] * cols))
    return np.abs(spots + ref) ** 2


def test_off_axis_agrees_with_phase_shifting():
    rng = np.random.default_rng(5)
    amps = np.array([1.0, 0.8, 1.2, 0.6])
    thetas = rng.uniform(-np.pi, np.pi, 4)
    deltas = np.arange(4) * np.pi / 2
    frames = np.stack([render(amps, thetas, d) for d in deltas]) + rng.normal(0, 0.01, (4,) + SHAPE)
    w = profiles()

    single = off_axis(frames[0], CARRIER, w, piston=deltas[0])
    pixel = phase_shifting(frames, deltas)
    pooled = pool_spots(pixel, w, CARRIER)

    # Both share the pixel origin, so they agree before and after gauge fixing on a reference spot (which then
    # reads exactly reference_phase). (The circular-mean gauge amplifies errors when |sum e^{i theta}| is small,
    # as it can be for 4 random phases, so the comparison uses a reference spot.)
    assert np.max(np.abs(angle_diff(single.theta, pooled.theta))) < 0.05
    ga = fix_gauge(single.theta, reference_index=2, reference_phase=0.3)
    gb = fix_gauge(pooled.theta, reference_index=2, reference_phase=0.3)
    assert np.isclose(ga[2], 0.3) and np.isclose(gb[2], 0.3)
    assert np.max(np.abs(angle_diff(ga, gb))) < 0.05
    assert np.max(np.abs(angle_diff(gb, fix_gauge(thetas, 2, 0.3)))) < 0.05
    # Both modulations are the weight-averaged B = 2 a r <g>_w, with <g>_w = sum g^2 / sum g = 1/2 for Gaussians.
    np.testing.assert_allclose(single.modulation, amps, rtol=0.05)
    np.testing.assert_allclose(pooled.modulation, amps, rtol=0.05)
    assert np.all(np.isnan(single.residual))


def test_spot_integration_on_axis_and_flags():
    rng = np.random.default_rng(9)
    amps = np.array([1.0, 3.0, 1.0, 1e-3])  # spot 1 bright (will clip), spot 3 nearly dark
    thetas = rng.uniform(-np.pi, np.pi, 4)
    deltas = np.arange(4) * np.pi / 2
    on_axis = np.zeros(2)
    frames = np.stack([render(amps, thetas, d, carrier=on_axis) for d in deltas])
    saturation = 6.0  # peak intensity is (a + r)^2: 4 for the dim spots, 16 for the bright one
    clipped = np.minimum(frames, saturation)
    w = profiles()

    values, sat = spot_values(clipped, w, saturation=saturation)
    assert values.shape == (4, 4)
    np.testing.assert_array_equal(sat, [False, True, False, False])
    est = phase_shifting(values, deltas)
    flags = spot_flags(est, sat, n_frames=4, noise_factor=1e-3, dark_noise=0.1)  # noise 0.1 per spot value
    np.testing.assert_array_equal(flags["saturated"], [False, True, False, False])
    np.testing.assert_array_equal(flags["dead_spot"], [False, False, False, True])  # B < 5 x 0.071
    np.testing.assert_array_equal(flags["low_modulation"], [False] * 4)  # the dead spot is not also "low"
    # relative fallback without a calibrated reference: below 0.1 x the median modulation of the frame
    relative = spot_flags(est, sat, n_frames=4, noise_factor=1e-3)
    np.testing.assert_array_equal(relative["low_modulation"] | relative["dead_spot"], [False, False, False, True])
    # a clipped spot's frames do not fit the fringe model, yet it is flagged saturated only, never dead
    clipped_flags = spot_flags(est, sat, n_frames=4, noise_factor=1.0)
    assert clipped_flags["saturated"][1] and not clipped_flags["dead_spot"][1]
    # Unsaturated, well-modulated spots read their true phase from spot-integrated values.
    ok = [0, 2]
    np.testing.assert_allclose(angle_diff(est.theta[ok], thetas[ok]), 0, atol=1e-6)
    assert not spot_values(frames[0], w)[1].any()  # no saturation level: never flagged


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least 3 frames"):
        phase_shifting(np.ones((2, 5)), [0.0, np.pi / 2])
    with pytest.raises(ValueError, match="degenerate"):
        phase_shifting(np.ones((4, 5)), [0.3] * 4)
    with pytest.raises(ValueError, match="degenerate"):
        phase_shifting(np.ones((4, 5)), [0.3, 0.3 + 2 * np.pi, 0.3 - 2 * np.pi, 0.3 + 4 * np.pi])
    with pytest.raises(ValueError, match="degenerate"):
        phase_shifting(np.ones((4, 5)), [0.0, np.pi, 0.0, np.pi])  # sin(delta) never sampled
    with pytest.raises(ValueError, match="frames but"):
        phase_shifting(np.ones((4, 5)), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="spots must be"):
        off_axis(np.ones(SHAPE), CARRIER, np.ones((2, 8, 8)))


def test_pooled_noise_matches_a_monte_carlo_average():
    rng = np.random.default_rng(4)
    w = profiles()
    sigma = rng.uniform(0.5, 2.0, w.shape[1:])  # per-pixel noise, counts
    draws = rng.normal(0.0, 1.0, (4000,) + w.shape[1:]) * sigma
    averages = np.tensordot(draws, w, axes=([1, 2], [1, 2])) / w.sum(axis=(1, 2))
    np.testing.assert_allclose(pooled_noise(w, sigma), averages.std(axis=0), rtol=0.05)


def test_absolute_floors_against_the_calibrated_references():
    est = readout.PhaseEstimate(np.zeros(5), np.array([100.0, 20.0, 100.0, 0.3, 4.0]), np.zeros(5),
                                np.array([1.0, 1.0, 9.0, 1.0, 1.0]))
    flags = spot_flags(est, [False, False, False, True, False], n_frames=4, noise_factor=0.1, dark_noise=0.2,
                       modulation_ref=np.full(5, 100.0), residual_ref=np.full(5, 1.0))
    np.testing.assert_array_equal(flags["low_modulation"], [False, True, False, False, False])   # 20 < 25
    np.testing.assert_array_equal(flags["reference_mismatch"], [False, False, True, False, False])  # 9 > 4 x 1
    # 0.3 < 5 x 0.71 x 0.2 (noise); 4 > that noise floor but < 5 % of the calibrated 100 (leaked light)
    np.testing.assert_array_equal(flags["dead_spot"], [False, False, False, False, True])  # spot 3: saturated only
    np.testing.assert_array_equal(flags["saturated"], [False, False, False, True, False])
    frozen = readout.PhaseEstimate(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))  # identical frames
    assert spot_flags(frozen, False, n_frames=4, noise_factor=0.1)["dead_spot"].all()


def test_wrap_and_gauge():
    w = wrap(np.array([np.pi, -np.pi, 3 * np.pi, 0.0, -1e-20, 2 * np.pi + 0.1]))
    np.testing.assert_allclose(w, [np.pi, np.pi, np.pi, 0.0, -1e-20, 0.1], atol=1e-12)
    theta = np.array([[0.1, 0.5, 3.0], [1.0, 1.4, -2.3]])
    shifted = fix_gauge(theta + 1.7)
    np.testing.assert_allclose(shifted, fix_gauge(theta), atol=1e-12)
    np.testing.assert_allclose(fix_gauge(theta, 0)[:, 0], 0, atol=1e-15)
    assert np.isclose(expected_phase_noise(8, 0.05, 1.0), 0.025)
