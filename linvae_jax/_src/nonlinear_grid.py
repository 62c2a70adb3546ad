r"""A grid of a nonlinear model against the linear theory (``linvae grid --model mlp_vae``).

:func:`run` trains every cell through ``train_grid(..., objective="sampled")``
on the training samples, evaluates it on held-out samples (``model.evaluate``:
KL per dimension, AU, MI, (eps, delta)-collapse, IW log-likelihood), computes
the (eps, delta)-collapse curves over a range of eps from the learned
encoders, puts the linear closed form on the centred moments of the same
training data beside every cell (:mod:`linear_overlay`) and writes the report
directory (:mod:`nonlinear_report`).

:func:`load_arrays` turns a data spec into (training, held-out) sample arrays:

* ``synthetic:<problem>``: an exact-moment design of ``n_train`` rows
  (seed 0) and a fresh one of ``n_eval`` rows (seed 1) of the same population;
* ``mnist:full`` / ``mnist:quadrant``: pixels / 255 of a seeded subset of
  ``n_train`` images of the 60k training set (all of them by default) and the
  first ``n_eval`` images of the 10k test set (``quadrant``: x the bottom-left
  quadrant, y the rest, for a CVAE); ``digit`` keeps one digit;
* an ``.npz`` with ``x`` (and ``y``): its last ``n_eval`` rows are held out.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

EPS_GRID = np.geomspace(1e-4, 10.0, 41)  # the eps axis of the (eps, delta) curves


def _subset(arrays, n, what, seed=0):
  m = arrays[0].shape[0]
  if n is None or n >= m:
    if n is not None and n > m:
      raise ValueError(f"{what}: asked for {n} samples, the data have {m}.")
    return arrays
  idx = np.sort(np.random.default_rng(seed).choice(m, n, replace=False))
  return tuple(a[idx] for a in arrays)


def _mnist(view: str, digit, n_train, n_eval, dtype):
  from linvae_jax._src.data import mnist
  from linvae_jax._src.data.spec import MNIST_VIEWS
  if view not in MNIST_VIEWS:
    raise ValueError(f"unknown MNIST view {view!r}; use mnist:full or mnist:quadrant.")
  out = []
  for split, n in (("train", n_train), ("test", n_eval)):
    imgs = mnist.load_mnist(split=split, scale=255.0, dtype=np.float64, digit=digit).images
    x, y = mnist.mnist_view(imgs, MNIST_VIEWS[view])
    arrs = tuple(np.asarray(a, dtype) for a in ((x,) if y is None else (x, y)))
    out.append(_subset(arrs, n, f"MNIST {split}") if split == "train"
               else tuple(a[:n] for a in arrs))
  return out[0], out[1]


def load_arrays(data: str, *, n_train: Optional[int] = None, n_eval: Optional[int] = None,
                digit: Optional[int] = None, dtype=np.float64) -> tuple:
  """``(train, held_out)``, each ``(x,)`` or ``(x, y)`` (module docstring)."""
  from linvae_jax._src.data import spec as spec_lib
  s = str(data)
  if digit is not None and not s.startswith("mnist:"):
    raise ValueError(f"digit applies to MNIST data only, not {s!r}.")
  if s.startswith("synthetic:"):
    tr = spec_lib.load(s, n_samples=n_train or 4096, seed=0).arrays
    ev = spec_lib.load(s, n_samples=n_eval or 1000, seed=1).arrays
  elif s.startswith("mnist:"):
    tr, ev = _mnist(s.split(":", 1)[1], digit, n_train, n_eval or 1000, dtype)
  else:
    arrays = spec_lib.load(s).arrays
    n = arrays[0].shape[0]
    k = n_eval or min(1000, n // 5)
    if not 2 <= k <= n - 2:
      raise ValueError(f"{s}: cannot hold out {k} of {n} rows (need 2 .. n - 2).")
    tr = _subset(tuple(a[:n - k] for a in arrays), n_train, s)
    ev = tuple(a[n - k:] for a in arrays)
  cast = lambda arrs: tuple(np.asarray(a, dtype) for a in arrs)
  return cast(tr), cast(ev)


def eps_delta_curves(model, params, hyper: dict, eval_data, eps=EPS_GRID,
                     delta: Optional[float] = None) -> np.ndarray:
  """(G, len(eps)): per cell, the fraction of latent coordinates that are
  (eps, delta)-collapsed on ``eval_data`` (P_x[KL_k(x) < eps] >= 1 - delta,
  Lucas et al. 2019), for every eps. ``delta`` defaults to ``model.eval_delta``."""
  import jax
  import jax.numpy as jnp

  from linvae_jax._src import nonlinear_metrics as nm
  delta = model.eval_delta if delta is None else delta
  dt = jax.tree.leaves(params)[0].dtype
  e = jnp.asarray(eps, dt)

  def one(ph):
    p, h = ph
    inputs, _ = model._prepared(p, eval_data, "eval_data")  # noqa: SLF001 - same package
    mu, std = model.encoder(p, inputs, h)
    kl = nm.gaussian_kl(mu, std, h["eta_enc"])                       # (n, d)
    frac = jnp.mean((kl[None] < e[:, None, None]).astype(dt), axis=1)  # (E, d)
    return jnp.mean((frac >= 1.0 - delta).astype(dt), axis=-1)
  hyp = {k: jnp.asarray(v, dt) for k, v in hyper.items()}
  return np.asarray(jax.jit(lambda p, h: jax.lax.map(one, (p, h)))(params, hyp))


def run(model, train, held_out, grid, *, steps: int, batch_size: int, out_dir=None,
        name: str = "", data_label: str = "", overwrite: bool = False, progress: bool = False,
        chunk_size=None, shard=None, devices=None, figures: bool = True):
  """Train, evaluate and report (module docstring); returns a
  :class:`~linvae_jax._src.nonlinear_report.NonlinearReport`, or None for a
  shard whose store is not complete yet."""
  import functools
  import time

  from linvae_jax._src import engine as engine_lib
  from linvae_jax._src import linear_overlay
  from linvae_jax._src import nonlinear_report as report_lib
  t0 = time.perf_counter()
  if shard is not None and out_dir is None:
    raise ValueError("shard needs out_dir (the shards share its store).")
  data = train if len(train) > 1 else train[0]
  ev = held_out if len(held_out) > 1 else held_out[0]
  fit = functools.partial(
      engine_lib.train_grid, model, None, grid, steps=steps, objective="sampled", data=data,
      eval_data=ev, batch_size=batch_size, keep_params=True, progress=progress,
      chunk_size=chunk_size, devices=devices,
      out_dir=None if out_dir is None else os.path.join(str(out_dir), "train"))
  res = fit(overwrite=overwrite, shard=shard)
  if shard is not None:
    if not res.info["complete"]:
      return None
    res = fit()  # complete: every chunk loads, nothing is recomputed
  _, cells, _ = grid.resolve(model)
  hyper = {k: np.asarray(cells[k]) for k in model.hyper_names}
  curves = eps_delta_curves(model, res.params, hyper, ev)
  lin, why = linear_overlay.counterpart(model)
  theory = None
  if lin is not None:
    moments = linear_overlay.centred_moments(train)
    theory = linear_overlay.theory_per_cell(lin, train, hyper, moments=moments)
  rep = report_lib.build(res, model, cells, theory=theory, no_theory_reason=why,
                         eps=EPS_GRID, eps_curves=curves, name=name or model.label(),
                         data=data_label, n_train=int(train[0].shape[0]),
                         n_eval=int(held_out[0].shape[0]), steps=steps, batch_size=batch_size)
  if lin is not None:
    rep.arrays.update(report_lib.dense_theory(lin, moments, rep))
  rep.summary["wall_s"] = time.perf_counter() - t0
  if out_dir is not None:
    report_lib.write(rep, out_dir, figures=figures)
  return rep
