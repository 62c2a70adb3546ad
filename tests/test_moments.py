"""Data moments, whitening and the spectral quantities theta, zeta, R, E (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linvae_jax as lv
from linvae_jax._src import moments as M


def _low_rank_data(rng, n=400, d0=6, rank=4, d2=3, noise=0.3):
  x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d0)) + 0.5
  y = x @ rng.normal(size=(d0, d2)) + noise * rng.normal(size=(n, d2))
  return x, y


def test_from_arrays_matches_numpy_uncentred_and_centred(rng):
  x, y = _low_rank_data(rng)
  m = lv.moments_from_arrays(x, y)
  n = x.shape[0]
  np.testing.assert_allclose(m.xx, x.T @ x / n, rtol=1e-13)  # float64
  np.testing.assert_allclose(m.yy, y.T @ y / n, rtol=1e-13)
  np.testing.assert_allclose(m.xy, x.T @ y / n, rtol=1e-13)
  assert not m.paired and not m.centred and float(m.count) == n
  mc = lv.moments_from_arrays(x, y, centred=True)
  np.testing.assert_allclose(mc.xx, np.cov(x.T, bias=True), atol=1e-12)
  np.testing.assert_allclose(mc.xy, np.cov(x.T, y.T, bias=True)[:6, 6:], atol=1e-12)
  np.testing.assert_allclose(mc.x_factor @ mc.x_factor, mc.xx, atol=1e-11)


def test_streaming_equals_in_memory_and_accumulates_in_float64(rng):
  x, y = _low_rank_data(rng, n=1000)
  x32, y32 = x.astype(np.float32), y.astype(np.float32)
  batches = [(x32[i:i + 97], y32[i:i + 97]) for i in range(0, 1000, 97)]
  ms = lv.moments_from_batches(batches)
  mf = lv.moments_from_arrays(x32.astype(np.float64), y32.astype(np.float64))
  # identical float64 sums up to summation order: ~1e-14 relative (float64)
  np.testing.assert_allclose(ms.xx, mf.xx, rtol=1e-12)
  np.testing.assert_allclose(ms.xy, mf.xy, rtol=1e-12)
  assert ms.xx.dtype == jnp.float64


def test_paired_moments_alias_x():
  x = np.random.default_rng(1).normal(size=(50, 3))
  m = lv.moments_from_arrays(x)
  assert m.paired and m.yy is m.xx and m.xy is m.xx
  assert float(M.linear_residual(m)) == 0.0


def test_theta_zeta_and_residual_match_pinv_reference(rng):
  x, y = _low_rank_data(rng)
  m = lv.moments_from_arrays(x, y)
  a, b, c = (np.asarray(t) for t in (m.xx, m.yy, m.xy))
  w, v = np.linalg.eigh(a)
  keep = w > 1e-10 * w.max()
  assert keep.sum() == 5  # rank 4 plus the uncentred mean direction
  np.testing.assert_allclose(M.theta(m), np.sqrt(np.sort(np.where(keep, w, 0))[::-1]), atol=1e-10)
  z = c.T @ v[:, keep] / np.sqrt(w[keep])  # E[y x~^T]
  zeta_ref = np.linalg.svd(z, compute_uv=False)
  np.testing.assert_allclose(M.zeta(m)[:3], zeta_ref, rtol=1e-10)
  np.testing.assert_allclose(M.linear_residual(m), np.trace(b) - np.sum(zeta_ref ** 2), rtol=1e-9)
  e_ref = b - c.T @ np.linalg.pinv(a, rcond=1e-10) @ c
  np.testing.assert_allclose(M.residual_moment(m), e_ref, atol=1e-10)  # float64
  np.testing.assert_allclose(M.residual_eigvals(m), np.sort(np.linalg.eigvalsh(e_ref))[::-1], atol=1e-10)
  # regression residual trace equals R
  np.testing.assert_allclose(np.trace(e_ref), M.linear_residual(m), rtol=1e-9)


def test_whitening_cutoff_and_rank():
  a = np.diag([5.0, 2.0, 6e-9, 0.0, 0.0])  # MNIST-like tiny positive eigenvalue
  m = lv.moments_from_second_moments(a)
  p, phi, inv, mask = M.whitening(m)
  assert int(mask.sum()) == 3  # the default rtol D*eps keeps 6e-9 / 5 ~ 1e-9
  np.testing.assert_allclose(phi[:3], [5.0, 2.0, 6e-9], rtol=1e-12)
  assert np.all(np.asarray(inv[3:]) == 0.0)
  assert int(M.whitening(m, rtol=1e-8)[3].sum()) == 2


def test_population_moments_with_y():
  rng = np.random.default_rng(3)
  g = rng.normal(size=(5, 5))
  joint = g @ g.T
  m = lv.moments_from_second_moments(joint[:3, :3], joint[3:, 3:], joint[:3, 3:])
  assert m.dim_x == 3 and m.dim_y == 2 and np.isinf(float(m.count))


@pytest.mark.parametrize("bad, match", [
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "not symmetric"),
    (np.array([[1.0, 0.0], [0.0, -1.0]]), "indefinite"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "non-finite"),
    (np.ones((2, 3)), "square"),
])
def test_bad_second_moment_raises(bad, match):
  with pytest.raises(ValueError, match=match):
    lv.moments_from_second_moments(bad)


def test_bad_arrays_raise():
  with pytest.raises(ValueError, match="x must be 2-D"):
    lv.moments_from_arrays(np.ones(5))
  with pytest.raises(ValueError, match="y must be 2-D"):
    lv.moments_from_arrays(np.ones((5, 2)), np.ones((4, 2)))
  with pytest.raises(ValueError, match="non-finite"):
    lv.moments_from_arrays(np.array([[1.0, np.inf]]))
  with pytest.raises(ValueError, match="empty"):
    lv.moments_from_batches([])
  with pytest.raises(ValueError, match="yy and xy"):
    lv.moments_from_second_moments(np.eye(2), np.eye(2))
  with pytest.raises(ValueError, match="xy"):
    lv.moments_from_second_moments(np.eye(2), np.eye(3), np.zeros((3, 2)))
  # cross moment inconsistent with A, B: joint moment indefinite
  with pytest.raises(ValueError, match="joint"):
    lv.moments_from_second_moments(np.eye(2), np.eye(2), 3.0 * np.eye(2))


def test_moments_are_a_pytree_that_jits():
  m = lv.moments_from_arrays(np.random.default_rng(0).normal(size=(30, 3)))
  f = jax.jit(lambda mm: M.theta(mm))
  np.testing.assert_allclose(f(m), M.theta(m), rtol=1e-14)
  assert len(jax.tree.leaves(m)) == 7
