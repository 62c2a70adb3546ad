r"""The grid engine: one compiled program trains a whole hyperparameter grid.

:func:`train_grid` trains every cell of a :class:`~linvae_jax._src.grid.Grid`
in parallel. The program for one *chunk* of cells is

.. code-block:: text

   init:   vmap over cells: params, optimiser state, closed-form optimum
   while   record < n_records and any cell is running:        (lax.while_loop)
     vmap over cells:
       scan record_every steps: grad step, per-cell freeze mask (lax.scan)
       record loss, D_MA of every spectrum, rank-view active counts
   vmap over cells: compare (loss gap, D_MA, active counts, per-coordinate views)

so nothing returns to the host between steps. Every swept value (the model's
hyperparameters, the learning rate, the init scale, the seed, the stopping
tolerances) is a traced array: a second grid of the same shapes reuses the
compiled program (see :func:`trace_count`). Static are only the model object,
the step counts, the objective and which stopping rules are on.

**Per-cell stopping.** A running cell *diverges* at the first step whose
loss, gradient or updated parameters are not finite: it is frozen at its last
state with finite parameters *and* a finite loss (the update is dropped; if
the loss itself is non-finite, the previous state is restored), with status
``diverged`` and ``steps`` the number of updates taken when the non-finite
value appeared. With ``tol_loss`` and/or ``tol_grad``
a cell *converges* at the first record boundary where
|L_k - L_{k-1}| <= tol_loss * max(1, |L_k|) (L_k the analytic loss at record
k) and the gradient norm of its last step is <= tol_grad (every given rule
must hold); it is then frozen with status ``converged``. With ``tol_dma`` a
cell whose every D_MA to the closed form is <= tol_dma at a record stops
with status ``verified``. With :class:`LBFGS`, a step whose line search
finds no decrease stops the cell at its current point with status
``stalled`` (at the minimum up to round-off, or a failure: read ``gap``).
A cell that runs out
of steps is ``max_steps`` (tolerances given) or ``done`` (fixed budget). A
frozen cell's updates are masked with ``jnp.where``; vmap keeps cells
independent and the only cross-cell reduction is ``any(status == running)``
on a boolean, so a NaN in one cell cannot reach another. The loop exits
early once no cell of the chunk is running.

**Determinism.** A cell's result depends only on its own coordinates (the
seed gives the init key ``fold_in(key(seed), 0)``, the shuffling key
``fold_in(key(seed), 1)`` per epoch and the noise key ``fold_in(key(seed), 2)``
per step), not on the chunk size, its position or the device count, up to
floating-point reassociation inside batched kernels. That is not bitwise:
a different batch layout changes rounding at 1e-16, which trajectories near
saddles amplify transiently (~1e-8) and Adam on round-off-level gradients
turns into ~lr-sized wandering of the parameters; measured on CPU float64
(1 vs 4 devices), final losses, D_MA and KLs agree to ~1e-14 and a
round-off-level ``tol_loss`` may stop a cell a few records apart. The same
layout (same chunk size and devices) reproduces bitwise.

**Chunks and resume.** Cells run in chunks of ``chunk_size`` (a multiple of
the device count; estimated from the parameter and optimiser-state sizes if
not given); the last chunk is padded by repeating its last cell so every
chunk has the same shape (one compile). With ``out_dir`` each finished chunk
is written atomically (temporary file, then ``os.replace``) next to a
``manifest.json`` holding the spec hash; rerunning the same spec skips the
finished chunks, a different spec is refused with ``ValueError``.

**Devices.** A chunk's cell axis is sharded over ``devices`` (default: every
local accelerator, or a single CPU device) with a 1-D ``Mesh`` and ``NamedSharding``; moments
and data are replicated. On several hosts, start every process with

.. code-block:: bash

   # on host i of n (same script, same arguments everywhere)
   python -c "import jax; jax.distributed.initialize(
       coordinator_address='host0:1234', num_processes=n, process_id=i); ..."

(or let ``jax.distributed.initialize()`` read SLURM/OpenMPI/TPU variables,
e.g. ``srun -N n python run_grid.py``), then call
``train_grid(..., devices=jax.devices())`` with the same arguments on every
host: inputs are built with ``jax.make_array_from_callback`` (each host fills
its own shards), outputs are gathered with
``multihost_utils.process_allgather`` and only process 0 writes ``out_dir``.
The multi-host path is not exercised by the test suite (single host only).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from linvae_jax._src import compare as compare_lib
from linvae_jax._src import grid as grid_lib
from linvae_jax._src.moments import Moments, from_arrays, psd_sqrt

RUNNING, CONVERGED, DIVERGED, STALLED, VERIFIED = 0, 1, 2, 3, 4
PADDING = 5  # a chunk's padding cell (never reported)
EXIT_ENV = "LINVAE_JAX_EXIT_AFTER_CHUNKS"  # test hook: os._exit after N chunks written
_TRACES = {"chunk": 0}


def trace_count() -> int:
  """How many times the chunk program has been traced (== compiled) so far."""
  return _TRACES["chunk"]


# ------------------------------------------------------------- optimisers --

@dataclasses.dataclass(frozen=True)
class AdamDecay:
  """Optimiser factory: Adam with lr decaying exponentially to ``lr * final_ratio``.

  The learning rate at step t is ``lr * final_ratio ** min(t / decay_steps, 1)``;
  ``lr`` is the cell's traced learning rate (wrapped in
  ``optax.inject_hyperparams``, so it lives in the optimiser state).

  >>> import jax.numpy as jnp
  >>> opt = AdamDecay(decay_steps=100, final_ratio=1e-3)(jnp.asarray(3e-2))
  """
  decay_steps: int
  final_ratio: float = 1e-3

  def __call__(self, lr):
    if self.decay_steps < 1 or not 0 < self.final_ratio <= 1:
      raise ValueError(f"AdamDecay needs decay_steps >= 1 and 0 < final_ratio <= 1, got {self}.")

    def schedule(count):
      frac = jnp.minimum(count.astype(lr.dtype) / self.decay_steps, 1.0)
      return lr * jnp.power(jnp.asarray(self.final_ratio, lr.dtype), frac)
    return _inject_adam(schedule)


@dataclasses.dataclass(frozen=True)
class LBFGS:
  """Optimiser factory: L-BFGS with a zoom line search (``optax.lbfgs``).

  For ``objective="analytic"`` only: the analytic loss is deterministic, so
  a line search is sound (on a minibatch estimate it is not, and
  :func:`train_grid` refuses it). The cell's ``lr`` is ignored: step sizes
  come from the line search (strong Wolfe conditions). Each step evaluates
  the loss and gradient once or a few times (the line search), and reuses
  the value and gradient the line search stored at the accepted point.

  On ill-conditioned moments (MNIST: A = E[x x^T] has eigenvalues down to
  1e-9 of its largest) it reaches the closed form in tens to hundreds of
  steps where Adam needs many thousands (``benchmarks/time_to_answer.py``).

  >>> opt = LBFGS(memory_size=10)(None)
  """
  memory_size: int = 10
  max_linesearch_steps: int = 20

  uses_value_fn: ClassVar[bool] = True

  def __call__(self, lr):
    del lr  # the line search picks the step
    if self.memory_size < 1 or self.max_linesearch_steps < 1:
      raise ValueError(f"LBFGS needs memory_size >= 1 and max_linesearch_steps >= 1, got {self}.")
    return optax.lbfgs(memory_size=self.memory_size,
                       linesearch=optax.scale_by_zoom_linesearch(
                           max_linesearch_steps=self.max_linesearch_steps,
                           initial_guess_strategy="one"))  # the quasi-Newton step


def _uses_value_fn(optimizer) -> bool:
  return bool(getattr(optimizer, "uses_value_fn", False))


# only the learning rate is injected (b1, b2, ... stay Python constants)
_ADAM_STATIC = ("b1", "b2", "eps", "eps_root", "mu_dtype", "nesterov")


def _inject_adam(learning_rate):
  return optax.inject_hyperparams(optax.adam, static_args=_ADAM_STATIC)(
      learning_rate=learning_rate)


def _make_optimizer(optimizer, lr):
  if optimizer is None:
    return _inject_adam(lr)
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  return optimizer(lr)


def _optax_promotion():
  # optax computes ``b1 ** count`` (float ** int32), which strict dtype
  # promotion rejects; optimiser internals run under standard promotion
  return jax.numpy_dtype_promotion("standard")


def _set_lr(optimizer, state, lr):
  """Put the cell's lr into an ``inject_hyperparams`` state (user transformations)."""
  if isinstance(optimizer, optax.GradientTransformation) and _has_lr(state):
    hp = dict(state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, jnp.asarray(hp["learning_rate"]).dtype)
    state = state._replace(hyperparams=hp)
  return state


def _has_lr(state) -> bool:
  return hasattr(state, "hyperparams") and "learning_rate" in getattr(state, "hyperparams")


def _optimizer_spec(optimizer) -> str:
  if optimizer is None:
    return "inject_hyperparams(adam)"
  if isinstance(optimizer, (AdamDecay, LBFGS)):
    return repr(optimizer)
  if isinstance(optimizer, optax.GradientTransformation):
    return "GradientTransformation:" + getattr(optimizer.init, "__qualname__", "?")
  return "factory:" + getattr(optimizer, "__qualname__", type(optimizer).__qualname__)


# ---------------------------------------------------------- the program --

@dataclasses.dataclass(frozen=True)
class _Config:
  """Everything static about a chunk program (the jit cache key)."""
  model: Any
  optimizer: Any
  objective: str
  record_every: int
  n_records: int
  use_tol_loss: bool
  use_tol_grad: bool
  use_tol_dma: bool
  batch_size: int
  n_data: int
  keep_params: bool
  cell_batch: Optional[int]
  rank_rtol: float
  eps: float
  delta: float
  au_threshold: float


def _tree_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(l)) for l in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(l).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _select(pred, new, old):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _build(cfg: _Config) -> Callable:
  model = cfg.model
  sampled = cfg.objective == "sampled"
  line_search = _uses_value_fn(cfg.optimizer)
  n_batches = cfg.n_data // cfg.batch_size if sampled else 1

  def init_cell(moments, hyper, lr, init_scale, seed, live):
    key = jax.random.key(seed)
    params = model.init(jax.random.fold_in(key, 0), moments, init_scale)
    opt = _make_optimizer(cfg.optimizer, lr)
    with _optax_promotion():
      opt_state = _set_lr(cfg.optimizer, opt.init(params), lr)
    dt = moments.dtype
    # padding cells (copies of the chunk's last cell, discarded) start frozen:
    # with cell_batch they cost nothing
    status = jnp.where(live, RUNNING, PADDING).astype(jnp.int32)
    state = dict(params=params, opt_state=opt_state, status=status,
                 steps=jnp.asarray(0, jnp.int32), prev_loss=jnp.asarray(jnp.inf, dt),
                 gnorm=jnp.asarray(jnp.inf, dt), key=key, last_good=params)
    if sampled:
      state["perm"] = jnp.arange(cfg.n_data, dtype=jnp.int32)
    return state

  def block(state, optimum, rec, moments, data, factor, hyper, lr, tol_loss, tol_grad, tol_dma,
            hist):
    opt = _make_optimizer(cfg.optimizer, lr)

    def step(st, i):
      t = rec * cfg.record_every + i  # unbatched: the cond below stays a cond
      if sampled:
        epoch, b = t // n_batches, t % n_batches
        perm = jax.lax.cond(
            b == 0,
            lambda: jax.random.permutation(
                jax.random.fold_in(jax.random.fold_in(st["key"], 1), epoch),
                cfg.n_data).astype(jnp.int32),
            lambda: st["perm"])
        idx = jax.lax.dynamic_slice_in_dim(perm, b * cfg.batch_size, cfg.batch_size)
        batch = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)
        noise = jax.random.fold_in(jax.random.fold_in(st["key"], 2), t)
        loss, g = jax.value_and_grad(model.sampled_loss)(st["params"], batch, noise, hyper)
      elif line_search:
        # the line search stored value and gradient at the accepted point (the
        # current params); only the very first step computes them
        value_fn = lambda p: model.loss(p, moments, hyper)  # noqa: E731
        loss, g = jax.lax.cond(
            t == 0, lambda: jax.value_and_grad(value_fn)(st["params"]),
            lambda: (optax.tree.get(st["opt_state"], "value"),
                     optax.tree.get(st["opt_state"], "grad")))
      else:
        loss, g = jax.value_and_grad(model.loss)(st["params"], moments, hyper)
      with _optax_promotion():
        if line_search:
          upd, new_os = opt.update(g, st["opt_state"], st["params"], value=loss, grad=g,
                                   value_fn=value_fn)
        else:
          upd, new_os = opt.update(g, st["opt_state"], st["params"])
      new_p = optax.apply_updates(st["params"], upd)
      st = dict(st)
      loss_ok = jnp.isfinite(loss)
      finite = loss_ok & _tree_finite(g) & _tree_finite(new_p)
      running = st["status"] == RUNNING
      move = running & finite
      if line_search:
        # monotone safeguard: a line search that finds no decrease (round-off
        # at the minimum, or a failure) stops the cell at its last point;
        # past convergence L-BFGS on round-off gradients can otherwise blow up
        stall = move & ~(optax.tree.get(new_os, "value") < loss)
        move = move & ~stall
        st["status"] = jnp.where(stall, STALLED, st["status"]).astype(jnp.int32)
      # last state with a finite loss: a diverging cell is frozen there
      st["last_good"] = _select(running & loss_ok, st["params"], st["last_good"])
      st["params"] = _select(move, new_p, _select(running, st["last_good"], st["params"]))
      st["opt_state"] = _select(move, new_os, st["opt_state"])
      st["status"] = jnp.where(running & ~finite, DIVERGED, st["status"]).astype(jnp.int32)
      # steps: updates taken (for a diverged cell: when the non-finite value appeared)
      st["steps"] = st["steps"] + move.astype(jnp.int32)
      st["gnorm"] = jnp.where(move, optax.tree.norm(g).astype(st["gnorm"].dtype), st["gnorm"])
      if sampled:
        st["perm"] = perm
      return st, None

    state, _ = jax.lax.scan(step, state, jnp.arange(cfg.record_every, dtype=jnp.int32))
    h = compare_lib.history_metrics(model, moments, hyper, state["params"], optimum, factor,
                                    rank_rtol=cfg.rank_rtol)
    loss = h["loss"]
    running = state["status"] == RUNNING
    if cfg.use_tol_loss or cfg.use_tol_grad:
      conv = jnp.isfinite(loss)
      if cfg.use_tol_loss:
        conv &= jnp.abs(loss - state["prev_loss"]) <= tol_loss * jnp.maximum(1.0, jnp.abs(loss))
      if cfg.use_tol_grad:
        conv &= state["gnorm"] <= tol_grad
      state["status"] = jnp.where(running & conv, CONVERGED, state["status"]).astype(jnp.int32)
    if cfg.use_tol_dma:
      close = jnp.all(jnp.stack([h[k] <= tol_dma for k in h if k.startswith("dma_")]))
      verified = running & (state["status"] == RUNNING) & jnp.isfinite(loss) & close
      state["status"] = jnp.where(verified, VERIFIED, state["status"]).astype(jnp.int32)
    bad = running & ~jnp.isfinite(loss)
    state["status"] = jnp.where(bad, DIVERGED, state["status"]).astype(jnp.int32)
    state["params"] = _select(bad, state["last_good"], state["params"])
    state["prev_loss"] = loss
    hist = {k: hist[k].at[rec].set(v.astype(hist[k].dtype)) for k, v in h.items()}
    return state, hist

  def chunk(moments, data, hyper, lr, init_scale, seed, live, tol_loss, tol_grad, tol_dma):
    _TRACES["chunk"] += 1  # Python side effect: runs once per trace
    second, _ = model.input_moments(moments)
    factor = psd_sqrt(second)
    optimum = jax.vmap(model.optimum, in_axes=(None, 0))(moments, hyper)
    state = jax.vmap(init_cell, in_axes=(None, 0, 0, 0, 0, 0))(moments, hyper, lr, init_scale,
                                                               seed, live)
    shapes = jax.eval_shape(
        lambda h, p, o: compare_lib.history_metrics(model, moments, h, p, o, factor,
                                                    rank_rtol=cfg.rank_rtol),
        jax.tree.map(lambda a: a[0], hyper), jax.tree.map(lambda a: a[0], state["params"]),
        jax.tree.map(lambda a: a[0], optimum))
    n = lr.shape[0]
    hist = {k: jnp.full((n, cfg.n_records), jnp.nan, moments.dtype) if
            jnp.issubdtype(s.dtype, jnp.inexact) else jnp.zeros((n, cfg.n_records), jnp.int32)
            for k, s in shapes.items()}
    in_axes = (0, 0, None, None, None, None, 0, 0, None, None, None, 0)
    vmapped = jax.vmap(block, in_axes=in_axes)

    def one_cell(*args):
      # a vmap of size 1 without the vmap: under vmap the line search's conds
      # (batched predicates) become selects that evaluate both branches
      args = [jax.tree.map(lambda a: a[0], x) if ax == 0 else x for x, ax in zip(args, in_axes)]
      return jax.tree.map(lambda a: a[None], block(*args))
    advance_group = one_cell if cfg.cell_batch == 1 else vmapped

    def vblock(st, optimum, rec, moments, data, factor, hyper, lr, tol_loss, tol_grad, tol_dma,
               hist):
      if cfg.cell_batch is None:
        return vmapped(st, optimum, rec, moments, data, factor, hyper, lr, tol_loss, tol_grad,
                       tol_dma, hist)

      # groups of cell_batch cells in sequence; a group with no running cell
      # skips its steps (a frozen cell's record repeats its previous one)
      def group(xs):
        st, optimum, hyper, lr, hist = xs

        def run():
          return advance_group(st, optimum, rec, moments, data, factor, hyper, lr, tol_loss,
                               tol_grad, tol_dma, hist)

        def skip():
          prev = jnp.maximum(rec - 1, 0)
          return st, {k: v.at[:, rec].set(v[:, prev]) for k, v in hist.items()}
        return jax.lax.cond(jnp.any(st["status"] == RUNNING), run, skip)

      def split(tree):
        n = lr.shape[0] // cfg.cell_batch  # explicit: leaves may be empty, e.g. (G, 0)
        return jax.tree.map(lambda a: a.reshape((n, cfg.cell_batch) + a.shape[1:]), tree)

      out = jax.lax.map(group, split((st, optimum, hyper, lr, hist)))
      return jax.tree.map(lambda a: a.reshape((lr.shape[0],) + a.shape[2:]), out)

    def cond(c):
      rec, st, _ = c
      return (rec < cfg.n_records) & jnp.any(st["status"] == RUNNING)

    def body(c):
      rec, st, hs = c
      st, hs = vblock(st, optimum, rec, moments, data, factor, hyper, lr, tol_loss, tol_grad,
                      tol_dma, hs)
      return rec + 1, st, hs

    rec, state, hist = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state, hist))
    # records after an early exit repeat the last one (every cell is frozen by then)
    last = jnp.maximum(rec - 1, 0)
    keep = jnp.arange(cfg.n_records, dtype=jnp.int32) < rec
    hist = {k: jnp.where(keep, v, v[:, last][:, None]) for k, v in hist.items()}
    final = jax.vmap(lambda h, p, o: compare_lib.compare(
        model, moments, h, p, o, rank_rtol=cfg.rank_rtol, eps=cfg.eps, delta=cfg.delta,
        au_threshold=cfg.au_threshold))(hyper, state["params"], optimum)
    out = {"final": final, "hist": hist, "status": state["status"], "steps": state["steps"],
           "records": rec}
    if cfg.keep_params:
      out["params"] = state["params"]
    return out

  return jax.jit(chunk)


@functools.lru_cache(maxsize=32)
def _program(cfg: _Config) -> Callable:
  return _build(cfg)


# -------------------------------------------------------------- results --

def _status_names(status, tol: bool) -> list:
  names = {RUNNING: "max_steps" if tol else "done", CONVERGED: "converged", DIVERGED: "diverged",
           STALLED: "stalled", VERIFIED: "verified"}
  return [names[int(s)] for s in status]


@dataclasses.dataclass
class GridResult:
  """Output of :func:`train_grid`.

  Attributes:
    table: one row per cell: the grid coordinates, ``loss``, ``loss_star``,
      ``gap``, ``dma_<key>``, ``pred_active_<lat>``/``active_<lat>`` (rank
      view), ``[pred_]collapsed_<lat>``, ``[pred_]au_<lat>``,
      ``[pred_]kl_<lat>`` (per-coordinate views), ``status`` and ``steps``.
    history: name -> (G, R) arrays (``loss``, ``dma_<key>``,
      ``active_<lat>``) recorded every ``record_every`` steps; ``step`` (R,)
      gives the step count at each record.
    params: learned parameters with a leading G axis (``keep_params=True``).
    spec: the run's canonical description; ``spec["hash"]`` is its digest.
    info: bookkeeping (chunk size and counts, timings, devices).
  """
  table: pd.DataFrame
  history: dict
  params: Any = None
  spec: dict = dataclasses.field(default_factory=dict)
  info: dict = dataclasses.field(default_factory=dict)

  def save(self, path) -> None:
    """Write ``table.csv`` (and ``table.parquet`` with pyarrow), ``history.npz``,
    ``params.npz`` (if kept) and ``spec.json`` under ``path``."""
    os.makedirs(path, exist_ok=True)
    self.table.to_csv(os.path.join(path, "table.csv"), index=False)
    try:
      import pyarrow  # noqa: F401
      self.table.to_parquet(os.path.join(path, "table.parquet"), index=False)
    except ImportError:
      pass
    _atomic_npz(os.path.join(path, "history.npz"), self.history)
    if self.params is not None:
      leaves = jax.tree_util.tree_flatten_with_path(self.params)[0]
      _atomic_npz(os.path.join(path, "params.npz"),
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
    with np.load(os.path.join(path, "history.npz")) as z:
      history = {k: z[k] for k in z.files}
    params = None
    if os.path.exists(os.path.join(path, "params.npz")):
      with np.load(os.path.join(path, "params.npz")) as z:
        params = {k: z[k] for k in z.files}
    with open(os.path.join(path, "spec.json")) as f:
      meta = json.load(f)
    return cls(table=table, history=history, params=params, spec=meta["spec"], info=meta["info"])


def _atomic_npz(path, arrays: dict) -> None:
  tmp = f"{path}.tmp{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


# ------------------------------------------------------------ train_grid --

def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def estimate_chunk_size(model, moments, n_devices: int = 1, *, n_records: int = 1,
                        batch_size: int = 0, budget_bytes: Optional[int] = None,
                        max_chunk: int = 4096) -> int:
  """Cells per chunk that fit a memory budget, a multiple of ``n_devices``.

  Per cell: parameters x 12 (params, optimum params, gradients, two Adam
  moments, updates and the loss's matrix temporaries of the same order),
  the history, and for the sampled objective a few copies of a batch. The
  budget defaults to half of the first device's ``bytes_limit`` when the
  backend reports it, else 1 GiB per device.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), moments, 0.1))
  item = jnp.zeros((), moments.dtype).dtype.itemsize
  pbytes = sum(math.prod(s.shape) * s.dtype.itemsize for s in jax.tree.leaves(shapes))
  per_cell = 12 * pbytes + 16 * n_records * item
  per_cell += 4 * batch_size * (moments.dim_x + moments.dim_y) * item
  per_cell += 4 * (moments.dim_x * moments.dim_y) * item  # products like U W
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


def _put(x, sharding):
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _fetch(tree):
  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)
  return jax.tree.map(get, tree)


def _default_devices() -> list:
  """All local accelerators; a single device on CPU.

  Forced host devices (``--xla_force_host_platform_device_count``) share the
  same cores, so sharding over them buys no speed, and the cross-cell
  ``any(running)`` reduction in the training loop then becomes a collective
  that stalled a 2-core test run indefinitely. Pass ``devices`` explicitly
  to shard on CPU (the sharding tests do).
  """
  devs = jax.local_devices()
  return devs[:1] if devs[0].platform == "cpu" else devs


def train_grid(model, moments: Optional[Moments], grid: grid_lib.Grid, *,
               steps: Optional[int] = None, optimizer=None, record_every: Optional[int] = None,
               tol_loss: Optional[float] = None, tol_grad: Optional[float] = None,
               tol_dma: Optional[float] = None,
               objective: str = "analytic", data=None, batch_size: Optional[int] = None,
               epochs: Optional[int] = None, chunk_size: Optional[int] = None, devices=None,
               out_dir=None, resume: bool = True, progress: bool = True,
               keep_params: bool = False, defaults: Optional[dict] = None,
               cell_batch="auto",
               rank_rtol: float = 1e-3, eps: float = 1e-2, delta: float = 0.05,
               au_threshold: float = 0.01) -> GridResult:
  """Train every cell of ``grid`` and compare it with the closed-form optimum.

  Args:
    model: a :class:`~linvae_jax.LinearModel` (e.g. ``lv.make_model("vae", latent_dim=4)``).
    moments: data :class:`~linvae_jax.Moments` (the analytic loss and every
      comparison read them); computed from ``data`` if None.
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
    record_every: steps between history records and convergence checks
      (default: ``steps // 100`` rounded to a divisor, at least 1).
    tol_loss: stop a cell once its relative loss change over one record is
      <= ``tol_loss`` (see the module docstring).
    tol_grad: stop a cell once its gradient norm is <= ``tol_grad``.
    tol_dma: stop a cell, status ``verified``, at the first record where
      every D_MA of its spectra to the closed form is <= ``tol_dma``
      ("train until the theorem is confirmed to this level"; e.g. 0.08,
      Dang et al.'s MNIST level). Independent of the other two rules.
    objective: ``"analytic"`` (``model.loss`` on the moments, full batch) or
      ``"sampled"`` (``model.sampled_loss`` on minibatches of ``data``).
    data: ``x`` of shape (n, D0) or a pair ``(x, y)``, for ``"sampled"``.
    batch_size, epochs: minibatch size and passes over ``data`` (each epoch
      reshuffled with the cell's seed; a final partial batch is dropped).
    chunk_size: cells per compiled call; estimated if None.
    devices: devices to shard cells over (default: all local accelerators,
      or one device on CPU; see ``_default_devices``).
    out_dir: directory for resumable chunk files (None: keep in memory).
    resume: reuse finished chunks in ``out_dir`` (False: start afresh).
    progress: tqdm bar over chunks.
    keep_params: return the learned parameters.
    cell_batch: cells advanced together (one vmap) inside a chunk; the
      chunk's cells run as sequential groups of this size (``lax.map``) and
      a group whose cells have all stopped skips its work. None: the whole
      chunk in lock step (one vmap, the fastest for cheap steps and on
      accelerators). ``"auto"`` (default): 1 for :class:`LBFGS` on a single
      CPU device (vmapped line searches run in lock step, each cell paying
      for the longest search and for stopped cells; measured 3x slower on
      MNIST), else None. A group of 1 runs unbatched, so the line search's
      conds stay conds (vmapped, they evaluate both branches: 5x slower per
      step on the MNIST CVAE). Needs a single device when not None.
    defaults: values for model hyperparameters the grid leaves out.
    rank_rtol, eps, delta, au_threshold: see :func:`compare.compare`.

  Returns:
    A :class:`GridResult`.

  >>> import numpy as np, linvae_jax as lv
  >>> from linvae_jax._src import grid as G
  >>> m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  >>> model = lv.make_model("vae", latent_dim=2)
  >>> g = G.product(beta=[0.5, 2.0]) * G.constant(eta_enc=1.0, eta_dec=1.0, lr=3e-2)
  >>> res = train_grid(model, m, g, steps=200, progress=False)  # doctest: +SKIP
  >>> res.table[["beta", "gap", "dma_omega", "status"]]  # doctest: +SKIP
  """
  t_start = time.perf_counter()
  if objective not in ("analytic", "sampled"):
    raise ValueError(f"objective must be 'analytic' or 'sampled', got {objective!r}.")
  if not isinstance(grid, grid_lib.Grid):
    raise ValueError(f"grid must be a Grid (see linvae_jax grid.product), got {type(grid).__name__}.")

  # --- data and step counts
  n_data, bsz = 0, 0
  if objective == "sampled":
    if data is None:
      raise ValueError("objective='sampled' needs data (x or (x, y) arrays).")
    data = tuple(data) if isinstance(data, (tuple, list)) else data
    arrays = data if isinstance(data, tuple) else (data,)
    n_data = int(np.shape(arrays[0])[0])
    if any(np.ndim(a) != 2 or np.shape(a)[0] != n_data for a in arrays):
      raise ValueError("data must be 2-D arrays with the same number of rows.")
    if batch_size is None or not 1 <= int(batch_size) <= n_data:
      raise ValueError(f"batch_size must be in [1, {n_data}] for objective='sampled', "
                       f"got {batch_size}.")
    bsz = int(batch_size)
    per_epoch = n_data // bsz
    if epochs is not None:
      if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
      if steps is not None and int(steps) != int(epochs) * per_epoch:
        raise ValueError(f"steps={steps} disagrees with epochs * (n // batch_size) = "
                         f"{int(epochs) * per_epoch}; give one of them.")
      steps = int(epochs) * per_epoch
    if moments is None:
      moments = from_arrays(*arrays)
  elif data is not None or batch_size is not None or epochs is not None:
    raise ValueError("data/batch_size/epochs are for objective='sampled'.")
  if moments is None:
    raise ValueError("moments are required (or data with objective='sampled').")
  if steps is None or int(steps) < 1:
    raise ValueError(f"steps must be a positive integer, got {steps}.")
  steps = int(steps)
  if record_every is None:
    record_every = max(1, steps // 100)
    while steps % record_every:
      record_every -= 1
  record_every = int(record_every)
  if record_every < 1 or steps % record_every:
    raise ValueError(f"record_every={record_every} must be >= 1 and divide steps={steps}.")
  for name, tol in (("tol_loss", tol_loss), ("tol_grad", tol_grad), ("tol_dma", tol_dma)):
    if tol is not None and not (np.isfinite(tol) and tol > 0):
      raise ValueError(f"{name} must be a finite number > 0, got {tol}.")

  # --- grid
  full_grid, cells, coords = grid.resolve(model, defaults)
  G = len(coords)
  dt = moments.dtype
  hyper_np = {k: np.asarray(cells[k], dt) for k in model.hyper_names}
  model.check(moments, {k: v[0] for k, v in hyper_np.items()})  # shapes; positivity: resolve
  if _uses_value_fn(optimizer) and objective != "analytic":
    raise ValueError(f"{optimizer!r} runs a line search, which needs the deterministic "
                     "objective='analytic' (a minibatch loss is a different function each "
                     "step); use Adam/AdamDecay for objective='sampled'.")
  if isinstance(optimizer, optax.GradientTransformation):
    shapes = jax.eval_shape(lambda: optimizer.init(model.init(jax.random.key(0), moments, 0.1)))
    if not _has_lr(shapes) and len(np.unique(cells["lr"])) > 1:
      raise ValueError("the grid sweeps lr but the optimizer has no inject_hyperparams "
                       "learning_rate to set; wrap it in optax.inject_hyperparams or pass a "
                       "factory lr -> GradientTransformation.")

  # --- spec and chunking
  data_digest = _digest(*(data if isinstance(data, tuple) else (data,))) if n_data else None
  spec = dict(grid=full_grid.spec(), model=repr(model), dtype=str(dt),
              moments=_digest(moments.xx, moments.yy, moments.xy, moments.mean_x,
                              moments.mean_y, moments.count),
              steps=steps, record_every=record_every, tol_loss=tol_loss, tol_grad=tol_grad,
              tol_dma=tol_dma,
              objective=objective, data=data_digest, batch_size=bsz,
              optimizer=_optimizer_spec(optimizer), keep_params=keep_params,
              rank_rtol=rank_rtol, eps=eps, delta=delta, au_threshold=au_threshold)
  spec_hash = hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()[:16]
  devices = list(_default_devices() if devices is None else devices)
  if not devices:
    raise ValueError("devices is empty.")
  n_dev = len(devices)
  if isinstance(cell_batch, str):
    if cell_batch != "auto":
      raise ValueError(f"cell_batch must be 'auto', None or a positive int, got {cell_batch!r}.")
    cell_batch = (1 if _uses_value_fn(optimizer) and n_dev == 1 and devices[0].platform == "cpu"
                  else None)
  elif cell_batch is not None:
    if int(cell_batch) < 1:
      raise ValueError(f"cell_batch must be >= 1, got {cell_batch}.")
    if n_dev > 1:
      raise ValueError("cell_batch (sequential groups of cells) needs a single device; "
                       f"got {n_dev} devices.")
    cell_batch = int(cell_batch)
  n_records = steps // record_every
  manifest = None
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    mpath = os.path.join(out_dir, "manifest.json")
    if os.path.exists(mpath):
      with open(mpath) as f:
        old = json.load(f)
      if resume and old["spec_hash"] != spec_hash:
        raise ValueError(f"out_dir {out_dir!r} holds chunks of a different grid spec "
                         f"(hash {old['spec_hash']}, this run {spec_hash}); use another "
                         "out_dir or resume=False to overwrite.")
      if resume:
        manifest = old
      else:
        for fn in os.listdir(out_dir):
          if fn.startswith("chunk_") and fn.endswith(".npz"):
            os.remove(os.path.join(out_dir, fn))
  if manifest is not None:
    chunk = int(manifest["chunk_size"])
  else:
    chunk = chunk_size or estimate_chunk_size(model, moments, n_dev, n_records=n_records,
                                              batch_size=bsz)
    chunk = int(chunk)
    if chunk < 1:
      raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    chunk = min(-(-chunk // n_dev) * n_dev, -(-G // n_dev) * n_dev)
  unit = n_dev * (cell_batch or 1)
  padded = -(-chunk // unit) * unit  # a resumed chunk size may not divide this device count
  n_chunks = -(-G // chunk)
  if out_dir is not None and manifest is None and jax.process_index() == 0:
    tmp = os.path.join(out_dir, f"manifest.json.tmp{os.getpid()}")
    with open(tmp, "w") as f:
      json.dump(dict(spec_hash=spec_hash, chunk_size=chunk, n_chunks=n_chunks, cells=G,
                     spec=spec), f, indent=1, default=str)
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))

  # --- program and placement
  cfg = _Config(model=model, optimizer=optimizer, objective=objective, record_every=record_every,
                n_records=n_records, use_tol_loss=tol_loss is not None,
                use_tol_grad=tol_grad is not None, use_tol_dma=tol_dma is not None,
                batch_size=bsz, n_data=n_data,
                keep_params=keep_params, cell_batch=cell_batch, rank_rtol=float(rank_rtol), eps=float(eps),
                delta=float(delta), au_threshold=float(au_threshold))
  program = _program(cfg)
  mesh = jax.sharding.Mesh(np.asarray(devices), ("cells",))
  cell_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("cells"))
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  moments_d = jax.tree.map(lambda a: _put(a, repl), moments)
  data_d = None
  if n_data:
    data_d = jax.tree.map(lambda a: _put(np.asarray(a, dt), repl), data)
  tl = _put(np.asarray(tol_loss or 0.0, dt), repl)
  tg = _put(np.asarray(tol_grad or 0.0, dt), repl)
  td = _put(np.asarray(tol_dma or 0.0, dt), repl)

  exit_after = int(os.environ.get(EXIT_ENV, "0") or 0)
  computed = loaded = 0
  compile_s = None
  pieces = []
  from tqdm.auto import tqdm
  bar = tqdm(total=n_chunks, desc=f"grid {model.label()} G={G}", unit="chunk",
             disable=not progress)
  for c in range(n_chunks):
    lo, hi = c * chunk, min(G, (c + 1) * chunk)
    fpath = None if out_dir is None else os.path.join(out_dir, f"chunk_{c:05d}.npz")
    if fpath is not None and os.path.exists(fpath):
      with np.load(fpath) as z:
        pieces.append({k: z[k] for k in z.files})
      loaded += 1
      bar.update(1)
      continue
    idx = np.minimum(np.arange(lo, lo + padded), hi - 1)  # pad with the last cell
    args = ({k: _put(v[idx], cell_sh) for k, v in hyper_np.items()},
            _put(np.asarray(cells["lr"][idx], dt), cell_sh),
            _put(np.asarray(cells["init_scale"][idx], dt), cell_sh),
            _put(np.asarray(cells["seed"][idx], np.uint32), cell_sh),
            _put(np.arange(lo, lo + padded) < hi, cell_sh))
    t0 = time.perf_counter()
    out = _fetch(program(moments_d, data_d, *args, tl, tg, td))
    if compile_s is None:
      compile_s = time.perf_counter() - t0
    n = hi - lo
    flat = {f"final/{k}": v[:n] for k, v in out["final"].items()}
    flat.update({f"hist/{k}": v[:n] for k, v in out["hist"].items()})
    flat["status"], flat["steps"] = out["status"][:n], out["steps"][:n]
    if keep_params:
      for k, v in jax.tree_util.tree_flatten_with_path(out["params"])[0]:
        flat["params/" + jax.tree_util.keystr(k)] = v[:n]
    pieces.append(flat)
    computed += 1
    if fpath is not None and jax.process_index() == 0:
      _atomic_npz(fpath, flat)
      if exit_after and computed >= exit_after:
        os._exit(17)  # test hook: simulate a crash after N finished chunks
    bar.update(1)
  bar.close()

  cat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
  table = coords.copy()
  for k in sorted(x for x in cat if x.startswith("final/")):
    table[k[6:]] = cat[k]
  table["status"] = _status_names(
      cat["status"], tol_loss is not None or tol_grad is not None or tol_dma is not None)
  table["steps"] = cat["steps"]
  history = {k[5:]: cat[k] for k in cat if k.startswith("hist/")}
  history["step"] = record_every * np.arange(1, n_records + 1)
  params = None
  if keep_params:
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), moments, 0.1))
    paths = [jax.tree_util.keystr(k) for k, _ in
             jax.tree_util.tree_flatten_with_path(template)[0]]
    params = jax.tree.unflatten(jax.tree.structure(template),
                                [cat["params/" + p] for p in paths])
  info = dict(cells=G, chunk_size=chunk, n_chunks=n_chunks, chunks_computed=computed,
              chunks_loaded=loaded, devices=[str(d) for d in devices],
              first_call_s=compile_s, wall_s=time.perf_counter() - t_start,
              model=model.label())
  return GridResult(table=table, history=history, params=params,
                    spec=dict(spec, hash=spec_hash), info=info)
