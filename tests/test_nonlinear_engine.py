"""mlp_vae grids through lv.train_grid (sampled objective, held-out evaluate): metrics per
cell, one compile per set of shapes, a diverging cell isolated (float64)."""
import numpy as np
import pytest

import linvae_jax as lv
from linvae_jax._src import engine
from linvae_jax._src import grid as G

MODEL = lv.make_model("mlp_vae", data_dim=6, latent_dim=3, hidden=(8,), iw_samples=10,
                      iw_chunk=10)


def _data():
  rng = np.random.default_rng(0)
  scale = np.array([2.0, 1.5, 1.0, 0.5, 0.3, 0.2])
  return rng.normal(size=(256, 6)) * scale, rng.normal(size=(64, 6)) * scale


def run(grid):
  x, xe = _data()
  return lv.train_grid(MODEL, None, grid, objective="sampled", data=x, eval_data=xe,
                       batch_size=64, epochs=5, progress=False, keep_params=True)


def grid(betas, lrs=None, seeds=2):
  lrs = lrs or [1e-2] * len(betas)
  return (G.zipped(beta=betas, lr=lrs) * G.seeds(seeds)
          * G.constant(eta_enc=1.0, eta_dec=0.8, init_scale=1.0))


@pytest.fixture(scope="module")
def baseline():
  return run(grid([0.5, 2.0, 8.0]))


def test_grid_over_beta_and_seed_trains_and_evaluates(baseline):
  t = baseline.table
  assert len(t) == 6 and (t.status == "done").all()
  for col in ("iw_ll", "iw_ll_se", "kl", "au", "dang_au", "mi", "cov_rank", "elbo", "loss"):
    assert col in t and np.all(np.isfinite(t[col])), col
  assert baseline.arrays["kl_per_dim"].shape == (6, 3)
  assert baseline.arrays["mean_std"].shape == (6, 3)
  # larger beta: less KL on held-out data (same seed)
  kl = t.pivot(index="seed", columns="beta", values="kl").to_numpy()
  assert np.all(kl[:, 0] > kl[:, 2])


def test_second_grid_same_shapes_does_not_recompile(baseline):
  del baseline
  before = engine.trace_count()
  r = run(grid([0.7, 1.3, 4.0]))
  assert engine.trace_count() == before, "a new grid of the same shapes retraced the program"
  assert (r.table.status == "done").all()


def test_diverging_cell_is_isolated(baseline):
  r = run(grid([0.5, 2.0, 8.0], lrs=[1e-2, 1e200, 1e-2]))
  t = r.table
  bad = t.lr > 1.0
  assert (t[bad].status == "diverged").all() and (t[~bad].status == "done").all()
  assert np.all(np.isfinite(t[bad].loss))  # frozen at its last finite state
  good, ref = t[~bad].reset_index(drop=True), baseline.table[~bad].reset_index(drop=True)
  for col in ("loss", "iw_ll", "kl"):
    np.testing.assert_allclose(good[col], ref[col], rtol=1e-10)  # float64, same cells
