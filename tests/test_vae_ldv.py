"""Linear VAE with learnable decoder variance (W&Z App. D) and W&Z Thm 3.

All checks float64. Closed forms are compared with tests/bruteforce.py
(multi-start L-BFGS over (U, W, log sigma^2, log s), no theory inside).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import bruteforce
import linvae_jax as lv
from linvae_jax._src import moments as mlib
from linvae_jax._src.models import vae as vae_lib
from linvae_jax._src.models import vae_ldv as ldv

# The notes' example (theory notes §1.10): VAE, zeta^2 below, d1 = 3, d2 = 8.
Z2 = np.array([9.0, 6.0, 4.0, 2.5, 1.5, 0.9, 0.5, 0.2])
D1 = 3


@functools.lru_cache(maxsize=None)
def problem(name):
  if name == "vae":
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
    return lv.moments_from_second_moments(q @ np.diag(Z2) @ q.T)
  # Noisy regression y = M x + e, Cov(e) = 0.3 I_5, so R = tr Cov(e) = 1.5.
  rng = np.random.default_rng(2)
  g = rng.normal(size=(6, 6))
  a = g @ g.T / 6 + 0.2 * np.eye(6)
  mm = 0.8 * rng.normal(size=(5, 6))
  return lv.moments_from_second_moments(a, mm @ a @ mm.T + 0.3 * np.eye(5), a @ mm.T)


def hyper(beta, eta_enc=0.7):
  return lv.as_hyper({"beta": beta, "eta_enc": eta_enc})


@functools.lru_cache(maxsize=None)
def brute(name, beta, n_starts=3):
  """Brute-force global minimum of the exact LDV loss (cached across tests)."""
  m, model, h = problem(name), ldv.LinearVAELDV(D1), hyper(beta)

  def init(key):
    k1, k2 = jax.random.split(key)
    p = model.init(k1, m, 1.0)
    return p.replace(log_s=jax.random.normal(k2, (), jnp.float64))

  val, p, vals = bruteforce.minimize(lambda p: model.loss(p, m, h), init, n_starts=n_starts)
  return val, p, vals


def profile_argmin_grid(zeta, r, beta, d2, lo=1e-3, hi=50.0):
  """Two-stage log grid (independent of the piecewise solver)."""
  s = np.geomspace(lo, hi, 4001)
  i = int(np.argmin(np.asarray(ldv.ldv_profile(s, zeta, r, beta, D1, d2))))
  s = np.geomspace(s[max(i - 1, 0)], s[min(i + 1, s.size - 1)], 4001)
  g = np.asarray(ldv.ldv_profile(s, zeta, r, beta, D1, d2))
  return s[np.argmin(g)], g.min()


# ------------------------------------------------------------ closed form --

def test_thresholds_and_s_star_notes_example():
  z = jnp.sqrt(jnp.asarray(Z2))
  # Corrected Thm 4 ranges of the notes: none < 1.818 <= p=2 < 2.222 <= p=1 < 2.927.
  np.testing.assert_allclose(ldv.ldv_beta_thresholds(z, 0.0, D1, 8),
                             [72 / 24.6, 48 / 21.6, 32 / 17.6], rtol=1e-14)  # float64
  # s* = K_p / (d2 - beta p), values of the notes' brute force.
  for beta, p, s in [(1.0, 3, 5.6 / 5), (2.0, 2, 2.4), (2.5, 1, 2.83636363636), (3.0, 0, 3.075)]:
    sol = ldv.ldv_profile_minimum(z, 0.0, beta, D1, 8)
    assert int(sol["p"]) == p and not bool(sol["ill_posed"])
    np.testing.assert_allclose(sol["s"], s, rtol=1e-10)  # float64
    # s* minimises G on a dense grid (independent of the piecewise solver).
    s_grid, g_grid = profile_argmin_grid(z, 0.0, beta, 8)
    assert float(sol["G"]) <= g_grid + 1e-14
    np.testing.assert_allclose(sol["G"], g_grid, rtol=1e-12)  # float64, fine grid step 3e-6 rel, G quadratic at s*
    np.testing.assert_allclose(s_grid, s, rtol=1e-5)


@pytest.mark.parametrize("name", ["reg", pytest.param("vae", marks=pytest.mark.slow)])
def test_optimum_consistent_jit_vmap(name):
  m, model = problem(name), ldv.LinearVAELDV(D1)
  betas = jnp.asarray([0.3, 1.0, 1.3, 2.0, 2.5, 3.5, 9.0])
  opts = jax.jit(jax.vmap(lambda b: model.optimum(m, {"beta": b, "eta_enc": jnp.asarray(0.7)})))(betas)
  losses = jax.vmap(lambda p, b: model.loss(p, m, {"beta": b, "eta_enc": jnp.asarray(0.7)}))(opts.params, betas)
  np.testing.assert_allclose(losses, opts.loss, rtol=1e-12)  # float64
  specs = jax.vmap(lambda p: model.spectrum(p, m, hyper(1.0)))(opts.params)
  assert set(specs) == set(opts.spectra)
  for key in specs:
    np.testing.assert_allclose(specs[key], opts.spectra[key], atol=1e-12)  # float64
  # Active count decreases with beta; thresholds say the same.
  counts = np.asarray(opts.extras["active_count"])
  assert np.all(np.diff(counts) <= 0) and counts[0] == D1 and counts[-1] == 0
  thr = np.asarray(opts.thresholds["beta"][0])
  np.testing.assert_array_equal(counts, (np.asarray(betas)[:, None] < thr[None, :]).sum(1))
  np.testing.assert_allclose(opts.extras["decoder_var"], opts.spectra["decoder_std"][:, 0] ** 2,
                             rtol=1e-14)  # float64
  # loss = min G + (d2/2) log 2 pi.
  np.testing.assert_allclose(opts.loss, opts.extras["G"] + 0.5 * m.dim_y * np.log(2 * np.pi),
                             rtol=1e-14)  # float64


@pytest.mark.slow
def test_profile_is_inner_minimum():
  """G(s) + (d2/2) log 2pi == min over (U, W, Sigma) of LinearVAE.loss at eta_dec^2 = s."""
  m = problem("reg")
  vae = vae_lib.LinearVAE(D1)
  z, r = mlib.zeta(m), mlib.linear_residual(m)
  s, beta = 1.7, 1.3
  h = lv.as_hyper({"beta": beta, "eta_enc": 0.7, "eta_dec": np.sqrt(s)})
  val, _, _ = bruteforce.minimize(lambda p: vae.loss(p, m, h),
                                  lambda k: vae.init(k, m, 1.0), n_starts=2)
  g = float(ldv.ldv_profile(s, z, r, beta, D1, m.dim_y)) + 0.5 * m.dim_y * np.log(2 * np.pi)
  np.testing.assert_allclose(val, g, rtol=1e-10)  # float64


# ----------------------------------------------------------- brute force --

def check_against_brute(name, beta):
  m, model, h = problem(name), ldv.LinearVAELDV(D1), hyper(beta)
  opt = model.optimum(m, h)
  val, p, vals = brute(name, beta)
  np.testing.assert_allclose(val, opt.loss, rtol=1e-10)  # float64
  spec = model.spectrum(p, m, h)
  assert int(np.sum(np.asarray(spec["omega"]) > 1e-3)) == int(opt.extras["active_count"])
  # G is flat near s*: test G(s_bf) tightly, s_bf loosely.
  s_bf = float(jnp.exp(p.log_s))
  z, r = mlib.zeta(m), mlib.linear_residual(m)
  g_bf = float(ldv.ldv_profile(s_bf, z, r, beta, D1, m.dim_y))
  assert g_bf >= float(opt.extras["G"]) - 1e-12
  np.testing.assert_allclose(g_bf, opt.extras["G"], rtol=1e-12)  # float64
  np.testing.assert_allclose(s_bf, opt.extras["decoder_var"], rtol=1e-6)  # float64, L-BFGS tol
  # Per-mode (omega, lambda, sigma) agree to optimiser tolerance.
  for key in ("omega", "lambda", "sigma_std"):
    np.testing.assert_allclose(spec[key], opt.spectra[key], atol=1e-5)  # float64
  return opt, s_bf


@pytest.mark.parametrize("name,beta", [("reg", 1.3), pytest.param("vae", 2.0, marks=pytest.mark.slow)])
def test_brute_force_partial(name, beta):
  opt, _ = check_against_brute(name, beta)
  assert 0 < int(opt.extras["active_count"]) < D1


@pytest.mark.slow
@pytest.mark.parametrize("name,beta", [("vae", 0.3), ("vae", 1.0), ("vae", 2.5), ("vae", 3.0),
                                       ("vae", 4.5), ("reg", 0.6), ("reg", 2.0), ("reg", 3.5)])
def test_brute_force_all_regimes(name, beta):
  check_against_brute(name, beta)


# ---------------------------------------------------------- ill-posed case --

def test_ill_posed_and_flat_cases():
  z = jnp.sqrt(jnp.asarray(Z2[:3]))  # R = 0, every nonzero mode fits: d^_1 = d^* = 3
  sol = ldv.ldv_profile_minimum(z, 0.0, 2.0, D1, 8)  # beta < d2 / 3
  assert bool(sol["ill_posed"]) and float(sol["G"]) == -np.inf and float(sol["s"]) == 0.0
  # G falls like ((d2 - beta d)/2) log s as s -> 0.
  # (K/(2s) cancels to 0 up to eps tr/s, so stay at s >= 1e-6: error ~1e-9.)
  g = np.asarray(ldv.ldv_profile(jnp.asarray([1e-3, 1e-6]), z, 0.0, 2.0, D1, 8))
  np.testing.assert_allclose(g[0] - g[1], 0.5 * (8 - 2.0 * 3) * np.log(1e3), rtol=1e-8)  # float64
  # beta = d2 / 3: G is constant on (0, s_3].
  gf = np.asarray(ldv.ldv_profile(jnp.geomspace(1e-6, Z2[2] / (8 / 3), 50), z, 0.0, 8 / 3, D1, 8))
  np.testing.assert_allclose(gf, gf[0], rtol=1e-10)  # float64
  sol = ldv.ldv_profile_minimum(z, 0.0, 8 / 3, D1, 8)
  # Every s in (0, s_3] is optimal; at s_3 mode 3 sits on its threshold, so p = 2 or 3.
  assert not bool(sol["ill_posed"]) and int(sol["p"]) in (2, 3)
  np.testing.assert_allclose(sol["G"], gf[0], rtol=1e-10)  # float64
  # Above d2 / 3 it is well posed with a unique minimiser.
  assert not bool(ldv.ldv_profile_minimum(z, 0.0, 3.0, D1, 8)["ill_posed"])
  # The model flags it too.
  q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
  m = lv.moments_from_second_moments(q @ np.diag(Z2[:3]) @ q.T)
  opt = ldv.LinearVAELDV(3).optimum(m, hyper(0.5))
  assert bool(opt.extras["ill_posed"]) and float(opt.loss) == -np.inf


# ----------------------------------------------------------------- errata --

def table1_literal_rows(z2, d1, d2, r=0.0):
  """W&Z Table 1 as printed: partial rows sum to d^_1 (not d^*), R omitted.

  Returns {p: (lo, hi)} half-open beta ranges for p = d1 (no collapse; row 3,
  which sums to d^*), 1 <= p < d1 (partial; rows 4) and 0 (complete; row 5).
  """
  z2 = np.asarray(z2)
  rows = {d1: (0.0, d2 * z2[d1 - 1] / (d1 * z2[d1 - 1] + z2[d1:].sum()))}
  for p in range(1, d1):
    lo = d2 * z2[p] / (z2[p + 1:d1].sum() + (p + 1) * z2[p])
    hi = d2 * z2[p - 1] / (z2[p:d1].sum() + p * z2[p - 1])
    rows[p] = (lo, hi)
  rows[0] = (d2 * z2[0] / z2.sum(), np.inf)
  return rows


def corrected_rows(z2, d1, d2, r=0.0):
  b = np.asarray(ldv.ldv_beta_thresholds(jnp.sqrt(jnp.asarray(z2)), r, d1, d2))
  rows = {d1: (0.0, b[d1 - 1])}
  for p in range(1, d1):
    rows[p] = (b[p], b[p - 1])
  rows[0] = (b[0], np.inf)
  return rows


def rows_containing(rows, beta):
  return sorted(p for p, (lo, hi) in rows.items() if lo <= beta < hi)


def test_erratum_table1_literal_ranges():
  """Literal Table 1 rows leave gaps and overlap; the G-grid argmin (an
  independent check of p) lands in exactly one corrected row."""
  lit, cor = table1_literal_rows(Z2, D1, 8), corrected_rows(Z2, D1, 8)
  np.testing.assert_allclose([lit[2][0], lit[2][1], lit[1][1], lit[0][0]],
                             [8 / 3, 3.0, 72 / 19, 72 / 24.6], rtol=1e-14)  # float64
  # beta = 2 (p = 2) lies in no literal row; beta = 3 (p = 0) in two.
  assert rows_containing(lit, 2.0) == [] and rows_containing(lit, 3.0) == [0, 1]
  z = jnp.sqrt(jnp.asarray(Z2))
  for beta, p in [(2.0, 2), (3.0, 0)]:
    s_grid, _ = profile_argmin_grid(z, 0.0, beta, 8)
    assert int(np.sum(Z2[:D1] > beta * s_grid)) == p
    assert rows_containing(cor, beta) == [p]
  # Corrected rows tile (0, inf); the literal ones do not.
  grid = np.linspace(0.05, 6.0, 2000)
  assert all(len(rows_containing(cor, b)) == 1 for b in grid)
  assert not all(len(rows_containing(lit, b)) == 1 for b in grid)


@pytest.mark.slow
def test_erratum_table1_literal_ranges_fail_brute_force():
  lit, cor = table1_literal_rows(Z2, D1, 8), corrected_rows(Z2, D1, 8)
  m, model = problem("vae"), ldv.LinearVAELDV(D1)
  for beta in (2.0, 3.0):
    _, p, _ = brute("vae", beta)
    p_bf = int(np.sum(np.asarray(model.spectrum(p, m, hyper(beta))["omega"]) > 1e-3))
    assert rows_containing(cor, beta) == [p_bf]
    assert rows_containing(lit, beta) != [p_bf]


def test_erratum_residual_needed_for_noisy_regression():
  m = problem("reg")
  z, r = mlib.zeta(m), mlib.linear_residual(m)
  np.testing.assert_allclose(r, 1.5, rtol=1e-12)  # float64
  beta = 1.3
  _, p, _ = brute("reg", beta)
  s_bf = float(jnp.exp(p.log_s))
  s_cor = float(ldv.ldv_profile_minimum(z, r, beta, D1, m.dim_y)["s"])
  s_lit = float(ldv.ldv_profile_minimum(z, 0.0, beta, D1, m.dim_y)["s"])
  np.testing.assert_allclose(s_bf, s_cor, rtol=1e-6)  # float64
  assert abs(s_lit - s_bf) > 0.1 * s_bf


# ------------------------------------------------------ Hessian at origin --

def _whitened_loss(m, model, h, d1):
  """LinearVAE.loss as a function of (U, V), W = V^T Phi^{-1/2} P_A^T."""
  p_a, _, inv, _ = mlib.whitening(m)
  raw = jnp.zeros((0,), jnp.float64)

  def f(uv):
    u, v = uv
    return model.loss(vae_lib.VAEParams(U=u, W=(v.T * inv[None, :]) @ p_a.T, sigma_raw=raw), m, h)
  zero = (jnp.zeros((m.dim_y, d1)), jnp.zeros((m.dim_x, d1)))
  return f, zero


@pytest.mark.parametrize("name,sigma", [
    ("reg", [1.0, 0.5, 1.5]), pytest.param("reg", [0.9], marks=pytest.mark.slow),
    pytest.param("vae", [0.9], marks=pytest.mark.slow),
    pytest.param("vae", [1.0, 0.5, 1.5], marks=pytest.mark.slow)])
def test_origin_hessian_spectrum(name, sigma):
  m = problem(name)
  d1 = len(sigma) if len(sigma) > 1 else 2
  sig = jnp.broadcast_to(jnp.asarray(sigma), (d1,))
  model = vae_lib.LinearVAE(d1, "fixed")
  h = lv.as_hyper({"beta": 1.7, "eta_enc": 0.8, "eta_dec": 1.2, "sigma": sig})
  kappa = 1.7 * 1.2 ** 2 / 0.8 ** 2
  f, zero = _whitened_loss(m, model, h, d1)
  flat, unravel = ravel_pytree(zero)
  hess = jax.jit(jax.hessian(lambda v: f(unravel(v))))(flat)
  got = np.sort(np.linalg.eigvalsh(np.asarray(hess)))[::-1]
  want = ldv.origin_hessian_eigvals(mlib.zeta(m), sig, kappa, m.dim_x, m.dim_y) / (2 * 1.2 ** 2)
  np.testing.assert_allclose(got, want, atol=1e-12)  # float64
  # In (U, W) the Hessian is congruent: same inertia.
  flat_w, unravel_w = ravel_pytree((zero[0], zero[1].T))
  raw = jnp.zeros((0,), jnp.float64)
  hw = jax.jit(jax.hessian(
      lambda v: model.loss(vae_lib.VAEParams(*unravel_w(v), sigma_raw=raw), m, h)))(flat_w)
  ew = np.linalg.eigvalsh(np.asarray(hw))
  assert np.sum(ew < 0) == np.sum(got < 0) and np.sum(ew > 0) == np.sum(got > 0)


@pytest.mark.parametrize("ratio,sigma", [
    (1.25, [1.0, 0.5, 1.5]), pytest.param(0.8, [1.0, 0.5, 1.5], marks=pytest.mark.slow),
    pytest.param(1.25, [0.6, 0.6], marks=pytest.mark.slow),
    pytest.param(0.8, [0.6, 0.6], marks=pytest.mark.slow)])
def test_origin_global_min_criterion(ratio, sigma):
  """origin optimal iff zeta_1^2 <= kappa sigma_min^2 (brute force over (U, W))."""
  m = problem("vae")
  sig = jnp.asarray(sigma)
  d1 = sig.shape[0]
  zeta = mlib.zeta(m)
  # Choose beta so that kappa sigma_min^2 / zeta_1^2 = ratio (eta_enc = 1, eta_dec = 1).
  beta = ratio * Z2[0] / float(jnp.min(sig)) ** 2
  h = lv.as_hyper({"beta": beta, "eta_enc": 1.0, "eta_dec": 1.0, "sigma": sig})
  model = vae_lib.LinearVAE(d1, "fixed")
  crit = bool(ldv.origin_is_global_min(zeta, sig, beta))
  assert crit == (ratio >= 1.0)
  zero = vae_lib.VAEParams(U=jnp.zeros((8, d1)), W=jnp.zeros((d1, 8)), sigma_raw=jnp.zeros((0,)))
  l0 = float(model.loss(zero, m, h))
  val, _, _ = bruteforce.minimize(lambda p: model.loss(p, m, h),
                                  lambda k: model.init(k, m, 1.0), n_starts=2)
  if crit:
    np.testing.assert_allclose(val, l0, rtol=1e-12)  # float64
  else:
    assert l0 - val > 1e-2
  eig = ldv.origin_hessian_eigvals(zeta, sig, beta, 8, 8)
  assert bool(eig[-1] >= 0) == crit


# ------------------------------------------------------------------ input --

def test_bad_input_raises():
  with pytest.raises(ValueError, match="encoder_var"):
    ldv.LinearVAELDV(3, "fixed")
  m = problem("vae")
  with pytest.raises(ValueError, match="eta_enc"):
    ldv.LinearVAELDV(3).optimum(m, lv.as_hyper({"beta": 1.0}))
  with pytest.raises(ValueError, match="beta"):
    ldv.LinearVAELDV(3).optimum(m, hyper(-1.0))
  with pytest.raises(ValueError, match="zeta"):
    ldv.origin_hessian_eigvals(jnp.ones(5), jnp.ones(2), 1.0, 4, 6)
  with pytest.raises(ValueError, match="kappa"):
    ldv.origin_hessian_eigvals(jnp.ones(3), jnp.ones(2), -1.0, 4, 6)
  assert lv.make_model("vae_ldv", latent_dim=2).hyper_names == ("beta", "eta_enc")
