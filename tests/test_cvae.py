"""Linear CVAE (Dang et al. 2024 §4.1, Thm 2): loss, closed forms, errata.

Closed forms are checked against ``bruteforce.minimize`` on ``model.loss``.
Problems are built from population moments with a known residual moment:
A = Q diag(a) Q^T, C = A K^T, B = K A K^T + N, so E = B - C^T A^+ C = N and
theta = eig(N) is chosen per case relative to the threshold beta eta_dec^2.
All tolerances are float64.
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

sys.path.insert(0, os.path.dirname(__file__))
import bruteforce  # noqa: E402

import linvae_jax as lv  # noqa: E402
from linvae_jax._src import moments as moments_lib  # noqa: E402
from linvae_jax._src.models import cvae as cvae_lib  # noqa: E402
from linvae_jax._src.models.cvae import LinearCVAE  # noqa: E402

LOSS_RTOL = 1e-10     # float64, L* vs brute force, relative
SPEC_ATOL = 1e-6      # float64, omega / sigma_std vs brute force, absolute (values O(1))
REL7_ATOL = 1e-5      # float64, relations (7) on the brute-force minimiser, absolute
EXACT_RTOL = 1e-12    # float64, identities that are exact up to round-off
N_STARTS = 2


def _orth(rng, n):
  return np.linalg.qr(rng.normal(size=(n, n)))[0]


def problem(seed, d0, d2, noise_eigs, *, rank_a=None, k_scale=0.7, independent=False):
  """Population moments with E = N = P diag(noise_eigs) P^T (returns moments, E)."""
  rng = np.random.default_rng(seed)
  rank_a = d0 if rank_a is None else rank_a
  a_eigs = np.concatenate([rng.uniform(0.5, 2.5, rank_a), np.zeros(d0 - rank_a)])
  q = _orth(rng, d0)
  a = (q * a_eigs) @ q.T
  p = _orth(rng, d2)
  n = (p * np.asarray(noise_eigs, float)) @ p.T
  k = np.zeros((d2, d0)) if independent else k_scale * rng.normal(size=(d2, d0))
  c = a @ k.T
  b = k @ a @ k.T + n
  a, b = 0.5 * (a + a.T), 0.5 * (b + b.T)
  return lv.moments_from_second_moments(a, b, c), n


def equal_problem(seed, d):
  """x = y: A = B = C, E = 0 (complete collapse)."""
  rng = np.random.default_rng(seed)
  q = _orth(rng, d)
  a = (q * rng.uniform(0.5, 2.5, d)) @ q.T
  a = 0.5 * (a + a.T)
  return lv.moments_from_second_moments(a, a, a), np.zeros((d, d))


def hyper_of(beta, eta_enc, eta_dec, sigma=None):
  h = {"beta": beta, "eta_enc": eta_enc, "eta_dec": eta_dec}
  if sigma is not None:
    h["sigma"] = sigma
  return lv.as_hyper(h)


# name -> (problem builder, latent_dim, encoder_var, hyper); b = beta eta_dec^2.
CASES = {
    # b = beta eta_dec^2 = 2: theta = 3.0 active; 1.5 and 0.4 collapsed, and 1.5 lies in
    # [sqrt(beta) eta_dec, beta eta_dec^2), where the authors' sigma branch is wrong.
    # d0 = 4 != d2 = 3 (Z orientation erratum).
    "partial_diag": (lambda: problem(1, 4, 3, [3.0, 1.5, 0.4]), 3, "learnable",
                     hyper_of(2.0, 1.2, 1.0)),
    # fixed distinct diagonal stds: beta c^2 sigma'^2 = 0.16, 0.64, 1.44 vs theta 2.5, 1.0, 0.6.
    "fixed_diag": (lambda: problem(4, 3, 3, [2.5, 1.0, 0.6]), 3, "fixed",
                   hyper_of(1.0, 1.0, 1.0, [1.2, 0.4, 0.8])),
}
SLOW_CASES = {
    # E = B (C = 0): x independent of y, the least collapse for a given y.
    "independent_diag": (lambda: problem(2, 3, 3, [3.0, 1.5, 0.5], independent=True), 3,
                         "learnable", hyper_of(1.0, 1.0, 1.0)),
    # rank(A) = 2 < D0 = 4, rank(E) = 1 < D2 = 3 < d1 = 4, full Sigma.
    "rank_deficient_full": (lambda: problem(3, 4, 3, [2.0, 0.0, 0.0], rank_a=2), 4,
                            "learnable_full", hyper_of(0.7, 0.9, 1.1)),
    "none_full": (lambda: problem(5, 3, 3, [2.5, 1.8, 1.2]), 3, "learnable_full",
                  hyper_of(1.5, 1.2, 0.8)),
    "complete_diag": (lambda: problem(6, 5, 3, [0.7, 0.5, 0.2]), 2, "learnable",
                      hyper_of(1.5, 1.2, 0.8)),
    "equal_xy_diag": (lambda: equal_problem(7, 3), 2, "learnable", hyper_of(0.5, 1.0, 1.0)),
    "partial_full_d1_gt_d2": (lambda: problem(8, 3, 2, [3.0, 0.5]), 4, "learnable_full",
                              hyper_of(1.0, 1.3, 1.0)),
    "fixed_iso": (lambda: problem(9, 4, 3, [3.0, 1.2, 0.3]), 3, "fixed",
                  hyper_of(1.5, 1.1, 0.9, 0.7)),
    "fixed_d1_gt_rank": (lambda: problem(10, 3, 3, [2.0, 0.9, 0.0]), 4, "fixed",
                         hyper_of(0.8, 1.0, 1.0, [0.5, 1.5, 0.3, 0.9])),
    "latent_dim_1": (lambda: problem(11, 3, 2, [2.0, 0.5]), 1, "learnable",
                     hyper_of(1.0, 1.0, 1.0)),
}

_BF_CACHE = {}


def solve(name):
  """(model, moments, E, hyper, optimum, brute-force (value, params)), cached per case."""
  if name not in _BF_CACHE:
    build, d1, var, hyper = {**CASES, **SLOW_CASES}[name]
    m, e = build()
    model = LinearCVAE(d1, var)
    opt = model.optimum(m, hyper)
    val, params, _ = bruteforce.minimize(lambda p: model.loss(p, m, hyper),
                                         lambda k: model.init(k, m, 0.5), n_starts=N_STARTS)
    _BF_CACHE[name] = (model, m, e, hyper, opt, val, params)
  return _BF_CACHE[name]


def whitened(m, tol=1e-10):
  """(P_A Phi^{1/2}, P_B Psi^{1/2}, Z = E[x~ y~^T]) on positive eigenvalues (float64 numpy)."""
  a, b, c = (np.asarray(v) for v in (m.xx, m.yy, m.xy))
  fa, fb = [], []
  for mat, out in ((a, fa), (b, fb)):
    w, v = np.linalg.eigh(mat)
    keep = w > tol * w.max()
    out.append((v[:, keep], w[keep]))
  (pa, phi), (pb, psi) = fa[0], fb[0]
  z = (pa / np.sqrt(phi)).T @ c @ (pb / np.sqrt(psi))
  return pa * np.sqrt(phi), pb * np.sqrt(psi), z


def relations7(params, m, hyper, z_t=None):
  """Max residual of Dang eq. (7) at ``params``; ``z_t`` overrides Z^T (D2-side form)."""
  fa, fb, z = whitened(m)
  z_t = z.T if z_t is None else z_t
  u1, u2, w1, w2 = (np.asarray(v) for v in (params.U1, params.U2, params.W1, params.W2))
  bc2 = float(hyper["beta"] * hyper["eta_dec"] ** 2 / hyper["eta_enc"] ** 2)
  e = fb @ (np.eye(z.shape[1]) - z_t @ z_t.T) @ fb.T
  g = np.linalg.solve(u1.T @ u1 + bc2 * np.eye(u1.shape[1]), u1.T)
  r1 = u2 @ fa - fb @ z_t
  r2 = w2 @ e - g @ e
  r3 = w1 @ fa + w2 @ fb @ z_t
  return max(np.abs(r1).max(), np.abs(r2).max(), np.abs(r3).max())


def check_case(name):
  model, m, e, hyper, opt, val, params = solve(name)
  # L*: closed form == loss at the closed-form params == brute force.
  assert abs(float(opt.loss) - val) <= LOSS_RTOL * abs(val), (float(opt.loss), val)
  lp = float(model.loss(opt.params, m, hyper))
  assert abs(lp - float(opt.loss)) <= EXACT_RTOL * abs(lp)
  spec = model.spectrum(params, m, hyper)
  assert set(spec) == set(opt.spectra)
  for k in spec:
    assert spec[k].shape == opt.spectra[k].shape, k
    np.testing.assert_allclose(spec[k], opt.spectra[k], rtol=0, atol=SPEC_ATOL, err_msg=k)
  # theta is eig(N), the residual moment we built in.
  d1 = model.latent_dim
  theta = np.sort(np.linalg.eigvalsh(e))[::-1]
  theta = np.pad(theta, (0, max(0, d1 - theta.size)))[:d1]
  np.testing.assert_allclose(opt.extras["theta"], theta, rtol=0, atol=1e-12)
  assert relations7(params, m, hyper) <= REL7_ATOL
  assert relations7(opt.params, m, hyper) <= 1e-10  # float64, exact closed form
  return model, m, hyper, opt, params


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimum_matches_bruteforce(name):
  model, m, hyper, opt, params = check_case(name)
  if model.encoder_var == "learnable":
    # Collapsed coordinates (zero U1 column) have sigma = eta_enc and a zero mean map.
    u1 = np.asarray(params.U1)
    col = np.linalg.norm(u1, axis=0) < 1e-6
    assert col.sum() == int((~np.asarray(opt.active["z"])).sum())
    std = np.exp(0.5 * np.asarray(params.sigma_raw))
    np.testing.assert_allclose(std[col], float(hyper["eta_enc"]), atol=SPEC_ATOL)
    j, _ = model.input_moments(m)
    post = model.posterior(params, hyper)["z"]
    mean_sq = np.diag(np.asarray(post.mean_map @ j @ post.mean_map.T))
    assert np.all(mean_sq[col] <= 1e-10)  # float64: E(w_k^T u)^2 -> 0 (Remark 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_optimum_matches_bruteforce_slow(name):
  check_case(name)


def test_extremes_without_bruteforce():
  """x = y gives E = 0 (complete collapse); x independent of y gives E = B."""
  m, _ = equal_problem(7, 3)
  opt = LinearCVAE(2).optimum(m, hyper_of(0.1, 1.0, 1.0))
  assert np.all(np.asarray(opt.extras["theta"]) == 0.0)
  assert not np.any(opt.active["z"])
  np.testing.assert_array_equal(opt.spectra["omega"], 0.0)
  np.testing.assert_allclose(opt.spectra["sigma_std"], 1.0, rtol=EXACT_RTOL)
  m, n = problem(2, 3, 3, [3.0, 1.5, 0.5], independent=True)
  np.testing.assert_allclose(cvae_lib.residual_moment(m), m.yy, atol=1e-12)


# ---------------------------------------------------------- Monte Carlo --

def _data(seed, n=30, d0=3, d2=2):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d0)) + 0.5  # uncentred on purpose
  y = x @ rng.normal(size=(d0, d2)) + rng.normal(size=(n, d2)) + 0.3
  return x, y


def _random_params(model, m, seed):
  p = model.init(jax.random.key(seed), m, 0.6)
  if model.encoder_var == "learnable_full":
    raw = 0.3 * jax.random.normal(jax.random.key(seed + 1), p.sigma_raw.shape, p.sigma_raw.dtype)
    p = p.replace(sigma_raw=raw)
  return p


@pytest.mark.parametrize("encoder_var", ["learnable", "learnable_full", "fixed"])
def test_loss_is_negative_beta_elbo_monte_carlo(encoder_var):
  """``loss`` vs E_data E_q[-log p(y|x,z) + beta (log q(z|x,y) - log p(z|x))] by MC.

  The log-densities come from scipy.stats; |z-score| <= 4 (seeded).
  """
  x, y = _data(0)
  m = lv.moments_from_arrays(x, y)
  model = LinearCVAE(2, encoder_var)
  hyper = hyper_of(1.7, 0.8, 1.3, [0.6, 1.1] if encoder_var == "fixed" else None)
  p = _random_params(model, m, 3)
  cov = np.asarray(model.encoder_cov(p, hyper))
  cov = np.diag(cov) if cov.ndim == 1 else cov
  u1, u2, w1, w2 = (np.asarray(v) for v in (p.U1, p.U2, p.W1, p.W2))
  beta, ev, dv = (float(hyper[k]) ** (1 if k == "beta" else 2) for k in ("beta", "eta_enc", "eta_dec"))
  rng = np.random.default_rng(1)
  s = 4000
  means, variances = [], []
  for xi, yi in zip(x, y):
    mu = w1 @ xi + w2 @ yi
    z = rng.multivariate_normal(mu, cov, size=s)
    log_lik = scipy.stats.multivariate_normal(np.zeros(y.shape[1]), dv * np.eye(y.shape[1])).logpdf(
        yi - z @ u1.T - u2 @ xi)
    log_q = scipy.stats.multivariate_normal(mu, cov).logpdf(z)
    log_p = scipy.stats.multivariate_normal(np.zeros(2), ev * np.eye(2)).logpdf(z)
    v = -log_lik + beta * (log_q - log_p)
    means.append(v.mean()); variances.append(v.var(ddof=1) / s)
  est = np.mean(means)
  se = np.sqrt(np.sum(variances)) / len(means)
  val = float(model.loss(p, m, hyper))
  assert abs(est - val) <= 4 * se, (est, val, se)
  assert se < 0.02 * abs(val)  # the check has power


def test_paper_loss_is_eq5():
  """``paper_loss`` equals eq. (5) written out on the data arrays (float64, 1e-12 rel)."""
  x, y = _data(2)
  m = lv.moments_from_arrays(x, y)
  model = LinearCVAE(2, "learnable_full")
  hyper = hyper_of(0.6, 1.4, 0.7)
  p = _random_params(model, m, 5)
  cov = np.asarray(model.encoder_cov(p, hyper))
  u1, u2, w1, w2 = (np.asarray(v) for v in (p.U1, p.U2, p.W1, p.W2))
  beta, c2 = 0.6, (0.7 / 1.4) ** 2
  r = x @ (u1 @ w1 + u2).T + y @ (u1 @ w2 - np.eye(2)).T
  mu = x @ w1.T + y @ w2.T
  eq5 = ((np.mean(np.sum(r ** 2, 1)) + np.trace(u1 @ cov @ u1.T)
          + beta * c2 * (np.mean(np.sum(mu ** 2, 1)) + np.trace(cov))) / 0.7 ** 2
         - beta * 2 - beta * np.linalg.slogdet(cov)[1])
  np.testing.assert_allclose(model.paper_loss(p, m, hyper), eq5, rtol=EXACT_RTOL)


def test_sampled_loss_unbiased():
  x, y = _data(4)
  m = lv.moments_from_arrays(x, y)
  model = LinearCVAE(2, "learnable_full")
  hyper = hyper_of(1.3, 0.9, 1.1)
  p = _random_params(model, m, 7)
  keys = jax.random.split(jax.random.key(11), 2000)
  batch = (jnp.asarray(x), jnp.asarray(y))
  vals = np.asarray(jax.jit(jax.vmap(lambda k: model.sampled_loss(p, batch, k, hyper)))(keys))
  se = vals.std(ddof=1) / np.sqrt(vals.size)
  val = float(model.loss(p, m, hyper))
  assert abs(vals.mean() - val) <= 4 * se, (vals.mean(), val, se)  # |z| <= 4, seeded
  assert se < 0.02 * abs(val)


# --------------------------------------------------------------- errata --

def test_erratum_proof_eq38_literal_theta_squared():
  """Thm 2 proof eq. (38)-(39) read with theta = eig(E) (theta^2 inside) is not the minimum."""
  model, m, e, hyper, opt, val, params = solve("partial_diag")
  beta, eta_enc, eta_dec = (float(hyper[k]) for k in ("beta", "eta_enc", "eta_dec"))
  theta = np.asarray(opt.extras["theta"])
  om_thm = np.sqrt(np.maximum(0, theta - beta * eta_dec ** 2)) / eta_enc
  om_lit = np.sqrt(np.maximum(0, theta ** 2 - beta * eta_dec ** 2)) / eta_enc
  sig_lit = np.where(theta >= np.sqrt(beta) * eta_dec,
                     np.sqrt(beta) * eta_enc * eta_dec / np.maximum(theta, 1e-300), eta_enc)
  learned = model.spectrum(params, m, hyper)
  np.testing.assert_allclose(learned["omega"], om_thm, atol=SPEC_ATOL)
  assert np.abs(learned["omega"] - om_lit).max() > 0.3
  assert np.abs(learned["sigma_std"] - np.sort(sig_lit)[::-1]).max() > 0.05
  # The literal spectra, completed by the same relations (7), give a strictly larger loss.
  lit = _params_from_spectra(model, m, hyper, om_lit, sig_lit ** 2)
  assert float(model.loss(lit, m, hyper)) - val > 0.1
  thm = _params_from_spectra(model, m, hyper, om_thm, np.exp(np.asarray(opt.params.sigma_raw)))
  assert abs(float(model.loss(thm, m, hyper)) - val) <= LOSS_RTOL * abs(val)


def _params_from_spectra(model, m, hyper, omega, var):
  """U1 = P_E diag(omega), U2 = K, W2 = (U1^T U1 + beta c^2)^-1 U1^T, W1 = -W2 K, Sigma = diag(var)."""
  _, p_e = cvae_lib.residual_eigh(m)
  k = cvae_lib.regression(m)
  d1 = model.latent_dim
  u1 = np.zeros((m.dim_y, d1))
  r = min(d1, m.dim_y)
  u1[:, :r] = np.asarray(p_e)[:, :r] * omega[:r]
  bc2 = float(hyper["beta"] * hyper["eta_dec"] ** 2 / hyper["eta_enc"] ** 2)
  w2 = np.linalg.solve(u1.T @ u1 + bc2 * np.eye(d1), u1.T)
  return cvae_lib.CVAEParams(U1=jnp.asarray(u1), U2=k, W1=jnp.asarray(-w2 @ np.asarray(k)),
                             W2=jnp.asarray(w2), sigma_raw=jnp.log(jnp.asarray(var)))


def test_erratum_z_orientation():
  """Z = E[x~ y~^T] (d0 x d2). The printed E[y~ x~^T] does not type-check when d0 != d2,
  and for d0 = d2 it breaks relations (7) and E."""
  model, m, e, hyper, opt, val, params = solve("partial_diag")
  fa, fb, z = whitened(m)
  assert z.shape == (4, 3)  # d0 = 4 != d2 = 3
  z_printed = z.T            # E[y~ x~^T], d2 x d0
  with pytest.raises(ValueError):
    _ = fb @ z_printed.T     # P_B Psi^{1/2} Z^T: (3, 3) @ (4, 3)
  with pytest.raises(ValueError):
    _ = np.eye(3) - z_printed.T @ z_printed  # I_{d2} - Z^T Z is d0 x d0
  assert relations7(params, m, hyper) <= REL7_ATOL  # corrected Z on the brute force
  # Square case d0 = d2 = 3: the printed orientation type-checks but is wrong.
  m2, e2 = problem(12, 3, 3, [2.0, 1.0, 0.5])
  fa2, fb2, z2 = whitened(m2)
  e_from = lambda zz: fb2 @ (np.eye(3) - zz.T @ zz) @ fb2.T
  np.testing.assert_allclose(e_from(z2), e2, atol=1e-10)
  assert np.abs(e_from(z2.T) - e2).max() > 0.1
  h2 = hyper_of(0.3, 1.0, 1.0)  # all three modes active (theta >= 0.5 > 0.3)
  opt2 = LinearCVAE(3).optimum(m2, h2)
  assert np.all(np.asarray(opt2.active["z"]))
  assert relations7(opt2.params, m2, h2) <= 1e-10
  assert relations7(opt2.params, m2, h2, z_t=z2) > 0.1  # printed Z used in (7)


def _authors_sigma(theta, beta, eta_enc, eta_dec):
  """utils.py::calculate_lambda_sigma_cvae_beta branch (switch at sqrt(beta) eta_dec)."""
  return np.where(theta >= np.sqrt(beta) * eta_dec,
                  np.sqrt(beta) * eta_enc * eta_dec / np.sqrt(theta), eta_enc)


def test_regression_sigma_switch_at_beta_eta_dec_sq():
  """sigma* <= eta_enc wherever omega* = 0; the authors' switch violates it at beta=2, theta=1.5."""
  model, m, e, hyper, opt, val, params = solve("partial_diag")
  theta = np.asarray(opt.extras["theta"])  # [3.0, 1.5, 0.4], beta eta_dec^2 = 2
  np.testing.assert_allclose(theta, [3.0, 1.5, 0.4], atol=1e-12)
  std = np.exp(0.5 * np.asarray(opt.params.sigma_raw))
  omega = np.linalg.norm(np.asarray(opt.params.U1), axis=0)
  np.testing.assert_array_equal(omega == 0, [False, True, True])
  np.testing.assert_allclose(std[1:], 1.2, rtol=EXACT_RTOL)  # = eta_enc on collapsed modes
  assert std[0] < 1.2
  bad = _authors_sigma(theta, 2.0, 1.2, 1.0)
  np.testing.assert_allclose(bad[1], 1.2 * np.sqrt(2.0 / 1.5), rtol=EXACT_RTOL)  # 1.386 > eta_enc
  # The brute-force minimiser agrees with the beta eta_dec^2 switch, not with the authors'.
  learned = np.asarray(model.spectrum(params, m, hyper)["sigma_std"])
  np.testing.assert_allclose(learned, np.sort(std)[::-1], atol=SPEC_ATOL)
  assert np.abs(learned - np.sort(bad)[::-1]).max() > 0.1
  worse = opt.params.replace(sigma_raw=jnp.log(jnp.asarray(bad ** 2)))
  assert float(model.loss(worse, m, hyper)) - val > 1e-2
  # Grid: sigma* <= eta_enc whenever collapsed, strictly below when active, for any beta.
  run = jax.jit(jax.vmap(lambda b: model.optimum(m, {**hyper_of(1.0, 0.7, 1.3), "beta": b})))
  o = run(jnp.linspace(0.2, 4.0, 20))
  s = np.asarray(o.spectra["sigma_std"])[:, ::-1]  # ascending = aligned with theta desc
  collapsed = ~np.asarray(o.active["z"])
  assert collapsed.any() and (~collapsed).any()
  assert np.all(s[collapsed] <= 0.7 * (1 + 1e-14))
  assert np.all(s[~collapsed] < 0.7)


# ----------------------------------------------------- regression / jax --

def _flat(opt):
  leaves = [opt.loss] + jax.tree.leaves(opt.spectra) + jax.tree.leaves(opt.params)
  return jnp.concatenate([jnp.ravel(l) for l in leaves])


@pytest.mark.parametrize("encoder_var", ["learnable", "learnable_full", "fixed"])
def test_continuity_and_finite_gradients_at_thresholds(encoder_var):
  m, _ = problem(13, 3, 3, [2.0, 1.0, 0.4])
  model = LinearCVAE(3, encoder_var)
  sigma = jnp.asarray([0.9, 0.5, 1.3]) if encoder_var == "fixed" else None
  base = hyper_of(1.0, 1.1, 0.9, sigma)
  crit = np.asarray(model.optimum(m, base).thresholds["beta"])
  assert np.all(np.isfinite(crit)) and crit.shape == (3,)

  def f(beta):
    return _flat(model.optimum(m, {**base, "beta": beta}))

  def loss(beta):
    return model.optimum(m, {**base, "beta": beta}).loss

  @jax.jit
  @jax.vmap
  def evaluate(beta):
    return f(beta), jax.jacfwd(f)(beta), jax.grad(loss)(beta)

  eps = np.array([-1e-10, 1e-10, 0.0, -1e-6, 1e-6, -1e-9, 1e-9])
  vals, jac, dl = (np.asarray(v) for v in evaluate(jnp.asarray((crit[:, None] * (1 + eps)).ravel())))
  vals, dl = vals.reshape(3, 7, -1), dl.reshape(3, 7)
  # float64: square-root onset gives |d omega| ~ sqrt(theta 1e-10) / eta_enc < 1e-4.
  assert np.abs(vals[:, 0] - vals[:, 1]).max() < 1e-4
  assert np.all(np.isfinite(jac)) and np.all(np.isfinite(dl))
  # The loss's derivative in beta is continuous too (no kink at a threshold).
  assert np.abs(dl[:, 5] - dl[:, 6]).max() < 1e-6


def test_thresholds_and_active_mask():
  m, _ = problem(14, 4, 3, [2.0, 1.0, 0.4])
  model = LinearCVAE(3)
  h = hyper_of(1.3, 0.8, 0.9)
  opt = model.optimum(m, h)
  theta = np.asarray(opt.extras["theta"])
  np.testing.assert_allclose(opt.thresholds["beta"], theta / 0.81, rtol=EXACT_RTOL)
  np.testing.assert_allclose(opt.thresholds["eta_dec"], np.sqrt(theta / 1.3), rtol=EXACT_RTOL)
  np.testing.assert_array_equal(opt.active["z"], theta > 1.3 * 0.81)
  crit = np.asarray(opt.thresholds["beta"])
  betas = np.concatenate([crit * 1.001, crit * 0.999])
  o = jax.jit(jax.vmap(lambda b: model.optimum(m, {**h, "beta": b})))(jnp.asarray(betas))
  for i in range(3):
    assert not bool(o.active["z"][i, i]) and float(o.spectra["omega"][i, i]) == 0.0
    assert bool(o.active["z"][3 + i, i]) and float(o.spectra["omega"][3 + i, i]) > 0.0


def test_jit_vmap_grid_compiles_once():
  m, _ = problem(15, 3, 3, [2.0, 1.0, 0.4])
  model = LinearCVAE(2, "learnable_full")
  traces = []

  def run(h):
    traces.append(1)
    return model.optimum(m, h)

  f = jax.jit(jax.vmap(run))
  grid = lambda s: {k: jnp.asarray(v) * s for k, v in
                    dict(beta=[0.3, 1.0, 2.5, 4.0], eta_enc=[0.5, 1.0, 1.5, 2.0],
                         eta_dec=[0.7, 1.0, 1.2, 0.4]).items()}
  out1, out2 = f(grid(1.0)), f(grid(1.1))
  assert len(traces) == 1
  for i in range(4):
    h = {k: v[i] for k, v in grid(1.1).items()}
    ref = model.optimum(m, h)
    np.testing.assert_allclose(out2.loss[i], ref.loss, rtol=EXACT_RTOL)
    np.testing.assert_allclose(out2.spectra["omega"][i], ref.spectra["omega"], atol=1e-12)
    np.testing.assert_allclose(model.loss(jax.tree.map(lambda a: a[i], out2.params), m, h),
                               ref.loss, rtol=EXACT_RTOL)
  assert out1.loss.shape == (4,)


@pytest.mark.parametrize("d2,settings", [
    (1, (("learnable", None), ("fixed", 0.6))), (3, (("learnable_full", None),))])
def test_latent_dim_one(d2, settings):
  m, _ = problem(16, 2, d2, [1.5, 0.8, 0.2][:d2])
  for var, sig in settings:
    model = LinearCVAE(1, var)
    h = hyper_of(1.0, 1.0, 1.0, sig)

    @jax.jit
    def run(h):
      opt = model.optimum(m, h)
      return opt, model.loss(opt.params, m, h), model.spectrum(opt.params, m, h)

    opt, lp, spec = run(h)
    assert opt.spectra["omega"].shape == (1,)
    assert opt.active["z"].shape == (1,) and opt.extras["theta"].shape == (1,)
    assert opt.thresholds["beta"].shape == (1,)
    assert opt.params.U1.shape == (d2, 1) and opt.params.W1.shape == (1, 2)
    assert opt.loss.shape == ()
    if var != "fixed":
      assert opt.spectra["sigma_std"].shape == (1,)
    np.testing.assert_allclose(lp, opt.loss, rtol=EXACT_RTOL)
    for k in spec:
      np.testing.assert_allclose(spec[k], opt.spectra[k], atol=1e-12)


def test_evaluates_on_cpu():
  cpu = jax.devices("cpu")[0]
  m, _ = problem(17, 3, 2, [1.5, 0.3])
  with jax.default_device(cpu):
    opt = jax.jit(LinearCVAE(2).optimum)(m, hyper_of(1.0, 1.0, 1.0))
  assert opt.loss.devices() == {cpu}
  assert np.isfinite(float(opt.loss))


def test_registry():
  model = lv.make_model("cvae", latent_dim=3, encoder_var="fixed")
  assert isinstance(model, LinearCVAE) and model.hyper_names[-1] == "sigma"


# ----------------------------------------------------------- residual E --

def test_residual_moment_accuracy():
  """E = B - C^T A^+ C: float64 vs numpy pinv on rank-deficient A; float32 near-singular A.

  float32: within 4x the error that rounding the moments to float32 already causes
  (the f64 Schur complement of the f32-rounded moments) plus 1e-6 (~10 eps32).
  """
  rng = np.random.default_rng(0)
  # traced (runs in the moments' dtype) and eager (concrete: float64 inside)
  fns = (jax.jit(moments_lib.residual_moment), moments_lib.residual_moment)
  d0, d2 = 5, 3
  for r in (1, 2, 4):  # rank(A) < D0
    x = (rng.normal(size=(200, r)) * rng.uniform(0.3, 3, r)) @ rng.normal(size=(r, d0))
    y = x @ rng.normal(size=(d0, d2)) * rng.uniform(0.1, 10) + rng.normal(size=(200, d2))
    m = lv.moments_from_arrays(x, y)
    a, b, c = (np.asarray(v) for v in (m.xx, m.yy, m.xy))
    ref = b - c.T @ np.linalg.pinv(a, rcond=1e-10, hermitian=True) @ c
    for f in fns:
      assert np.abs(np.asarray(f(m)) - ref).max() <= 1e-10 * np.abs(b).max()  # float64
  for cond in (1e2, 1e4, 1e5):
    for t in range(2):
      d0, d2 = 6, 4
      q = _orth(rng, d0)
      ev = np.logspace(0, -np.log10(cond), d0)
      a = (q * ev) @ q.T
      k = rng.normal(size=(d2, d0)) @ np.diag(ev ** -0.5) @ q.T  # y depends on whitened x
      b = k @ a @ k.T + np.diag(rng.uniform(0.05, 0.5, d2))
      b, c = 0.5 * (b + b.T), a @ k.T
      ref = b - c.T @ np.linalg.solve(a, c)
      r32 = [np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c)]
      intrinsic = np.abs(r32[1] - r32[2].T @ np.linalg.solve(r32[0], r32[2]) - ref).max()
      m32 = lv.moments_from_second_moments(a, b, c, dtype=jnp.float32, validate=False)
      for f in fns:
        e32 = np.asarray(f(m32), np.float64)
        assert np.abs(e32 - ref).max() <= 4 * intrinsic + 1e-6 * np.abs(ref).max()


# ------------------------------------------------------------ bad input --

def test_bad_input():
  m, _ = problem(18, 3, 2, [1.0, 0.5])
  model = LinearCVAE(2)
  h = hyper_of(1.0, 1.0, 1.0)
  paired = lv.moments_from_second_moments(np.eye(3))
  with pytest.raises(ValueError, match="unpaired"):
    model.optimum(paired, h)
  with pytest.raises(ValueError, match="unpaired"):
    model.loss(model.init(jax.random.key(0), m), paired, h)
  bad = m.replace(xy=jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="xy"):
    model.optimum(bad, h)
  with pytest.raises(ValueError, match="mean_y"):
    model.optimum(m.replace(mean_y=jnp.zeros(3)), h)
  with pytest.raises(ValueError, match="moments"):
    model.optimum({"xx": m.xx}, h)
  for k in ("beta", "eta_enc", "eta_dec"):
    for v in (0.0, -1.0):
      with pytest.raises(ValueError, match=k):
        model.optimum(m, {**h, k: jnp.asarray(v)})
      with pytest.raises(ValueError, match=k):
        model.loss(model.init(jax.random.key(0), m), m, {**h, k: jnp.asarray(v)})
  fixed = LinearCVAE(2, "fixed")
  for s in (0.0, [1.0, -0.5]):
    with pytest.raises(ValueError, match="sigma"):
      fixed.optimum(m, {**h, "sigma": jnp.asarray(s)})
  with pytest.raises(ValueError, match="sigma"):
    fixed.optimum(m, {**h, "sigma": jnp.ones(3)})
  with pytest.raises(ValueError, match="sigma"):
    fixed.optimum(m, h)
  with pytest.raises(ValueError, match="latent_dim"):
    LinearCVAE(0)
  with pytest.raises(ValueError, match="encoder_var"):
    LinearCVAE(2, "diag")
  with pytest.raises(ValueError, match="batch"):
    model.sampled_loss(model.init(jax.random.key(0), m), jnp.ones((4, 3)), jax.random.key(0), h)
