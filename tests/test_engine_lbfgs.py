"""The engine's L-BFGS path and the ``tol_dma`` stopping rule (float64).

L-BFGS (optax.lbfgs + zoom line search) is a deterministic full-batch
method: it must reach the closed forms of every model, stop on its own
(``stalled``: no decrease left, i.e. round-off) instead of wandering off
after convergence, and be refused for the minibatch objective.
"""
import numpy as np
import pytest

import cases
import linvae_jax as lv
from linvae_jax._src import engine
from linvae_jax._src import grid as G

THETA2 = np.diag([4.0, 2.0, 1.0, 0.25])


def lbfgs(model, m, grid, steps=1000, **kw):
  return engine.train_grid(model, m, grid, steps=steps, record_every=10,
                           optimizer=engine.LBFGS(), progress=False, **kw)


def assert_at_optimum(t, dma_tol=1e-6, gap_tol=1e-9):
  # a line search stops at round-off in the loss (gap ~1e-14 nats), i.e. at
  # ~sqrt(eps) ~ 1e-8 in the parameters: D_MA <= 1e-6 (float64)
  assert set(t.status) <= {"stalled", "converged"}, t.status.tolist()
  for key in [c for c in t.columns if c.startswith("dma_")]:
    assert (t[key] <= dma_tol).all(), (key, t[key].tolist())
  assert (np.abs(t.gap) <= gap_tol).all(), t.gap.tolist()


@pytest.mark.parametrize("encoder_var, extra", [("learnable", {}), ("fixed", {"sigma": 0.6})])
def test_vae_reaches_closed_form_and_stops(encoder_var, extra):
  model = lv.make_model("vae", latent_dim=3, encoder_var=encoder_var)
  m = lv.moments_from_second_moments(THETA2)
  g = (G.product(beta=[0.5, 1.5, 3.0]) * G.zipped(eta_enc=[1.0, 0.7], eta_dec=[1.0, 0.8])
       * G.constant(lr=1.0, **extra))
  r = lbfgs(model, m, g, steps=3000)
  t = r.table
  assert_at_optimum(t)
  # it stopped by itself long before the budget (no post-convergence blow-up)
  assert (t.steps < 1000).all(), t.steps.tolist()
  np.testing.assert_array_equal(t.active_z, t.pred_active_z)


def test_cvae_and_mhvae_reach_closed_form():
  m, betas = cases.cvae_moments_partial_collapse()
  cvae = lv.make_model("cvae", latent_dim=3)
  t = lbfgs(cvae, m, G.product(beta=betas) * G.constant(eta_enc=1.0, eta_dec=1.0)).table
  assert_at_optimum(t)
  assert t.pred_active_z.nunique() >= 2

  mh = lv.make_model("mhvae", latent_dim1=3, latent_dim2=2)
  g = G.product(beta2=[0.5, 2.0, 6.0]) * G.constant(beta1=1.0, eta_enc=1.0, eta_dec=1.0,
                                                    sigma1=0.5)
  assert_at_optimum(lbfgs(mh, lv.moments_from_second_moments(THETA2), g).table)


def test_tol_dma_stops_cells_as_verified():
  model = lv.make_model("vae", latent_dim=3)
  m = lv.moments_from_second_moments(THETA2)
  g = G.product(beta=[0.5, 1.5]) * G.constant(eta_enc=1.0, eta_dec=1.0, lr=3e-2)
  r = engine.train_grid(model, m, g, steps=4000, record_every=20, tol_dma=0.05,
                        optimizer=engine.AdamDecay(4000, 1e-2), progress=False)
  t = r.table
  assert (t.status == "verified").all(), t.status.tolist()
  for key in ("dma_omega", "dma_lambda", "dma_sigma_std"):
    assert (t[key] <= 0.05).all() and (t[key] > 0).all(), t[key].tolist()
  assert (t.steps < 4000).all()
  # the record before the stop was not yet within tol_dma (it stopped at the first)
  hist = np.stack([r.history[k] for k in r.history if k.startswith("dma_")])
  first = (hist <= 0.05).all(axis=0).argmax(axis=1)
  np.testing.assert_array_equal(t.steps.to_numpy(), 20 * (first + 1))


def test_lbfgs_refuses_the_sampled_objective():
  x = np.random.default_rng(0).standard_normal((64, 4))
  with pytest.raises(ValueError, match="line search, which needs the deterministic"):
    engine.train_grid(lv.make_model("vae", latent_dim=2), None,
                      G.product(beta=[1.0]) * G.constant(eta_enc=1.0, eta_dec=1.0),
                      objective="sampled", data=x, batch_size=16, epochs=1,
                      optimizer=engine.LBFGS(), progress=False)
  with pytest.raises(ValueError, match="memory_size >= 1"):
    engine.LBFGS(memory_size=0)(None)


@pytest.mark.slow  # 40 s of compiles for several group layouts
def test_cell_batch_groups_match_one_vmap():
  """Sequential groups of cells (lax.map, stopped groups skipped) = one vmap."""
  model = lv.make_model("vae", latent_dim=3)
  m = lv.moments_from_second_moments(THETA2)
  g = G.product(beta=[0.5, 1.5, 3.0]) * G.constant(eta_enc=1.0, eta_dec=1.0, lr=1.0)
  kw = dict(steps=600, record_every=10, tol_loss=1e-12, optimizer=engine.LBFGS(),
            progress=False)
  ref = engine.train_grid(model, m, g, cell_batch=None, **kw)
  for cb in (1, 2):  # 2: the 3 cells are padded to 4
    r = engine.train_grid(model, m, g, cell_batch=cb, **kw)
    np.testing.assert_array_equal(r.table.status, ref.table.status)
    np.testing.assert_array_equal(r.table.steps, ref.table.steps)
    for c in ("loss", "dma_omega", "dma_sigma_std"):
      np.testing.assert_allclose(r.table[c], ref.table[c], rtol=0, atol=1e-9)  # float64
    for k, v in ref.history.items():  # frozen cells repeat their last record
      np.testing.assert_allclose(r.history[k], v, rtol=0, atol=1e-9, err_msg=k)
  assert ref.table.steps.nunique() > 1  # cells stopped at different records
  with pytest.raises(ValueError, match="cell_batch must be >= 1"):
    engine.train_grid(model, m, g, cell_batch=0, **kw)
