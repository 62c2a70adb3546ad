"""A warm ``train_grid`` call does no tracing: the program and ``init``'s shapes are cached.

Timings live in ``benchmarks/engine_overhead.py``; these tests only count traces.
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import linvae_jax as lv
from linvae_jax._src import engine
from linvae_jax._src import grid as G
from linvae_jax._src.engine import inputs

sys.path.insert(0, os.path.dirname(__file__))
import test_engine as te  # noqa: E402


def moments(d0=3):
  return lv.moments_from_second_moments(np.diag(np.linspace(2.0, 0.5, d0)))


def test_warm_call_traces_nothing(monkeypatch):
  # test_engine's static configuration and chunk shape (6 cells), compiled there once for
  # the whole suite; tol_loss only has to be on (it is traced): 1e3 stops every cell at
  # its second record
  fast = dict(tol_loss=1e3)
  first = te.run(te.straddling_grid(), **fast)
  programs, inits = engine.trace_count(), inputs.init_shape_traces()
  calls = []
  real = jax.eval_shape
  monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: calls.append(a) or real(*a, **k))
  # a new grid of the same size: no retrace of the program, no eval_shape at all
  g = (G.product(beta=[0.7, 1.1, 2.6]) * G.zipped(eta_enc=[1.2, 0.8], eta_dec=[0.9, 1.1])
       * G.constant(lr=2e-2))
  second = te.run(g, **fast)
  assert engine.trace_count() == programs
  assert inputs.init_shape_traces() == inits
  assert calls == []
  assert (second.table.steps == 2 * te.RECORD).all()
  assert jax.tree.map(np.shape, second.params) == jax.tree.map(np.shape, first.params)
  assert not np.array_equal(second.table["loss"], first.table["loss"])


def test_init_shapes_cache_is_keyed_by_model_shape_and_dtype():
  vae2 = lv.make_model("vae", latent_dim=2)
  m3 = moments(3)
  base = inputs.init_shapes(vae2, m3)
  n = inputs.init_shape_traces()
  assert inputs.init_shapes(lv.make_model("vae", latent_dim=2), moments(3)) is base  # equal keys
  assert inputs.init_shape_traces() == n

  others = {
      "latent_dim": (lv.make_model("vae", latent_dim=1), m3),
      "encoder_var": (lv.make_model("vae", latent_dim=2, encoder_var="fixed"), m3),
      "shape": (vae2, moments(4)),
      "dtype": (vae2, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), m3)),
  }
  for name, (model, m) in others.items():
    got = inputs.init_shapes(model, m)
    want = jax.eval_shape(lambda: model.init(jax.random.key(0), m, 0.1))  # noqa: B023
    assert got is not base, name
    assert jax.tree.structure(got) == jax.tree.structure(want), name
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(got)] == \
        [(a.shape, a.dtype) for a in jax.tree.leaves(want)], name
  assert inputs.init_shape_traces() == n + len(others)
  shapes = {k: jax.tree.leaves(inputs.init_shapes(*v))[0] for k, v in others.items()}
  assert shapes["dtype"].dtype == jnp.float32
  assert shapes["shape"].shape != jax.tree.leaves(base)[0].shape
