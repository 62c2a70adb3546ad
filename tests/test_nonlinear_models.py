"""Nonlinear flax models: the identity bridge to the linear closed forms, the IW
likelihood against pPCA, seeded training per family and input validation (float64)."""
import functools

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import linvae_jax as lv
from linvae_jax._src.data import synthetic as S


def train(model, data, hyper, *, epochs, batch_size, lr, decay=1e-3, seed=0, scale=1.0):
  """Adam (exponentially decayed lr) on ``model.sampled_loss``, reshuffled each epoch.

  Returns (params, per-step losses). ``data`` is x or a tuple of arrays. The
  compiled program is cached per static setting (a rerun does not recompile).
  """
  data = tuple(jnp.asarray(a) for a in data) if isinstance(data, tuple) else jnp.asarray(data)
  n = jax.tree.leaves(data)[0].shape[0]
  return _train_fn(model, n, epochs, batch_size, lr, decay, seed, scale)(data, hyper)


@functools.cache
def _train_fn(model, n, epochs, batch_size, lr, decay, seed, scale):
  nb = n // batch_size
  tx = optax.adam(optax.exponential_decay(lr, epochs * nb, decay))

  def run(data, hyper):
    p = model.init(jax.random.key(seed), None, scale)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
      st = tx.init(p)

    def step(c, xs):
      p, st = c
      batch, t = xs
      loss, g = jax.value_and_grad(model.sampled_loss)(
          p, batch, jax.random.fold_in(jax.random.key(seed + 2), t), hyper)
      with jax.numpy_dtype_promotion("standard"):
        u, st = tx.update(g, st, p)
      return (optax.apply_updates(p, u), st), loss

    def epoch(c, e):
      perm = jax.random.permutation(jax.random.fold_in(jax.random.key(seed + 1), e), n)
      perm = perm[:nb * batch_size]
      batches = jax.tree.map(lambda a: a[perm].reshape((nb, batch_size) + a.shape[1:]), data)
      return jax.lax.scan(step, c, (batches, e * nb + jnp.arange(nb)))

    (p, _), losses = jax.lax.scan(epoch, (p, st), jnp.arange(epochs))
    return p, losses.reshape(-1)

  return jax.jit(run)


def set_params(params, values):
  """Replace leaves of a flax variables dict by path ('head/mu/kernel': array)."""
  flat = tu.flatten_dict(params, sep="/")
  for k, v in values.items():
    key = "params/" + k
    assert key in flat and flat[key].shape == np.shape(v), (key, flat.get(key, None))
    flat[key] = jnp.asarray(v, flat[key].dtype)
  return tu.unflatten_dict(flat, sep="/")


HYP = {"beta": 1.0, "eta_enc": 1.0, "eta_dec": 0.8}


def vae_data(n=4096, seed=0):
  return S.gaussian(n, [4.0, 2.5, 1.5, 0.5, 0.2, 0.1], seed=seed,
                    mean=[1.0, -0.5, 0.3, 0.0, 0.0, 0.2]).x


# ------------------------------------------------------------ identity bridge --

def test_identity_vae_is_the_linear_vae():
  """Same parameters, same key: the flax code path computes the linear model's
  sampled loss, and its average over noise is the analytic loss."""
  x = vae_data(512)
  h = lv.as_hyper(HYP)
  m = lv.moments_from_arrays(x)
  lin = lv.make_model("vae", latent_dim=3)
  lp = lin.init(jax.random.key(3), m, 0.3)
  lp = lp.replace(sigma_raw=jnp.log(jnp.array([0.3, 0.7, 1.4])))
  nl = lv.make_model("mlp_vae", data_dim=6, latent_dim=3, hidden=(), activation="identity",
                     bias=False)
  p = set_params(nl.init(jax.random.key(0)), {
      "head/mu/kernel": lp.W.T, "head/log_var": lp.sigma_raw, "dec/Dense_0/kernel": lp.U.T})
  for seed in range(3):
    k = jax.random.key(seed)
    np.testing.assert_allclose(nl.sampled_loss(p, x, k, h), lin.sampled_loss(lp, x, k, h),
                               rtol=1e-12)  # float64
  keys = jax.random.split(jax.random.key(9), 400)
  mc = jnp.mean(jax.vmap(lambda k: nl.sampled_loss(p, x, k, h))(keys))
  np.testing.assert_allclose(mc, lin.loss(lp, m, h), rtol=2e-3)  # MC error of 400 x 512 draws
  maps = nl.linear_maps(p)
  np.testing.assert_allclose(maps["W"], lp.W, rtol=1e-12, atol=1e-14)  # float64
  np.testing.assert_allclose(maps["U"], lp.U, rtol=1e-12, atol=1e-14)  # float64


def test_identity_cvae_and_mhvae_are_the_linear_models():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(256, 3)), rng.normal(size=(256, 4))
  h = lv.as_hyper(HYP)
  lin = lv.make_model("cvae", latent_dim=2)
  lp = lin.init(jax.random.key(1), lv.moments_from_arrays(x, y), 0.3)
  nl = lv.make_model("mlp_cvae", data_dim=4, cond_dim=3, latent_dim=2, hidden=(),
                     activation="identity", bias=False)
  p = set_params(nl.init(jax.random.key(0)), {
      "head/mu/kernel": jnp.concatenate([lp.W1, lp.W2], axis=1).T,
      "head/log_var": lp.sigma_raw,
      "dec/Dense_0/kernel": jnp.concatenate([lp.U1, lp.U2], axis=1).T})
  k = jax.random.key(5)
  np.testing.assert_allclose(nl.sampled_loss(p, (x, y), k, h), lin.sampled_loss(lp, (x, y), k, h),
                             rtol=1e-12)  # float64

  hm = lv.as_hyper({"beta1": 1.0, "beta2": 2.0, "eta_enc": 1.0, "eta_dec": 0.8, "sigma1": 0.5})
  lin = lv.make_model("mhvae", latent_dim1=3, latent_dim2=2)
  lp = lin.init(jax.random.key(2), lv.moments_from_arrays(y), 0.3)
  nl = lv.make_model("mlp_mhvae", data_dim=4, latent_dim1=3, latent_dim2=2, hidden=(),
                     activation="identity", bias=False)
  p = set_params(nl.init(jax.random.key(0)), {
      "enc1/Dense_0/kernel": lp.W1.T, "head2/mu/kernel": lp.W2.T, "head2/log_var": lp.sigma2_raw,
      "dec2/Dense_0/kernel": lp.U2.T, "dec1/Dense_0/kernel": lp.U1.T})
  np.testing.assert_allclose(nl.sampled_loss(p, y, k, hm), lin.sampled_loss(lp, y, k, hm),
                             rtol=1e-12)  # float64


def _bridge_dma(bias):
  x = vae_data()
  h = lv.as_hyper(HYP)
  mom = lv.moments_from_arrays(x, centred=bias)
  opt = lv.make_model("vae", latent_dim=3).optimum(mom, h)
  m = lv.make_model("mlp_vae", data_dim=6, latent_dim=3, hidden=(), activation="identity",
                    bias=bias)
  p, _ = train(m, x, h, epochs=500, batch_size=256, lr=3e-2)
  maps = m.linear_maps(p)
  learned = {"omega": lv.svdvals(maps["U"]), "lambda": lv.svdvals(maps["W"] @ mom.x_factor),
             "sigma_std": maps["sigma_std"]}
  return {k: float(lv.dma(v, opt.spectra[k])) for k, v in learned.items()}, maps, mom


@pytest.mark.slow
@pytest.mark.parametrize("bias", [False, True])
def test_identity_bridge_minibatch_training_reaches_the_closed_form(bias):
  """8000 minibatch steps: D_MA <= 1e-2 against the uncentred (no biases) or the
  centred (biases, W&Z App. B) closed form; measured ~1e-3 for both."""
  dmas, maps, mom = _bridge_dma(bias)
  assert max(dmas.values()) <= 1e-2, dmas
  if bias:  # the decoder bias is the data mean
    np.testing.assert_allclose(maps["c"], mom.mean_x, atol=3e-2)


# ------------------------------------------------------------- IW vs pPCA ---

def test_iw_loglik_of_a_linear_gaussian_model_is_the_ppca_likelihood():
  """p(x) = N(0, eta_enc^2 U U^T + eta_dec^2 I) exactly (lv.theory.ppca_loglik with
  W = eta_enc U and S = E[x x^T]); q deliberately not the exact posterior."""
  rng = np.random.default_rng(4)
  d0, d = 5, 2
  u = rng.normal(size=(d0, d))
  ee, ed = 1.3, 0.7
  z = ee * rng.normal(size=(300, d))
  x = z @ u.T + ed * rng.normal(size=(300, d0))
  m = lv.make_model("mlp_vae", data_dim=d0, latent_dim=d, hidden=(), activation="identity",
                    bias=False, iw_samples=400, iw_chunk=40)
  # posterior-like but wrong: a shrunk least-squares encoder and inflated stds
  w = 0.8 * np.linalg.pinv(u)
  p = set_params(m.init(jax.random.key(0)), {
      "head/mu/kernel": w.T, "head/log_var": np.log(np.array([0.3, 0.5])),
      "dec/Dense_0/kernel": u.T})
  h = lv.as_hyper({"beta": 1.0, "eta_enc": ee, "eta_dec": ed})
  ev = jax.jit(m.evaluate)(p, h, x, jax.random.key(1))
  exact = lv.theory.ppca_loglik(ee * u, ed ** 2, x.T @ x / x.shape[0])
  se = float(ev["iw_ll_mc_se"])
  assert 0 < se < 0.05, se
  assert abs(float(ev["iw_ll"]) - float(exact)) <= 3 * se, (float(ev["iw_ll"]), float(exact), se)
  # the bound is below the likelihood and the ELBO below both
  assert float(ev["elbo"]) < float(ev["iw_ll"]) < float(exact) + 3 * se
  # analytic-KL ELBO and the K-draw Monte-Carlo ELBO estimate the same number
  assert abs(float(ev["elbo"]) - float(ev["elbo_iw"])) < 0.05


# ------------------------------------------------------ training per family --

def _regression_data(n=512, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 6)) * np.array([2.0, 1.5, 1.0, 0.5, 0.3, 0.2])
  return x


FAMILIES = {
    "mlp_vae": (lambda: lv.make_model("mlp_vae", data_dim=6, latent_dim=3, hidden=(16,),
                                      encoder_var="data_dependent", iw_samples=20, iw_chunk=10),
                lambda x: x, HYP),
    "mlp_cvae": (lambda: lv.make_model("mlp_cvae", data_dim=4, cond_dim=2, latent_dim=2,
                                       hidden=(16,), activation="tanh", decoder_var="learnable",
                                       iw_samples=20, iw_chunk=10),
                 lambda x: (x[:, :2], x[:, 2:]), HYP),
    "mlp_mhvae": (lambda: lv.make_model("mlp_mhvae", data_dim=6, latent_dim1=3, latent_dim2=2,
                                        hidden=(16,), sigma2_var="data_dependent",
                                        iw_samples=20, iw_chunk=10),
                  lambda x: x, {"beta1": 1.0, "beta2": 1.0, "eta_enc": 1.0, "eta_dec": 0.8,
                                "sigma1": 0.5}),
}


@pytest.mark.parametrize("family", [
    "mlp_vae",
    # compile-bound (~25-35 s each on the loaded 2-core CI host): slow suite
    pytest.param("mlp_cvae", marks=pytest.mark.slow),
    pytest.param("mlp_mhvae", marks=pytest.mark.slow)])
def test_each_family_trains_deterministically(family):
  make, view, hyp = FAMILIES[family]
  model = make()
  data = view(_regression_data())
  h = lv.as_hyper(hyp)
  p1, l1 = train(model, data, h, epochs=30, batch_size=64, lr=1e-2)
  _, l2 = train(model, data, h, epochs=30, batch_size=64, lr=1e-2)
  np.testing.assert_array_equal(l1, l2)  # same seed: bitwise the same run
  assert np.all(np.isfinite(l1))
  first, last = float(jnp.mean(l1[:8])), float(jnp.mean(l1[-40:]))
  assert last < first - 1.0, (first, last)
  held = view(_regression_data(256, seed=1))
  evaluate = jax.jit(model.evaluate)
  ev = evaluate(p1, h, held, jax.random.key(0))
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in ev.values()), ev
  # trained: the IW bound beats the untrained model's on held-out data
  ev0 = evaluate(model.init(jax.random.key(0), None, 1.0), h, held, jax.random.key(0))
  assert float(ev["iw_ll"]) > float(ev0["iw_ll"]) + 1.0


def test_learnable_decoder_variance_moves_from_its_initial_value():
  x = _regression_data()
  m = lv.make_model("mlp_vae", data_dim=6, latent_dim=2, hidden=(16,), decoder_var="learnable")
  h = lv.as_hyper({"beta": 1.0, "eta_enc": 1.0, "eta_dec": 3.0})  # Lucas' sigma^2_init = 9
  p, _ = train(m, x, h, epochs=20, batch_size=64, lr=3e-2)
  assert float(m.decoder_std(p, h)) < 0.8 * 3.0
  assert "learnable" in m.label() and m.hyper_names == ("beta", "eta_enc", "eta_dec")


def test_fixed_encoder_std_is_the_hyperparameter():
  m = lv.make_model("mlp_vae", data_dim=6, latent_dim=3, hidden=(8,), encoder_var="fixed")
  assert m.hyper_names == ("beta", "eta_enc", "eta_dec", "sigma")
  p = m.init(jax.random.key(0))
  h = lv.as_hyper({**HYP, "sigma": 0.3})
  _, std = m.encoder(p, jnp.asarray(_regression_data(10)), h)
  np.testing.assert_array_equal(std, jnp.full((10, 3), 0.3))


def test_grid_cells_vmap_over_hyperparameters_and_inits():
  m, _, _ = FAMILIES["mlp_vae"]
  m = m()
  x = jnp.asarray(_regression_data(64))
  hs = lv.as_hyper({"beta": [0.5, 1.0, 4.0], "eta_enc": [1.0] * 3, "eta_dec": [0.8] * 3})
  ps = jax.vmap(lambda k: m.init(k, None, 1.0))(jax.random.split(jax.random.key(0), 3))
  out = jax.vmap(m.sampled_loss, in_axes=(0, None, None, 0))(ps, x, jax.random.key(1), hs)
  one = m.sampled_loss(jax.tree.map(lambda a: a[2], ps), x, jax.random.key(1),
                       jax.tree.map(lambda a: a[2], hs))
  np.testing.assert_allclose(out[2], one, rtol=1e-12)  # float64
  ev = jax.vmap(m.evaluate, in_axes=(0, 0, None, None))(ps, hs, x, jax.random.key(2))
  assert ev["kl_per_dim"].shape == (3, 3) and ev["iw_ll"].shape == (3,)


# ---------------------------------------------------------------- bad input --

@pytest.mark.parametrize("kwargs, match", [
    ({"hidden": (16, 0)}, r"hidden\[1\] must be a positive integer"),
    ({"hidden": [16]}, "hidden must be a tuple"),
    ({"dec_hidden": (-3,)}, r"dec_hidden\[0\]"),
    ({"latent_dim": 0}, "latent_dim must be a positive integer"),
    ({"activation": "gelu"}, "activation must be one of"),
    ({"encoder_var": "full"}, "encoder_var must be one of"),
    ({"decoder_var": "data_dependent"}, "decoder_var must be one of"),
    ({"iw_samples": 25, "iw_chunk": 10}, "multiple of iw_chunk"),
    ({"eval_eps": -0.1}, "eval_eps must be"),
    ({"eval_delta": 2.0}, "eval_delta must be"),
])
def test_bad_config_raises(kwargs, match):
  base = {"data_dim": 6, "latent_dim": 3}
  with pytest.raises(ValueError, match=match):
    lv.make_model("mlp_vae", **{**base, **kwargs})


def test_bad_data_and_hyper_raise():
  m = lv.make_model("mlp_vae", data_dim=6, latent_dim=3, hidden=(8,))
  p = m.init(jax.random.key(0))
  h = lv.as_hyper(HYP)
  k = jax.random.key(0)
  x = _regression_data(20)
  with pytest.raises(ValueError, match="5 columns but the model's data_dim is 6"):
    m.sampled_loss(p, x[:, :5], k, h)
  with pytest.raises(ValueError, match="must be 2-D"):
    m.sampled_loss(p, x[0], k, h)
  bad = x.copy()
  bad[3, 2] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    m.sampled_loss(p, bad, k, h)
  with pytest.raises(ValueError, match="non-finite"):
    m.evaluate(p, h, bad, k)
  with pytest.raises(ValueError, match="pair"):
    m.sampled_loss(p, (x, x), k, h)
  with pytest.raises(ValueError, match="beta must be > 0"):
    m.check_hyper({**HYP, "beta": 0.0})
  with pytest.raises(ValueError, match="missing"):
    m.check_hyper({"beta": 1.0})
  mf = lv.make_model("mlp_vae", data_dim=6, latent_dim=3, encoder_var="fixed")
  with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(3,\)"):
    mf.check_hyper({**HYP, "sigma": np.ones(2)})
  mc = lv.make_model("mlp_cvae", data_dim=4, cond_dim=2, latent_dim=2)
  pc = mc.init(jax.random.key(0))
  with pytest.raises(ValueError, match="pair"):
    mc.sampled_loss(pc, x, k, h)
  with pytest.raises(ValueError, match="cond_dim"):
    mc.sampled_loss(pc, (x[:, :3], x[:, 2:]), k, h)
  with pytest.raises(ValueError, match="rows"):
    mc.sampled_loss(pc, (x[:10, :2], x[:, 2:]), k, h)
  mh = lv.make_model("mlp_mhvae", data_dim=6, latent_dim1=3, latent_dim2=2)
  with pytest.raises(ValueError, match="sigma1 must be > 0"):
    mh.check_hyper({"beta1": 1.0, "beta2": 1.0, "eta_enc": 1.0, "eta_dec": 1.0, "sigma1": -0.5})
  with pytest.raises(ValueError, match="identity"):
    m.linear_maps(p)


def test_models_are_registered():
  reg = lv.model_registry()
  for name in ("mlp_vae", "mlp_cvae", "mlp_mhvae"):
    assert name in reg and not hasattr(reg[name], "optimum")
