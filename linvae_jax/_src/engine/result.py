"""The result of a grid run: :class:`GridResult`, its tables and files."""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
from typing import Any, Callable

import jax
import numpy as np
import pandas as pd

from linvae_jax._src.engine.store import atomic_npz

RUNNING, CONVERGED, DIVERGED, STALLED, VERIFIED = 0, 1, 2, 3, 4
PADDING = 5  # a chunk's padding cell (never reported)


def status_names(status, tol: bool) -> list:
  names = {RUNNING: "max_steps" if tol else "done", CONVERGED: "converged", DIVERGED: "diverged",
           STALLED: "stalled", VERIFIED: "verified"}
  return [names[int(s)] for s in status]


class LazyArrays(collections.abc.Mapping):
  """A read-only mapping name -> array whose values are loaded on first access.

  With ``out_dir`` the per-record history and per-cell arrays stay in the
  chunk files until asked for, so a grid's memory is its table, not its
  history (``benchmarks/results/store_memory_cpu.md``).
  """

  def __init__(self, keys, load: Callable[[str], np.ndarray], extra=None):
    self._keys = list(keys)
    self._load = load
    self._cache = dict(extra or {})
    for k in self._cache:
      if k not in self._keys:
        self._keys.append(k)

  def __getitem__(self, key):
    if key not in self._keys:
      raise KeyError(key)
    if key not in self._cache:
      self._cache[key] = self._load(key)
    return self._cache[key]

  def __iter__(self):
    return iter(self._keys)

  def __len__(self):
    return len(self._keys)

  def __repr__(self):
    return f"LazyArrays({self._keys})"


@dataclasses.dataclass
class GridResult:
  """Output of :func:`~linvae_jax.train_grid`.

  Attributes:
    table: one row per cell: the grid coordinates, then for a model with a
      closed form ``loss``, ``loss_star``, ``gap``, ``dma_<key>``,
      ``pred_active_<lat>``/``active_<lat>`` (rank view),
      ``[pred_]collapsed_<lat>``, ``[pred_]au_<lat>``, ``[pred_]kl_<lat>``
      (per-coordinate views); for a model without one ``loss`` (mean
      minibatch loss over the last record interval), ``grad_norm`` and the
      scalar metrics of ``model.evaluate`` on ``eval_data``; then ``status``
      and ``steps``.
    history: name -> (G, R) arrays (``loss``, ``dma_<key>``,
      ``active_<lat>`` or ``loss``, ``grad_norm``) recorded every
      ``record_every`` steps; ``step`` (R,) gives the step count at each
      record. Loaded lazily from the chunk files when the run had ``out_dir``.
    params: learned parameters with a leading G axis (``keep_params=True``).
    arrays: name -> (G, ...) non-scalar metrics of ``model.evaluate`` (for
      example KL per latent dimension).
    spec: the run's canonical description; ``spec["hash"]`` is its digest.
    info: bookkeeping (chunk size and counts, timings, devices).
  """
  table: pd.DataFrame
  history: Any
  params: Any = None
  spec: dict = dataclasses.field(default_factory=dict)
  info: dict = dataclasses.field(default_factory=dict)
  arrays: Any = dataclasses.field(default_factory=dict)

  def save(self, path) -> None:
    """Write ``table.csv`` (and ``table.parquet`` with pyarrow), ``history.npz``,
    ``arrays.npz`` and ``params.npz`` (if any) and ``spec.json`` under ``path``."""
    os.makedirs(path, exist_ok=True)
    self.table.to_csv(os.path.join(path, "table.csv"), index=False)
    try:
      import pyarrow  # noqa: F401
      self.table.to_parquet(os.path.join(path, "table.parquet"), index=False)
    except ImportError:
      pass
    atomic_npz(os.path.join(path, "history.npz"), dict(self.history))
    if self.arrays:
      atomic_npz(os.path.join(path, "arrays.npz"), dict(self.arrays))
    if self.params is not None:
      leaves = jax.tree_util.tree_flatten_with_path(self.params)[0]
      atomic_npz(os.path.join(path, "params.npz"),
                 {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    with open(os.path.join(path, "spec.json"), "w") as f:
      json.dump({"spec": self.spec, "info": self.info}, f, indent=1, default=str)

  @classmethod
  def load(cls, path) -> "GridResult":
    """Read a result written by :meth:`save`; ``params`` come back as a flat
    dict keyed by the pytree path (e.g. ``.W``)."""
    pq = os.path.join(path, "table.parquet")
    table = pd.read_parquet(pq) if os.path.exists(pq) else pd.read_csv(
        os.path.join(path, "table.csv"))
    out = {}
    for name in ("history", "arrays", "params"):
      fn = os.path.join(path, f"{name}.npz")
      if os.path.exists(fn):
        with np.load(fn) as z:
          out[name] = {k: z[k] for k in z.files}
    with open(os.path.join(path, "spec.json")) as f:
      meta = json.load(f)
    return cls(table=table, history=out.get("history", {}), params=out.get("params"),
               spec=meta["spec"], info=meta["info"], arrays=out.get("arrays", {}))
