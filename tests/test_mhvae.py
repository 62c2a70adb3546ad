"""Linear two-latent MHVAE (Dang et al. 2024 §4.2, App. F): loss, Theorems 3 and 5.

All checks run in float64. Closed forms are compared with ``bruteforce.minimize``
(L-BFGS on ``model.loss``, blind to the theory), the analytic loss with a
Monte-Carlo negative ELBO built from scipy Gaussian log-densities.

Default cases are small (D0 = 3, d1 = d2 = 2) and share compiled programs;
the full App. F.1 dimension matrix (D0 = 5) runs under ``-m slow``.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import bruteforce
import linvae_jax as lv
from linvae_jax._src.models.mhvae import REGIMES, LinearMHVAE, MHVAEParams

# float64 tolerances
LOSS_RTOL = 1e-10      # L* vs brute force, relative
SPEC_ATOL = 1e-6       # lambda / omega / sigma2_std vs brute force, absolute (values O(1))
PLUG_RTOL = 1e-12      # model.loss(opt.params) vs closed-form L*, relative
STAT_ATOL = 1e-9       # max |grad loss| at the closed-form optimum
EXACT_TOL = 1e-12      # two float64 evaluations of the same closed form
MC_Z = 4.0             # |z-score| bound of Monte-Carlo means (seeded, deterministic)
ERRATUM_GAP = 0.05     # a literal paper formula must miss brute force by more than this

# Hyperparameter contexts (eta_enc, eta_dec, sigma1, sigma2 are stds).
# Thm 3 "b": sigma1^2 = 1 >= s_c = beta2 eta_dec^2/beta1 = 0.5625; z2 always on;
#   lambda > 0 iff theta > min(sqrt(beta1) sigma1, sqrt(beta2) eta_dec) = 1.5.
H3_B = dict(beta1=4.0, beta2=1.0, eta_enc=0.5, eta_dec=1.5, sigma1=1.0)
# Thm 3 "c": sigma1^2 = 1 < s_c = 1.5; omega > 0 iff theta > theta_A = 1.5;
#   lambda > 0 iff theta > 1.
H3_C = dict(beta1=1.0, beta2=1.5, eta_enc=1.0, eta_dec=1.0, sigma1=1.0)
# Thm 5 "ii": p = sqrt(beta1) sigma1 = 1.70 >= q = sqrt(beta2) c sigma2 = 0.6; z2 always
#   on; lambda > 0 iff theta > a = sqrt(p q) = 1.01.
H5_II = dict(beta1=2.0, beta2=1.0, eta_enc=1.0, eta_dec=1.0, sigma1=1.2, sigma2=0.6)
# Thm 5 "iii": p = 0.7 < q = 0.98; omega > 0 iff theta > b = q^2/p = 1.37; lambda > 0 iff theta > 0.7.
H5_III = dict(beta1=1.0, beta2=1.5, eta_enc=1.2, eta_dec=1.2, sigma1=0.7, sigma2=0.8)

THETA5 = (3.0, 2.2, 1.2, 0.5, 0.2)  # straddles the on/off thresholds above, none within 0.15


def make_moments(theta, dim, seed=0):
  """A = Q diag(theta^2) Q^T in R^{dim x dim}, Q random orthogonal; rank = len(theta)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
  th = np.zeros(dim)
  th[:len(theta)] = theta
  a = (q * th ** 2) @ q.T
  return lv.moments_from_second_moments(0.5 * (a + a.T))


def _case(d1, d2, var, hyper, theta, dim):
  model = LinearMHVAE(d1, d2, var)
  h = lv.as_hyper(hyper)
  return model, make_moments(theta, dim), {k: h[k] for k in model.hyper_names}


# Small default cases (D0 = 3): regimes a+b, a+c, i+ii, i+iii; beta1 != beta2
# in s3b and s5ii (used by the errata tests).
SMALL = {
    "s3b": _case(2, 2, "learnable", H3_B, (3.0,), 3),
    "s3c": _case(2, 2, "learnable", H3_C, (3.0, 1.2), 3),
    "s5ii": _case(2, 2, "fixed", H5_II, (3.0,), 3),
    "s5iii": _case(2, 2, "fixed", H5_III, (3.0, 1.2), 3),
    "d1=1": _case(1, 2, "learnable", H3_C, (2.0, 0.6, 0.3), 4),
}

# The five App. F.1 orders of (d0 = rank A, d1, d2), D0 = 5.
DIM_CASES = {
    "d0<d1<d2": dict(rank=2, d1=3, d2=4),
    "d0<d2<=d1": dict(rank=2, d1=4, d2=3),
    "d1<=min(d0,d2)": dict(rank=5, d1=2, d2=3),
    "d2<=d0<d1": dict(rank=3, d1=4, d2=2),
    "d2<d1<=d0": dict(rank=5, d1=4, d2=3),
}
BIG = {}
for _i, _dims in enumerate(DIM_CASES):
  _d = DIM_CASES[_dims]
  # alternate the b/c (ii/iii) contexts over the five dimension orders
  _h3, _h5 = (H3_C, H5_III) if _i % 2 == 0 else (H3_B, H5_II)
  BIG[f"thm3_{_dims}"] = _case(_d["d1"], _d["d2"], "learnable", _h3, THETA5[:_d["rank"]], 5)
  BIG[f"thm5_{_dims}"] = _case(_d["d1"], _d["d2"], "fixed", _h5, THETA5[:_d["rank"]], 5)
# full (Cholesky) Sigma2 has the same optimum (Thm 3 holds for full Sigma2)
BIG["thm3full_b"] = _case(3, 4, "learnable_full", H3_B, THETA5[:2], 5)
BIG["thm3full_c"] = _case(4, 2, "learnable_full", H3_C, THETA5[:3], 5)
ALL = {**SMALL, **BIG}


def _opt_objective(model):
  def f(m, hh):  # a scalar touching every closed-form output that has a gradient
    o = model.optimum(m, hh)
    return o.loss + sum(jnp.sum(v) for v in o.spectra.values())
  return f


@functools.lru_cache(maxsize=None)
def jitted(model):
  """Compiled functions per (hashable) model config, shared by the tests.

  ``opt(m, h)``; ``vg(params, m, h)`` = (loss, grad loss); ``vopt(m, grid)``
  vmapped over a hyper dict of equal-length vectors; ``hgrad(m, h)`` = the
  gradient of L* + sum(spectra) with respect to the hyperparameters.
  """
  return dict(opt=jax.jit(model.optimum),
              vg=jax.jit(jax.value_and_grad(model.loss)),
              vopt=jax.jit(jax.vmap(model.optimum, in_axes=(None, 0))),
              hgrad=jax.jit(jax.grad(_opt_objective(model), argnums=1)))


def loss_of(model, p, m, h):
  return float(jitted(model)["vg"](p, m, h)[0])


@functools.lru_cache(maxsize=None)
def brute(key, n_starts=1, polish=False):
  """Brute-force minimum of a registered case (cached across tests).

  Default tests use one start (in the slow multi-start runs every start agrees
  to ~1e-14); a start stuck elsewhere shows as a loss above L*, i.e. fails.
  """
  model, m, h = ALL[key]
  return bruteforce.minimize(lambda p: model.loss(p, m, h), lambda k: model.init(k, m, 0.5),
                             n_starts=n_starts, polish=polish)


def check_against_brute(key, n_starts=1, polish=False):
  model, m, h = ALL[key]
  opt = jitted(model)["opt"](m, h)
  val, p, vals = brute(key, n_starts, polish)
  L = float(opt.loss)
  assert abs(val - L) <= LOSS_RTOL * abs(L), (key, val, L, vals)
  sp = model.spectrum(p, m, h)
  assert set(sp) == set(opt.spectra)
  for k in sp:
    np.testing.assert_allclose(sp[k], opt.spectra[k], rtol=0, atol=SPEC_ATOL, err_msg=f"{key} {k}")
  return opt


def regime_names(model, opt):
  names = REGIMES["fixed" if model.sigma2_var == "fixed" else "learnable"]
  return [names[r] for r in np.asarray(opt.extras["regime"])]


# ------------------------------------------------------------- brute force --

@pytest.mark.parametrize("key", ["s3b", "s5ii"])
def test_optimum_matches_brute_force(key):
  check_against_brute(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["s3c", "s5iii", "d1=1"] + list(BIG))
def test_optimum_matches_brute_force_all_cases(key):
  check_against_brute(key, n_starts=2, polish=True)


@pytest.mark.slow
def test_brute_force_cases_cover_every_regime():
  seen3, seen5 = set(), set()
  for model, m, h in ALL.values():
    (seen5 if model.sigma2_var == "fixed" else seen3).update(
        regime_names(model, jitted(model)["opt"](m, h)))
  assert seen3 == {"a", "b", "c", "no_z2"}
  assert seen5 == {"i", "ii", "iii", "no_z2"}


def _closed_form_checks(key):
  """model.loss(opt.params) == L*, grad loss(opt.params) == 0, spectrum(opt.params) == spectra."""
  model, m, h = ALL[key]
  fns = jitted(model)
  opt = fns["opt"](m, h)
  L = float(opt.loss)
  val, g = fns["vg"](opt.params, m, h)
  assert abs(float(val) - L) <= PLUG_RTOL * abs(L)
  gmax = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g) if x.size)
  assert gmax <= STAT_ATOL, (key, gmax)
  sp = model.spectrum(opt.params, m, h)
  for k in sp:
    np.testing.assert_allclose(sp[k], opt.spectra[k], rtol=0, atol=EXACT_TOL)
  return model, opt


@pytest.mark.parametrize("key", list(SMALL))
def test_closed_form_is_stationary(key):
  _closed_form_checks(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(BIG))
def test_closed_form_is_stationary_all_dimension_cases(key):
  _closed_form_checks(key)


def test_d1_equal_one():
  """d1 = 1, d2 = 2: one z2 mode always collapses to the prior std eta_enc."""
  model, opt = _closed_form_checks("d1=1")
  h = ALL["d1=1"][2]
  assert opt.spectra["lambda"].shape == (1,) and opt.spectra["omega"].shape == (1,)
  np.testing.assert_array_equal(opt.active["z2"], [True, False])
  np.testing.assert_allclose(opt.spectra["sigma2_std"][0], h["eta_enc"], rtol=1e-15)
  assert float(opt.thresholds["beta2"][1]) == 0.0


# ------------------------------------------------------------------ errata --

def _sigma2_formula(u2, kk, b1, b2, dv):
  return (b2 / b1) * dv * np.linalg.inv(u2.T @ u2 + kk * np.eye(u2.shape[1]))


def _w2_formula(u2, kk):
  return u2.T @ np.linalg.inv(u2 @ u2.T + kk * np.eye(u2.shape[0]))


def test_erratum_thm3_case_b_square_root():
  """Thm 3 (b): printed omega = (sigma1^2 - s_c)/eta_enc^2; true omega = sqrt(sigma1^2 - s_c)/eta_enc."""
  model, m, h = ALL["s3b"]  # sigma1 = 1, beta1 = 4, beta2 = 1, eta_dec = 1.5, eta_enc = 0.5
  opt = jitted(model)["opt"](m, h)
  assert regime_names(model, opt) == ["a", "b"]
  _, p, _ = brute("s3b")
  omega_bf = float(model.spectrum(p, m, h)["omega"][1])
  s1v, s_c, ev = 1.0, 1.0 * 1.5 ** 2 / 4.0, 0.5 ** 2
  literal = (s1v - s_c) / ev                       # as printed: 1.75
  corrected = math.sqrt(s1v - s_c) / math.sqrt(ev)  # eq. (59): 1.3229
  assert abs(literal - omega_bf) > ERRATUM_GAP
  assert abs(corrected - omega_bf) <= SPEC_ATOL
  assert abs(float(opt.spectra["omega"][1]) - corrected) <= EXACT_TOL


def test_erratum_thm3_sigma2_and_w2_need_beta_ratio():
  """Sigma2*, W2* with c^2 (printed) vs c^2 beta2/beta1 (eqs. 41, 47), beta1 = 4 != beta2 = 1."""
  model, m, h = ALL["s3b"]
  val, p, _ = brute("s3b")
  b1, b2 = float(h["beta1"]), float(h["beta2"])
  dv, c2 = float(h["eta_dec"]) ** 2, float(h["eta_dec"] / h["eta_enc"]) ** 2
  u2, w2 = np.asarray(p.U2), np.asarray(p.W2)
  var_bf = np.exp(np.asarray(p.sigma2_raw))
  # diagonal Sigma2 => U2 has orthogonal columns (Remark 4): the formulas are diagonal
  var_lit = np.diag(_sigma2_formula(u2, c2, b1, b2, dv))
  var_cor = np.diag(_sigma2_formula(u2, c2 * b2 / b1, b1, b2, dv))
  assert np.max(np.abs(np.sqrt(var_lit) - np.sqrt(var_bf))) > ERRATUM_GAP
  np.testing.assert_allclose(np.sqrt(var_cor), np.sqrt(var_bf), rtol=0, atol=SPEC_ATOL)
  assert np.max(np.abs(_w2_formula(u2, c2) - w2)) > ERRATUM_GAP
  np.testing.assert_allclose(_w2_formula(u2, c2 * b2 / b1), w2, rtol=0, atol=SPEC_ATOL)
  # plugged into the brute-force optimum, only the corrected forms keep L*
  loss = lambda q, m, h: loss_of(model, q, m, h)
  lit = p.replace(W2=jnp.asarray(_w2_formula(u2, c2)), sigma2_raw=jnp.log(jnp.asarray(var_lit)))
  cor = p.replace(W2=jnp.asarray(_w2_formula(u2, c2 * b2 / b1)),
                  sigma2_raw=jnp.log(jnp.asarray(var_cor)))
  assert loss(lit, m, h) - val > 1e-2
  assert abs(loss(cor, m, h) - val) <= LOSS_RTOL * abs(val)


def test_erratum_thm5_w2_needs_beta_ratio():
  model, m, h = ALL["s5ii"]  # beta1 = 2 != beta2 = 1
  val, p, _ = brute("s5ii")
  b1, b2 = float(h["beta1"]), float(h["beta2"])
  c2 = float(h["eta_dec"] / h["eta_enc"]) ** 2
  u2, w2 = np.asarray(p.U2), np.asarray(p.W2)
  assert np.max(np.abs(_w2_formula(u2, c2) - w2)) > ERRATUM_GAP
  np.testing.assert_allclose(_w2_formula(u2, c2 * b2 / b1), w2, rtol=0, atol=SPEC_ATOL)
  lit = p.replace(W2=jnp.asarray(_w2_formula(u2, c2)))
  assert loss_of(model, lit, m, h) - val > 1e-3


@pytest.mark.parametrize("key", ["s5ii", "s5iii"])
def test_thm5_printed_cube_root_formulas(key):
  """Thm 5's printed (i)-(iii) formulas (correct as printed) equal the unified form."""
  model, m, h = ALL[key]
  opt = jitted(model)["opt"](m, h)
  b1, b2, s1, s2 = (float(h[k]) for k in ("beta1", "beta2", "sigma1", "sigma2"))
  c = float(h["eta_dec"] / h["eta_enc"])
  th = np.asarray(opt.extras["theta"])
  names = regime_names(model, opt)
  a_t = math.sqrt(math.sqrt(b1 * b2) * c * s1 * s2)
  b_t = b2 * c ** 2 * s2 ** 2 / (math.sqrt(b1) * s1)
  for i in range(min(model.latent_dim1, model.latent_dim2)):
    t = th[i]
    if t >= max(a_t, b_t):
      lam = np.cbrt(s1 ** 2 / (math.sqrt(b1 * b2) * c * s2)) * math.sqrt(
          np.cbrt(t ** 4) - np.cbrt(b1 * b2 * c ** 2 * s1 ** 2 * s2 ** 2))
      om = np.cbrt(math.sqrt(b2) * c * s1 / (b1 * s2 ** 2)) * math.sqrt(
          np.cbrt(t ** 2) - np.cbrt(b2 ** 2 * c ** 4 * s2 ** 4 / (b1 * s1 ** 2)))
      assert names[i] == "i"
    elif math.sqrt(b1) * s1 >= math.sqrt(b2) * c * s2:
      lam, om = 0.0, math.sqrt(math.sqrt(b2 / b1) * c * s1 / s2 - b2 / b1 * c ** 2)
      assert names[i] == "ii"
    else:
      lam, om = math.sqrt(max(0.0, s1 / math.sqrt(b1) * (t - math.sqrt(b1) * s1))), 0.0
      assert names[i] == "iii"
    assert abs(float(opt.spectra["lambda"][i]) - lam) <= EXACT_TOL
    assert abs(float(opt.spectra["omega"][i]) - om) <= EXACT_TOL


# ------------------------------------------------------------ Monte Carlo --

def _data(seed=1, n=40, d0=3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d0)) @ rng.normal(size=(d0, d0)) * 0.7 + 0.3
  return x, lv.moments_from_arrays(x)


def _random_params(model, m, seed):
  p = model.init(jax.random.key(seed), m, 0.6)
  rng = np.random.default_rng(seed)
  return p.replace(sigma2_raw=jnp.asarray(0.25 * rng.normal(size=p.sigma2_raw.shape)))


MC_HYPER = dict(beta1=1.7, beta2=0.6, eta_enc=0.8, eta_dec=1.3, sigma1=0.55, sigma2=0.9)


def _mc_neg_elbo(model, p, x, h, draws, seed):
  """Per-draw negative ELBO from scipy Gaussian log-densities (independent code)."""
  rng = np.random.default_rng(seed)
  g = {k: float(v) for k, v in h.items()}
  W1, W2, U1, U2 = (np.asarray(a) for a in (p.W1, p.W2, p.U1, p.U2))
  cov2 = np.asarray(model.sigma2_cov(p, h))
  cov2 = np.diag(cov2) if cov2.ndim == 1 else cov2
  xs = np.repeat(x, draws, axis=0)
  mu1 = xs @ W1.T
  z1 = mu1 + g["sigma1"] * rng.normal(size=mu1.shape)        # Sigma1 = sigma1^2 I
  mu2 = z1 @ W2.T
  z2 = mu2 + rng.normal(size=mu2.shape) @ np.linalg.cholesky(cov2).T
  norm = scipy.stats.norm.logpdf
  log_px = norm(xs, loc=z1 @ U1.T, scale=g["eta_dec"]).sum(-1)
  log_q1 = norm(z1, loc=mu1, scale=g["sigma1"]).sum(-1)
  log_p1 = norm(z1, loc=z2 @ U2.T, scale=g["eta_dec"]).sum(-1)
  log_q2 = scipy.stats.multivariate_normal(np.zeros(len(cov2)), cov2).logpdf(z2 - mu2)
  log_p2 = norm(z2, scale=g["eta_enc"]).sum(-1)
  return -log_px + g["beta1"] * (log_q1 - log_p1) + g["beta2"] * (log_q2 - log_p2)


@pytest.mark.parametrize("var", ["learnable", "learnable_full", "fixed"])
def test_loss_equals_monte_carlo_negative_elbo(var):
  x, m = _data()
  model = LinearMHVAE(2, 2, var)
  h = {k: jnp.asarray(MC_HYPER[k]) for k in model.hyper_names}
  p = _random_params(model, m, 3)
  vals = _mc_neg_elbo(model, p, x, h, draws=4000, seed=7)
  se = vals.std() / math.sqrt(vals.size)  # pooled over x: conservative for the stratified mean
  loss = loss_of(model, p, m, h)
  z = (vals.mean() - loss) / se
  assert abs(z) <= MC_Z, z
  # the test can fail: a loss off by 0.2 nat (a wrong constant) would exceed the bound
  assert abs((vals.mean() - loss - 0.2) / se) > MC_Z, se


def _sampled_mean_z(var, n_keys):
  x, m = _data(seed=2)
  model = LinearMHVAE(2, 2, var)
  h = {k: jnp.asarray(MC_HYPER[k]) for k in model.hyper_names}
  p = _random_params(model, m, 5)
  keys = jax.random.split(jax.random.key(11), n_keys)
  vals = np.asarray(jax.jit(jax.vmap(lambda k: model.sampled_loss(p, jnp.asarray(x), k, h)))(keys))
  return (vals.mean() - loss_of(model, p, m, h)) / (vals.std() / math.sqrt(vals.size))


def test_sampled_loss_is_unbiased():
  z = _sampled_mean_z("learnable", 1000)
  assert abs(z) <= MC_Z, z


@pytest.mark.slow
@pytest.mark.parametrize("var", ["learnable_full", "fixed"])
def test_sampled_loss_is_unbiased_other_settings(var):
  z = _sampled_mean_z(var, 4000)
  assert abs(z) <= MC_Z, z


# ------------------------------------------ conventions and paper_loss --

def _np_l_hvae(p, a, h, sigma1_cov, var):
  """App. F's printed L_HVAE in numpy with an explicit Sigma1 matrix."""
  g = {k: float(v) for k, v in h.items()}
  U1, W1, U2, W2 = (np.asarray(t) for t in (p.U1, p.W1, p.U2, p.W2))
  d1, d2 = W1.shape[0], W2.shape[0]
  s2 = np.diag(np.exp(np.asarray(p.sigma2_raw))) if var == "learnable" else g["sigma2"] ** 2 * np.eye(d2)
  s1 = W1 @ a @ W1.T + sigma1_cov
  e1, e2 = U1 @ W1 - np.eye(a.shape[0]), U2 @ W2 - np.eye(d1)
  c2 = (g["eta_dec"] / g["eta_enc"]) ** 2
  body = (np.trace(e1 @ a @ e1.T) + np.trace(U1 @ sigma1_cov @ U1.T)
          + g["beta1"] * np.trace(e2 @ s1 @ e2.T) + g["beta1"] * np.trace(U2 @ s2 @ U2.T)
          + c2 * g["beta2"] * (np.trace(W2 @ s1 @ W2.T) + np.trace(s2)))
  return (body / g["eta_dec"] ** 2 - g["beta1"] * d1 - g["beta2"] * d2
          - g["beta1"] * np.linalg.slogdet(sigma1_cov)[1] - g["beta2"] * np.linalg.slogdet(s2)[1])


@pytest.mark.parametrize("var", ["learnable", "fixed"])
def test_sigma1_is_a_std_and_paper_loss(var):
  """Sigma1 = sigma1^2 I enters the loss (sigma1 = 2 is a std, not a variance)."""
  _, m = _data()
  model = LinearMHVAE(2, 2, var)
  hh = dict(beta1=1.3, beta2=0.7, eta_enc=0.9, eta_dec=1.1, sigma1=2.0, sigma2=1.5)
  h = {k: jnp.asarray(hh[k]) for k in model.hyper_names}
  p = _random_params(model, m, 4)
  a = np.asarray(m.xx)
  right = _np_l_hvae(p, a, h, 4.0 * np.eye(2), var)
  wrong = _np_l_hvae(p, a, h, 2.0 * np.eye(2), var)
  got = float(model.paper_loss(p, m, h))
  assert abs(got - right) <= EXACT_TOL * abs(right)
  assert abs(got - wrong) > 0.1
  # 2 negELBO = L_HVAE + D0 log(2 pi eta_dec^2) + beta1 d1 log eta_dec^2 + beta2 d2 log eta_enc^2
  const = 3 * math.log(2 * math.pi * 1.1 ** 2) + 1.3 * 2 * math.log(1.1 ** 2) + 0.7 * 2 * math.log(0.9 ** 2)
  assert abs(2 * loss_of(model, p, m, h) - got - const) <= EXACT_TOL * abs(got)


# ---------------------------------------- thresholds, continuity, grads --

def _with(h, **kw):
  return {**h, **{k: jnp.asarray(v, jnp.float64) for k, v in kw.items()}}


CONT_CASES = ["s3b", "s3c", "s5ii", "s5iii"]


@pytest.mark.parametrize("key", CONT_CASES)
def test_thresholds_and_continuity(key):
  """At every finite beta2 threshold the mode flips and spectra, L* are continuous.

  Over these cases the thresholds are every branch switch of the closed forms:
  theta = theta_A, sigma1^2 = s_c, theta^2 = beta2 eta_dec^2 (Thm 3) and
  theta = b, p = q, theta = a (Thm 5).
  """
  model, m, h = ALL[key]
  opt_fn = jitted(model)["opt"]
  opt = opt_fn(m, h)
  delta = 1e-9
  n_checked = 0
  for name, latent, spec in (("beta2", "z2", "omega"), ("beta2_z1", "z1", "lambda")):
    for i, bc in enumerate(np.asarray(opt.thresholds[name])):
      if not (np.isfinite(bc) and bc > 0):
        continue
      lo, mid, hi = (opt_fn(m, _with(h, beta2=bc * f)) for f in (1 - delta, 1.0, 1 + delta))
      assert bool(lo.active[latent][i]) and not bool(hi.active[latent][i]), (name, i, bc)
      assert float(hi.spectra[spec][i]) == 0.0 and float(lo.spectra[spec][i]) > 0.0
      for o in (lo, hi):
        for k in opt.spectra:  # sqrt-type onset: jump ~ sqrt(delta) = 3e-5
          assert float(jnp.max(jnp.abs(o.spectra[k] - mid.spectra[k]))) <= 1e-3
        assert abs(float(o.loss - mid.loss)) <= 1e-6 * abs(float(mid.loss))
      n_checked += 1
  assert n_checked >= 2


@pytest.mark.parametrize("key", ["s3c", "s5iii"])
def test_continuity_dense_sweep(key):
  """Spectra and L* along a fine beta2 sweep through all thresholds: no jumps."""
  model, m, h = ALL[key]
  b2 = jnp.linspace(0.05, 12.0, 2001)
  grid = {k: jnp.full(b2.shape, v) for k, v in h.items()} | {"beta2": b2}
  o = jitted(model)["vopt"](m, grid)
  step = float(b2[1] - b2[0])
  for k, v in o.spectra.items():
    assert float(jnp.max(jnp.abs(jnp.diff(v, axis=0)))) <= 10 * math.sqrt(step), k
  assert float(jnp.max(jnp.abs(jnp.diff(o.loss)))) <= 100 * step
  # the sweep did cross collapse thresholds
  assert bool(o.active["z2"][0, 0]) and not bool(o.active["z2"][-1, 0])


@pytest.mark.parametrize("key", CONT_CASES)
def test_gradients_finite_at_thresholds(key):
  model, m, h = ALL[key]
  opt = jitted(model)["opt"](m, h)
  g = functools.partial(jitted(model)["hgrad"], m)
  crits = [c for c in np.concatenate([np.asarray(v) for v in opt.thresholds.values()])
           if np.isfinite(c) and c > 0]
  assert crits
  for bc in crits + [float(h["beta2"])]:
    gr = g(_with(h, beta2=bc))
    assert all(bool(jnp.isfinite(v)) for v in gr.values()), (bc, gr)


def test_collapsed_z2_coordinate_has_zero_kl():
  """Learnable diagonal Sigma2: a collapsed z2 coordinate has q(z2_k|x) = p(z2_k) exactly."""
  model, m, h = ALL["s3c"]  # theta = (3, 1.2): mode 0 regime a, mode 1 regime c
  opt = jitted(model)["opt"](m, h)
  np.testing.assert_array_equal(opt.active["z2"], [True, False])
  post = model.posterior(opt.params, h)["z2"]
  ev = float(h["eta_enc"]) ** 2
  np.testing.assert_allclose(post.mean_map[1], 0.0, rtol=0, atol=1e-15)
  np.testing.assert_allclose(post.var[1], ev, rtol=1e-14)  # float64
  assert float(jnp.sum(post.mean_map[0] ** 2)) > 1e-2  # active: not the prior
  z1 = model.posterior(opt.params.replace(U2=jnp.zeros_like(opt.params.U2)), h)["z1"]
  np.testing.assert_allclose(z1.prior_var, float(h["eta_dec"]) ** 2, rtol=1e-15)
  np.testing.assert_allclose(z1.var, float(h["sigma1"]) ** 2, rtol=1e-15)


# ------------------------------------------------- jit / vmap / devices --

def test_jit_vmap_grid_compiles_once_and_matches_eager():
  model, m, _ = ALL["s3c"]
  traces = []

  def one(hh):
    traces.append(1)
    return model.optimum(m, hh)

  f = jax.jit(jax.vmap(one))
  rng = np.random.default_rng(0)
  for _ in range(2):  # (beta1, beta2, eta_enc, eta_dec, sigma1) grid
    grid = {k: jnp.asarray(rng.uniform(0.3, 3.0, size=6)) for k in model.hyper_names}
    out = f(grid)
  assert len(traces) == 1
  opt_fn = jitted(model)["opt"]
  for j in (0, 5):
    one_opt = opt_fn(m, {k: v[j] for k, v in grid.items()})
    assert abs(float(out.loss[j] - one_opt.loss)) <= EXACT_TOL * abs(float(one_opt.loss))
    for k in one_opt.spectra:
      np.testing.assert_allclose(out.spectra[k][j], one_opt.spectra[k], rtol=0, atol=EXACT_TOL)


def test_cpu_sharded_grid_evaluation():
  """The grid runs sharded over the 4 forced CPU devices and equals per-point results."""
  model, m, h = ALL["s5ii"]
  cpus = jax.devices("cpu")
  assert len(cpus) == 4
  mesh = jax.sharding.Mesh(np.array(cpus), ("g",))
  shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("g"))
  grid = {k: jax.device_put(jnp.linspace(0.5, 2.5, 8) * float(v), shard) for k, v in h.items()}
  out = jitted(model)["vopt"](m, grid)
  assert len(out.loss.sharding.device_set) == 4
  assert {d.platform for d in out.loss.devices()} == {"cpu"}
  opt_fn = jitted(model)["opt"]
  for j in (0, 3, 7):
    one_opt = opt_fn(m, {k: jnp.asarray(np.asarray(v)[j]) for k, v in grid.items()})
    assert abs(float(out.loss[j] - one_opt.loss)) <= EXACT_TOL * abs(float(one_opt.loss))


# ------------------------------------------------------------ bad input --

def test_registry_and_bad_input():
  _, m = _data(d0=3)
  model = lv.make_model("mhvae", latent_dim1=2, latent_dim2=3)
  assert isinstance(model, LinearMHVAE) and model.latents == ("z1", "z2")
  assert isinstance(model.init(jax.random.key(0), m), MHVAEParams)
  good = lv.as_hyper(H3_C)
  with pytest.raises(ValueError, match="latent_dim1"):
    LinearMHVAE(4, 2).optimum(m, good)          # d1 > D0 = 3
  with pytest.raises(ValueError, match="latent_dim2"):
    LinearMHVAE(2, 0)
  with pytest.raises(ValueError, match="sigma2_var"):
    LinearMHVAE(2, 2, "diag")
  for k in ("beta1", "beta2", "eta_enc", "eta_dec", "sigma1"):
    with pytest.raises(ValueError, match=k):
      model.check(m, {**good, k: jnp.asarray(0.0)})
  with pytest.raises(ValueError, match="sigma2"):
    LinearMHVAE(2, 2, "fixed").check(m, good)  # missing
  with pytest.raises(ValueError, match="sigma2"):
    LinearMHVAE(2, 2, "fixed").check(m, {**good, "sigma2": jnp.asarray(-1.0)})
  with pytest.raises(ValueError, match="sigma1"):
    model.check(m, {**good, "sigma1": jnp.ones(2)})
  x = np.random.default_rng(0).normal(size=(20, 3))
  with pytest.raises(ValueError, match="paired"):
    model.check(lv.moments_from_arrays(x, x[:, :2]), good)
  # the public entry point validates too (eagerly; a no-op under jit/vmap)
  with pytest.raises(ValueError, match="beta2"):
    model.optimum(m, {**good, "beta2": jnp.asarray(-1.0)})
