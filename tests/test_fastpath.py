"""The eager fast path: jitted, cached closed forms, moments and init.

Checks that a repeat call on a seen shape does not retrace, that values match
the op-by-op path (``fastpath.disabled()``) to a few ulp in float64, that bad
input still raises ``ValueError`` before dispatch, and that calls under
jit / vmap / grad pass through and stay differentiable.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linvae_jax as lv
from linvae_jax._src import fastpath

# float64: the compiled program fuses and reorders reductions, so it agrees
# with the op-by-op path to a few ulp, not bitwise (module docstring).
RTOL_F64 = 1e-12


def _moments(rng, d0, d2=None, n=300):
  x = rng.normal(size=(n, d0))
  if d2 is None:
    return lv.moments_from_arrays(x)
  y = x @ rng.normal(size=(d0, d2)) + 0.5 * rng.normal(size=(n, d2))
  return lv.moments_from_arrays(x, y)


def _cases(rng):
  base = {"beta": 0.7, "eta_enc": 1.3, "eta_dec": 0.9}
  out = []
  for ev in ("learnable", "learnable_full", "fixed"):
    sig = {"sigma": np.array([0.3, 0.5, 0.4])} if ev == "fixed" else {}
    out.append((lv.make_model("vae", latent_dim=3, encoder_var=ev), _moments(rng, 6), {**base, **sig}))
    out.append((lv.make_model("vae", latent_dim=3, encoder_var=ev), _moments(rng, 6, 4), {**base, **sig}))
    out.append((lv.make_model("cvae", latent_dim=3, encoder_var=ev), _moments(rng, 4, 5),
                {**base, **({"sigma": 0.4} if ev == "fixed" else {})}))
  for sv in ("learnable", "learnable_full", "fixed"):
    out.append((lv.make_model("mhvae", latent_dim1=3, latent_dim2=2, sigma2_var=sv), _moments(rng, 6),
                {"beta1": 0.7, "beta2": 0.5, "eta_enc": 1.3, "eta_dec": 0.9, "sigma1": 0.6,
                 **({"sigma2": 0.4} if sv == "fixed" else {})}))
  out.append((lv.make_model("vae_ldv", latent_dim=3), _moments(rng, 6, 5), {"beta": 0.7, "eta_enc": 1.3}))
  return out


def _assert_close(fast, slow, what):
  fl, sl = jax.tree.leaves(fast), jax.tree.leaves(slow)
  assert jax.tree.structure(fast) == jax.tree.structure(slow), what
  for a, b in zip(fl, sl):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
      np.testing.assert_array_equal(a, b, err_msg=what)
    else:
      scale = max(float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0)), 1.0)
      np.testing.assert_allclose(a, b, rtol=RTOL_F64, atol=RTOL_F64 * scale, err_msg=what)


def _check_values(cases):
  for model, m, h in cases:
    key = jax.random.key(3)
    with fastpath.disabled():
      slow = (model.optimum(m, h), model.init(key, m))
      slow_loss = model.loss(slow[1], m, h)
      slow_spec = model.spectrum(slow[0].params, m, h)
    fast = (model.optimum(m, h), model.init(key, m))
    _assert_close(fast[0], slow[0], f"{model.label()} optimum")
    _assert_close(fast[1], slow[1], f"{model.label()} init")
    _assert_close(model.loss(slow[1], m, h), slow_loss, f"{model.label()} loss")
    _assert_close(model.spectrum(slow[0].params, m, h), slow_spec, f"{model.label()} spectrum")


def test_values_match_the_op_by_op_path(rng):
  # the linear VAE (paired); the CVAE's eager residual moment has its own
  # test below, every model and setting is in the slow suite
  _check_values(_cases(rng)[:1])


@pytest.mark.slow
def test_values_match_the_op_by_op_path_every_setting(rng):
  _check_values(_cases(rng))


def test_repeat_call_does_not_retrace(rng):
  model = lv.make_model("vae", latent_dim=2)
  a = rng.normal(size=(50, 5))
  m = lv.moments_from_second_moments(a.T @ a / 50)
  n_mom = fastpath.trace_count("moments.assemble")
  lv.moments_from_second_moments(a.T @ a / 50 + np.eye(5))  # new values, same shape
  assert fastpath.trace_count("moments.assemble") == n_mom
  h = {"beta": 0.5, "eta_enc": 1.0, "eta_dec": 1.0}
  opt = model.optimum(m, h)
  params = model.init(jax.random.key(0), m)
  model.loss(params, m, h)
  counts = {k: fastpath.trace_count(f"LinearVAE.{k}") for k in ("optimum", "init", "loss")}
  assert all(v >= 1 for v in counts.values())
  # new hyper values (Python floats), keyword arguments, another key: no retrace
  opt2 = model.optimum(hyper={"beta": 2.0, "eta_enc": 1.0, "eta_dec": 0.6}, moments=m)
  model.init(jax.random.key(1), m, scale=0.1)
  model.loss(opt.params, m, {"beta": 3.0, "eta_enc": 2.0, "eta_dec": 1.0})
  assert {k: fastpath.trace_count(f"LinearVAE.{k}") for k in counts} == counts
  assert not np.array_equal(opt.spectra["omega"], opt2.spectra["omega"])
  # an equal (not identical) model config hits the same cache entry
  lv.make_model("vae", latent_dim=2).optimum(m, h)
  assert fastpath.trace_count("LinearVAE.optimum") == counts["optimum"]
  # a new shape traces once more
  m6 = lv.moments_from_second_moments(np.eye(6))
  model.optimum(m6, h)
  assert fastpath.trace_count("LinearVAE.optimum") == counts["optimum"] + 1


def test_bad_input_raises_before_dispatch(rng):
  model = lv.make_model("vae", latent_dim=2)
  m = lv.moments_from_second_moments(np.diag([3.0, 2.0, 1.0]))
  before = fastpath.trace_count("LinearVAE.optimum")
  with pytest.raises(ValueError, match="beta must be > 0"):
    model.optimum(m, {"beta": -1.0, "eta_enc": 1.0, "eta_dec": 1.0})
  with pytest.raises(ValueError, match="missing"):
    model.optimum(m, {"beta": 1.0, "eta_enc": 1.0})
  bad = m.replace(xx=m.xx.at[0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match="non-finite"):
    model.optimum(bad, {"beta": 1.0, "eta_enc": 1.0, "eta_dec": 1.0})
  assert fastpath.trace_count("LinearVAE.optimum") == before
  with pytest.raises(ValueError, match="indefinite"):
    lv.moments_from_second_moments(np.diag([1.0, -1.0]))
  cvae = lv.make_model("cvae", latent_dim=2)
  with pytest.raises(ValueError, match="unpaired"):
    cvae.init(jax.random.key(0), m)
  mc = _moments(rng, 3, 2)
  p = cvae.init(jax.random.key(0), mc)
  with pytest.raises(ValueError, match="eta_dec must be > 0"):
    cvae.loss(p, mc, {"beta": 1.0, "eta_enc": 1.0, "eta_dec": 0.0})


def test_tracers_pass_through_and_stay_differentiable(rng):
  model = lv.make_model("vae", latent_dim=2)
  m = _moments(rng, 4)
  h = {"beta": 0.3, "eta_enc": 1.0, "eta_dec": 1.0}

  def opt_loss(beta):
    return model.optimum(m, {**h, "beta": beta}).loss

  with fastpath.disabled():
    g_ref = jax.grad(opt_loss)(0.3)
    v_ref = jax.vmap(opt_loss)(jnp.asarray([0.2, 0.4]))
  np.testing.assert_allclose(jax.grad(opt_loss)(0.3), g_ref, rtol=RTOL_F64)
  np.testing.assert_allclose(jax.jit(jax.grad(opt_loss))(0.3), g_ref, rtol=RTOL_F64)
  np.testing.assert_allclose(jax.vmap(opt_loss)(jnp.asarray([0.2, 0.4])), v_ref, rtol=RTOL_F64)
  # gradient of the (cached) loss in the parameters, eagerly and under jit
  params = model.init(jax.random.key(0), m)
  with fastpath.disabled():
    gp_ref = jax.grad(model.loss)(params, m, h)
  _assert_close(jax.grad(model.loss)(params, m, h), gp_ref, "grad loss")
  _assert_close(jax.jit(jax.grad(model.loss))(params, m, h), gp_ref, "jit grad loss")
  # moments built from traced second moments
  f = jax.jit(lambda a: lv.moments_from_second_moments(a, validate=False).x_factor)
  np.testing.assert_allclose(f(m.xx), m.x_factor, rtol=RTOL_F64, atol=RTOL_F64)


def test_cvae_keeps_the_float64_residual_moment_for_float32_moments(rng):
  # The op-by-op CVAE optimum computes E = B - C^T A^+ C in float64 numpy on
  # concrete moments; the fast path must too (a float32 eigh inside the jit
  # would not resolve MNIST-like eigenvalue ratios).
  x = rng.normal(size=(400, 5)) * np.array([1.0, 1.0, 1.0, 1e-3, 1e-4])
  y = x @ rng.normal(size=(5, 3)) + 1e-3 * rng.normal(size=(400, 3))
  m = lv.moments_from_arrays(x, y, dtype=jnp.float32)
  model = lv.make_model("cvae", latent_dim=2)
  h = {"beta": 1e-7, "eta_enc": 1.0, "eta_dec": 1.0}
  with fastpath.disabled():
    slow = model.optimum(m, h)
  fast = model.optimum(m, h)
  # float32: both take eig of the same float64-computed E cast to float32
  np.testing.assert_allclose(fast.extras["theta"], slow.extras["theta"], rtol=1e-6)
  np.testing.assert_allclose(fast.loss, slow.loss, rtol=1e-6)


def test_uncacheable_arguments_fall_back_to_the_original(rng):
  model = lv.make_model("vae", latent_dim=2)
  m = _moments(rng, 3)
  h = {"beta": 0.5, "eta_enc": 1.0, "eta_dec": 1.0}
  ref = model.optimum(m, h)

  class Hyper(dict):  # a Mapping jax does not know as a pytree: one leaf
    pass

  before = fastpath.trace_count("LinearVAE.optimum")
  out = model.optimum(m, Hyper(h))
  assert fastpath.trace_count("LinearVAE.optimum") == before
  np.testing.assert_allclose(out.loss, ref.loss, rtol=RTOL_F64)
