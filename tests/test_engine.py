"""Grid engine acceptance tests (float64, 4 forced CPU devices from conftest).

Compilation dominates on CPU, so the default tests share one static
configuration (:func:`run`: VAE, learnable Sigma, D0 = 4, d1 = 3, 20k-step
budget with stop-on-tolerance, chunks of 8 cells): after the first compile
every grid below with at most 8 cells reuses the same program.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest

import linvae_jax as lv
from linvae_jax._src import engine
from linvae_jax._src import grid as G

STEPS, RECORD, TOL = 20000, 250, 1e-14
OPT = engine.AdamDecay(decay_steps=STEPS, final_ratio=3e-4)  # lr -> lr * 3e-4
THETA2 = np.array([4.0, 2.0, 1.0, 0.25])  # eig(A): theta^2, the collapse scale


def moments():
  return lv.moments_from_second_moments(np.diag(THETA2))


def vae(encoder_var="learnable"):
  return lv.make_model("vae", latent_dim=3, encoder_var=encoder_var)


def straddling_grid():
  """beta * eta_dec^2 falls between the theta_i^2 (never on a threshold): 6 cells."""
  return (G.product(beta=[0.5, 1.5, 3.0]) * G.zipped(eta_enc=[1.0, 0.7], eta_dec=[1.0, 0.8])
          * G.constant(lr=3e-2))


def run(grid, model=None, **kw):
  kw = dict(dict(steps=STEPS, record_every=RECORD, optimizer=OPT, tol_loss=TOL, progress=False,
                 chunk_size=8, keep_params=True), **kw)
  return engine.train_grid(model or vae(), moments(), grid, **kw)


def assert_tables_close(a, b, atol=1e-9, step_slack=4 * RECORD):
  """Two runs of the same cells agree: float64 columns to ``atol`` (absolute),
  counts and status exactly, ``steps`` within ``step_slack``.

  Why not bitwise: a different batch layout (device count, chunk
  composition) changes float reassociation at 1e-16; trajectories passing
  near saddles amplify that transiently (~1e-8 observed at step 1250), and
  Adam on round-off-level gradients then wanders by ~lr; final losses, D_MA
  and KLs still agree to ~1e-14, while the stop-on-tolerance record
  (tol at round-off level) may differ by a few records.
  """
  a, b = a.reset_index(drop=True), b.reset_index(drop=True)
  assert list(a.columns) == list(b.columns)
  for c in a.columns:
    if c == "steps":
      np.testing.assert_array_less(np.abs(a[c].to_numpy() - b[c].to_numpy()), step_slack + 1)
    elif a[c].dtype.kind == "f":
      np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=0, atol=atol, err_msg=c)
    else:
      np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy(), err_msg=c)


@pytest.fixture(scope="module")
def baseline():
  return run(straddling_grid())


# ------------------------------------------------------------------ convergence --

def test_learnable_sigma_reaches_closed_form(baseline):
  t = baseline.table
  assert len(t) == 6 and (t.status == "converged").all(), t.status.tolist()
  for key in ("dma_omega", "dma_lambda", "dma_sigma_std"):
    assert (t[key] <= 1e-6).all(), t[key].tolist()  # float64
  assert (np.abs(t.gap) <= 1e-9).all(), t.gap.tolist()  # float64, nats
  np.testing.assert_array_equal(t.active_z, t.pred_active_z)
  # the grid straddles the thresholds: some cells collapse modes, some do not
  assert t.pred_active_z.nunique() >= 2
  # beta * eta_dec^2 = 3 leaves exactly theta^2 = 4 active
  assert t.loc[(t.beta == 3.0) & (t.eta_dec == 1.0), "pred_active_z"].item() == 1


@pytest.mark.slow  # its own compile (~10-20 s on a loaded 2-core CPU)
def test_fixed_sigma_reaches_closed_form():
  model = vae("fixed")
  r = run(straddling_grid() * G.constant(sigma=0.6), model=model)
  t = r.table
  assert (t.status == "converged").all(), t.status.tolist()
  for key in ("dma_omega", "dma_lambda"):
    assert (t[key] <= 1e-6).all(), t[key].tolist()  # float64
  assert (np.abs(t.gap) <= 1e-9).all()
  np.testing.assert_array_equal(t.active_z, t.pred_active_z)


def test_history_and_params(baseline):
  h, t = baseline.history, baseline.table
  n_rec = STEPS // RECORD
  assert h["loss"].shape == (6, n_rec) and h["dma_omega"].shape == (6, n_rec)
  np.testing.assert_array_equal(h["step"], RECORD * np.arange(1, n_rec + 1))
  assert np.all(np.isfinite(h["loss"]))
  # last record == final table value (frozen after convergence)
  np.testing.assert_allclose(h["loss"][:, -1], t.loss, rtol=0, atol=1e-12)  # float64
  np.testing.assert_array_equal(h["active_z"][:, -1], t.active_z)
  # early records are far from the optimum, late ones at it
  assert np.all(h["dma_omega"][:, 0] > h["dma_omega"][:, -1])
  assert baseline.params.W.shape == (6, 3, 4)
  # steps recorded at a record boundary
  assert np.all(t.steps % RECORD == 0) and np.all(t.steps < STEPS)


# --------------------------------------------------------------- compile count --

def test_second_grid_same_shapes_does_not_recompile(baseline):
  before = engine.trace_count()
  g = (G.product(beta=[0.6, 1.2, 2.5]) * G.zipped(eta_enc=[1.3, 0.9], eta_dec=[1.1, 0.7])
       * G.product(lr=[2e-2]) * G.constant(init_scale=0.05, seed=7))
  r = run(g)
  assert engine.trace_count() == before, "a new grid of the same shapes retraced the program"
  assert (r.table.status == "converged").all()
  assert (r.table.dma_omega <= 1e-6).all()


# -------------------------------------------------------------------- sharding --

def test_single_device_equals_sharded(baseline):
  # On CPU the default is one device: forced host devices share the cores.
  assert len(baseline.info["devices"]) == 1
  sharded = run(straddling_grid(), devices=jax.devices())
  assert len(sharded.info["devices"]) == 4
  assert_tables_close(baseline.table, sharded.table)
  np.testing.assert_allclose(sharded.params.W, baseline.params.W, rtol=0, atol=1e-6)  # float64


# ------------------------------------------------------------------- isolation --

def test_diverging_cell_is_flagged_and_isolated(baseline):
  lrs = [3e-2, 3e-2, 1e200, 3e-2, 3e-2, 3e-2, 3e-2]  # cell 2 blows up on its first update
  betas = [0.5, 0.5, 1.0, 1.5, 1.5, 3.0, 3.0]
  etas = [1.0, 0.7, 1.0, 1.0, 0.7, 1.0, 0.7]
  g = G.zipped(beta=betas, lr=lrs, eta_enc=etas, eta_dec=[{1.0: 1.0, 0.7: 0.8}[e] for e in etas])
  r = run(g)
  t = r.table
  bad = t.iloc[2]
  assert bad.status == "diverged" and bad.steps == 1, (bad.status, bad.steps)
  assert np.all(np.isfinite(r.params.W[2])) and np.isfinite(bad.loss)  # frozen at a finite state
  good = t.drop(index=2).reset_index(drop=True)
  assert_tables_close(good.drop(columns=["lr"]), baseline.table.drop(columns=["lr"]))
  # the history of the other cells carries no NaN either
  assert np.all(np.isfinite(np.delete(r.history["loss"], 2, axis=0)))


# ---------------------------------------------------------------------- resume --

RESUME_SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_enable_x64", True)
import test_engine as t
from linvae_jax._src import grid as G
t.run(t.resume_grid(), out_dir={out!r})
print("UNREACHABLE: the engine should have exited after one chunk")
"""


def resume_grid():
  return straddling_grid() * G.seeds([0, 1])  # 12 cells: two chunks of 8


def test_resume_after_kill_recomputes_nothing(tmp_path, baseline):
  out = str(tmp_path / "run")
  env = dict(os.environ, JAX_ENABLE_X64="1", **{engine.EXIT_ENV: "1"},
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  code = RESUME_SCRIPT.format(tests=os.path.dirname(__file__), out=out)
  p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 17, p.stdout + p.stderr
  files = sorted(os.listdir(out))
  assert files == ["chunk_00000.npz", "manifest.json"], files
  mtime = os.stat(os.path.join(out, "chunk_00000.npz")).st_mtime_ns

  resumed = run(resume_grid(), out_dir=out)
  assert resumed.info["chunks_loaded"] == 1 and resumed.info["chunks_computed"] == 1
  assert os.stat(os.path.join(out, "chunk_00000.npz")).st_mtime_ns == mtime
  fresh = run(resume_grid())
  assert fresh.info["chunks_computed"] == 2
  # same program, same chunking, same devices: bitwise equal in practice
  pd.testing.assert_frame_equal(resumed.table, fresh.table, check_exact=True)
  for k in fresh.history:
    np.testing.assert_array_equal(resumed.history[k], fresh.history[k])
  # a third run is pure loading
  again = run(resume_grid(), out_dir=out)
  assert again.info["chunks_computed"] == 0 and again.info["chunks_loaded"] == 2
  # a different spec in the same directory is refused
  with pytest.raises(ValueError, match="different grid spec"):
    run(resume_grid() * G.constant(init_scale=0.2), out_dir=out)
  # resume=False starts afresh
  redo = run(resume_grid(), out_dir=out, resume=False)
  assert redo.info["chunks_computed"] == 2


# ----------------------------------------------------------------- save / load --

def test_save_load_roundtrip(tmp_path, baseline):
  baseline.save(tmp_path / "res")
  back = engine.GridResult.load(tmp_path / "res")
  pd.testing.assert_frame_equal(back.table, baseline.table, check_exact=True)
  for k, v in baseline.history.items():
    np.testing.assert_array_equal(back.history[k], v)
  np.testing.assert_array_equal(back.params[".W"], baseline.params.W)
  assert back.spec["hash"] == baseline.spec["hash"]


# ------------------------------------------------------------------- bad input --

@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(record_every=300), "must be >= 1 and divide steps"),
    (dict(objective="mc"), "objective must be"),
    (dict(objective="sampled"), "needs data"),
    (dict(tol_loss=-1.0), "tol_loss must be"),
    (dict(data=np.zeros((4, 4))), "for objective='sampled'"),
    (dict(devices=[]), "devices is empty"),
])
def test_bad_engine_arguments(kw, match):
  with pytest.raises(ValueError, match=match):
    run(straddling_grid(), **kw)


@pytest.mark.parametrize("steps, expected", [
    (1, 1), (7, 7), (10, 10), (200, 10), (205, 5), (1000, 10), (2000, 20), (10000, 100),
    (10001, 73),  # 10001 = 73 * 137: the largest divisor <= 100
])
def test_default_record_every(steps, expected):
  """At most 100 records, none closer than 10 steps, a divisor of steps."""
  from linvae_jax._src.engine import inputs
  got = inputs.record_every_for(steps, None)
  assert got == expected and steps % got == 0


def test_bad_grid_reaches_engine_as_value_error():
  with pytest.raises(ValueError, match="neither grid axes nor given"):
    run(G.product(beta=[1.0]))
  with pytest.raises(ValueError, match="grid must be a Grid"):
    run({"beta": [1.0]})
  with pytest.raises(ValueError, match="'beta' must be > 0"):
    run(G.zipped(beta=[1.0, 0.0], eta_enc=[1.0, 1.0], eta_dec=[1.0, 1.0]))
