"""Assembling a :class:`GridResult` from chunk outputs or from the store."""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from linvae_jax._src import grid as grid_lib
from linvae_jax._src.engine import inputs
from linvae_jax._src.engine import store as store_lib
from linvae_jax._src.engine.result import GridResult, LazyArrays, status_names


def _split_final(keys_shapes):
  """final/ keys -> (table columns, non-scalar arrays) by their per-cell rank."""
  cols = sorted(k for k, nd in keys_shapes.items() if nd == 1)
  arrs = sorted(k for k, nd in keys_shapes.items() if nd > 1)
  return cols, arrs


def _params_tree(model, moments, flat: dict):
  template = inputs.init_shapes(model, moments)
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
  return jax.tree.unflatten(jax.tree.structure(template), [flat["params/" + p] for p in paths])


def _table(coords_cells: dict, finals: dict, status, steps, tol_any):
  # one DataFrame constructor: a column at a time cost ~0.5 ms per column
  cols = dict(coords_cells)
  cols.update(finals)
  cols["status"] = np.asarray(status_names(status, tol_any))
  cols["steps"] = steps
  return grid_lib.coords_frame(cols)


def assemble(pieces, model, moments, tol_any, record_every, n_records, keep_params, spec, info):
  cat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
  cols, arrs = _split_final({k[6:]: cat[k].ndim for k in cat if k.startswith("final/")})
  coords = {k[6:]: cat[k] for k in cat if k.startswith("coord/")}
  table = _table(coords, {k: cat["final/" + k] for k in cols}, cat["status"], cat["steps"],
                 tol_any)
  history = {k[5:]: cat[k] for k in cat if k.startswith("hist/")}
  history["step"] = record_every * np.arange(1, n_records + 1)
  params = _params_tree(model, moments, cat) if keep_params else None
  return GridResult(table=table, history=history, params=params, spec=spec, info=info,
                    arrays={k: cat["final/" + k] for k in arrs})


def assemble_from_store(store, chunks, model, moments, tol_any, record_every, n_records,
                         keep_params, spec, info):
  """The result of ``chunks`` read back from the store, one chunk at a time:
  the table in memory, history and non-scalar arrays lazily."""
  if not chunks:
    raise ValueError("this shard has no chunks: shard index beyond the number of chunks "
                     f"({store.manifest['n_chunks']}).")
  with np.load(store.path(chunks[0]), allow_pickle=False) as z:
    names = [k for k in z.files if k != "__meta__"]
    ranks = {k: z[k].ndim for k in names}
  cols, arrs = _split_final({k[6:]: ranks[k] for k in names if k.startswith("final/")})
  table_keys = ([k for k in names if k.startswith("coord/")] + ["final/" + k for k in cols]
                + ["status", "steps"])
  parts = [store.load_keys(c, table_keys) for c in chunks]
  cat = {k: np.concatenate([p[k] for p in parts]) for k in table_keys}
  coords = {k[6:]: cat[k] for k in table_keys if k.startswith("coord/")}
  table = _table(coords, {k: cat["final/" + k] for k in cols}, cat["status"], cat["steps"],
                 tol_any)

  def load(key):
    return np.concatenate([store.load_keys(c, [key])[key] for c in chunks])
  history = LazyArrays([k[5:] for k in names if k.startswith("hist/")],
                       lambda k: load("hist/" + k),
                       extra={"step": record_every * np.arange(1, n_records + 1)})
  arrays = LazyArrays(arrs, lambda k: load("final/" + k))
  params = None
  if keep_params:
    pkeys = [k for k in names if k.startswith("params/")]
    params = _params_tree(model, moments, {k: load(k) for k in pkeys})
  return GridResult(table=table, history=history, params=params, spec=spec, info=info,
                    arrays=arrays)


def load_result(out_dir, *, on_corrupt: str = "raise") -> GridResult:
  """The whole grid of a finished store (e.g. the merge of ``shard`` runs).

  Every chunk is verified; a missing or bad chunk is an error naming it
  (rerun the same command, or the missing shards, to finish it). Parameters
  are not rebuilt into a pytree (no model here): ``params`` stays None.
  """
  path = os.path.join(os.fspath(out_dir), store_lib.MANIFEST)
  if not os.path.exists(path):
    raise ValueError(f"{os.fspath(out_dir)!r} holds no {store_lib.MANIFEST}: not a grid store.")
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"manifest {path!r} is unreadable: {e}.") from None
  spec_hash = raw.get("spec_hash") if isinstance(raw, dict) else None
  store = store_lib.Store(out_dir, raw.get("spec", {}) if isinstance(raw, dict) else {},
                          spec_hash, on_corrupt=on_corrupt, writer=False)
  m = store.manifest
  missing = [c for c in range(m["n_chunks"]) if store.verify(c, keys=()) is None]
  if missing:
    names = ", ".join(os.path.basename(store.path(c)) for c in missing[:5])
    raise ValueError(f"{store.out_dir!r} is incomplete: {len(missing)} of {m['n_chunks']} chunks "
                     f"missing ({names}{', ...' if len(missing) > 5 else ''}); rerun the "
                     "same command (or the missing shards) to finish it.")
  info = dict(cells=m["cells"], chunk_size=m["chunk_size"], n_chunks=m["n_chunks"],
              chunks_computed=0, chunks_loaded=m["n_chunks"], model=m.get("model"),
              complete=True)

  class _NoParams:
    pass
  return assemble_from_store(store, list(range(m["n_chunks"])), _NoParams(), None,
                              bool(m.get("tol_any")), int(m.get("record_every", 1)),
                              int(m.get("n_records", 0)), False, dict(m["spec"], hash=spec_hash),
                              info)
