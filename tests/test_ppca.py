"""pPCA and the exact-posterior linear VAE (Lucas et al. 2019), float64.

Checks follow the theory notes §2 (L1-L5, L7) and §3 (X1): scipy for the
log-likelihood, tests/bruteforce.py for every maximum.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import bruteforce
import linvae_jax as lv
from linvae_jax._src import ppca
from linvae_jax._src.models import vae as vae_lib

LAM = np.array([8.0, 5.0, 3.0, 1.6, 1.0, 0.6])  # population spectrum, n = 6
K = 3


@functools.lru_cache(maxsize=None)
def cov(lam=tuple(LAM), seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(lam), len(lam))))
  return q @ np.diag(lam) @ q.T


def _rand(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


# --------------------------------------------------------------- L1, L2 --

def test_loglik_matches_scipy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 6)) @ np.diag(np.sqrt(LAM)) + 1.5
  mu = x.mean(0)
  s = (x - mu).T @ (x - mu) / x.shape[0]  # divisor N
  w, s2 = _rand(1, 6, K), 0.7
  ref = scipy.stats.multivariate_normal(mu, np.asarray(w @ w.T) + s2 * np.eye(6)).logpdf(x)
  np.testing.assert_allclose(ppca.ppca_loglik(w, s2, s), ref.mean(), rtol=1e-12)  # float64
  np.testing.assert_allclose(ppca.ppca_loglik(w, s2, s, count=500.0), ref.sum(), rtol=1e-12)


def test_ml_solution_against_brute_force():
  s = cov()
  sol = ppca.ppca_ml(s, K)
  np.testing.assert_allclose(sol.sigma2, LAM[K:].mean(), rtol=1e-12)  # float64
  np.testing.assert_allclose(sol.loglik, ppca.ppca_loglik(sol.W, sol.sigma2, s), rtol=1e-12)
  np.testing.assert_allclose(jnp.sort(jnp.diagonal(sol.W.T @ sol.W))[::-1],
                             LAM[:K] - LAM[K:].mean(), rtol=1e-10)  # float64
  val, p, _ = bruteforce.minimize(
      lambda p: -ppca.ppca_loglik(p[0], jnp.exp(p[1]), s),
      lambda k: (jax.random.normal(k, (6, K), jnp.float64), jnp.zeros((), jnp.float64)),
      n_starts=2)
  np.testing.assert_allclose(-val, sol.loglik, rtol=1e-10)  # float64
  np.testing.assert_allclose(jnp.exp(p[1]), sol.sigma2, rtol=1e-6)  # float64, optimiser tol


# ------------------------------------------------------------------- L3 --

@pytest.mark.parametrize("sigma2,active", [
    (2.0, 3), (4.0, 2), pytest.param(0.8, 3, marks=pytest.mark.slow),
    pytest.param(9.0, 0, marks=pytest.mark.slow)])
def test_fixed_sigma2_maximiser(sigma2, active):
  s = cov()
  sol = ppca.ppca_fixed_sigma2(s, K, sigma2)
  assert int(jnp.sum(sol.active)) == active
  np.testing.assert_allclose(sol.loglik, ppca.ppca_loglik(sol.W, sigma2, s), rtol=1e-12)  # float64
  val, _, _ = bruteforce.minimize(lambda w: -ppca.ppca_loglik(w, sigma2, s),
                                  lambda k: jax.random.normal(k, (6, K), jnp.float64), n_starts=2)
  np.testing.assert_allclose(-val, sol.loglik, rtol=1e-10)  # float64


# -------------------------------------------------------------- X1, L4 --

def test_elbo_equals_linear_vae_loss_under_mapping():
  """-ELBO_LTGN == LinearVAE.loss on centred moments, beta = eta_enc = 1, eta_dec^2 = sigma^2."""
  s = cov()
  m = lv.moments_from_second_moments(s, centred=True)
  model = vae_lib.LinearVAE(K)
  for seed in range(3):
    w, v = _rand(10 + seed, 6, K), _rand(20 + seed, K, 6)
    d = jnp.exp(_rand(30 + seed, K))
    s2 = 0.3 + seed
    h = lv.as_hyper({"beta": 1.0, "eta_enc": 1.0, "eta_dec": np.sqrt(s2)})
    got = -ppca.ltgn_elbo(w, v, d, s2, s)
    want = model.loss(vae_lib.VAEParams(U=w, W=v, sigma_raw=jnp.log(d)), m, h)
    np.testing.assert_allclose(got, want, rtol=1e-12)  # float64


def test_profiled_elbo():
  s = cov()
  w, s2 = _rand(3, 6, K), 0.9
  v, d = ppca.ltgn_optimal_encoder(w, s2)
  prof = ppca.ltgn_profiled_elbo(w, s2, s)
  np.testing.assert_allclose(ppca.ltgn_elbo(w, v, d, s2, s), prof, rtol=1e-12)  # float64
  assert float(ppca.ltgn_elbo_gap(w, s2)) > 1e-3  # generic W: W^T W not diagonal
  val, p, _ = bruteforce.minimize(
      lambda p: -ppca.ltgn_elbo(w, p[0], jnp.exp(p[1]), s2, s),
      lambda k: (jax.random.normal(k, (K, 6), jnp.float64), jnp.zeros((K,), jnp.float64)),
      n_starts=2)
  np.testing.assert_allclose(-val, prof, rtol=1e-10)  # float64
  np.testing.assert_allclose(p[0], v, atol=1e-6)  # float64, optimiser tol
  np.testing.assert_allclose(jnp.exp(p[1]), d, atol=1e-6)
  # Gap vanishes iff W^T W is diagonal (orthogonal columns).
  q, _ = jnp.linalg.qr(w)
  np.testing.assert_allclose(ppca.ltgn_elbo_gap(q * jnp.asarray([2.0, 1.0, 0.5])[None, :], s2), 0.0,
                             atol=1e-14)  # float64


# ------------------------------------------------------------------- L5 --

def test_vae_optimum_equals_ppca_max():
  s = cov()
  opt, ml = ppca.ltgn_vae_optimum(s, K), ppca.ppca_ml(s, K)
  np.testing.assert_allclose(opt.elbo, ml.loglik, rtol=1e-14)  # float64
  np.testing.assert_allclose(ppca.ltgn_elbo(opt.W, opt.V, opt.D, opt.sigma2, s), ml.loglik,
                             rtol=1e-12)  # float64
  np.testing.assert_allclose(jnp.sort(opt.D), jnp.sort(opt.sigma2 / LAM[:K]), rtol=1e-10)
  # Fixed sigma2 = 4: column 3 collapses with q(z_3|x) = p(z_3): V row 0, D = 1.
  fx = ppca.ltgn_vae_optimum(s, K, 4.0)
  np.testing.assert_array_equal(fx.active, [True, True, False])
  np.testing.assert_allclose(fx.D[2], 1.0, rtol=1e-15)
  np.testing.assert_allclose(fx.V[2], 0.0, atol=1e-15)
  np.testing.assert_allclose(ppca.ltgn_elbo(fx.W, fx.V, fx.D, 4.0, s), fx.elbo, rtol=1e-12)


@pytest.mark.slow
def test_vae_optimum_brute_force():
  """Brute-force ELBO max over (W, V, log D, log sigma2) = pPCA max; columns = PCs."""
  s = cov()
  ml = ppca.ppca_ml(s, K)

  def init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return (jax.random.normal(k1, (6, K), jnp.float64), jax.random.normal(k2, (K, 6), jnp.float64),
            0.1 * jax.random.normal(k3, (K,), jnp.float64), jnp.zeros((), jnp.float64))
  val, p, _ = bruteforce.minimize(lambda p: -ppca.ltgn_elbo(p[0], p[1], jnp.exp(p[2]), jnp.exp(p[3]), s),
                                  init, n_starts=3)
  np.testing.assert_allclose(-val, ml.loglik, rtol=1e-10)  # float64
  # U_e^T W is a signed permutation of diag(sqrt(lambda_j - sigma2)).
  ue = np.linalg.eigh(s)[1][:, ::-1][:, :K]
  proj = np.abs(ue.T @ np.asarray(p[0]))
  np.testing.assert_allclose(np.sort(proj.max(0))[::-1], np.sqrt(LAM[:K] - LAM[K:].mean()), atol=1e-5)
  np.testing.assert_allclose(np.sort(proj, axis=0)[:-1], 0.0, atol=1e-5)  # one nonzero per column


# ------------------------------------------------------------------- L7 --

@pytest.mark.parametrize("sigma2", [0.8, 2.5])
def test_stationary_points_classification(sigma2):
  lam = (5.0, 3.0, 2.0, 1.0, 0.5)
  s = cov(lam, 4)
  k = 2
  pts = ppca.stationary_points(s, k, sigma2)
  n_above = sum(l > sigma2 for l in lam)
  assert len(pts) == sum(len(list(itertools.combinations(range(n_above), r)))
                         for r in range(min(k, n_above) + 1))
  f = lambda w: ppca.ppca_loglik(w, sigma2, s)
  grad, hess = jax.jit(jax.grad(f)), jax.jit(jax.hessian(f))
  n_max = 0
  for pt in pts:
    w = jnp.asarray(pt["W"])
    np.testing.assert_allclose(grad(w), 0.0, atol=1e-12)  # float64: stationary
    top = np.linalg.eigvalsh(np.asarray(hess(w)).reshape(5 * k, 5 * k))[-1]
    # Local max: Hessian NSD (zero only along rotations); saddle: clearly positive.
    assert (top < 1e-10) == pt["local_max"], (pt["J"], top)
    assert top < 1e-10 or top > 1e-3
    n_max += pt["local_max"]
  # The only local maximum is the fixed-sigma2 global maximum.
  assert n_max == 1
  best = [pt for pt in pts if pt["local_max"]][0]
  np.testing.assert_allclose(f(jnp.asarray(best["W"])), ppca.ppca_fixed_sigma2(s, k, sigma2).loglik,
                             rtol=1e-12)  # float64


# ------------------------------------------------------------ Fig 2 --

def test_fig2_blue_line():
  s = cov()
  qs, q0 = [1, 2, 3, 4, 5], 2
  got = ppca.fig2_blue_line(s, qs, q0)
  s0 = ppca.ppca_ml(s, q0).sigma2
  want = [ppca.ppca_loglik(ppca.ppca_ml(s, q).W, s0, s) for q in qs]
  np.testing.assert_allclose(got, want, rtol=1e-12)  # float64


# ------------------------------------------------------------------ input --

def test_bad_input_raises():
  s = cov()
  with pytest.raises(ValueError, match="k must"):
    ppca.ppca_ml(s, 6)
  with pytest.raises(ValueError, match="sigma2"):
    ppca.ppca_fixed_sigma2(s, 2, -1.0)
  with pytest.raises(ValueError, match="S"):
    ppca.ppca_ml(-s, 2)
  with pytest.raises(ValueError, match="W must"):
    ppca.ppca_loglik(jnp.ones((5, 2)), 1.0, s)
  with pytest.raises(ValueError, match="sigma2"):
    ppca.stationary_points(s, 2, 0.0)
