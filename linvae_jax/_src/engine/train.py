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
import os
import signal
import sys
import threading
import time
from typing import Optional

import jax
import numpy as np

from linvae_jax._src import grid as grid_lib
from linvae_jax._src import lapack_threads
from linvae_jax._src.engine import collect
from linvae_jax._src.engine import devices as dev_lib
from linvae_jax._src.engine import inputs
from linvae_jax._src.engine import program as prog_lib
from linvae_jax._src.engine import store as store_lib
from linvae_jax._src.engine.collect import load_result as load_result
from linvae_jax._src.engine.inputs import estimate_chunk_size as estimate_chunk_size
from linvae_jax._src.engine.result import GridResult
from linvae_jax._src.moments import Moments

EXIT_ENV = "LINVAE_JAX_EXIT_AFTER_CHUNKS"  # test hook: os._exit after N chunks written

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


@lapack_threads.limited()  # the result is on the host when it returns (module doc there)
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
      (default: ``max(steps // 100, 10)``, at most ``steps``, rounded down
      to a divisor of ``steps``: at most 100 records, and none closer than
      10 steps, since on CPU a record costs a few steps' work).
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
  overwrite = inputs.overwrite_flag(overwrite, resume)
  moments, data, eval_data, n_data, bsz, steps = inputs.check_sampling(
      model, moments, objective, data, eval_data, batch_size, epochs, steps)
  record_every = inputs.record_every_for(steps, record_every)
  tols = dict(tol_loss=tol_loss, tol_grad=tol_grad, tol_dma=tol_dma)
  metric_kw = inputs.check_rules(model, tols, rank_rtol=rank_rtol, eps=eps, delta=delta,
                                 au_threshold=au_threshold)
  full_grid, cells, coords = grid.resolve(model, defaults)
  G = len(coords)
  dt = inputs.run_dtype(moments, data)
  hyper_np = {k: np.asarray(cells[k], dt) for k in model.hyper_names}
  inputs.check_model_inputs(model, moments, data, eval_data, hyper_np)
  inputs.check_optimizer(model, moments, optimizer, objective, cells)
  opt_id = inputs.optimizer_identity(optimizer, optimizer_id, out_dir)
  spec, spec_hash = inputs.spec_of(model, moments, full_grid, dt, data, eval_data, steps,
                                   record_every, tols, objective, bsz, opt_id, keep_params,
                                   metric_kw)
  devices = dev_lib.resolve(devices)
  cell_batch = inputs.cell_batch_for(cell_batch, optimizer, devices)
  n_records = steps // record_every
  shard_i, shard_n = inputs.check_shard(shard)
  tol_any = any(t is not None for t in tols.values())

  store = None
  if out_dir is not None:
    store = store_lib.Store(out_dir, spec, spec_hash, overwrite=overwrite, on_corrupt=on_corrupt,
                            writer=dev_lib.is_writer())
  chunk = inputs.chunk_size_for(store, chunk_size, model, moments, len(devices), G,
                                n_records=n_records, batch_size=bsz, data=data, dtype=dt)
  chunk = dev_lib.agree_int(chunk)  # estimated from local memory: process 0's everywhere
  n_chunks = -(-G // chunk)
  if store is not None:
    store.create(chunk, n_chunks, G, extra=dict(
        coords=list(cells), tol_any=tol_any, record_every=record_every, n_records=n_records,
        model=model.label()))

  cfg = prog_lib.Config(model=model, optimizer=optimizer, objective=objective,
                        record_every=record_every, n_records=n_records,
                        use_tol_loss=tol_loss is not None, use_tol_grad=tol_grad is not None,
                        use_tol_dma=tol_dma is not None, batch_size=bsz, n_data=n_data,
                        keep_params=keep_params, cell_batch=cell_batch,
                        has_eval=eval_data is not None, **metric_kw)
  run = _ChunkRunner(cfg, devices, moments, data, eval_data, dt, tols, hyper_np, cells, chunk, G)
  mine = [c for c in range(n_chunks) if c % shard_n == shard_i]
  pieces, computed, loaded = run.all(mine, store, progress, f"grid {model.label()} G={G}")

  if store is not None:
    dev_lib.barrier("linvae_jax_chunks_written")  # the others read what process 0 wrote
  info = dict(cells=G, chunk_size=chunk, n_chunks=n_chunks, chunks_computed=computed,
              chunks_loaded=loaded, devices=[str(d) for d in devices],
              first_call_s=run.first_call_s, wall_s=time.perf_counter() - t_start,
              model=model.label(), shard=[shard_i, shard_n],
              complete=store is None or all(store.exists(c) for c in range(n_chunks)))
  spec = dict(spec, hash=spec_hash)
  if store is not None:
    return collect.assemble_from_store(store, mine, model, moments, tol_any, record_every,
                                       n_records, keep_params, spec, info)
  return collect.assemble(pieces, model, moments, tol_any, record_every, n_records, keep_params,
                          spec, info)


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
    writer = store is not None and dev_lib.is_writer()  # the others' view is replaced
    done = dev_lib.agree([writer and store.verify(c, keys=()) is not None for c in chunks])
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

