"""Sample-based collapse metrics on constructed posteriors with closed-form answers (float64)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linvae_jax._src import nonlinear_metrics as nm


def _signs(n, seed=0):
  """+-1 column with exactly n/2 of each sign: mean 0, sum of squares n."""
  s = np.ones(n)
  s[: n // 2] = -1.0
  return np.random.default_rng(seed).permutation(s)


def test_gaussian_kl_closed_form():
  mu = jnp.array([[1.0, 0.0, 2.0]])
  std = jnp.array([[1.0, 0.5, 2.0]])
  kl = nm.gaussian_kl(mu, std, 2.0)
  # 0.5 [(s^2 + m^2)/p^2 - 1 - log(s^2/p^2)], p = 2
  want = [0.5 * (2 / 4 - 1 - math.log(1 / 4)), 0.5 * (0.25 / 4 - 1 - math.log(0.25 / 4)),
          0.5 * (8 / 4 - 1 - 0.0)]
  np.testing.assert_allclose(kl[0], want, rtol=1e-14)  # float64
  assert float(nm.gaussian_kl(jnp.zeros((1, 1)), jnp.ones((1, 1)), 1.0)[0, 0]) == 0.0


def test_au_kl_and_collapse_counts_on_a_constructed_posterior():
  n = 200
  s = _signs(n)
  # coordinate 0: mu = +-1 (Var = n/(n-1) > 0.01); 1: mu = +-0.05 (Var 0.0025 n/(n-1));
  # 2: mu = 0 (collapsed, std = prior)
  mu = jnp.asarray(np.stack([s, 0.05 * s, np.zeros(n)], axis=1))
  std = jnp.asarray(np.array([0.5, 1.0, 1.0]))
  np.testing.assert_allclose(nm.mean_variance(mu), [n / (n - 1), 0.0025 * n / (n - 1), 0.0],
                             rtol=1e-13, atol=1e-300)  # float64
  assert int(nm.active_units(mu)) == 1
  assert int(nm.active_units(mu, threshold=1e-3)) == 2
  kl = nm.gaussian_kl(mu, std, 1.0)
  want = np.array([0.5 * (0.25 + 1 - 1 - math.log(0.25)), 0.5 * 0.0025, 0.0])
  np.testing.assert_allclose(nm.kl_per_dim(kl), want, rtol=1e-13, atol=1e-300)  # float64
  np.testing.assert_allclose(nm.kl_total(kl), want.sum(), rtol=1e-13)  # float64
  # KL of coordinate 1 is 0.00125 < 0.01 everywhere, coordinate 2 is 0: 2 collapsed
  np.testing.assert_array_equal(nm.eps_delta_collapsed(kl, 0.01, 0.05), [False, True, True])
  assert int(nm.n_eps_delta_collapsed(kl, 0.001, 0.05)) == 1
  # Dang's AU: pairs with KL >= 0.01 are coordinate 0's n of 3n
  np.testing.assert_allclose(nm.dang_au(kl), 1.0 / 3.0, rtol=1e-14)  # float64
  np.testing.assert_allclose(nm.mean_std(jnp.broadcast_to(std, mu.shape)), std, rtol=0)


def test_collapse_fraction_counts_examples():
  kl = jnp.asarray(np.array([[0.0, 1.0], [0.005, 1.0], [0.02, 0.0], [0.5, 0.0]]))
  np.testing.assert_allclose(nm.collapse_fraction(kl, 0.01), [0.5, 0.5], rtol=0)
  np.testing.assert_array_equal(nm.eps_delta_collapsed(kl, 0.01, 0.5), [True, True])
  np.testing.assert_array_equal(nm.eps_delta_collapsed(kl, 0.01, 0.4), [False, False])
  np.testing.assert_allclose(nm.dang_au(kl), 0.5, rtol=0)


@pytest.mark.parametrize("shape", [(300, 16), (1000, 16), (7, 3)])
def test_dang_au_is_in_unit_interval_at_the_extremes(shape):
  # full collapse is exactly 0 (1 - mean gave -2e-15), full activity at most 1
  for dt in (jnp.float32, jnp.float64):
    assert float(nm.dang_au(jnp.zeros(shape, dt))) == 0.0
    assert 1.0 - 1e-6 <= float(nm.dang_au(jnp.ones(shape, dt))) <= 1.0  # float32 rounding


def test_cov_rank_is_rotation_invariant_au_is_not():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(500, 2))
  w = np.array([[1.0, 0.0], [0.0, 0.5], [0.0, 0.0]])      # rank 2 in d = 3, axis aligned
  q = np.linalg.qr(rng.normal(size=(3, 3)))[0]               # rotate the latent space
  mu_axis = jnp.asarray(x @ w.T)
  mu_rot = jnp.asarray(x @ (q @ w).T)
  assert int(nm.active_units(mu_axis)) == 2 and int(nm.mean_cov_rank(mu_axis)) == 2
  assert int(nm.active_units(mu_rot)) == 3                   # every rotated coordinate varies
  assert int(nm.mean_cov_rank(mu_rot)) == 2
  np.testing.assert_allclose(nm.mean_cov_eigvals(mu_rot), nm.mean_cov_eigvals(mu_axis),
                             rtol=1e-10, atol=1e-12)  # float64


def test_mutual_information_of_a_linear_gaussian_encoder():
  # x ~ N(0, I_2), q(z|x) = N(W x, s^2 I): I(x; z) = 1/2 log det(I + W W^T / s^2)
  rng = np.random.default_rng(2)
  n, s = 4000, 0.6
  w = np.array([[1.0, 0.3], [0.0, 0.4]])
  x = rng.normal(size=(n, 2))
  mu = jnp.asarray(x @ w.T)
  exact = 0.5 * np.linalg.slogdet(np.eye(2) + w @ w.T / s ** 2)[1]
  mi = float(nm.mutual_information(jax.random.key(0), mu, jnp.full((n, 2), s)))
  assert abs(mi - exact) < 0.05, (mi, exact)  # estimator error at n = 4000 (measured ~0.01)
  # a collapsed encoder (mu constant) carries no information
  mi0 = float(nm.mutual_information(jax.random.key(1), jnp.zeros((n, 2)), jnp.ones((n, 2))))
  assert abs(mi0) < 0.05, mi0


def test_mutual_information_in_row_blocks_equals_the_full_matrix(monkeypatch):
  # n = 1100 rows: two full blocks of 512 and a padded one of 76
  rng = np.random.default_rng(4)
  mu = jnp.asarray(rng.normal(size=(1100, 3)))
  std = jnp.asarray(rng.uniform(0.3, 1.5, size=(1100, 3)))
  blocked = float(nm.mutual_information(jax.random.key(5), mu, std))
  monkeypatch.setattr(nm, "MI_ROW_BLOCK", 10 ** 6)
  full = float(nm.mutual_information(jax.random.key(5), mu, std))
  np.testing.assert_allclose(blocked, full, rtol=1e-12)  # float64


def test_log_q_matrix_matches_direct_evaluation():
  rng = np.random.default_rng(3)
  mu, std, z = rng.normal(size=(5, 3)), rng.uniform(0.5, 2, size=(5, 3)), rng.normal(size=(5, 3))
  direct = np.array([[np.sum(-0.5 * ((z[i] - mu[j]) / std[j]) ** 2 - np.log(std[j])
                             - 0.5 * np.log(2 * np.pi)) for j in range(5)] for i in range(5)])
  np.testing.assert_allclose(nm.log_q_matrix(jnp.asarray(z), jnp.asarray(mu), jnp.asarray(std)),
                             direct, rtol=1e-12)  # float64


def test_iw_estimate_closed_forms():
  # constant weights: the estimate is exact and has no Monte-Carlo error
  lw = jnp.asarray(np.repeat(np.array([[-1.0], [-3.0]]), 8, axis=1))
  out = nm.iw_estimate(lw)
  np.testing.assert_allclose(out["iw_ll"], -2.0, rtol=1e-15)  # float64
  assert float(out["iw_ll_mc_se"]) == 0.0
  np.testing.assert_allclose(out["iw_ll_se"], np.std([-1.0, -3.0], ddof=1) / np.sqrt(2), rtol=1e-14)
  # two weights log(1), log(3): log mean = log 2; ELBO = mean log w
  out = nm.iw_estimate(jnp.log(jnp.array([[1.0, 3.0], [1.0, 3.0]])))
  np.testing.assert_allclose(out["iw_ll"], math.log(2.0), rtol=1e-14)  # float64
  np.testing.assert_allclose(out["elbo_iw"], 0.5 * math.log(3.0), rtol=1e-14)  # float64
  # the IW bound is above the ELBO (Jensen)
  assert float(out["iw_ll"]) >= float(out["elbo_iw"])


def test_summary_is_jittable_and_vmappable():
  rng = np.random.default_rng(4)
  mu = jnp.asarray(rng.normal(size=(3, 50, 4)))
  std = jnp.asarray(rng.uniform(0.3, 1.0, size=(3, 50, 4)))
  f = jax.jit(jax.vmap(lambda m, s, p: nm.latent_summary(jax.random.key(0), m, s, p)))
  out = f(mu, std, jnp.array([1.0, 2.0, 0.5]))
  assert out["kl_per_dim"].shape == (3, 4) and out["au"].shape == (3,)
  one = nm.latent_summary(jax.random.key(0), mu[1], std[1], 2.0)
  np.testing.assert_allclose(out["kl"][1], one["kl"], rtol=1e-12)  # float64
  np.testing.assert_allclose(out["mi"][1], one["mi"], rtol=1e-10)  # float64


@pytest.mark.parametrize("call, match", [
    (lambda kl, mu: nm.collapse_fraction(kl, -0.1), "eps must be >= 0"),
    (lambda kl, mu: nm.eps_delta_collapsed(kl, float("nan"), 0.05), "eps must be finite"),
    (lambda kl, mu: nm.eps_delta_collapsed(kl, 0.01, 1.5), "delta must be a probability"),
    (lambda kl, mu: nm.active_units(mu, float("nan")), "threshold must be finite"),
    (lambda kl, mu: nm.dang_au(kl, -1.0), "threshold must be >= 0"),
    (lambda kl, mu: nm.mean_cov_rank(mu, -1.0), "threshold must be >= 0"),
    (lambda kl, mu: nm.gaussian_kl(mu, 1.0, 0.0), "prior_std must be > 0"),
    (lambda kl, mu: nm.active_units(mu[0]), "must be 2-D"),
    (lambda kl, mu: nm.mutual_information(jax.random.key(0), mu[:1], 1.0), "at least 2 examples"),
    (lambda kl, mu: nm.iw_estimate(kl[0]), "log_w must be"),
])
def test_bad_metric_parameters_raise(call, match):
  kl = jnp.ones((4, 2))
  mu = jnp.ones((4, 2))
  with pytest.raises(ValueError, match=match):
    call(kl, mu)
