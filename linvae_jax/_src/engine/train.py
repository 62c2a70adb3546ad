r"""``train_grid``: argument checks, the run's identity, and the chunk loop.

The pieces it orchestrates live beside it: :mod:`.program` (the compiled
chunk program and its layers), :mod:`.optimizers`, :mod:`.store` (chunks,
manifest, resume), :mod:`.devices` (mesh, placement, gather) and
:mod:`.result` (:class:`~linvae_jax.GridResult`).

**Chunks.** Cells run in chunks of ``chunk_size`` (a multiple of the device
count; estimated from the parameter and optimiser-state sizes if not
given); the last chunk is padded by repeating its last cell so every chunk
has the same shape (one compile).

**Several hosts.** Start every process under JAX's distributed runtime
(``jax.distributed.initialize``, see ``docs/distributed.md``) and call
``train_grid(..., devices=jax.devices())`` with the same arguments
everywhere: each process fills its own shards of the inputs, outputs are
gathered, only process 0 writes ``out_dir``.

**Job arrays.** ``shard=(i, n)`` runs only the chunks ``c`` with
``c % n == i`` into the shared ``out_dir`` (no collectives: independent jobs
of a Slurm array, say); :func:`load_result` merges the finished store.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linvae_jax._src import grid as grid_lib
from linvae_jax._src.engine import devices as dev_lib
from linvae_jax._src.engine import optimizers as opt_lib
from linvae_jax._src.engine import program as prog_lib
from linvae_jax._src.engine import store as store_lib
from linvae_jax._src.engine.result import GridResult, LazyArrays, status_names
from linvae_jax._src.moments import Moments, from_arrays
from linvae_jax._src.version import __version__

EXIT_ENV = "LINVAE_JAX_EXIT_AFTER_CHUNKS"  # test hook: os._exit after N chunks written


def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def _as_arrays(data, name: str):
  """``x`` or ``(x, y)`` -> (tuple of 2-D arrays, whether it was a tuple)."""
  is_tuple = isinstance(data, (tuple, list))
  arrays = tuple(data) if is_tuple else (data,)
  try:
    arrays = tuple(np.asarray(a) for a in arrays)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be an array or a tuple of arrays: {e}") from None
  n = arrays[0].shape[0] if arrays[0].ndim else -1
  if any(a.ndim < 2 or a.shape[0] != n for a in arrays):
    raise ValueError(f"{name} must be arrays of rank >= 2 with the same number of rows, got "
                     f"shapes {[a.shape for a in arrays]}.")
  for i, a in enumerate(arrays):
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
      raise ValueError(f"{name}[{i}] must be numeric, got dtype {a.dtype}.")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
      bad = int(np.sum(~np.isfinite(a)))
      raise ValueError(f"{name}[{i}] has {bad} non-finite values (NaN or inf).")
  return arrays, is_tuple


def _sampling(model, moments, objective, data, eval_data, batch_size, epochs, steps):
  """Check the data arguments; returns (moments, data, eval_data, n, batch, steps)."""
  if objective not in ("analytic", "sampled"):
    raise ValueError(f"objective must be 'analytic' or 'sampled', got {objective!r}.")
  closed = prog_lib.has_closed_form(model)
  n_data = bsz = 0
  if objective == "sampled":
    if data is None:
      raise ValueError("objective='sampled' needs data (x or (x, y) arrays).")
    arrays, is_tuple = _as_arrays(data, "data")
    n_data = int(arrays[0].shape[0])
    if batch_size is None or isinstance(batch_size, bool) or int(batch_size) != batch_size \
        or not 1 <= int(batch_size) <= n_data:
      raise ValueError(f"batch_size must be an integer in [1, {n_data}] for "
                       f"objective='sampled', got {batch_size}.")
    bsz = int(batch_size)
    per_epoch = n_data // bsz
    if epochs is not None:
      if int(epochs) != epochs or int(epochs) < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs}.")
      if steps is not None and int(steps) != int(epochs) * per_epoch:
        raise ValueError(f"steps={steps} disagrees with epochs * (n // batch_size) = "
                         f"{int(epochs) * per_epoch}; give one of them.")
      steps = int(epochs) * per_epoch
    if moments is None and closed:
      moments = from_arrays(*arrays)
    data = arrays if is_tuple else arrays[0]
  elif data is not None or batch_size is not None or epochs is not None:
    raise ValueError("data/batch_size/epochs are for objective='sampled'.")
  elif not callable(getattr(model, "loss", None)):
    raise ValueError(f"model {model.label()} has no analytic loss; use objective='sampled' "
                     "with data.")
  if moments is None and (closed or objective == "analytic"):
    raise ValueError("moments are required (or data with objective='sampled').")
  if moments is not None and not isinstance(moments, Moments):
    raise ValueError(f"moments must be a linvae_jax Moments, got {type(moments).__name__}.")
  if eval_data is not None:
    if not callable(getattr(model, "evaluate", None)):
      raise ValueError(f"eval_data given but model {model.label()} has no evaluate().")
    arrays, is_tuple = _as_arrays(eval_data, "eval_data")
    eval_data = arrays if is_tuple else arrays[0]
  if steps is None or isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
    raise ValueError(f"steps must be a positive integer, got {steps}.")
  return moments, data, eval_data, n_data, bsz, int(steps)


def _record_every(steps: int, record_every) -> int:
  if record_every is None:
    record_every = max(1, steps // 100)
    while steps % record_every:
      record_every -= 1
  if isinstance(record_every, bool) or int(record_every) != record_every:
    raise ValueError(f"record_every must be an integer, got {record_every}.")
  record_every = int(record_every)
  if record_every < 1 or steps % record_every:
    raise ValueError(f"record_every={record_every} must be >= 1 and divide steps={steps}.")
  return record_every


def _check_optimizer(model, moments, optimizer, objective, cells):
  if opt_lib.uses_value_fn(optimizer) and objective != "analytic":
    raise ValueError(f"{optimizer!r} runs a line search, which needs the deterministic "
                     "objective='analytic' (a minibatch loss is a different function each "
                     "step); use Adam/AdamDecay for objective='sampled'.")
  if isinstance(optimizer, optax.GradientTransformation):
    shapes = jax.eval_shape(lambda: optimizer.init(model.init(jax.random.key(0), moments, 0.1)))
    if not opt_lib.has_lr(shapes) and len(np.unique(cells["lr"])) > 1:
      raise ValueError("the grid sweeps lr but the optimizer has no inject_hyperparams "
                       "learning_rate to set; wrap it in optax.inject_hyperparams or pass a "
                       "factory lr -> GradientTransformation.")


def _cell_batch(cell_batch, optimizer, devices):
  n_dev = len(devices)
  if isinstance(cell_batch, str):
    if cell_batch != "auto":
      raise ValueError(f"cell_batch must be 'auto', None or a positive int, got {cell_batch!r}.")
    return (1 if opt_lib.uses_value_fn(optimizer) and n_dev == 1
            and devices[0].platform == "cpu" else None)
  if cell_batch is not None:
    if int(cell_batch) < 1:
      raise ValueError(f"cell_batch must be >= 1, got {cell_batch}.")
    if n_dev > 1:
      raise ValueError("cell_batch (sequential groups of cells) needs a single device; "
                       f"got {n_dev} devices.")
    return int(cell_batch)
  return None


def estimate_chunk_size(model, moments, n_devices: int = 1, *, n_records: int = 1,
                        batch_size: int = 0, row_size: Optional[int] = None, dtype=None,
                        budget_bytes: Optional[int] = None, max_chunk: int = 4096) -> int:
  """Cells per chunk that fit a memory budget, a multiple of ``n_devices``.

  Per cell: parameters x 12 (params, optimum params, gradients, two Adam
  moments, updates and the loss's matrix temporaries of the same order),
  the history, and for the sampled objective a few copies of a batch
  (``row_size`` numbers per example; from the moments if None). The budget
  defaults to half of the first device's ``bytes_limit`` when the backend
  reports it, else 1 GiB per device.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), moments, 0.1))
  dtype = moments.dtype if dtype is None else dtype
  item = jnp.zeros((), dtype).dtype.itemsize
  pbytes = sum(math.prod(s.shape) * s.dtype.itemsize for s in jax.tree.leaves(shapes))
  per_cell = 12 * pbytes + 16 * n_records * item
  if moments is not None:
    row_size = moments.dim_x + moments.dim_y if row_size is None else row_size
    per_cell += 4 * (moments.dim_x * moments.dim_y) * item  # products like U W
  per_cell += 4 * batch_size * (row_size or 0) * item
  if budget_bytes is None:
    stats = None
    try:
      stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
      stats = None
    limit = (stats or {}).get("bytes_limit")
    budget_bytes = int(0.5 * limit) * n_devices if limit else (1 << 30) * n_devices
  c = max(1, min(max_chunk, budget_bytes // max(per_cell, 1)))
  return max(n_devices, (c // n_devices) * n_devices)


def _spec(model, moments, full_grid, dt, data, eval_data, steps, record_every, tols,
          objective, bsz, opt_id, keep_params, metric_kw):
  """Everything that changes a result, JSON-able; its SHA-256 names the run."""
  def digest(d):
    return None if d is None else _digest(*(d if isinstance(d, tuple) else (d,)))
  mom = None if moments is None else _digest(moments.xx, moments.yy, moments.xy,
                                             moments.mean_x, moments.mean_y, moments.count)
  major_minor = ".".join(__version__.split(".")[:2])
  spec = dict(grid=full_grid.spec(), model=repr(model), dtype=str(dt), moments=mom,
              steps=steps, record_every=record_every, objective=objective,
              data=digest(data), eval_data=digest(eval_data), batch_size=bsz,
              optimizer=opt_id, keep_params=keep_params, version=major_minor,
              **tols, **metric_kw)
  return spec, hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _sigterm_as_interrupt():
  """SIGTERM raises KeyboardInterrupt in the chunk loop (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
  old = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, old)


def _chunk_arrays(out, n, keep_params, coords_cells) -> dict:
  """Flatten one chunk's program output (first ``n`` real cells) for the store."""
  flat = {f"final/{k}": v[:n] for k, v in out["final"].items()}
  flat.update({f"hist/{k}": v[:n] for k, v in out["hist"].items()})
  flat["status"], flat["steps"] = out["status"][:n], out["steps"][:n]
  flat.update({f"coord/{k}": v for k, v in coords_cells.items()})
  if keep_params:
    for k, v in jax.tree_util.tree_flatten_with_path(out["params"])[0]:
      flat["params/" + jax.tree_util.keystr(k)] = v[:n]
  return flat


def train_grid(model, moments: Optional[Moments], grid: grid_lib.Grid, *,
               steps: Optional[int] = None, optimizer=None, optimizer_id: Optional[str] = None,
               record_every: Optional[int] = None, tol_loss: Optional[float] = None,
               tol_grad: Optional[float] = None, tol_dma: Optional[float] = None,
               objective: str = "analytic", data=None, eval_data=None,
               batch_size: Optional[int] = None, epochs: Optional[int] = None,
               chunk_size: Optional[int] = None, devices=None, out_dir=None,
               overwrite: bool = False, resume: Optional[bool] = None,
               on_corrupt: str = "recompute", shard: Optional[tuple] = None,
               progress: bool = True, keep_params: bool = False,
               defaults: Optional[dict] = None, cell_batch="auto", rank_rtol: float = 1e-3,
               eps: float = 1e-2, delta: float = 0.05, au_threshold: float = 0.01) -> GridResult:
  """Train every cell of ``grid``; compare with the closed form where the model has one.

  Args:
    model: a model (e.g. ``lv.make_model("vae", latent_dim=4)``). With
      ``optimum`` the closed-form layer records D_MA and collapse counts;
      without, records are the training loss and gradient norm and the final
      metrics come from ``model.evaluate`` on ``eval_data``
      (:mod:`linvae_jax._src.engine.program`).
    moments: data :class:`~linvae_jax.Moments` (the analytic loss and every
      comparison read them); computed from ``data`` if None and the model
      has a closed form.
    grid: a :class:`~linvae_jax._src.grid.Grid` over the model's
      hyperparameters and ``lr``, ``init_scale``, ``seed``.
    steps: optimisation steps per cell (a multiple of ``record_every``);
      for ``objective="sampled"`` it may be left out and is then
      ``epochs * (n // batch_size)``.
    optimizer: None (Adam via ``optax.inject_hyperparams``, the cell's lr),
      a factory ``lr -> GradientTransformation`` called with the traced lr
      (e.g. :class:`AdamDecay`), :class:`LBFGS` (line search, analytic
      objective only, lr ignored), or an ``inject_hyperparams``
      transformation whose ``learning_rate`` is overwritten per cell.
    optimizer_id: a name for an optimiser the run's identity cannot
      describe (any optax transformation or factory other than None,
      :class:`AdamDecay`, :class:`LBFGS`); required with ``out_dir`` for
      those, since two such optimisers are otherwise indistinguishable.
    record_every: steps between history records and convergence checks
      (default: ``steps // 100`` rounded to a divisor, at least 1).
    tol_loss: stop a cell once its relative loss change over one record is
      <= ``tol_loss`` (see :mod:`.program`).
    tol_grad: stop a cell once its gradient norm is <= ``tol_grad``.
    tol_dma: stop a cell, status ``verified``, at the first record where
      every D_MA of its spectra to the closed form is <= ``tol_dma``
      (e.g. 0.08, Dang et al.'s MNIST level). Closed-form models only.
    objective: ``"analytic"`` (``model.loss`` on the moments, full batch) or
      ``"sampled"`` (``model.sampled_loss`` on minibatches of ``data``).
    data: ``x`` of shape (n, ...) or a pair ``(x, y)``, for ``"sampled"``.
    eval_data: held-out data for ``model.evaluate`` (models without a
      closed form): 0-d metrics become table columns, others ``arrays``.
    batch_size, epochs: minibatch size and passes over ``data`` (each epoch
      reshuffled with the cell's seed; a final partial batch is dropped).
    chunk_size: cells per compiled call; estimated if None.
    devices: devices to shard cells over (default: all local accelerators,
      or one device on CPU).
    out_dir: directory of the resumable store (:mod:`.store`); None keeps
      everything in memory. Rerunning the same spec continues (finished
      chunks are verified and loaded, never rewritten); a different spec is
      refused.
    overwrite: delete an existing store in ``out_dir`` and start afresh.
    resume: deprecated alias: ``resume=False`` means ``overwrite=True``.
    on_corrupt: ``"recompute"`` (warn and recompute a chunk that fails
      verification) or ``"raise"``.
    shard: ``(i, n)``: run only chunks ``c % n == i`` (job arrays); the
      result holds this shard's cells, ``info["complete"]`` says whether the
      store is now complete (then :func:`load_result` gives the whole grid).
    progress: tqdm bar over chunks (cells/s and ETA).
    keep_params: return the learned parameters.
    cell_batch: cells advanced together (one vmap) inside a chunk; the
      chunk's cells run as sequential groups of this size (``lax.map``) and
      a group whose cells have all stopped skips its work. None: the whole
      chunk in lock step (one vmap). ``"auto"`` (default): 1 for
      :class:`LBFGS` on a single CPU device (vmapped line searches run in
      lock step; a group of 1 runs unbatched, so the line search's conds
      stay conds), else None. Needs a single device when not None.
    defaults: values for model hyperparameters the grid leaves out.
    rank_rtol, eps, delta, au_threshold: see :func:`compare.compare`.

  Returns:
    A :class:`GridResult`.

  >>> import numpy as np, linvae_jax as lv
  >>> m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  >>> model = lv.make_model("vae", latent_dim=2)
  >>> g = lv.grid.product(beta=[0.5, 2.0]) * lv.grid.constant(eta_enc=1.0, eta_dec=1.0, lr=3e-2)
  >>> res = train_grid(model, m, g, steps=200, progress=False)  # doctest: +SKIP
  >>> res.table[["beta", "gap", "dma_omega", "status"]]  # doctest: +SKIP
  """
  t_start = time.perf_counter()
  if not isinstance(grid, grid_lib.Grid):
    raise ValueError(f"grid must be a Grid (see linvae_jax grid.product), got {type(grid).__name__}.")
  if resume is not None:
    if not resume and not overwrite:
      overwrite = True
    elif resume and overwrite:
      raise ValueError("resume=True and overwrite=True contradict each other.")
  moments, data, eval_data, n_data, bsz, steps = _sampling(
      model, moments, objective, data, eval_data, batch_size, epochs, steps)
  closed = prog_lib.has_closed_form(model)
  record_every = _record_every(steps, record_every)
  tols = dict(tol_loss=tol_loss, tol_grad=tol_grad, tol_dma=tol_dma)
  for name, tol in tols.items():
    if tol is not None and not (np.isfinite(tol) and tol > 0):
      raise ValueError(f"{name} must be a finite number > 0, got {tol}.")
  if tol_dma is not None and not closed:
    raise ValueError(f"tol_dma needs a closed form; model {model.label()} has no optimum.")
  metric_kw = dict(rank_rtol=float(rank_rtol), eps=float(eps), delta=float(delta),
                   au_threshold=float(au_threshold))
  for name, v in metric_kw.items():
    if not (np.isfinite(v) and v >= 0) or (name in ("rank_rtol", "delta") and v == 0):
      raise ValueError(f"{name} must be a finite number {'> 0' if name in ('rank_rtol', 'delta') else '>= 0'}, got {v}.")

  # --- grid
  full_grid, cells, coords = grid.resolve(model, defaults)
  G = len(coords)
  if moments is not None:
    dt = moments.dtype
  else:
    x0 = (data if isinstance(data, tuple) else (data,))[0]
    dt = x0.dtype if np.issubdtype(x0.dtype, np.floating) else jnp.zeros(()).dtype
  dt = np.dtype(dt)
  hyper_np = {k: np.asarray(cells[k], dt) for k in model.hyper_names}
  hyper0 = {k: v[0] for k, v in hyper_np.items()}
  if closed:
    model.check(moments, hyper0)  # shapes; positivity: resolve
  else:
    model.check_hyper(hyper0)
    if callable(getattr(model, "check_data", None)):
      model.check_data(data)
      if eval_data is not None:
        model.check_data(eval_data)
  _check_optimizer(model, moments, optimizer, objective, cells)

  # --- identity, devices, store
  opt_id = opt_lib.identity(optimizer, optimizer_id)
  if out_dir is not None and opt_id is None:
    raise ValueError(f"cannot tell the optimizer {opt_lib.describe(optimizer)} from another "
                     "(its hyperparameters are not visible), so a store in out_dir could mix "
                     "runs; pass optimizer_id='...' naming it with its hyperparameters "
                     "(e.g. 'sgd(lr=1e-2, momentum=0.9)'), or use None/AdamDecay/LBFGS.")
  spec, spec_hash = _spec(model, moments, full_grid, dt, data, eval_data, steps, record_every,
                          tols, objective, bsz, opt_id or opt_lib.describe(optimizer),
                          keep_params, metric_kw)
  devices = dev_lib.resolve(devices)
  n_dev = len(devices)
  cell_batch = _cell_batch(cell_batch, optimizer, devices)
  n_records = steps // record_every
  shard_i, shard_n = _check_shard(shard)
  store = None
  if out_dir is not None:
    store = store_lib.Store(out_dir, spec, spec_hash, overwrite=overwrite, on_corrupt=on_corrupt,
                            writer=dev_lib.is_writer())
  if store is not None and store.chunk_size is not None:
    chunk = store.chunk_size
  else:
    if chunk_size is None:
      rows = sum(math.prod(a.shape[1:]) for a in (data if isinstance(data, tuple) else
                                                  (data,))) if n_data else None
      chunk_size = estimate_chunk_size(model, moments, n_dev, n_records=n_records,
                                       batch_size=bsz, row_size=rows, dtype=dt)
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or int(chunk_size) < 1:
      raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size}.")
    chunk = min(-(-int(chunk_size) // n_dev) * n_dev, -(-G // n_dev) * n_dev)
  n_chunks = -(-G // chunk)
  if store is not None:
    store.create(chunk, n_chunks, G, extra=dict(
        coords=list(cells), tol_any=any(t is not None for t in tols.values()),
        record_every=record_every, n_records=n_records, model=model.label()))

  cfg = prog_lib.Config(model=model, optimizer=optimizer, objective=objective,
                        record_every=record_every, n_records=n_records,
                        use_tol_loss=tol_loss is not None, use_tol_grad=tol_grad is not None,
                        use_tol_dma=tol_dma is not None, batch_size=bsz, n_data=n_data,
                        keep_params=keep_params, cell_batch=cell_batch,
                        has_eval=eval_data is not None, **metric_kw)
  run = _ChunkRunner(cfg, devices, moments, data, eval_data, dt, tols, hyper_np, cells, chunk, G)
  mine = [c for c in range(n_chunks) if c % shard_n == shard_i]
  pieces, computed, loaded = run.all(mine, store, progress, f"grid {model.label()} G={G}")

  tol_any = any(t is not None for t in tols.values())
  complete = store is None or all(store.exists(c) for c in range(n_chunks))
  info = dict(cells=G, chunk_size=chunk, n_chunks=n_chunks, chunks_computed=computed,
              chunks_loaded=loaded, devices=[str(d) for d in devices],
              first_call_s=run.first_call_s, wall_s=time.perf_counter() - t_start,
              model=model.label(), shard=[shard_i, shard_n], complete=complete)
  spec = dict(spec, hash=spec_hash)
  if store is not None:
    return _assemble_from_store(store, mine, model, moments, tol_any, record_every, n_records,
                                keep_params, spec, info)
  return _assemble(pieces, model, moments, tol_any, record_every, n_records, keep_params,
                   spec, info)


def _check_shard(shard):
  if shard is None:
    return 0, 1
  try:
    i, n = (int(s) for s in shard)
  except (TypeError, ValueError):
    raise ValueError(f"shard must be a pair (i, n) of integers, got {shard!r}.") from None
  if not (n >= 1 and 0 <= i < n):
    raise ValueError(f"shard (i, n) needs n >= 1 and 0 <= i < n, got {shard!r}.")
  return i, n


class _ChunkRunner:
  """Places the constant inputs once, then runs (or loads) chunk after chunk."""

  def __init__(self, cfg, devices, moments, data, eval_data, dt, tols, hyper_np, cells, chunk,
               G):
    self.cfg, self.dt, self.hyper_np, self.cells = cfg, dt, hyper_np, cells
    self.chunk, self.G = chunk, G
    self.cell_sh, repl = dev_lib.mesh(devices)
    unit = len(devices) * (cfg.cell_batch or 1)
    self.padded = -(-chunk // unit) * unit  # a resumed chunk size may not divide this device count
    self.program = prog_lib.program(cfg)
    cast = lambda a: dev_lib.put(np.asarray(a, dt), repl)  # noqa: E731
    self.moments = None if moments is None else jax.tree.map(lambda a: dev_lib.put(a, repl),
                                                             moments)
    self.data = None if data is None else jax.tree.map(cast, data)
    self.eval_data = None if eval_data is None else jax.tree.map(cast, eval_data)
    self.tols = [dev_lib.put(np.asarray(tols[k] or 0.0, dt), repl)
                 for k in ("tol_loss", "tol_grad", "tol_dma")]
    self.first_call_s = None

  def compute(self, c: int) -> dict:
    lo, hi = c * self.chunk, min(self.G, (c + 1) * self.chunk)
    idx = np.minimum(np.arange(lo, lo + self.padded), hi - 1)  # pad with the last cell
    sh = self.cell_sh
    args = ({k: dev_lib.put(v[idx], sh) for k, v in self.hyper_np.items()},
            dev_lib.put(np.asarray(self.cells["lr"][idx], self.dt), sh),
            dev_lib.put(np.asarray(self.cells["init_scale"][idx], self.dt), sh),
            dev_lib.put(np.asarray(self.cells["seed"][idx], np.uint32), sh),
            dev_lib.put(np.arange(lo, lo + self.padded) < hi, sh))
    t0 = time.perf_counter()
    out = dev_lib.fetch(self.program(self.moments, self.data, self.eval_data, *args,
                                     *self.tols))
    if self.first_call_s is None:
      self.first_call_s = time.perf_counter() - t0
    return _chunk_arrays(out, hi - lo, self.cfg.keep_params,
                         {k: v[lo:hi] for k, v in self.cells.items()})

  def all(self, chunks, store, progress, desc):
    from tqdm.auto import tqdm
    exit_after = int(os.environ.get(EXIT_ENV, "0") or 0)
    computed = loaded = 0
    pieces = []
    n_cells = sum(min(self.G, (c + 1) * self.chunk) - c * self.chunk for c in chunks)
    bar = tqdm(total=n_cells, desc=desc, unit="cell", disable=not progress, smoothing=0.1)
    # decided once, before any compute, and agreed by every process: a chunk
    # that one process loads and another recomputes would deadlock the collectives
    done = dev_lib.agree([store is not None and store.verify(c, keys=()) is not None
                          for c in chunks])
    try:
      with _sigterm_as_interrupt():
        for c, is_done in zip(chunks, done):
          n = min(self.G, (c + 1) * self.chunk) - c * self.chunk
          if is_done:
            loaded += 1
            bar.update(n)
            continue
          flat = self.compute(c)
          computed += 1
          if store is None:
            pieces.append(flat)
          else:
            store.save(c, flat)
            if exit_after and computed >= exit_after:
              os._exit(17)  # test hook: simulate a crash after N finished chunks
          bar.update(n)
    except KeyboardInterrupt:
      bar.close()
      if store is not None:
        done = sum(store.exists(c) for c in range(store.manifest["n_chunks"]))
        print(f"interrupted: {done} of {store.manifest['n_chunks']} chunks saved in "
              f"{store.out_dir}; rerun the same command to continue", file=sys.stderr)
      else:
        print("interrupted: nothing was saved (no out_dir)", file=sys.stderr)
      raise
    bar.close()
    return pieces, computed, loaded


def _split_final(keys_shapes):
  """final/ keys -> (table columns, non-scalar arrays) by their per-cell rank."""
  cols = sorted(k for k, nd in keys_shapes.items() if nd == 1)
  arrs = sorted(k for k, nd in keys_shapes.items() if nd > 1)
  return cols, arrs


def _params_tree(model, moments, flat: dict):
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), moments, 0.1))
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
  return jax.tree.unflatten(jax.tree.structure(template), [flat["params/" + p] for p in paths])


def _table(coords_cells: dict, finals: dict, status, steps, tol_any):
  table = grid_lib.coords_frame(coords_cells)
  for k, v in finals.items():
    table[k] = v
  table["status"] = status_names(status, tol_any)
  table["steps"] = steps
  return table


def _assemble(pieces, model, moments, tol_any, record_every, n_records, keep_params, spec, info):
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


def _assemble_from_store(store, chunks, model, moments, tol_any, record_every, n_records,
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
  return _assemble_from_store(store, list(range(m["n_chunks"])), _NoParams(), None,
                              bool(m.get("tol_any")), int(m.get("record_every", 1)),
                              int(m.get("n_records", 0)), False, dict(m["spec"], hash=spec_hash),
                              info)
