"""Synthetic data generators: exact designs, population moments, streaming."""
import numpy as np
import pytest

from linvae_jax._src import moments as mo
from linvae_jax._src.data import synthetic as syn


def _np(a):
  return np.asarray(a, np.float64)


def _random_psd(rng, d, rank=None):
  g = rng.standard_normal((d, rank or d))
  return g @ g.T / d


# ------------------------------------------------------------ exact design --

@pytest.mark.parametrize("centred", [False, True])
def test_exact_design_reproduces_target_vae(rng, centred):
  target = _random_psd(rng, 6, rank=4)  # rank-deficient on purpose
  s = syn.exact_design(50, target, centred=centred, seed=1,
                       mean_x=np.arange(6.0) if centred else None)
  m = mo.from_arrays(s.x, centred=centred)
  # float64: sample moment equals the target to round-off
  np.testing.assert_allclose(_np(m.xx), target, rtol=0, atol=1e-12)
  if centred:
    np.testing.assert_allclose(_np(m.mean_x), np.arange(6.0), rtol=0, atol=1e-12)
  assert float(m.count) == 50


def test_exact_design_reproduces_target_cvae(rng):
  d0, d2 = 4, 5
  joint = _random_psd(rng, d0 + d2)
  a, c, b = joint[:d0, :d0], joint[:d0, d0:], joint[d0:, d0:]
  s = syn.exact_design(30, a, b, c, seed=3)
  m = mo.from_arrays(s.x, s.y)
  for got, want in ((m.xx, a), (m.yy, b), (m.xy, c)):
    np.testing.assert_allclose(_np(got), want, rtol=0, atol=1e-12)  # float64
  # the returned moments are the target itself
  np.testing.assert_allclose(_np(s.moments.xy), c, rtol=0, atol=0)


def test_exact_design_is_seeded(rng):
  t = _random_psd(rng, 3)
  a, b, c = (syn.exact_design(10, t, seed=k).x for k in (7, 7, 8))
  np.testing.assert_array_equal(a, b)
  assert np.max(np.abs(a - c)) > 1e-3


def test_exact_design_bad_input(rng):
  with pytest.raises(ValueError, match="n \\(number of samples\\)"):
    syn.exact_design(3, np.eye(4))
  with pytest.raises(ValueError, match="xx"):
    syn.exact_design(10, -np.eye(2))
  with pytest.raises(ValueError, match="given together"):
    syn.exact_design(10, np.eye(2), yy=np.eye(2))
  with pytest.raises(ValueError, match="joint moment"):  # |C| too large for A, B
    syn.exact_design(10, np.eye(2), np.eye(2), 2 * np.eye(2))
  with pytest.raises(ValueError, match="centred=True"):
    syn.exact_design(10, np.eye(2), mean_x=1.0)


# --------------------------------------------------- population generators --

def test_gaussian_population_and_sample(rng):
  w = np.array([4.0, 2.0, 1.0, 0.25])
  q = syn.random_orthogonal(4, seed=5)
  np.testing.assert_allclose(q.T @ q, np.eye(4), rtol=0, atol=1e-13)  # float64
  mean = np.array([1.0, -1.0, 0.5, 0.0])
  s = syn.gaussian(200_000, w, rotation=q, mean=mean, seed=2)
  pop = _np(s.moments.xx)
  np.testing.assert_allclose(pop, (q * w) @ q.T + np.outer(mean, mean), rtol=0, atol=1e-13)
  # theta = sqrt(eig(A)) of the centred population is sqrt(w)
  cen = syn.gaussian(10, w, rotation=q, mean=mean, seed=2, centred=True).moments
  np.testing.assert_allclose(_np(mo.theta(cen)), np.sqrt(w), rtol=1e-12)  # float64
  # sample vs population: Monte Carlo, 200k samples, entries O(1) -> 5 sigma ~ 0.05
  np.testing.assert_allclose(_np(mo.from_arrays(s.x).xx), pop, rtol=0, atol=0.05)


def test_gaussian_rotation_random_and_given():
  w = np.array([3.0, 1.0, 0.5])
  a = syn.gaussian(5, w, rotation="random", seed=4)
  b = syn.gaussian(5, w, rotation="random", seed=4)
  np.testing.assert_array_equal(a.x, b.x)
  np.testing.assert_allclose(np.linalg.eigvalsh(_np(a.moments.xx))[::-1], w, rtol=1e-12)
  assert np.max(np.abs(_np(a.moments.xx) - np.diag(w))) > 1e-3  # really rotated
  with pytest.raises(ValueError, match="rotation is not orthogonal"):
    syn.gaussian(5, w, rotation=2 * np.eye(3))
  with pytest.raises(ValueError, match="rotation has shape"):
    syn.gaussian(5, w, rotation=np.eye(2))
  with pytest.raises(ValueError, match="eigvals must be >= 0"):
    syn.gaussian(5, [1.0, -1.0])


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, 1.0])
def test_cvae_rho_residual_moment(rho):
  s = syn.cvae_rho(4000, 6, rho, seed=0)
  e = _np(mo.residual_moment(s.moments))
  np.testing.assert_allclose(e, (1 - rho**2) * np.eye(6), rtol=0, atol=1e-12)  # float64
  # the sample's E is close: Monte Carlo with n = 4000 -> entries within 0.1
  es = _np(mo.residual_moment(mo.from_arrays(s.x, s.y)))
  np.testing.assert_allclose(es, (1 - rho**2) * np.eye(6), rtol=0, atol=0.1)
  if rho == 1.0:
    np.testing.assert_array_equal(s.x, s.y)


def test_cvae_rho_bad_input():
  with pytest.raises(ValueError, match="rho"):
    syn.cvae_rho(10, 2, 1.5)


def test_cvae_gaussian_general_cross_covariance(rng):
  d0, d2 = 3, 4
  joint = _random_psd(rng, d0 + d2)
  cx, cxy, cy = joint[:d0, :d0], joint[:d0, d0:], joint[d0:, d0:]
  mx, my = rng.standard_normal(d0), rng.standard_normal(d2)
  s = syn.cvae_gaussian(100, cx, cy, cxy, mean_x=mx, mean_y=my, seed=1)
  np.testing.assert_allclose(_np(s.moments.xy), cxy + np.outer(mx, my), rtol=0, atol=1e-13)
  # centred population E is the Gaussian conditional covariance
  cen = syn.cvae_gaussian(10, cx, cy, cxy, mean_x=mx, mean_y=my, centred=True).moments
  want = cy - cxy.T @ np.linalg.solve(cx, cxy)
  np.testing.assert_allclose(_np(mo.residual_moment(cen)), want, rtol=0, atol=1e-11)  # float64
  with pytest.raises(ValueError, match="joint covariance"):
    syn.cvae_gaussian(10, np.eye(2), np.eye(2), 3 * np.eye(2))


def test_regression_residual_is_noise(rng):
  m = rng.standard_normal((5, 3))
  s = syn.regression(50, m, x_eigvals=[2.0, 1.0, 0.5], noise_std=0.3, seed=0)
  np.testing.assert_allclose(_np(mo.residual_moment(s.moments)), 0.09 * np.eye(5),
                             rtol=0, atol=1e-12)  # float64
  # noiseless: y is exactly M x
  s0 = syn.regression(20, m, noise_std=0.0, seed=0)
  np.testing.assert_allclose(s0.y, s0.x @ m.T, rtol=0, atol=0)
  with pytest.raises(ValueError, match="noise_std"):
    syn.regression(5, m, noise_std=-1.0)


def test_straddling_spectrum():
  t = 0.5 * 0.7**2  # beta * eta_dec^2
  w = syn.straddling_spectrum(t, 3, 4, margin=0.2, ratio=2.0)
  assert w.shape == (7,) and np.all(np.diff(w) < 0)
  assert np.sum(w > t) == 3
  assert np.all(np.abs(w / t - 1) >= 0.2 - 1e-15)  # float64 margin
  np.testing.assert_allclose(w[2], 1.2 * t, rtol=1e-15)
  np.testing.assert_allclose(w[3], 0.8 * t, rtol=1e-15)
  # used as A's spectrum: exactly 3 modes above threshold
  s = syn.exact_design(20, np.diag(w), seed=0)
  assert int(np.sum(_np(mo.theta(mo.from_arrays(s.x))) ** 2 > t)) == 3
  for bad in (dict(margin=1.0), dict(ratio=1.0)):
    with pytest.raises(ValueError):
      syn.straddling_spectrum(t, 1, 1, **bad)
  with pytest.raises(ValueError, match="threshold"):
    syn.straddling_spectrum(0.0, 1, 1)


# --------------------------------------------------------------- streaming --

def test_from_batches_equals_from_arrays(rng):
  x = rng.standard_normal((1001, 5)) + 3.0
  y = rng.standard_normal((1001, 2))
  ref = mo.from_arrays(x, y)
  for bs in (1, 64, 1001, 5000):
    got = mo.from_batches(syn.iterate_batches(x, y, batch_size=bs))
    for a, b in ((got.xx, ref.xx), (got.yy, ref.yy), (got.xy, ref.xy), (got.mean_x, ref.mean_x)):
      np.testing.assert_allclose(_np(a), _np(b), rtol=1e-13, atol=0)  # float64 summation order
    assert float(got.count) == 1001


def test_rebatching_generator_of_chunks(rng):
  x = rng.standard_normal((100, 3))
  chunks = (x[s:s + k] for s, k in zip(range(0, 100, 7), [7] * 15))  # ragged last chunk
  batches = list(syn.iterate_batches(chunks, batch_size=16))
  assert [b.shape[0] for b in batches] == [16] * 6 + [4]
  np.testing.assert_array_equal(np.concatenate(batches), x)
  # single-sample rows and paired chunks
  rows = ((x[i], x[i, :2]) for i in range(100))
  m = syn.streaming_moments(rows, batch_size=32)
  np.testing.assert_allclose(_np(m.xy), x.T @ x[:, :2] / 100, rtol=1e-13)  # float64
  with pytest.raises(ValueError, match="all be"):
    list(syn.iterate_batches(iter([x[:2], (x[:2], x[:2])]), batch_size=4))


def test_float32_batches_accumulate_in_float64(rng):
  # large mean: a float32 accumulation of x^T x would lose ~4 digits here
  x32 = (1e3 + rng.standard_normal((200_000, 3))).astype(np.float32)
  ref = x32.astype(np.float64)
  want = ref.T @ ref / ref.shape[0]
  got = syn.streaming_moments(iter(np.array_split(x32, 37)), batch_size=4096)
  np.testing.assert_allclose(_np(got.xx), want, rtol=1e-13)  # float64 accumulation
  naive = np.zeros((3, 3), np.float32)
  for b in np.array_split(x32, 37):
    naive += b.T @ b
  naive /= np.float32(x32.shape[0])
  # the float32 path really is worse (so the check above can fail)
  assert np.max(np.abs(naive - want) / want) > 1e-9


def test_gaussian_batches_stream(rng):
  w = np.array([2.0, 1.0])
  a = list(syn.gaussian_batches(1000, w, batch_size=300, rotation="random", seed=3))
  b = list(syn.gaussian_batches(1000, w, batch_size=300, rotation="random", seed=3))
  assert [x.shape for x in a] == [(300, 2)] * 3 + [(100, 2)]
  assert a[0].dtype == np.float32
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  m = mo.from_batches(a)
  # Monte Carlo, n = 1000: eig(A) within 0.4 of (2, 1)
  np.testing.assert_allclose(np.linalg.eigvalsh(_np(m.xx))[::-1], w, atol=0.4)
