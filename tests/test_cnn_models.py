"""Convolutional flax models (cnn_vae): the papers' conv stack, input formats, seeded
deterministic training, validation, beta x seed grids through lv.train_grid without a
recompile (float64, tiny images so each test takes seconds)."""
import functools

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import linvae_jax as lv
from linvae_jax._src import engine
from linvae_jax._src import grid as G

SHAPE = (8, 8, 1)
SMALL = {"latent_dim": 3, "image_shape": SHAPE, "channels": (4, 4), "iw_samples": 4, "iw_chunk": 2}
HYP = {"beta": 1.0, "eta_enc": 1.0, "eta_dec": 0.5}


def images(n, seed=0, shape=SHAPE):
  """Smooth blobs in [0, 1] with a random centre per image: structured, conv-friendly."""
  rng = np.random.default_rng(seed)
  h, w, c = shape
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  cy, cx = rng.uniform(1, h - 2, n), rng.uniform(1, w - 2, n)
  blob = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 3.0)
  x = blob[..., None] * np.ones(c) + 0.05 * rng.normal(size=(n, h, w, c))
  return x.reshape(n, -1)


def hyper(model, **kw):
  dt = jnp.zeros(()).dtype
  return {k: jnp.asarray(kw.get(k, HYP.get(k, 0.5)), dt) for k in model.hyper_names}


def train(model, x, hp, *, epochs=4, batch_size=32, lr=3e-3, seed=0):
  """Adam on sampled_loss, reshuffled per epoch (numpy permutation from ``seed``): one
  jitted step (a small program) in a Python loop; returns params, (epochs, batches) losses."""
  n = x.shape[0]
  nb = n // batch_size
  tx = optax.adam(lr)

  @jax.jit
  def step(p, st, batch, t):
    loss, g = jax.value_and_grad(model.sampled_loss)(
        p, batch, jax.random.fold_in(jax.random.key(seed + 2), t), hp)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
      u, st = tx.update(g, st, p)
    return optax.apply_updates(p, u), st, loss

  p = init(model)(jax.random.key(seed), 1.0)
  with jax.numpy_dtype_promotion("standard"):
    st = tx.init(p)
  rng = np.random.default_rng(seed + 1)
  losses = []
  for e in range(epochs):
    perm = rng.permutation(n)
    for b in range(nb):
      p, st, loss = step(p, st, jnp.asarray(x[perm[b * batch_size:(b + 1) * batch_size]]),
                         e * nb + b)
      losses.append(loss)
  return p, np.asarray(losses).reshape(epochs, nb)


@functools.cache
def init(model):
  return jax.jit(lambda k, s: model.init(k, None, s))


@functools.cache
def loss_fn(model):
  return jax.jit(model.sampled_loss)


# ------------------------------------------------------------ architecture --

def test_default_is_the_papers_conv_stack_on_mnist():
  """Dang et al.: conv 3x3x32, 3x3x16 stride 2 (28 -> 14 -> 7); decoder dense to 7x7x32,
  transposed conv 3x3x32, 3x3x16 stride 2 (7 -> 14 -> 28), 3x3x1 stride 1."""
  m = lv.make_model("cnn_vae", latent_dim=16)
  params = jax.eval_shape(lambda k: m.init(k, None, 1.0), jax.random.key(0))  # shapes only
  p = tu.flatten_dict(params["params"], sep="/")
  shapes = {k: v.shape for k, v in p.items() if k.endswith("kernel")}
  assert shapes == {
      "trunk/Conv_0/kernel": (3, 3, 1, 32), "trunk/Conv_1/kernel": (3, 3, 32, 16),
      "head/mu/kernel": (7 * 7 * 16, 16),
      "dec/Dense_0/kernel": (16, 7 * 7 * 32), "dec/ConvTranspose_0/kernel": (3, 3, 32, 32),
      "dec/ConvTranspose_1/kernel": (3, 3, 32, 16), "dec/ConvTranspose_2/kernel": (3, 3, 16, 1)}
  assert p["head/log_var"].shape == (16,)
  mu, std = jax.eval_shape(lambda p: m.encoder(p, jnp.zeros((2, 28, 28)), hyper(m)), params)
  assert mu.shape == std.shape == (2, 16)
  assert m.data_dim == 784 and m.label() == "cnn_vae[relu,learnable,dec=fixed,conv=32-16]"


@pytest.mark.slow  # compiling a conv init takes ~15 s on the loaded 2-core CPU
def test_kernels_scale_with_init_scale():
  m = lv.make_model("cnn_vae", **SMALL)
  p1 = tu.flatten_dict(init(m)(jax.random.key(1), 1.0), sep="/")
  p3 = tu.flatten_dict(init(m)(jax.random.key(1), 3.0), sep="/")
  for k in p1:
    want = 3.0 * p1[k] if k.endswith("kernel") else p1[k]
    np.testing.assert_allclose(p3[k], want, rtol=1e-15)  # float64: one multiply


def test_flat_and_image_inputs_agree_bitwise():
  """The one numerical default-suite test (~15 s here: compiling a conv init and loss)."""
  m = lv.make_model("cnn_vae", **SMALL)
  x = images(16)
  p = init(m)(jax.random.key(0), 1.0)
  k = jax.random.key(5)
  ref = loss_fn(m)(p, jnp.asarray(x), k, hyper(m))
  for shape in ((16, 8, 8), (16, 8, 8, 1)):
    assert loss_fn(m)(p, jnp.asarray(x.reshape(shape)), k, hyper(m)) == ref


@pytest.mark.slow
def test_paper_loss_conventions():
  m = lv.make_model("cnn_vae", **SMALL)
  x = jnp.asarray(images(16))
  p = init(m)(jax.random.key(0), 1.0)
  k, hp = jax.random.key(2), hyper(m)
  loss = m.sampled_loss(p, x, k, hp)
  const = 0.5 * 64 * np.log(2 * np.pi * 0.5 ** 2)
  np.testing.assert_allclose(m.paper_loss(p, x, k, hp, "dang"), 2 * (loss - const), rtol=1e-12)
  np.testing.assert_allclose(m.paper_loss(p, x, k, hp, "wz"), loss - const, rtol=1e-12)


# ----------------------------------------------------------------- training --

@pytest.mark.slow  # compiling a conv training step takes ~20-30 s on the shared 2-core CPU
@pytest.mark.parametrize("kw", [
    {},
    pytest.param({"encoder_var": "data_dependent", "decoder_var": "learnable"},
                 marks=pytest.mark.slow),
    pytest.param({"encoder_var": "fixed", "activation": "tanh", "hidden": (8,),
                  "dec_channels": (4,)}, marks=pytest.mark.slow),
], ids=["learnable", "data_dependent+learnable_dec", "fixed+tanh+hidden"])
def test_seeded_training_decreases_and_is_bitwise_repeatable(kw):
  m = lv.make_model("cnn_vae", **{**SMALL, **kw})
  x = images(128)
  p1, l1 = train(m, x, hyper(m))
  p2, l2 = train(m, x, hyper(m))
  l1, l2 = np.asarray(l1), np.asarray(l2)
  assert np.all(np.isfinite(l1))
  assert l1[-1].mean() < l1[0].mean() - 1.0, (l1[0].mean(), l1[-1].mean())  # nats per image
  np.testing.assert_array_equal(l1, l2)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(a, b)
  out = m.evaluate(p1, hyper(m), jnp.asarray(images(32, seed=1)), jax.random.key(3))
  for k in ("iw_ll", "iw_ll_se", "kl", "au", "dang_au", "mi", "cov_rank", "elbo"):
    assert np.isfinite(out[k]), k
  assert out["kl_per_dim"].shape == out["mean_std"].shape == (3,)
  assert out["elbo"] <= out["iw_ll"] + 4 * out["iw_ll_mc_se"] + 1e-9


# --------------------------------------------------------------- validation --

def test_bad_config_is_a_value_error():
  cases = [
      ({"image_shape": (28, 28)}, "tuple \\(H, W, C\\)"),
      ({"image_shape": (10, 10, 1), "channels": (4, 4)}, "divisible by 2\\*\\*2"),
      ({"channels": ()}, "non-empty tuple"),
      ({"channels": [4, 4]}, "tuple"),
      ({"channels": (4, 0)}, "channels\\[1\\]"),
      ({"dec_channels": (4, 4, 4, 4)}, "divisible by 2\\*\\*4"),
      ({"kernel": 0}, "kernel"),
      ({"latent_dim": 0}, "latent_dim"),
      ({"activation": "gelu"}, "activation"),
      ({"encoder_var": "x"}, "encoder_var"),
  ]
  for kw, msg in cases:
    with pytest.raises(ValueError, match=msg):
      lv.make_model("cnn_vae", **{**SMALL, **kw})


def test_bad_data_and_hyper_are_value_errors():
  m = lv.make_model("cnn_vae", **SMALL)
  p = init(m)(jax.random.key(0), 1.0)
  k = jax.random.key(0)
  x = images(8)
  for bad in (x[:, :63], x.reshape(8, 4, 16), x.reshape(8, 8, 8, 1)[..., :4, :],
              np.repeat(x.reshape(8, 8, 8, 1), 2, axis=-1), x[0]):
    with pytest.raises(ValueError, match="shape"):
      m.sampled_loss(p, jnp.asarray(bad), k, hyper(m))
  with pytest.raises(ValueError, match="not a sequence"):
    m.sampled_loss(p, (jnp.asarray(x), jnp.asarray(x)), k, hyper(m))
  nan = x.copy()
  nan[3, 7] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    m.check_data(nan)
  with pytest.raises(ValueError, match="non-finite"):
    m.evaluate(p, hyper(m), nan, k)
  with pytest.raises(ValueError, match="empty"):
    m.check_data(x[:0])
  for name in ("beta", "eta_enc", "eta_dec"):
    with pytest.raises(ValueError, match=name):
      m.check_hyper({**hyper(m), name: jnp.asarray(-1.0)})
  mf = lv.make_model("cnn_vae", **SMALL, encoder_var="fixed")
  with pytest.raises(ValueError, match="sigma"):
    mf.check_hyper({**hyper(mf), "sigma": jnp.ones(5)})


def test_train_grid_refuses_bad_data():
  m = lv.make_model("cnn_vae", **SMALL)
  g = G.product(beta=[1.0]) * G.constant(eta_enc=1.0, eta_dec=0.5, init_scale=1.0, lr=1e-3)
  nan = images(64)
  nan[0, 0] = np.inf
  with pytest.raises(ValueError, match="non-finite"):
    lv.train_grid(m, None, g, objective="sampled", data=nan, batch_size=32, epochs=1,
                  progress=False)
  with pytest.raises(ValueError, match="shape"):
    lv.train_grid(m, None, g, objective="sampled", data=images(64)[:, :60], batch_size=32,
                  epochs=1, progress=False)


# ---------------------------------------------------------------- grids --

MODEL = lv.make_model("cnn_vae", **SMALL)


def run_grid(betas, seeds=2, shape=None):
  x, xe = images(128), images(32, seed=1)
  if shape is not None:
    x, xe = x.reshape((-1,) + shape), xe.reshape((-1,) + shape)
  g = (G.product(beta=betas) * G.seeds(seeds)
       * G.constant(eta_enc=1.0, eta_dec=0.5, init_scale=1.0, lr=3e-3))
  return lv.train_grid(MODEL, None, g, objective="sampled", data=x, eval_data=xe,
                       batch_size=32, epochs=3, progress=False)


@pytest.fixture(scope="module")
def baseline():  # the engine's program compiles in ~30-60 s on the shared 2-core CPU: slow
  return run_grid([0.3, 3.0, 30.0])


@pytest.mark.slow
def test_grid_over_beta_and_seed(baseline):
  t = baseline.table
  assert len(t) == 6 and (t.status == "done").all()
  for col in ("loss", "iw_ll", "kl", "au", "mi", "elbo"):
    assert np.all(np.isfinite(t[col])), col
  assert baseline.arrays["kl_per_dim"].shape == (6, 3)
  kl = t.pivot(index="seed", columns="beta", values="kl").to_numpy()
  assert np.all(kl[:, 0] > kl[:, 2])  # more beta, less KL (same seed)
  # seeds differ
  assert t[t.seed == 0].loss.to_numpy()[0] != t[t.seed == 1].loss.to_numpy()[0]


@pytest.mark.slow
def test_new_grid_same_shapes_does_not_recompile(baseline):
  del baseline
  before = engine.trace_count()
  r = run_grid([0.5, 2.0, 9.0])
  assert engine.trace_count() == before, "a new beta grid of the same shapes retraced"
  assert (r.table.status == "done").all() and np.all(np.isfinite(r.table.iw_ll))


@pytest.mark.slow
def test_image_shaped_data_trains_like_flat(baseline):
  """(n, H, W, C) data through the engine: the same cells as flat data."""
  r = run_grid([0.3, 3.0, 30.0], shape=SHAPE)
  for col in ("loss", "kl", "iw_ll"):
    np.testing.assert_allclose(r.table[col], baseline.table[col], rtol=1e-10)  # float64


# ------------------------------------------------------------------ cnn_cvae --

CSHAPE = (4, 4, 1)
CSMALL = {"latent_dim": 3, "cond_shape": CSHAPE, "image_shape": SHAPE, "channels": (4, 4),
              "iw_samples": 4, "iw_chunk": 2}


def pairs(n, seed=0):
  """(x, y): x the top-left 4x4 quadrant of an 8x8 blob image, y the image with it zeroed."""
  img = images(n, seed).reshape(n, 8, 8)
  x = img[:, :4, :4].reshape(n, -1)
  y = img.copy()
  y[:, :4, :4] = 0.0
  return x, y.reshape(n, -1)


def test_cnn_cvae_default_is_dangs_stack():
  m = lv.make_model("cnn_cvae", latent_dim=16)
  p = tu.flatten_dict(jax.eval_shape(lambda k: m.init(k, None, 1.0), jax.random.key(0))["params"],
                      sep="/")
  assert p["trunk_x/Conv_0/kernel"].shape == (3, 3, 1, 32)
  assert p["trunk_y/Conv_1/kernel"].shape == (3, 3, 32, 16)
  assert p["head/mu/kernel"].shape == (4 * 4 * 16 + 7 * 7 * 16, 16)  # 14->7->4, 28->14->7
  assert p["dec/Dense_0/kernel"].shape == (16 + 4 * 4 * 16, 7 * 7 * 32)
  assert p["dec/ConvTranspose_2/kernel"].shape == (3, 3, 16, 1)
  assert (m.cond_dim, m.data_dim) == (196, 784)


@pytest.mark.slow
def test_cnn_cvae_seeded_training_and_validation():
  m = lv.make_model("cnn_cvae", **CSMALL)
  x, y = pairs(128)
  hp = hyper(m)

  def fit():
    tx = optax.adam(3e-3)

    @jax.jit
    def run(x, y):
      p = m.init(jax.random.key(0), None, 1.0)
      with jax.numpy_dtype_promotion("standard"):
        st = tx.init(p)

      def step(c, t):
        p, st = c
        sl = jax.lax.dynamic_slice_in_dim
        b = (sl(x, (t % 4) * 32, 32), sl(y, (t % 4) * 32, 32))
        loss, g = jax.value_and_grad(m.sampled_loss)(p, b, jax.random.fold_in(
            jax.random.key(1), t), hp)
        with jax.numpy_dtype_promotion("standard"):
          u, st = tx.update(g, st, p)
        return (optax.apply_updates(p, u), st), loss
      (p, _), losses = jax.lax.scan(step, (p, st), jnp.arange(24))
      return p, losses
    return run(jnp.asarray(x), jnp.asarray(y))

  p1, l1 = fit()
  _p2, l2 = fit()
  np.testing.assert_array_equal(l1, l2)
  assert np.all(np.isfinite(l1)) and l1[-4:].mean() < l1[:4].mean() - 1.0
  # image-shaped pair: the same loss as flat
  k = jax.random.key(9)
  flat = m.sampled_loss(p1, (jnp.asarray(x), jnp.asarray(y)), k, hp)
  img = m.sampled_loss(p1, (jnp.asarray(x.reshape(-1, 4, 4, 1)), jnp.asarray(y.reshape(-1, 8, 8))),
                       k, hp)
  assert flat == img
  out = m.evaluate(p1, hp, tuple(map(jnp.asarray, pairs(32, seed=1))), jax.random.key(3))
  assert np.isfinite(out["iw_ll"]) and out["kl_per_dim"].shape == (3,)
  with pytest.raises(ValueError, match="pair"):
    m.sampled_loss(p1, jnp.asarray(y), k, hp)
  with pytest.raises(ValueError, match="condition"):
    m.sampled_loss(p1, (jnp.asarray(y), jnp.asarray(y)), k, hp)
  with pytest.raises(ValueError, match="rows"):
    m.check_data((x[:5], y))
  with pytest.raises(ValueError, match="image_shape"):
    lv.make_model("cnn_cvae", **{**CSMALL, "image_shape": (6, 6, 1)})


@pytest.mark.slow
def test_cnn_cvae_grid_beta_by_seed():
  m = lv.make_model("cnn_cvae", **CSMALL)
  g = (G.product(beta=[0.3, 30.0]) * G.seeds(2)
       * G.constant(eta_enc=1.0, eta_dec=0.5, init_scale=1.0, lr=3e-3))
  r = lv.train_grid(m, None, g, objective="sampled", data=pairs(128), eval_data=pairs(32, 1),
                    batch_size=32, epochs=2, progress=False)
  t = r.table
  assert len(t) == 4 and (t.status == "done").all() and np.all(np.isfinite(t.iw_ll))
  kl = t.pivot(index="seed", columns="beta", values="kl").to_numpy()
  assert np.all(kl[:, 0] > kl[:, 1])


# ----------------------------------------------------------------- cnn_mhvae --

HSMALL = {"latent_dim1": 4, "latent_dim2": 2, "image_shape": SHAPE, "channels": (4, 4), "hidden2": (6,),
              "iw_samples": 4, "iw_chunk": 2}
HHYP = {"beta1": 1.0, "beta2": 1.0, "eta_enc": 1.0, "eta_dec": 0.5, "sigma1": 0.5}


def hhyper(model, **kw):
  dt = jnp.zeros(()).dtype
  return {k: jnp.asarray(kw.get(k, HHYP.get(k, 0.5)), dt) for k in model.hyper_names}


def test_cnn_mhvae_default_is_dangs_stack_and_validates():
  m = lv.make_model("cnn_mhvae", latent_dim1=16, latent_dim2=8)
  p = tu.flatten_dict(jax.eval_shape(lambda k: m.init(k, None, 1.0), jax.random.key(0))["params"],
                      sep="/")
  assert p["enc1_trunk/Conv_0/kernel"].shape == (3, 3, 1, 64)
  assert p["enc1_trunk/Conv_1/kernel"].shape == (3, 3, 64, 32)
  assert p["enc1_head/kernel"].shape == (1568, 16)  # 7 * 7 * 32, Dang's 1568
  assert p["trunk2/Dense_0/kernel"].shape == (16, 64)
  assert p["dec1/ConvTranspose_2/kernel"].shape == (3, 3, 32, 1)
  assert m.hyper_names == ("beta1", "beta2", "eta_enc", "eta_dec", "sigma1")
  assert m.label() == "cnn_mhvae[relu,sigma2=learnable,dec=fixed,conv=64-32]"
  hs = lv.make_model("cnn_mhvae", **HSMALL)
  x = jnp.asarray(images(8))
  params = jax.eval_shape(lambda k: hs.init(k, None, 1.0), jax.random.key(0))
  with pytest.raises(ValueError, match="shape"):
    jax.eval_shape(lambda p: hs.sampled_loss(p, x[:, :10], jax.random.key(0), hhyper(hs)), params)
  with pytest.raises(ValueError, match="reconstructs"):
    hs.check_data((x, x))
  bad = np.asarray(x).copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    hs.check_data(bad)
  with pytest.raises(ValueError, match="sigma1"):
    hs.check_hyper({**hhyper(hs), "sigma1": jnp.asarray(0.0)})
  with pytest.raises(ValueError, match="divisible"):
    lv.make_model("cnn_mhvae", **{**HSMALL, "image_shape": (6, 6, 1)})


@pytest.mark.slow
def test_cnn_mhvae_training_and_grid():
  m = lv.make_model("cnn_mhvae", **HSMALL, sigma2_var="data_dependent")
  x = images(128)
  _, l1 = train(m, x, hhyper(m))
  _, l2 = train(m, x, hhyper(m))
  np.testing.assert_array_equal(l1, l2)
  assert np.all(np.isfinite(l1)) and l1[-1].mean() < l1[0].mean() - 1.0
  g = (G.product(beta2=[0.3, 30.0]) * G.seeds(2)
       * G.constant(beta1=1.0, eta_enc=1.0, eta_dec=0.5, sigma1=0.5, init_scale=1.0, lr=3e-3))
  r = lv.train_grid(m, None, g, objective="sampled", data=x.reshape(-1, 8, 8, 1),
                    eval_data=images(32, 1), batch_size=32, epochs=2, progress=False)
  t = r.table
  assert len(t) == 4 and (t.status == "done").all() and np.all(np.isfinite(t.iw_ll))
  kl = t.pivot(index="seed", columns="beta2", values="z2_kl").to_numpy()
  assert np.all(kl[:, 0] > kl[:, 1])
