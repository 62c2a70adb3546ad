"""The engine is generic: a model with no closed form trains through it (#11).

float64 (conftest). The toy model (tests/toy_model.py) has no ``optimum``;
its minimiser is known, so the test can still check that training worked.
"""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from linvae_jax._src import engine
from linvae_jax._src import grid as G

sys.path.insert(0, os.path.dirname(__file__))
from toy_model import ToyModel  # noqa: E402

SCALES = np.array([2.0, 1.0, 0.5])


def toy_data(n=256, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 3)) * SCALES


def toy_grid():
  return G.product(beta=[0.01, 0.1, 1.0]) * G.constant(eta_dec=1.0, lr=5e-2) * G.seeds([0, 1])


def run(**kw):
  kw = dict(dict(objective="sampled", data=toy_data(), eval_data=toy_data(128, seed=1),
                 batch_size=32, epochs=40, record_every=40, chunk_size=4, progress=False), **kw)
  return engine.train_grid(ToyModel(), None, toy_grid(), **kw)


@pytest.fixture(scope="module")
def fresh():
  return run()


def test_model_without_optimum_trains_and_is_evaluated(fresh):
  t = fresh.table
  assert len(t) == 6 and (t.status == "done").all()
  for col in ("loss", "grad_norm", "mse"):
    assert col in t and np.all(np.isfinite(t[col])), col
  assert "dma_omega" not in t and "gap" not in t  # no closed-form layer
  assert fresh.arrays["w_abs"].shape == (6, 3)
  # the minimiser is known for this toy: w_k = s_k^2 / (s_k^2 + beta)
  s2 = SCALES ** 2  # population E[x^2]; n = 256 samples: 0.1-level sampling error
  for i, beta in enumerate(t.beta):
    np.testing.assert_allclose(fresh.arrays["w_abs"][i], s2 / (s2 + beta), atol=0.12)
  # records: mean minibatch loss per interval, decreasing from the first record
  h = fresh.history
  assert set(h) == {"loss", "grad_norm", "step"} and h["loss"].shape == (6, 8)  # 40 epochs x 8 batches / 40
  assert np.all(h["loss"][:, -1] < h["loss"][:, 0])
  np.testing.assert_array_equal(h["loss"][:, -1], t.loss)


def test_tol_dma_needs_a_closed_form():
  with pytest.raises(ValueError, match="tol_dma needs a closed form"):
    run(tol_dma=0.1)
  with pytest.raises(ValueError, match="no analytic loss"):
    engine.train_grid(ToyModel(), None, toy_grid(), steps=10, progress=False)
  with pytest.raises(ValueError, match="toy data must have shape"):
    run(data=np.zeros((64, 4)))
  with pytest.raises(ValueError, match="non-finite"):
    run(data=np.full((64, 3), np.nan))


RESUME_SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_enable_x64", True)
import test_engine_generic as t
t.run(out_dir={out!r})
print("UNREACHABLE: the engine should have exited after one chunk")
"""


def test_chunked_then_resumed_after_kill(tmp_path, fresh):
  out = str(tmp_path / "toy")
  env = dict(os.environ, JAX_ENABLE_X64="1", **{engine.EXIT_ENV: "1"})
  code = RESUME_SCRIPT.format(tests=os.path.dirname(__file__), out=out)
  p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 17, p.stdout + p.stderr
  assert sorted(os.listdir(out)) == ["chunk_00000.npz", "manifest.json"]
  resumed = run(out_dir=out)
  assert resumed.info["chunks_loaded"] == 1 and resumed.info["chunks_computed"] == 1
  pd.testing.assert_frame_equal(resumed.table, fresh.table, check_exact=True)
  for k in fresh.history:
    np.testing.assert_array_equal(resumed.history[k], fresh.history[k])
  np.testing.assert_array_equal(resumed.arrays["w_abs"], fresh.arrays["w_abs"])
  # a new grid of the same shapes reuses the program
  before = engine.trace_count()
  g = G.product(beta=[0.02, 0.2, 2.0]) * G.constant(eta_dec=0.9, lr=4e-2) * G.seeds([3, 4])
  engine.train_grid(ToyModel(), None, g, objective="sampled", data=toy_data(),
                    eval_data=toy_data(128, seed=1), batch_size=32, epochs=40, record_every=40,
                    chunk_size=4, progress=False)
  assert engine.trace_count() == before


def test_diverging_cell_is_isolated(fresh):
  g = G.zipped(beta=[0.01, 0.1, 1.0, 0.01, 0.1, 1.0], lr=[5e-2] * 5 + [1e300],
               seed=[0, 1, 0, 1, 0, 1]) * G.constant(eta_dec=1.0)
  r = engine.train_grid(ToyModel(), None, g, objective="sampled", data=toy_data(),
                        eval_data=toy_data(128, seed=1), batch_size=32, epochs=40,
                        record_every=40, chunk_size=8, progress=False)
  t = r.table
  assert t.status.tolist()[-1] == "diverged" and (t.status[:5] == "done").all()
  assert np.all(np.isfinite(r.history["loss"][:5]))
