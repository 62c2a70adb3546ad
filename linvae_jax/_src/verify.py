r"""The verifier: train a grid, evaluate the closed form, compare, judge each cell.

:func:`verify` is the one call behind ``linvae verify``. It resolves the data
(moments, arrays, or a named dataset), trains every grid cell with the grid
engine, computes the closed-form optimum per cell, and marks each cell passed
or failed with a reason naming the spectrum, the mode, the learned and the
predicted numbers and the tolerance that was exceeded.

Default tolerances (:func:`default_tolerances`; override any of them with
``tolerances={"dma": ..., "rel_gap": ..., "active": ...}``):

=========================  ========  ==========  ==========  ==============
training                   dtype     ``dma``     ``rel_gap``  ``active``
=========================  ========  ==========  ==========  ==============
analytic, full batch       float64   1e-5        1e-8        0 (exact)
analytic, full batch       float32   2e-3        1e-5        0 (exact)
sampled, minibatch         any       2e-2        1e-2        not checked
=========================  ========  ==========  ==========  ==============

* ``dma``: every ``D_MA`` (Dang et al. App. A: mean absolute difference of
  the sorted learned and predicted spectra; absolute, in the spectrum's own
  units) must be <= ``dma``.
* ``rel_gap``: |L - L*| / max(1, |L*|) <= ``rel_gap`` (L the exact loss of
  the learned parameters). A learned loss *below* L* by more than that is a
  failure of the theory, reported as such.
* ``active``: |learned - predicted| number of active modes per latent (rank
  view, ``compare.compare``) <= ``active``; ``None`` skips the check.
* A cell whose training diverged always fails.

float64 analytic training reaches the optimum to ~1e-7 in D_MA on the
built-in problems (round-off of the spectra is ~1e-15), so 1e-5 leaves room
for slow modes; float32 stops at ~sqrt(eps) ~ 3e-4 on flat (collapsed)
directions; minibatch noise with Adam at a fixed rate leaves ~1e-2.

Sampled defaults (batch 256; 20000 steps, 8000 with ``quick``; Adam decayed
1000x) are the measured recipe: on the built-in problems' exact-moment
samples (n = 4096) the quick grids all pass (max D_MA 0.014, mhvae-thm3);
on the full grids every cell but one passes in 20000 steps (max D_MA 5e-3).
The exception is mhvae-thm3's lowest-threshold cell (beta2 eta_dec^2 =
0.5): D_MA(omega) 0.048. Its slowest mode converges slowly, not noisily,
and it still failed at 20000 steps. The earlier default of 20 epochs at batch
128 with a 100x decay (640 steps) failed 14 of the 20 quick cells.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from linvae_jax._src import engine as engine_lib
from linvae_jax._src import grid as grid_lib
from linvae_jax._src import problems as problems_lib
from linvae_jax._src import report as report_lib
from linvae_jax._src.data import spec as spec_lib
from linvae_jax._src.model import LinearModel
from linvae_jax._src.results import VerifyReport

BETA_AXES = ("beta", "beta2", "beta1")


# -------------------------------------------------------------- tolerances --

@dataclasses.dataclass(frozen=True)
class Tolerances:
  """Pass/fail thresholds of one verification (see the module docstring).

  Attributes:
    dma: largest allowed D_MA of any spectrum (absolute).
    rel_gap: largest allowed |L - L*| / max(1, |L*|).
    active: largest allowed |learned - predicted| active count per latent,
      or ``None`` to skip the count check.
  """
  dma: float
  rel_gap: float
  active: Optional[int] = 0

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def default_tolerances(dtype, objective: str = "analytic") -> Tolerances:
  """The defaults of the module docstring's table for ``dtype`` and ``objective``.

  >>> default_tolerances("float64")
  Tolerances(dma=1e-05, rel_gap=1e-08, active=0)
  >>> default_tolerances("float32", "sampled").dma
  0.02
  """
  if objective not in ("analytic", "sampled"):
    raise ValueError(f"objective must be 'analytic' or 'sampled', got {objective!r}.")
  if objective == "sampled":
    return Tolerances(dma=2e-2, rel_gap=1e-2, active=None)
  if np.dtype(dtype) == np.float64:
    return Tolerances(dma=1e-5, rel_gap=1e-8, active=0)
  return Tolerances(dma=2e-3, rel_gap=1e-5, active=0)


def resolve_tolerances(tolerances, dtype, objective) -> Tolerances:
  """``None`` -> defaults; a mapping overrides the defaults key by key."""
  base = default_tolerances(dtype, objective)
  if tolerances is None:
    return base
  if isinstance(tolerances, Tolerances):
    return tolerances
  if not isinstance(tolerances, Mapping):
    raise ValueError(f"tolerances must be a Tolerances, a dict or None, got "
                     f"{type(tolerances).__name__}.")
  unknown = sorted(set(tolerances) - {"dma", "rel_gap", "active"})
  if unknown:
    raise ValueError(f"unknown tolerance keys {unknown}; use 'dma', 'rel_gap', 'active'.")
  for k in ("dma", "rel_gap"):
    if k in tolerances and not (np.isfinite(tolerances[k]) and tolerances[k] >= 0):
      raise ValueError(f"tolerance {k!r} must be a finite number >= 0, got {tolerances[k]!r}.")
  return dataclasses.replace(base, **tolerances)


# -------------------------------------------------------------------- data --

Dataset = spec_lib.Dataset
MNIST_VIEWS = spec_lib.MNIST_VIEWS
load_data = spec_lib.load  # the data-spec parser lives in data.spec (lv.data.load)


# ------------------------------------------------------------------ checks --

def _learned_active_col(table, lat: str) -> str:
  """``learned_active_<lat>`` (spectrum view, as Optimum.active) if present, else the
  engine's encoder rank view ``active_<lat>``."""
  c = f"learned_active_{lat}"
  return c if c in table.columns else f"active_{lat}"


def spectrum_active_counts(model, learned: dict, rtol: float = 1e-3) -> dict:
  """Learned active modes per latent, counted like ``Optimum.active``.

  ``Optimum.active`` is defined on the decoder spectrum (``omega``; the
  MHVAE's z1 on its encoder spectrum ``lambda``). The engine's rank view
  counts singular values of the x -> latent mean map instead; for the MHVAE
  these differ by design: a z2 mode can be active (omega > 0, it encodes
  z1's noise) above a collapsed z1 mode whose x -> z2 map is zero.
  Entries above ``rtol * max(1, max)`` count.

  Returns:
    latent -> (G,) int counts.
  """
  out = {}
  for lat in model.latents:
    key = "lambda" if lat == "z1" else "omega"
    if key not in learned:
      continue
    v = np.asarray(learned[key], np.float64)
    cut = rtol * np.maximum(1.0, v.max(axis=-1, keepdims=True))
    out[lat] = np.sum(v > cut, axis=-1)
  return out


def check_cells(table: pd.DataFrame, tol: Tolerances, *, learned: Optional[dict] = None,
                predicted: Optional[dict] = None) -> pd.DataFrame:
  """Add ``passed`` and ``reason`` columns to an engine table.

  Args:
    table: one row per cell with ``gap``, ``loss_star``, ``dma_<key>``,
      ``active_<lat>``, ``pred_active_<lat>`` and ``status`` (``train_grid``).
    tol: :class:`Tolerances`.
    learned, predicted: optional ``key -> (G, n)`` spectra, used to name the
      worst mode and its numbers in the reason.

  Returns:
    A copy of ``table`` with ``rel_gap``, ``passed`` (bool) and ``reason``
    (``""`` when passed; ``"; "``-joined failures otherwise).
  """
  out = table.copy()
  rel = out["gap"].to_numpy(np.float64) / np.maximum(1.0, np.abs(out["loss_star"].to_numpy(np.float64)))
  out["rel_gap"] = rel
  dma_cols = sorted(c for c in out.columns if c.startswith("dma_"))
  lats = sorted(c[len("pred_active_"):] for c in out.columns if c.startswith("pred_active_"))
  reasons = []
  for i in range(len(out)):
    row = out.iloc[i]
    why = []
    if str(row.get("status", "")) == "diverged":
      why.append(f"training diverged after {int(row['steps'])} steps (non-finite loss)")
    for c in dma_cols:
      d = float(row[c])
      if not np.isfinite(d) or d > tol.dma:
        key = c[4:]
        msg = f"D_MA({key}) = {d:.3g} > tol dma {tol.dma:.3g}"
        if learned is not None and predicted is not None and key in learned:
          lv, pv = np.asarray(learned[key][i]), np.asarray(predicted[key][i])
          n = max(lv.size, pv.size)
          lv, pv = np.pad(lv, (0, n - lv.size)), np.pad(pv, (0, n - pv.size))
          j = int(np.argmax(np.abs(lv - pv)))
          msg += f" (worst mode {j + 1}: learned {lv[j]:.6g} vs predicted {pv[j]:.6g})"
        why.append(msg)
    r = float(rel[i])
    if not np.isfinite(r):
      why.append(f"loss gap is not finite (L - L* = {row['gap']})")
    elif r < -tol.rel_gap:
      why.append(f"learned loss below L* by {-r:.3g} (relative) > tol rel_gap {tol.rel_gap:.3g}: "
                 "the closed form is not a global minimum")
    elif r > tol.rel_gap:
      why.append(f"loss gap (L - L*)/max(1, |L*|) = {r:.3g} > tol rel_gap {tol.rel_gap:.3g}")
    if tol.active is not None:
      for lat in lats:
        la, pa = int(row[_learned_active_col(out, lat)]), int(row[f"pred_active_{lat}"])
        if abs(la - pa) > tol.active:
          why.append(f"active {lat}: learned {la} vs predicted {pa} modes "
                     f"(tol active {tol.active})")
    reasons.append("; ".join(why))
  out["reason"] = reasons
  out["passed"] = [r == "" for r in reasons]
  return out


# ------------------------------------------------------------------ report --

def _check_count(name: str, v) -> int:
  """A whole number >= 1 (``2.5`` or ``True`` is an error, never truncated)."""
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, float, np.floating)) \
      or not float(v).is_integer() or v < 1:
    raise ValueError(f"{name} must be a whole number >= 1, got {v!r}.")
  return int(v)


def _swept(grid: grid_lib.Grid) -> list:
  return [n for grp in grid.groups for n, v in grp if len(v) > 1]


def theory_curves(model, moments, hyper_cells: dict, axes: list, *, n: int = 161) -> dict:
  """Dense closed-form curves for the figures.

  The x axis is the first swept beta-like axis (``beta``/``beta2``/``beta1``,
  else the first swept axis); one curve per value of the second swept axis
  (``y``), other hyperparameters at their first grid value.

  Returns:
    dict with ``x_name``, ``y_name`` (or ``""``), ``x`` (n,), ``y_values``
    (k,), ``spec/<key>`` (k, n, modes), ``thr/<key>`` (k, n, modes) the
    closed-form thresholds in the x hyperparameter along a dense y axis
    ``y_dense`` (n,) (only when x names a threshold), and ``x_grid_range``.
  """
  scal = [a for a in axes if a in model.hyper_names and np.ndim(hyper_cells[a][0]) == 0]
  if not scal:
    return {}
  x_name = next((a for a in BETA_AXES if a in scal), scal[0])
  rest = [a for a in scal if a != x_name]
  y_name = rest[0] if rest else ""
  base = {k: np.asarray(v[0]) for k, v in hyper_cells.items() if k in model.hyper_names}
  xs = np.asarray(hyper_cells[x_name], np.float64)
  x = np.geomspace(xs.min() / 2.0, xs.max() * 2.0, n)
  y_vals = np.unique(np.asarray(hyper_cells[y_name], np.float64)) if y_name else np.asarray([np.nan])
  dt = moments.dtype

  def opt_at(xv, yv):
    h = {k: jnp.asarray(v, dt) for k, v in base.items()}
    h[x_name] = xv
    if y_name:
      h[y_name] = yv
    o = model.optimum(moments, h)
    return o.spectra, o.thresholds

  f = jax.jit(jax.vmap(jax.vmap(opt_at, (0, None)), (None, 0)))
  spec, _ = f(jnp.asarray(x, dt), jnp.asarray(np.nan_to_num(y_vals, nan=1.0), dt))
  out = {"x_name": x_name, "y_name": y_name, "x": x, "y_values": y_vals}
  for k, v in spec.items():
    out[f"spec/{k}"] = np.asarray(v)
  if y_name:
    ys = np.asarray(hyper_cells[y_name], np.float64)
    y_dense = np.geomspace(ys.min() / 1.5, ys.max() * 1.5, n)
    _, thr = f(jnp.asarray(x[:1], dt), jnp.asarray(y_dense, dt))
    out["y_dense"] = y_dense
    for k, v in thr.items():
      if k == x_name or k.startswith(x_name + "_"):
        out[f"thr/{k}"] = np.asarray(v)[:, 0]
  return out


def _spectra_per_cell(model, moments, hyper, params) -> tuple:
  def both(h, p):
    return model.spectrum(p, moments, h), model.optimum(moments, h).spectra
  lrn, prd = jax.jit(jax.vmap(both))(hyper, params)
  return ({k: np.asarray(v) for k, v in lrn.items()}, {k: np.asarray(v) for k, v in prd.items()})


def _budget(ds, model, moments, objective, batch_size, epochs, steps, quick):
  """(sample arrays or None, batch size, steps) from the objective's defaults."""
  prob = ds.problem
  arrays = None
  if objective == "sampled":
    if ds.arrays is None:
      raise ValueError(f"objective='sampled' needs samples; {ds.label} gives only moments.")
    arrays = tuple(np.asarray(a, moments.dtype) for a in ds.arrays)
    if batch_size is None:
      batch_size = min(256, arrays[0].shape[0])
    _check_count("batch_size", batch_size)
    if epochs is not None:
      _check_count("epochs", epochs)
    if steps is None and epochs is None:
      steps = 8000 if quick else 20000
    if steps is not None and epochs is not None:
      raise ValueError("give steps or epochs, not both.")
    if steps is None:
      steps = int(epochs) * (arrays[0].shape[0] // batch_size)
  else:
    if batch_size is not None or epochs is not None:
      raise ValueError("batch_size and epochs apply to objective='sampled' only.")
    if steps is None:
      steps = prob.steps if prob is not None and prob.model() == model else 10000
  return arrays, batch_size, _check_count("steps", steps)


def verify(model: Optional[LinearModel], data, grid: Optional[grid_lib.Grid] = None, *,
           steps: Optional[int] = None, optimizer=None, objective: str = "analytic",
           tolerances=None, out_dir=None, lr: Optional[float] = None,
           batch_size: Optional[int] = None, epochs: Optional[int] = None, dtype=None,
           quick: bool = False, name: Optional[str] = None, digit: Optional[int] = None,
           devices=None, chunk_size: Optional[int] = None, resume: Optional[bool] = None,
           overwrite: bool = False, progress: bool = False, shard=None,
           figures: bool = True) -> Optional[VerifyReport]:
  """Train ``grid`` on ``data``, compare with the closed form, judge every cell.

  Args:
    model: a :class:`~linvae_jax.LinearModel`; ``None`` with
      ``data="synthetic:<problem>"`` takes the problem's model.
    data: anything :func:`load_data` accepts (Moments, ``x``, ``(x, y)``,
      ``.npz`` path, ``"synthetic:<problem>"``, ``"mnist:full"``,
      ``"mnist:quadrant"``).
    grid: hyperparameter :class:`~linvae_jax._src.grid.Grid`; ``None`` with a
      synthetic problem takes its grid (``quick`` for the small one).
    steps: training steps per cell (default: the problem's, else 10000;
      for ``objective="sampled"``: from ``epochs`` if given, else 20000,
      or 8000 with ``quick``).
    optimizer: as ``train_grid``; default Adam with the learning rate decayed
      1000x over the run.
    objective: ``"analytic"`` (exact loss on the moments, full batch) or
      ``"sampled"`` (minibatches of the data's samples).
    tolerances: :class:`Tolerances`, a dict overriding the defaults (module
      docstring table), or ``None``.
    out_dir: write the report directory there (``report.write``); training
      chunks go to ``out_dir/train`` (resumable).
    lr: learning rate for every cell (overrides the grid/problem value).
    batch_size, epochs: for ``objective="sampled"`` (default batch 256).
    dtype: moments/parameter dtype (default: JAX's default float).
    quick: the problem's reduced grid (only with a synthetic problem).
    name: report title (default: the problem name or the model label).
    digit: MNIST digit subset.
    devices, chunk_size, progress: passed to ``train_grid``.
    overwrite: ``out_dir/train`` holds chunks of a different spec: delete them
      and start afresh (default: a rerun of the same spec continues from its
      finished chunks, a different spec raises ``ValueError``).
    resume: the old spelling; ``resume=False`` means ``overwrite=True``.
    shard: ``(i, n)``: train only this shard's chunks into ``out_dir/train``
      (job arrays); returns None until the store is complete, and the report
      of the whole grid from the shard that completes it.
    figures: write PNG figures with the report.

  Returns:
    :class:`VerifyReport`; ``report.passed`` is True iff every cell passed.

  >>> rep = verify(None, "synthetic:vae-learnable", quick=True)  # doctest: +SKIP
  >>> rep.passed, rep.summary["cells"]  # doctest: +SKIP
  (True, 2)
  """
  t0 = time.perf_counter()
  if resume is not None and not resume:
    overwrite = True
  ds = spec_lib.load(data, dtype=dtype, digit=digit)
  prob = ds.problem
  if model is None:
    if prob is None:
      raise ValueError("model is required unless data names a synthetic problem.")
    model = prob.model()
  if not isinstance(model, LinearModel):
    raise ValueError(f"model must be a LinearModel (lv.make_model(...)), got {type(model).__name__}.")
  if grid is None:
    if prob is None:
      raise ValueError("grid is required unless data names a synthetic problem.")
    if prob.model() != model:
      raise ValueError(f"no default grid: the problem {prob.name!r} is for {prob.model().label()}, "
                       f"not {model.label()}; pass a grid.")
    grid = prob.grid(quick)
  if lr is not None:
    grid = grid_lib.Grid(tuple(g for g in grid.groups if all(n != "lr" for n, _ in g)))
    grid = grid * grid_lib.constant(lr=lr)
  if objective not in ("analytic", "sampled"):
    raise ValueError(f"objective must be 'analytic' or 'sampled', got {objective!r}.")
  moments = ds.moments
  tol = resolve_tolerances(tolerances, moments.dtype, objective)

  arrays, batch_size, steps = _budget(ds, model, moments, objective, batch_size, epochs,
                                      steps, quick)
  if optimizer is None:
    # a decaying rate: precision (analytic) and averaged-out minibatch noise (sampled)
    optimizer = engine_lib.AdamDecay(decay_steps=steps, final_ratio=1e-3)

  _, cells, _ = grid.resolve(model)
  if shard is not None and out_dir is None:
    raise ValueError("shard needs out_dir (the shards share its store).")
  train = functools.partial(
      engine_lib.train_grid, model, moments, grid, steps=steps, optimizer=optimizer,
      objective=objective,
      data=None if arrays is None else (arrays if len(arrays) > 1 else arrays[0]),
      batch_size=batch_size if objective == "sampled" else None,
      out_dir=None if out_dir is None else os.path.join(str(out_dir), "train"),
      progress=progress, keep_params=True, devices=devices, chunk_size=chunk_size)
  res = train(overwrite=overwrite, shard=shard)
  if shard is not None:
    if not res.info["complete"]:
      return None
    res = train()  # the store is complete: every chunk loads, nothing is recomputed
  hyper = {k: jnp.asarray(cells[k], moments.dtype) for k in model.hyper_names}
  learned, predicted = _spectra_per_cell(model, moments, hyper, res.params)
  table = res.table.copy()
  for lat, cnt in spectrum_active_counts(model, learned).items():
    table[f"learned_active_{lat}"] = cnt
  table = check_cells(table, tol, learned=learned, predicted=predicted)
  axes = [a for a in _swept(grid)] or [a for a in model.hyper_names]
  try:
    theory = theory_curves(model, moments, cells, axes)
  except Exception as e:  # noqa: BLE001 - figures are optional, the verdict is not
    theory = {"error": repr(e)}
  dma_cols = [c for c in table.columns if c.startswith("dma_")]
  summary = {
      "name": name or (prob.name if prob is not None else model.label()),
      "model": model.label(), "model_repr": repr(model),
      "description": prob.description if prob is not None else "",
      "data": ds.label, "dtype": str(moments.dtype), "objective": objective,
      "steps": steps, "cells": int(len(table)), "passed": int(table["passed"].sum()),
      "failed": int((~table["passed"]).sum()), "ok": bool(table["passed"].all()),
      "axes": axes, "tolerances": tol.as_dict(),
      "max_dma": float(np.nanmax(table[dma_cols].to_numpy())) if dma_cols else 0.0,
      "max_dma_by_spectrum": {c[4:]: float(table[c].max()) for c in dma_cols},
      "max_rel_gap": float(np.max(np.abs(table["rel_gap"]))),
      "active_mismatches": int(sum(
          (table[_learned_active_col(table, c[12:])] != table[c]).sum()
          for c in table.columns if c.startswith("pred_active_"))),
      "status_counts": {str(k): int(v) for k, v in table["status"].value_counts().items()},
      "wall_s": time.perf_counter() - t0,
      "engine": {k: res.info.get(k) for k in ("first_call_s", "wall_s", "chunk_size", "devices")},
  }
  spectra = {**{f"learned/{k}": v for k, v in learned.items()},
             **{f"predicted/{k}": v for k, v in predicted.items()}}
  rep = VerifyReport(table=table, summary=summary, history=res.history, spectra=spectra,
                     theory=theory)
  if out_dir is not None:
    report_lib.write(rep, out_dir, figures=figures)
  return rep


def verify_problems(names=None, *, quick: bool = False, out_dir=None, dtype=None,
                    objective: str = "analytic", tolerances=None, steps: Optional[int] = None,
                    optimizer=None, progress: bool = False, figures: bool = True,
                    callback=None, overwrite: bool = False) -> dict:
  """:func:`verify` every built-in synthetic problem (``linvae verify``).

  Args:
    names: problem names (default: all, ``problems.names()``).
    quick: reduced grids (2 cells per problem). The step count is kept:
      training the tiny problems costs little next to compiling them.
    out_dir: report root; each problem gets a subdirectory and the root an
      index (``report.write_suite``).
    dtype, objective, tolerances, steps, optimizer, figures, overwrite: as :func:`verify`.
    progress: a tqdm bar over the problems (cells/s, ETA) above each
      problem's bar over its chunks.
    callback: called with ``(name, report)`` after each problem.

  Returns:
    dict problem name -> :class:`VerifyReport`.
  """
  names = problems_lib.names() if names is None else list(names)
  for n in names:
    problems_lib.get(n)  # fail fast on a typo
  from tqdm.auto import tqdm
  reps = {}
  total = sum(len(problems_lib.get(n).grid(quick)) for n in names)
  bar = tqdm(total=total, desc="linvae verify", unit="cell", disable=not progress,
             dynamic_ncols=True)
  try:
    for n in names:
      bar.set_postfix_str(n)
      sub = None if out_dir is None else os.path.join(str(out_dir), n)
      reps[n] = verify(None, f"synthetic:{n}", quick=quick, out_dir=sub, dtype=dtype,
                       objective=objective, tolerances=tolerances, steps=steps,
                       optimizer=optimizer, progress=progress, figures=figures,
                       overwrite=overwrite)
      bar.update(reps[n].summary["cells"])
      if callback is not None:
        callback(n, reps[n])
  finally:
    bar.close()
  if out_dir is not None:
    report_lib.write_suite(reps, out_dir)
  return reps
