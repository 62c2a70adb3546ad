"""Critical values and autodiff derivatives of the closed forms (float64)."""
import jax.numpy as jnp
import numpy as np
import pytest

import linvae_jax as lv
from linvae_jax._src import sensitivity


def _moments(eigs, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigs), len(eigs))))
  return lv.moments_from_second_moments(q @ np.diag(eigs) @ q.T)


M = _moments([5.0, 2.0, 0.8, 0.3])
VAE_H = {"beta": 0.6, "eta_enc": 1.1, "eta_dec": 0.9}


def _fd(model, moments, hyper, name, h=1e-6):
  """Central finite differences of every optimal spectrum and L* in ``name``."""
  def at(v):
    o = model.optimum(moments, lv.as_hyper({**hyper, name: v}))
    return {**{k: np.asarray(s) for k, s in o.spectra.items()}, "loss": np.asarray(o.loss)}
  x = hyper[name]
  up, dn = at(x * (1 + h)), at(x * (1 - h))
  return {k: (up[k] - dn[k]) / (2 * h * x) for k in up}


@pytest.mark.parametrize("model,hyper", [
    (lv.make_model("vae", latent_dim=3), VAE_H),
    (lv.make_model("vae", latent_dim=3, encoder_var="fixed"), {**VAE_H, "sigma": 0.7}),
    pytest.param(lv.make_model("mhvae", latent_dim1=3, latent_dim2=2),
                 {"beta1": 1.0, "beta2": 1.7, "eta_enc": 1.0, "eta_dec": 0.8, "sigma1": 0.9},
                 marks=pytest.mark.slow),
])
def test_jacobians_match_central_differences(model, hyper):
  jac = sensitivity.jacobians(model, M, hyper)
  for name in hyper:
    fd = _fd(model, M, hyper, name)
    for key, d in fd.items():
      # float64: O(h^2) truncation + O(eps/h) round-off, both << 1e-6 here
      np.testing.assert_allclose(jac[key][name], d, rtol=1e-6, atol=1e-8,
                                 err_msg=f"d {key} / d {name}")


def test_jacobians_finite_exactly_at_threshold():
  # diag A = [4, 1, 0.25]: mode 2 sits exactly at beta * eta_dec^2 = 1
  m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  for ev in ("learnable", "learnable_full", "fixed"):
    model = lv.make_model("vae", latent_dim=2, encoder_var=ev)
    h = {"beta": 1.0, "eta_enc": 1.0, "eta_dec": 1.0, **({"sigma": 1.0} if ev == "fixed" else {})}
    opt = model.optimum(m, lv.as_hyper(h))
    assert float(opt.thresholds["beta"][1]) == 1.0  # really at the threshold
    jac = sensitivity.jacobians(model, m, h)
    for key, per in jac.items():
      for name, d in per.items():
        assert np.all(np.isfinite(d)), (ev, key, name, d)


def test_root_finding_matches_closed_form():
  for model, hyper in ((lv.make_model("vae", latent_dim=3), VAE_H),
                       (lv.make_model("vae", latent_dim=3, encoder_var="fixed"),
                        {**VAE_H, "sigma": jnp.asarray([0.5, 1.0, 0.8])})):
    for name in ("beta", "eta_dec"):
      cf = sensitivity.critical_values(model, M, hyper, name, method="closed_form")["z"]
      rf = sensitivity.critical_values(model, M, hyper, name, method="root_finding")["z"]
      assert cf["source"] == "closed_form" and rf["source"] == "root_finding"
      assert rf["direction"] == "collapse_above"
      # bisection to ~1e-13 in log space (float64)
      np.testing.assert_allclose(rf["values"], cf["values"], rtol=1e-9)


def test_mhvae_eta_dec_needs_root_finding_and_is_consistent():
  model = lv.make_model("mhvae", latent_dim1=3, latent_dim2=2)
  h = {"beta1": 1.0, "beta2": 1.5, "eta_enc": 1.0, "eta_dec": 1.0, "sigma1": 1.0}
  with pytest.raises(ValueError, match="root_finding"):
    sensitivity.critical_values(model, M, h, "eta_dec", latent="z2", method="closed_form")
  c = sensitivity.critical_values(model, M, h, "eta_dec", latent="z2")["z2"]
  assert c["source"] == "root_finding"
  for i, v in enumerate(c["values"]):
    if np.isfinite(v) and v > 0:  # just below: mode i active; just above: collapsed
      for f, want in ((0.999, True), (1.001, False)):
        act = model.optimum(M, lv.as_hyper({**h, "eta_dec": v * f})).active["z2"]
        assert bool(np.asarray(act)[i]) == want, (i, f)


def test_bad_arguments():
  model = lv.make_model("vae", latent_dim=2)
  with pytest.raises(ValueError, match="not a hyperparameter"):
    sensitivity.critical_values(model, M, VAE_H, "beta2")
  with pytest.raises(ValueError, match="method"):
    sensitivity.critical_values(model, M, VAE_H, "beta", method="newton")
  with pytest.raises(ValueError, match="unknown latent"):
    sensitivity.critical_values(model, M, VAE_H, "beta", latent="z2")
  with pytest.raises(ValueError, match="cannot differentiate"):
    sensitivity.jacobians(model, M, VAE_H, ["sigma"])


def test_theory_table_rows_and_std_order():
  model = lv.make_model("vae", latent_dim=3)
  t = sensitivity.theory_table(model, M, VAE_H)
  assert list(t["mode"]) == [1, 2, 3]
  np.testing.assert_allclose(t["crit_beta"], np.array([5.0, 2.0, 0.8]) / 0.81, rtol=1e-12)
  # stds listed ascending: the largest mode has the smallest std
  assert np.all(np.diff(t["sigma_std"].to_numpy()) >= 0)
  assert list(t["active"]) == [True, True, True]
