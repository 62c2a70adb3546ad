"""Linear VAE: closed-form optimum vs brute force, Monte Carlo, errata (float64).

Closed forms (``LinearVAE.optimum``) are checked against ``tests/bruteforce.py``
(multi-start L-BFGS on ``model.loss``, knows nothing of the theory). Problems
are built from designed spectra so every zeta_i^2 sits >= 10 % away from its
collapse threshold (collapsed modes converge only linearly near thresholds).

Tolerances (all float64):
  RTOL_LOSS  = 1e-10  brute-force minimum vs closed-form L* (relative)
  ATOL_SPEC  = 1e-6   learned vs closed-form singular values / stds (absolute,
                      values are O(1); set by the optimiser's gtol)
  RTOL_EXACT = 1e-12  identities that hold to round-off (loss(opt.params) = L*,
                      literal paper formulas, vmapped vs per-point)
  MC_Z       = 4      Monte-Carlo |z| bound, standard error from the samples
The heavier sweeps are ``@pytest.mark.slow``.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import linvae_jax as lv
from linvae_jax._src import moments as M
from linvae_jax._src import spectra as S

import bruteforce

RTOL_LOSS = 1e-10  # float64
ATOL_SPEC = 1e-6  # float64
RTOL_EXACT = 1e-12  # float64
MC_Z = 4.0


# ------------------------------------------------------------------ problems --

def _orth(rng, n):
  q, r = np.linalg.qr(rng.normal(size=(n, n)))
  return q * np.sign(np.diag(r))[None, :]


def _problem(name):
  """Population moments with designed spectra (seeded, deterministic)."""
  rng = np.random.default_rng(sum(map(ord, name)))
  if name == "p1":  # y = x, D0 = 5, zeta^2 = eig A = [9, 5, 2.5, 1.2, 0.5]
    q = _orth(rng, 5)
    a = (q * np.array([9.0, 5.0, 2.5, 1.2, 0.5])[None, :]) @ q.T
    return lv.moments_from_second_moments(a)
  if name == "p2":  # y = x, rank A = 2 < d1 = 3: zeta^2 = [6, 2.5, 0, 0, 0]
    q = _orth(rng, 5)
    a = (q * np.array([6.0, 2.5, 0.0, 0.0, 0.0])[None, :]) @ q.T
    return lv.moments_from_second_moments(a)
  if name in ("p3", "p4"):  # noisy y = M x + tau nu: D0 = 4, D2 = 3, R = 3 tau^2
    phi = np.array([4.0, 2.0, 1.0, 0.5])
    zeta = np.array([6.0, 2.2, 0.7]) ** 0.5
    q, f, g = _orth(rng, 4), _orth(rng, 3), _orth(rng, 4)
    a = (q * phi[None, :]) @ q.T
    z = (f * zeta[None, :]) @ g[:, :3].T  # Z = E[y x~^T], singular values zeta
    m = z @ np.diag(phi ** -0.5) @ q.T  # y = M x gives Z = M P Phi^{1/2}
    tau2 = 0.3
    return lv.moments_from_second_moments(a, m @ a @ m.T + tau2 * np.eye(3), a @ m.T)
  raise KeyError(name)


CASES = {
    # name: (problem, d1, encoder_var, hyper, expected number of active modes)
    "learn_partial": ("p1", 3, "learnable", dict(beta=3.5, eta_enc=1.1, eta_dec=1.0), 2),
    "fixed_distinct": ("p1", 3, "fixed", dict(beta=1.8, eta_enc=1.1, eta_dec=1.0, sigma=[1.5, 0.5, 0.9]), 2),
    "full_noisy": ("p3", 3, "learnable_full", dict(beta=3.0, eta_enc=0.9, eta_dec=1.0), 1),
    "learn_lowrank": ("p2", 3, "learnable", dict(beta=1.2, eta_enc=0.8, eta_dec=1.0), 2),
    # slow sweep
    "fixed_tied_lowrank": ("p2", 3, "fixed", dict(beta=1.0, eta_enc=1.0, eta_dec=1.0, sigma=[0.7, 1.2, 0.7]), 2),
    "learn_none": ("p1", 3, "learnable", dict(beta=0.8, eta_enc=1.0, eta_dec=1.1), 3),
    "learn_complete": ("p1", 3, "learnable", dict(beta=12.0, eta_enc=1.3, eta_dec=1.0), 0),
    "learn_noisy": ("p3", 3, "learnable", dict(beta=1.5, eta_enc=1.2, eta_dec=1.0), 2),
    "full_partial": ("p1", 4, "learnable_full", dict(beta=2.0, eta_enc=0.7, eta_dec=1.2), 2),
    "full_complete": ("p3", 2, "learnable_full", dict(beta=7.0, eta_enc=1.0, eta_dec=1.0), 0),
    "fixed_iso": ("p1", 3, "fixed", dict(beta=2.5, eta_enc=1.0, eta_dec=1.0, sigma=1.2), 2),
    "fixed_none": ("p1", 3, "fixed", dict(beta=0.5, eta_enc=1.0, eta_dec=1.0, sigma=[1.2, 0.3, 0.7]), 3),
    "fixed_complete": ("p1", 2, "fixed", dict(beta=4.0, eta_enc=1.0, eta_dec=1.0, sigma=[1.7, 2.0]), 0),
    "fixed_noisy_d1_gt_d2": ("p4", 4, "fixed", dict(beta=1.0, eta_enc=1.0, eta_dec=1.0, sigma=[0.6, 1.0, 0.8, 1.4]), 2),
    "fixed_eta_enc_wz_thm1": ("p3", 2, "fixed", dict(beta=1.5, eta_enc=0.9, eta_dec=1.0, sigma=0.9), 2),
}
DEFAULT_CASES = ["learn_partial", "fixed_distinct", "full_noisy", "learn_lowrank"]
SLOW_CASES = [c for c in CASES if c not in DEFAULT_CASES]


# Eager calls (validation on): eager op compiles are cached across tests by
# shape, which is cheaper here than one whole-program XLA compile per config.
def _opt(model, m, h):
  return model.optimum(m, h)


def _loss(model, p, m, h):
  return model.loss(p, m, h)


def _spec(model, p, m, h):
  return model.spectrum(p, m, h)


def _case(name):
  prob, d1, ev, hyper, _ = CASES[name]
  return _problem(prob), lv.make_model("vae", latent_dim=d1, encoder_var=ev), lv.as_hyper(hyper)


@functools.lru_cache(maxsize=None)
def _brute(name, n_starts=2):
  """Cached brute-force minimum (value, params) of one case."""
  m, model, h = _case(name)
  val, params, vals = bruteforce.minimize(lambda p: model.loss(p, m, h),
                                          lambda k: model.init(k, m, 0.5), n_starts=n_starts)
  return val, params, vals


def _coord_stats(model, params, m, h):
  """Per latent coordinate: (|U column|, |V row| = sqrt((W A W^T)_kk), sigma std)."""
  u_n = np.linalg.norm(np.asarray(params.U), axis=0)
  w = np.asarray(params.W)
  v_n = np.sqrt(np.clip(np.diag(w @ np.asarray(m.xx) @ w.T), 0, None))
  cov = np.asarray(model.encoder_cov(params, h))
  s = np.sqrt(cov if cov.ndim == 1 else np.diag(cov))
  return np.stack([u_n, v_n, s], 1)


def _check_against_brute(name):
  m, model, h = _case(name)
  opt = _opt(model, m, h)
  d1 = model.latent_dim
  # the closed-form params attain L* (round-off)
  np.testing.assert_allclose(_loss(model, opt.params, m, h), opt.loss, rtol=RTOL_EXACT)
  val, bp, vals = _brute(name)
  assert val >= float(opt.loss) - RTOL_LOSS * abs(float(opt.loss))  # L* is a lower bound
  np.testing.assert_allclose(val, opt.loss, rtol=RTOL_LOSS)
  learned = _spec(model, bp, m, h)
  for k, v in opt.spectra.items():
    assert v.shape == (d1,)
    assert np.all(np.diff(np.asarray(v)) <= 0), k  # non-increasing
    np.testing.assert_allclose(S.pad_to(learned[k], d1), v, atol=ATOL_SPEC, err_msg=k)
  # rank view: active count = number of non-zero learned omega
  n_act = int(np.sum(opt.active["z"]))
  assert n_act == CASES[name][4]  # the regime the case was designed for
  assert np.all(np.asarray(opt.active["z"])[:n_act]) and n_act == int(np.sum(np.asarray(learned["omega"]) > 1e-4))
  return m, model, h, opt, bp


@pytest.mark.parametrize("name", DEFAULT_CASES)
def test_optimum_matches_bruteforce(name):
  m, model, h, opt, bp = _check_against_brute(name)
  if model.encoder_var == "learnable":
    # per-coordinate triples (|U col|, |V row|, sigma), sorted by (sigma, -|U col|)
    got = _coord_stats(model, bp, m, h)
    want = np.stack([np.asarray(opt.spectra["omega"]),
                     np.asarray(opt.spectra["lambda"]), np.asarray(opt.extras["sigma_std_modes"])], 1)
    key = lambda t: t[np.lexsort((-t[:, 0], np.round(t[:, 2], 5)))]
    np.testing.assert_allclose(key(got), key(want), atol=ATOL_SPEC)
  if name == "fixed_distinct":
    # distinct sigma: coordinates are pinned; smallest sigma carries the largest omega
    got = _coord_stats(model, bp, m, h)[:, :2]
    want = _coord_stats(model, opt.params, m, h)[:, :2]
    np.testing.assert_allclose(got, want, atol=ATOL_SPEC)
    sig = np.asarray(h["sigma"])
    assert np.argmax(got[:, 0]) == np.argmin(sig) and got[np.argmax(sig), 0] < 1e-5
    assert bool(opt.extras["coord_collapse_forced"])


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_CASES)
def test_optimum_matches_bruteforce_sweep(name):
  m, model, h, opt, bp = _check_against_brute(name)
  if model.encoder_var == "learnable":
    got = _coord_stats(model, bp, m, h)
    want = np.stack([np.asarray(opt.spectra["omega"]), np.asarray(opt.spectra["lambda"]),
                     np.asarray(opt.extras["sigma_std_modes"])], 1)
    key = lambda t: t[np.lexsort((-t[:, 0], np.round(t[:, 2], 5)))]
    np.testing.assert_allclose(key(got), key(want), atol=ATOL_SPEC)


@pytest.mark.slow
def test_case_regimes_straddle_thresholds():
  """Every case is in its designed regime, each mode >= 10 % from its beta threshold."""
  for name in CASES:
    m, model, h = _case(name)
    opt = _opt(model, m, h)
    assert int(np.sum(opt.active["z"])) == CASES[name][4], name
    thr = np.asarray(opt.thresholds["beta"])
    ratio = thr[thr > 0] / float(h["beta"])
    assert np.all(np.abs(ratio - 1.0) > 0.1), (name, ratio)


def test_thresholds_agree_with_active_mask():
  for name in ["learn_partial", "fixed_distinct", "full_noisy", "fixed_noisy_d1_gt_d2"]:
    m, model, h = _case(name)
    opt = _opt(model, m, h)
    for hp in ("beta", "eta_dec"):
      for i, t in enumerate(np.asarray(opt.thresholds[hp])):
        if t <= 0:
          continue
        below = _opt(model, m, {**h, hp: jnp.asarray(t * 0.999)})
        above = _opt(model, m, {**h, hp: jnp.asarray(t * 1.001)})
        assert bool(below.active["z"][i]) and not bool(above.active["z"][i]), (name, hp, i)


def test_fixed_sigma_eta_enc_is_wz_thm1_and_learnable_thresholds():
  """W&Z Thm 1 (eq. 10, sigma_i = eta_enc) literal; same collapse set as learnable Sigma."""
  m = _problem("p3")
  h = lv.as_hyper(dict(beta=1.5, eta_enc=0.9, eta_dec=1.0))
  fixed = _opt(lv.make_model("vae", latent_dim=3, encoder_var="fixed"), m, {**h, "sigma": h["eta_enc"]})
  learn = _opt(lv.make_model("vae", latent_dim=3, encoder_var="learnable"), m, h)
  zeta = np.asarray(fixed.extras["zeta"])
  b, ee, ed = 1.5, 0.9, 1.0
  lam_wz = np.sqrt(np.maximum(0, math.sqrt(b) * ed / ee ** 2 * (zeta - math.sqrt(b) * ed)))  # decoder
  th_wz = np.sqrt(np.maximum(0, ee ** 2 / (math.sqrt(b) * ed) * (zeta - math.sqrt(b) * ed)))  # encoder
  np.testing.assert_allclose(fixed.spectra["omega"], lam_wz, rtol=RTOL_EXACT)
  np.testing.assert_allclose(fixed.spectra["lambda"], th_wz, rtol=RTOL_EXACT)
  np.testing.assert_array_equal(fixed.active["z"], learn.active["z"])
  np.testing.assert_allclose(fixed.thresholds["beta"], learn.thresholds["beta"], rtol=RTOL_EXACT)
  assert not bool(fixed.extras["coord_collapse_forced"]) and bool(learn.extras["coord_collapse_forced"])


# -------------------------------------------------------------------- errata --

def test_erratum_wz_prop2_index_pairing_fails_ascending_passes():
  name = "fixed_distinct"  # sigma = (1.5, 0.5, 0.9): not ascending
  m, model, h = _case(name)
  opt = _opt(model, m, h)
  val = _brute(name)[0]
  # W&Z Cor. 1 / eq. (12) as printed: sigma_i paired with zeta_i in index order, plus
  # tr B - sum zeta^2 (= R = 0 here) and the decoder partition constant
  zeta, sig = np.asarray(opt.extras["zeta"]), np.asarray(h["sigma"])
  b, ee, ed = (float(h[k]) for k in ("beta", "eta_enc", "eta_dec"))
  gain = np.maximum(zeta - math.sqrt(b) * ed / ee * sig, 0.0) ** 2
  q = sig ** 2 / ee ** 2
  literal = ((float(jnp.trace(m.yy)) - gain.sum()) / (2 * ed ** 2) + 0.5 * b * np.sum(q - 1 - np.log(q))
             + 0.5 * m.dim_y * math.log(2 * math.pi * ed ** 2))
  assert literal - val > 1e-2 * abs(val), (literal, val)  # the paper's pairing overstates the minimum
  np.testing.assert_allclose(opt.loss, val, rtol=RTOL_LOSS)  # ascending pairing is exact


def test_erratum_wz_thm2_sigma_zero_past_dstar():
  name = "learn_lowrank"  # d1 = 3 > d* = rank A = 2
  m, model, h = _case(name)
  opt = _opt(model, m, h)
  val, bp, _ = _brute(name)
  lit = opt.params.replace(sigma_raw=opt.params.sigma_raw.at[2].set(-jnp.inf))  # sigma_3 = 0
  assert not np.isfinite(float(_loss(model, lit, m, h)))  # W&Z: sigma_i* = 0 for i > d*
  near = opt.params.replace(sigma_raw=opt.params.sigma_raw.at[2].set(2 * math.log(1e-3)))
  assert float(_loss(model, near, m, h)) > val + 1.0
  np.testing.assert_allclose(opt.extras["sigma_std_modes"][2], h["eta_enc"], rtol=RTOL_EXACT)
  s_bf = _coord_stats(model, bp, m, h)
  assert np.max(s_bf[:, 2]) == pytest.approx(float(h["eta_enc"]), abs=ATOL_SPEC)  # brute force: eta_enc
  np.testing.assert_allclose(val, opt.loss, rtol=RTOL_LOSS)


def test_erratum_wz_cor2_without_r_fails_for_noisy_y():
  name = "full_noisy"
  m, model, h = _case(name)
  opt = _opt(model, m, h)
  val, bp, _ = _brute(name)
  bf_wz = float(model.paper_loss(bp, m, h, convention="wz"))
  zeta = np.asarray(opt.extras["zeta"])
  b, ed = float(h["beta"]), float(h["eta_dec"])
  r = b * ed ** 2 / zeta ** 2
  act = zeta ** 2 > b * ed ** 2
  gains = np.where(act, zeta ** 2 * (1 + r * (np.log(np.where(act, r, 1.0)) - 1)), 0.0)
  zeta_all = np.asarray(M.zeta(m))
  literal = (np.sum(zeta_all ** 2) - gains.sum()) / (2 * ed ** 2)  # W&Z eq. (43) as printed
  big_r = float(M.linear_residual(m))
  assert big_r == pytest.approx(0.9, rel=1e-10)  # 3 tau^2
  np.testing.assert_allclose(bf_wz - literal, big_r / (2 * ed ** 2), rtol=1e-9)  # misses R/(2 eta^2)
  np.testing.assert_allclose(literal + big_r / (2 * ed ** 2), bf_wz, rtol=RTOL_LOSS)


def test_dang_thm1_and_thm4_lstar_as_printed():
  """Dang et al. Thm 1 / Thm 4 optimal losses (eq. 3 convention) are correct as printed."""
  # Thm 4 (learnable): L* = sum_{i>d1} theta^2/eta_dec^2 + sum_{i<=d1} l_i
  name = "learn_partial"
  m, model, h = _case(name)
  theta = np.asarray(M.theta(m))
  b, ee, ed = (float(h[k]) for k in ("beta", "eta_enc", "eta_dec"))
  d1 = model.latent_dim
  t = theta[:d1]
  li = np.where(t ** 2 >= b * ed ** 2, 2 * b + b * np.log(t ** 2 / (b * ed ** 2 * ee ** 2)),
                t ** 2 / ed ** 2 + b - b * np.log(ee ** 2))
  dang = np.sum(theta[d1:] ** 2) / ed ** 2 + li.sum()
  val, bp, _ = _brute(name)
  np.testing.assert_allclose(dang, model.paper_loss(bp, m, h, convention="dang"), rtol=RTOL_LOSS)
  # Thm 1 (fixed diag sigma, ascending): h_i = 2 sqrt(b) c theta s - b c^2 s^2 if active else theta^2
  name = "fixed_distinct"
  m, model, h = _case(name)
  b, ee, ed = (float(h[k]) for k in ("beta", "eta_enc", "eta_dec"))
  c = ed / ee
  s_all = np.asarray(h["sigma"])
  s = np.sort(s_all)
  t = theta[:d1]
  hi = np.where(t >= math.sqrt(b) * c * s, 2 * math.sqrt(b) * c * t * s - b * c ** 2 * s ** 2, t ** 2)
  dang = ((np.sum(theta[d1:] ** 2) + hi.sum()) / ed ** 2 + b / ee ** 2 * np.sum(s_all ** 2)
          - b * np.sum(np.log(s_all ** 2)))
  val, bp, _ = _brute(name)
  np.testing.assert_allclose(dang, model.paper_loss(bp, m, h, convention="dang"), rtol=RTOL_LOSS)


# ----------------------------------------------------- App C, Prop 5, biases --

def _dataset(seed, n, d0, scales, mean):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d0)) * np.asarray(scales)[None, :] + np.asarray(mean)[None, :]


def _beta_between_modes(m, i, ed=1.0):
  """beta whose threshold lies (geometrically) between zeta_i^2 and zeta_{i+1}^2."""
  th = np.asarray(M.theta(m))
  return float(th[i - 1] * th[i]) / ed ** 2


@pytest.mark.slow
def test_dang_app_c_per_sample_sigma_equals_shared():
  x = _dataset(11, 5, 3, [3.0, 1.5, 0.5], [0.5, -0.3, 0.2])
  m = lv.moments_from_arrays(x)
  d1, n = 2, x.shape[0]
  h = lv.as_hyper(dict(beta=_beta_between_modes(m, 1), eta_enc=0.9, eta_dec=1.0))
  model = lv.make_model("vae", latent_dim=d1, encoder_var="learnable")
  opt = _opt(model, m, h)
  xj = jnp.asarray(x)

  def loss(p):  # per-sample Sigma_n = diag(exp(logvar[n])), exact expectation over eps
    ev, dv = h["eta_enc"] ** 2, h["eta_dec"] ** 2
    mu = xj @ p["W"].T
    rec = jnp.sum((xj - mu @ p["U"].T) ** 2, 1) + jnp.sum(jnp.exp(p["lv"]) * jnp.sum(p["U"] ** 2, 0)[None, :], 1)
    kl = 0.5 * (jnp.sum(jnp.exp(p["lv"]) + mu ** 2, 1) / ev - d1 - jnp.sum(p["lv"], 1) + d1 * jnp.log(ev))
    return jnp.mean(0.5 * rec / dv + 0.5 * 3 * jnp.log(2 * math.pi * dv) + h["beta"] * kl)

  def init(k):
    k1, k2, k3 = jax.random.split(k, 3)
    return {"U": 0.5 * jax.random.normal(k1, (3, d1)), "W": 0.5 * jax.random.normal(k2, (d1, 3)),
            "lv": 0.3 * jax.random.normal(k3, (n, d1))}

  val, p, _ = bruteforce.minimize(loss, init, n_starts=2)
  assert int(np.sum(opt.active["z"])) == 1  # partial collapse
  np.testing.assert_allclose(val, opt.loss, rtol=RTOL_LOSS)
  # every sample's Sigma_n is the same shared optimum
  s = np.sort(np.exp(0.5 * np.asarray(p["lv"])), axis=1)[:, ::-1]
  np.testing.assert_allclose(s, np.broadcast_to(opt.spectra["sigma_std"], s.shape), atol=ATOL_SPEC)


def _ddv_loss(p, xj, h, d2):
  """W&Z App C: sigma(x) = |C x + f| per coordinate, exact expectation over eps."""
  ev, dv = h["eta_enc"] ** 2, h["eta_dec"] ** 2
  mu = xj @ p["W"].T
  var = (xj @ p["C"].T + p["f"][None, :]) ** 2
  rec = jnp.sum((xj - mu @ p["U"].T) ** 2, 1) + jnp.sum(var * jnp.sum(p["U"] ** 2, 0)[None, :], 1)
  q = var / ev
  kl = 0.5 * (jnp.sum(q - 1 - jnp.log(q), 1) + jnp.sum(mu ** 2, 1) / ev)
  return jnp.mean(0.5 * rec / dv + 0.5 * d2 * jnp.log(2 * math.pi * dv) + h["beta"] * kl)


def test_wz_prop5_data_dependent_variance_never_better():
  x = _dataset(5, 8, 3, [2.5, 1.2, 0.6], [0.7, 0.2, -0.4])  # non-zero mean (Eq. 31 cross term)
  xj = jnp.asarray(x)
  h = lv.as_hyper(dict(beta=1.3, eta_enc=0.8, eta_dec=1.1))
  rng = np.random.default_rng(3)
  f_ddv = jax.jit(lambda p: _ddv_loss(p, xj, h, 3))
  gaps = []
  for _ in range(200):
    p = {"U": rng.normal(size=(3, 2)), "W": rng.normal(size=(2, 3)),
         "C": rng.normal(size=(2, 3)), "f": rng.normal(size=2)}
    p = jax.tree.map(jnp.asarray, p)
    f2 = jnp.sqrt(jnp.mean((xj @ p["C"].T + p["f"][None, :]) ** 2, 0))  # Lemma 1, empirical E sigma^2
    p0 = {**p, "C": jnp.zeros_like(p["C"]), "f": f2}
    gaps.append(float(f_ddv(p) - f_ddv(p0)))
  gaps = np.asarray(gaps)
  assert np.all(gaps >= -1e-12)  # float64 round-off
  assert np.median(gaps) > 1e-3  # strict for generic C: Jensen gap on -log
  # equality when C = 0 already
  p = {**p, "C": jnp.zeros_like(p["C"])}
  p0 = {**p, "f": jnp.abs(p["f"])}
  assert float(f_ddv(p)) == pytest.approx(float(f_ddv(p0)), rel=RTOL_EXACT)


@pytest.mark.slow
def test_wz_prop5_bruteforce_min_equals_cor2():
  x = _dataset(5, 8, 3, [2.5, 1.2, 0.6], [0.7, 0.2, -0.4])
  m = lv.moments_from_arrays(x)
  xj = jnp.asarray(x)
  h = lv.as_hyper(dict(beta=_beta_between_modes(m, 1, 1.1), eta_enc=0.8, eta_dec=1.1))
  model = lv.make_model("vae", latent_dim=2, encoder_var="learnable")
  opt = _opt(model, m, h)

  def init(k):
    k1, k2, k3, k4 = jax.random.split(k, 4)
    return {"U": 0.5 * jax.random.normal(k1, (3, 2)), "W": 0.5 * jax.random.normal(k2, (2, 3)),
            "C": 0.1 * jax.random.normal(k3, (2, 3)), "f": 1.0 + 0.1 * jax.random.normal(k4, (2,))}

  val, p, _ = bruteforce.minimize(lambda p: _ddv_loss(p, xj, h, 3), init, n_starts=3)
  np.testing.assert_allclose(val, opt.loss, rtol=RTOL_LOSS)
  assert np.max(np.abs(np.asarray(p["C"]))) < 1e-4  # data-independent at the optimum


@pytest.mark.slow
def test_wz_app_b_biases_equal_centred_closed_form():
  rng = np.random.default_rng(21)
  x = _dataset(21, 10, 3, [2.0, 1.0, 0.4], [1.5, -1.0, 0.8])
  y = x @ rng.normal(size=(3, 2)) + 0.3 * rng.normal(size=(10, 2)) + np.array([2.0, -0.5])[None, :]
  mc = lv.moments_from_arrays(x, y, centred=True)
  mu = lv.moments_from_arrays(x, y)
  h = lv.as_hyper(dict(beta=0.6, eta_enc=1.0, eta_dec=0.8))
  model = lv.make_model("vae", latent_dim=2, encoder_var="learnable")
  opt_c, opt_u = _opt(model, mc, h), _opt(model, mu, h)
  xj, yj = jnp.asarray(x), jnp.asarray(y)

  def loss(p):  # biases b_e, b_d on raw (uncentred) data; exact expectation over eps
    ev, dv = h["eta_enc"] ** 2, h["eta_dec"] ** 2
    mean = xj @ p["W"].T + p["be"][None, :]
    rec = jnp.sum((yj - mean @ p["U"].T - p["bd"][None, :]) ** 2, 1) + jnp.sum(jnp.exp(p["lv"]) * jnp.sum(p["U"] ** 2, 0))
    kl = 0.5 * ((jnp.sum(jnp.exp(p["lv"])) + jnp.sum(mean ** 2, 1)) / ev - 2 - jnp.sum(p["lv"]) + 2 * jnp.log(ev))
    return jnp.mean(0.5 * rec / dv + 0.5 * 2 * jnp.log(2 * math.pi * dv) + h["beta"] * kl)

  def init(k):
    ks = jax.random.split(k, 5)
    return {"U": 0.5 * jax.random.normal(ks[0], (2, 2)), "W": 0.5 * jax.random.normal(ks[1], (2, 3)),
            "lv": 0.1 * jax.random.normal(ks[2], (2,)), "be": jax.random.normal(ks[3], (2,)),
            "bd": jax.random.normal(ks[4], (2,))}

  val, p, _ = bruteforce.minimize(loss, init, n_starts=2)
  np.testing.assert_allclose(val, opt_c.loss, rtol=RTOL_LOSS)
  assert float(opt_u.loss) - val > 1e-2  # uncentred closed form is not the biased minimum
  np.testing.assert_allclose(p["bd"], y.mean(0), atol=ATOL_SPEC)  # Prop 4: b_d* = E[y]
  np.testing.assert_allclose(p["be"], -np.asarray(p["W"]) @ x.mean(0), atol=ATOL_SPEC)  # b_e* = -W E[x]


# --------------------------------------------------------------- Monte Carlo --

def _gauss_population(seed, d0, d2=None, tau=0.0):
  """x ~ N(mu, S); y = M x + tau nu. Returns (sampler, population moments)."""
  rng = np.random.default_rng(seed)
  mu = rng.normal(size=d0) * 0.5
  l = rng.normal(size=(d0, d0)) / math.sqrt(d0)
  s = l @ l.T + 0.2 * np.eye(d0)
  a = s + np.outer(mu, mu)
  if d2 is None:
    def sample(r, n):
      x = r.multivariate_normal(mu, s, size=n)
      return x, x
    return sample, lv.moments_from_second_moments(a, mean_x=mu)
  mm = rng.normal(size=(d2, d0))

  def sample(r, n):
    x = r.multivariate_normal(mu, s, size=n)
    return x, x @ mm.T + tau * r.normal(size=(n, d2))
  return sample, lv.moments_from_second_moments(a, mm @ a @ mm.T + tau ** 2 * np.eye(d2), a @ mm.T,
                                                mean_x=mu, mean_y=mm @ mu)


def _mc_neg_elbo(model, params, h, x, y, rng):
  """-log p(y|z) + beta (log q(z|x) - log p(z)), one z per sample, scipy log-densities."""
  cov = np.asarray(model.encoder_cov(params, h))
  cov = np.diag(cov) if cov.ndim == 1 else cov
  d1, d2 = cov.shape[0], y.shape[1]
  mean = x @ np.asarray(params.W).T
  z = mean + rng.multivariate_normal(np.zeros(d1), cov, size=x.shape[0])
  ev, dv, b = float(h["eta_enc"]) ** 2, float(h["eta_dec"]) ** 2, float(h["beta"])
  log_lik = scipy.stats.multivariate_normal(np.zeros(d2), dv * np.eye(d2)).logpdf(y - z @ np.asarray(params.U).T)
  log_q = scipy.stats.multivariate_normal(np.zeros(d1), cov).logpdf(z - mean)
  log_p = scipy.stats.multivariate_normal(np.zeros(d1), ev * np.eye(d1)).logpdf(z)
  return -log_lik + b * (log_q - log_p)


@pytest.mark.parametrize("ev,d2", [("fixed", None), ("learnable_full", 3),
                                   pytest.param("learnable", 2, marks=pytest.mark.slow)])
def test_loss_and_sampled_loss_match_monte_carlo(ev, d2):
  sample, m = _gauss_population(7, 4, d2, tau=0.4)
  model = lv.make_model("vae", latent_dim=3, encoder_var=ev)
  hd = dict(beta=1.7, eta_enc=0.8, eta_dec=1.3)
  if ev == "fixed":
    hd["sigma"] = [0.5, 1.1, 0.8]
  h = lv.as_hyper(hd)
  params = model.init(jax.random.key(4), m, 0.7)
  if ev == "learnable":
    params = params.replace(sigma_raw=jnp.asarray([-0.5, 0.2, 0.4]))
  elif ev == "learnable_full":
    params = params.replace(sigma_raw=jnp.asarray([[-0.3, 0, 0], [0.4, 0.1, 0], [-0.2, 0.3, 0.2]]))
  exact = float(_loss(model, params, m, h))
  r = np.random.default_rng(8)
  x, y = sample(r, 100_000)
  v = _mc_neg_elbo(model, params, h, x, y, r)
  z = (v.mean() - exact) / (v.std(ddof=1) / math.sqrt(v.size))
  assert abs(z) < MC_Z, (v.mean(), exact, z)
  # model.sampled_loss: unbiased minibatch estimator (batch means of 400 batches)
  xb, yb = sample(r, 200 * 500)
  xb, yb = xb.reshape(200, 500, -1), yb.reshape(200, 500, -1)
  keys = jax.random.split(jax.random.key(9), 200)
  f = jax.jit(jax.vmap(lambda xx, yy, k: model.sampled_loss(params, (xx, yy), k, h)))
  means = np.asarray(f(jnp.asarray(xb), jnp.asarray(yb), keys))
  z = (means.mean() - exact) / (means.std(ddof=1) / math.sqrt(means.size))
  assert abs(z) < MC_Z, (means.mean(), exact, z)


# ------------------------------------------------------ transforms, gradients --

def test_jit_vmap_over_all_hyper_compiles_once_and_matches_per_point():
  m = _problem("p3")
  model = lv.make_model("vae", latent_dim=3, encoder_var="fixed")
  rng = np.random.default_rng(0)
  grids = [lv.as_hyper(dict(beta=rng.uniform(0.3, 5, 6), eta_enc=rng.uniform(0.5, 1.5, 6),
                            eta_dec=rng.uniform(0.5, 1.5, 6), sigma=rng.uniform(0.3, 2, (6, 3))))
           for _ in range(2)]
  traces = [0]

  def f(h):
    traces[0] += 1  # Python side effect: runs once per trace
    return model.optimum(m, h)

  g = jax.jit(jax.vmap(f))
  outs = [g(gr) for gr in grids]
  assert traces[0] == 1
  for gr, out in zip(grids, outs):
    for j in (1, 4):
      one = model.optimum(m, {k: v[j] for k, v in gr.items()})
      flat_a, flat_b = jax.tree.leaves(one), jax.tree.leaves(jax.tree.map(lambda t: t[j], out))
      for a, b in zip(flat_a, flat_b):
        np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64),
                                   rtol=RTOL_EXACT, atol=1e-13)  # float64
  # learnable Sigma over (beta, eta_enc, eta_dec) too (also vmapped in the gradient test)
  mod = lv.make_model("vae", latent_dim=3, encoder_var="learnable")
  gr = {k: v for k, v in grids[0].items() if k != "sigma"}
  out = jax.jit(jax.vmap(lambda h: mod.optimum(m, h)))(gr)
  one = mod.optimum(m, {k: v[4] for k, v in gr.items()})
  np.testing.assert_allclose(out.loss[4], one.loss, rtol=RTOL_EXACT)
  np.testing.assert_allclose(out.spectra["sigma_std"][4], one.spectra["sigma_std"], rtol=RTOL_EXACT)


@pytest.mark.parametrize("ev", ["learnable", "fixed",
                                pytest.param("learnable_full", marks=pytest.mark.slow)])
def test_grad_wrt_beta_finite_at_and_around_thresholds(ev):
  m = _problem("p1")
  model = lv.make_model("vae", latent_dim=3, encoder_var=ev)
  base = dict(eta_enc=1.1, eta_dec=0.9) | ({"sigma": jnp.asarray([0.9, 1.3, 1.0])} if ev == "fixed" else {})
  base = lv.as_hyper(base)
  b0 = _opt(model, m, {**base, "beta": jnp.asarray(1.0)}).thresholds["beta"][1]  # mode 2 exactly
  opt_at = lambda b: _opt(model, m, {**base, "beta": b})
  fns = {
      "loss": lambda b: opt_at(b).loss,
      "spectra": lambda b: sum(jnp.sum(v) for v in opt_at(b).spectra.values()),
      "params": lambda b: sum(jnp.sum(v ** 2) for v in jax.tree.leaves(opt_at(b).params)),
  }
  betas = jnp.stack([0.7 * b0, b0, 1.3 * b0])
  grads = jax.jit(jax.vmap(lambda b: {k: jax.grad(f)(b) for k, f in fns.items()}))(betas)
  for k, g in grads.items():
    assert np.all(np.isfinite(np.asarray(g))), (k, g)
  # L* is C^1 in beta across the threshold: autodiff = central difference
  # (float64, step 1e-6: truncation ~1e-6 * |f'' jump|, round-off ~1e-9)
  loss_v = jax.jit(jax.vmap(fns["loss"]))
  fd = (loss_v(betas + 1e-6) - loss_v(betas - 1e-6)) / 2e-6
  np.testing.assert_allclose(grads["loss"], fd, rtol=1e-5, atol=1e-7)
  # envelope theorem: dL*/dbeta = mean KL at the optimum (independent of the closed form)
  opt = _opt(model, m, {**base, "beta": 1.3 * b0})
  h1, h0 = {**base, "beta": jnp.asarray(1.0)}, {**base, "beta": jnp.asarray(0.0)}
  kl = _loss(model, opt.params, m, h1) - _loss(model, opt.params, m, h0)
  np.testing.assert_allclose(grads["loss"][2], kl, rtol=1e-9)


# ---------------------------------------------------------- paper conventions --

def test_paper_loss_conventions_equal_literal_formulas():
  x = _dataset(2, 50, 4, [2.0, 1.0, 0.7, 0.3], [0.3, 0.1, -0.2, 0.5])
  m = lv.moments_from_arrays(x)
  for ev in ("learnable", "fixed", "learnable_full"):
    model = lv.make_model("vae", latent_dim=3, encoder_var=ev)
    hd = dict(beta=1.4, eta_enc=0.7, eta_dec=1.2) | ({"sigma": [0.4, 0.9, 1.3]} if ev == "fixed" else {})
    h = lv.as_hyper(hd)
    p = model.init(jax.random.key(3), m, 0.6)
    if ev == "learnable":
      p = p.replace(sigma_raw=jnp.asarray([0.3, -0.4, 0.1]))
    u, w = np.asarray(p.U), np.asarray(p.W)
    cov = np.asarray(model.encoder_cov(p, h))
    cov = np.diag(cov) if cov.ndim == 1 else cov
    b, ee, ed = 1.4, 0.7, 1.2
    c = ed / ee
    # Dang eq. (3): (1/eta_dec^2){tr[(UW-I)A(UW-I)^T] + tr(U S U^T) + b c^2 [tr(WAW^T) + tr S]} - b log|S|
    res = x @ (u @ w - np.eye(4)).T
    enc = x @ w.T
    dang = ((np.mean(np.sum(res ** 2, 1)) + np.trace(u @ cov @ u.T)
             + b * c ** 2 * (np.mean(np.sum(enc ** 2, 1)) + np.trace(cov))) / ed ** 2
            - b * np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(model.paper_loss(p, m, h, convention="dang"), dang, rtol=RTOL_EXACT)
    # W&Z eq. (5): (1/2eta_dec^2)[E||U W^T x - y||^2 + Tr(U S U^T) + kappa Tr(W^T A W)] + l_var
    # (their W is our W^T; Sigma diagonal in W&Z, the log-det form for the full case)
    kap = b * ed ** 2 / ee ** 2
    sv = np.linalg.eigvalsh(cov)
    wz = ((np.mean(np.sum(res ** 2, 1)) + np.trace(u @ cov @ u.T) + kap * np.mean(np.sum(enc ** 2, 1)))
          / (2 * ed ** 2) + 0.5 * b * np.sum(sv / ee ** 2 - 1 - np.log(sv / ee ** 2)))
    np.testing.assert_allclose(model.paper_loss(p, m, h, convention="wz"), wz, rtol=RTOL_EXACT)


# ----------------------------------------------------------------- bad input --

def test_bad_input_raises_naming_the_argument():
  m = _problem("p1")
  h = lv.as_hyper(dict(beta=1.0, eta_enc=1.0, eta_dec=1.0))
  learn = lv.make_model("vae", latent_dim=3)
  fixed = lv.make_model("vae", latent_dim=3, encoder_var="fixed")
  with pytest.raises(ValueError, match="latent_dim"):
    lv.make_model("vae", latent_dim=6).optimum(m, h)
  with pytest.raises(ValueError, match="latent_dim"):
    lv.make_model("vae", latent_dim=0)
  with pytest.raises(ValueError, match="encoder_var"):
    lv.make_model("vae", latent_dim=2, encoder_var="diag")
  for k in ("beta", "eta_enc", "eta_dec"):
    for bad in (0.0, -1.0, np.nan):
      with pytest.raises(ValueError, match=k):
        learn.optimum(m, {**h, k: jnp.asarray(bad)})
  with pytest.raises(ValueError, match="beta"):
    learn.optimum(m, {"eta_enc": h["eta_enc"], "eta_dec": h["eta_dec"]})
  with pytest.raises(ValueError, match="sigma"):
    fixed.optimum(m, h)  # missing
  with pytest.raises(ValueError, match="sigma"):
    fixed.optimum(m, {**h, "sigma": jnp.asarray([1.0, 0.0, 1.0])})
  with pytest.raises(ValueError, match="sigma"):
    fixed.optimum(m, {**h, "sigma": jnp.ones(2)})
  with pytest.raises(ValueError, match="moments.xx"):
    learn.optimum(m.replace(xx=m.xx.at[0, 1].set(jnp.nan)), h)
  with pytest.raises(ValueError, match="moments.xy"):
    learn.optimum(m.replace(yy=jnp.eye(4)), h)  # C is (5, 5), B says D2 = 4
  with pytest.raises(ValueError, match="moments"):
    learn.optimum(np.eye(5), h)
  a = np.asarray(m.xx)
  with pytest.raises(ValueError, match="xx"):
    lv.moments_from_second_moments(a + np.triu(np.ones((5, 5)), 1))  # asymmetric
  with pytest.raises(ValueError, match="xx"):
    lv.moments_from_second_moments(a - 20 * np.eye(5))  # indefinite
  with pytest.raises(ValueError, match="xx"):
    lv.moments_from_second_moments(np.full((5, 5), np.inf))
