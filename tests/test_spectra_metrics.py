"""D_MA, singular values and the collapse metrics (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import linvae_jax as lv
from linvae_jax._src import metrics, spectra
from linvae_jax._src.model import Posterior


def test_dma_definition_sorting_and_padding():
  # App. A: both sorted non-increasing, shorter padded with zeros.
  assert float(lv.dma(jnp.array([1.0, 3.0]), jnp.array([3.0, 1.0]))) == 0.0
  got = lv.dma(jnp.array([2.0, 1.0, 0.5]), jnp.array([3.0]))
  np.testing.assert_allclose(got, (1.0 + 1.0 + 0.5) / 3, rtol=1e-15)
  batched = lv.dma(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 1.0]))
  np.testing.assert_allclose(batched, [0.5, 1.0], rtol=1e-15)


def test_svdvals_gradient_finite_at_collapsed_modes():
  # Exactly rank-1 matrix: two zero singular values (degenerate).
  m = jnp.outer(jnp.array([1.0, 2.0, 0.0]), jnp.array([0.5, 0.0, 1.0]))
  g = jax.grad(lambda a: lv.dma(lv.svdvals(a), jnp.array([1.0, 0.5, 0.0])))(m)
  assert np.all(np.isfinite(np.asarray(g)))


def test_safe_sqrt_gradient():
  g = jax.vmap(jax.grad(spectra.safe_sqrt))(jnp.array([-1.0, 0.0, 4.0]))
  np.testing.assert_allclose(g, [0.0, 0.0, 0.25], rtol=1e-15)


def _post(rng, d=3, din=4):
  return Posterior(mean_map=jnp.asarray(rng.normal(size=(d, din)) * np.array([[1.0], [0.05], [0.0]])),
                   var=jnp.array([0.3, 0.9, 1.0]), prior_var=jnp.asarray(1.0))


def test_kl_and_collapse_probability_against_monte_carlo():
  rng = np.random.default_rng(0)
  post = _post(rng)
  mean = np.array([0.5, -0.2, 0.1, 0.0])
  g = rng.normal(size=(4, 4))
  cov = g @ g.T / 4
  second = cov + np.outer(mean, mean)
  u = rng.multivariate_normal(mean, cov, size=400_000)
  kl = np.asarray(metrics.kl_samples(post, jnp.asarray(u)))
  # direct per-sample Gaussian KL, independent of the helper
  mu = u @ np.asarray(post.mean_map).T
  v = np.asarray(post.var)
  kl_ref = 0.5 * (v + mu ** 2 - 1.0 - np.log(v))
  np.testing.assert_allclose(kl, kl_ref, rtol=1e-12)
  mc_mean, se = kl_ref.mean(0), kl_ref.std(0) / np.sqrt(len(u))
  z = (np.asarray(metrics.kl_per_dim(post, jnp.asarray(second))) - mc_mean) / np.maximum(se, 1e-300)
  assert np.all(np.abs(z[:2]) < 4.5), z  # MC |z| bound
  np.testing.assert_allclose(metrics.kl_per_dim(post, jnp.asarray(second))[2], 0.0, atol=1e-15)
  for eps in (0.05, 0.3, 1.0):
    p = np.asarray(metrics.collapse_prob_gaussian(post, jnp.asarray(mean), jnp.asarray(second), eps))
    frac = (kl_ref < eps).mean(0)
    se = np.sqrt(frac * (1 - frac) / len(u)) + 1e-12
    assert np.all(np.abs(p - frac) < 4.5 * se + 1e-6), (eps, p, frac)
    np.testing.assert_allclose(
        metrics.collapse_fraction_empirical(post, jnp.asarray(u), eps), frac, rtol=1e-12)


def test_chi2_closed_form_zero_mean():
  # Zero-mean u: P[KL < eps] = F_chi2_1((2 eps - g)/s^2) (Lucas et al. closed form).
  post = Posterior(mean_map=jnp.array([[0.7, 0.2]]), var=jnp.array([0.5]), prior_var=jnp.asarray(1.0))
  cov = jnp.array([[1.0, 0.3], [0.3, 2.0]])
  s2 = float(jnp.array([0.7, 0.2]) @ cov @ jnp.array([0.7, 0.2]))
  g = 0.5 - 1 - np.log(0.5)
  for eps in (0.2, 0.5):
    p = metrics.collapse_prob_gaussian(post, jnp.zeros(2), cov, eps)
    np.testing.assert_allclose(p, stats.chi2(1).cdf((2 * eps - g) / s2), rtol=1e-12)


def test_au_rank_and_exact_collapse():
  rng = np.random.default_rng(1)
  post = _post(rng)
  second, mean = jnp.eye(4), jnp.zeros(4)
  au = metrics.active_units(post, second, mean)
  assert list(np.asarray(au)) == [True, False, False]
  col = metrics.eps_delta_collapsed(post, mean, second, 0.01, 0.05)
  assert bool(col[2]) and not bool(col[0])  # var = prior, zero map: exact collapse
  assert int(metrics.rank_active(jnp.array([3.0, 1e-2, 1e-9]))) == 2
  assert int(metrics.rank_active(jnp.array([3.0, 1e-2, 1e-9]), rtol=0.1)) == 1


def test_per_coordinate_prior_variance_broadcasts():
  # Same result as a scalar prior when the (d,) prior is constant.
  rng = np.random.default_rng(2)
  post = _post(rng)
  vec = Posterior(mean_map=post.mean_map, var=post.var, prior_var=jnp.full((3,), 1.0))
  u = jnp.asarray(rng.normal(size=(50, 4)))
  np.testing.assert_allclose(metrics.kl_samples(vec, u), metrics.kl_samples(post, u), rtol=1e-15)
  np.testing.assert_allclose(metrics.kl_per_dim(vec, jnp.eye(4)), metrics.kl_per_dim(post, jnp.eye(4)), rtol=1e-15)
