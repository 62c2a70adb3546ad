r"""The compiled chunk program: init, the while/scan loop, freeze masks, records.

The program for one *chunk* of cells is

.. code-block:: text

   init:   vmap over cells: params, optimiser state (+ the layer's per-cell context)
   while   record < n_records and any cell is running:        (lax.while_loop)
     vmap over cells:
       scan record_every steps: grad step, per-cell freeze mask (lax.scan)
       record the layer's metrics
   vmap over cells: the layer's final metrics

so nothing returns to the host between steps. Every swept value (the
model's hyperparameters, the learning rate, the init scale, the seed, the
stopping tolerances) is a traced array: a second grid of the same shapes
reuses the compiled program (see :func:`trace_count`). Static are only the
model object, the step counts, the objective and which stopping rules are on.

**Layers.** What is recorded and compared is a *layer*, chosen from the
model alone (:func:`layer_for`):

* :class:`ClosedFormLayer`, for a model with ``optimum``: the optimum per
  cell, the analytic loss, D_MA of every spectrum and the rank-view active
  counts at every record, and :func:`~linvae_jax.compare` at the end.
* :class:`PlainLayer`, for any other model: the mean minibatch loss over each
  record interval and the gradient norm, and at the end
  ``model.evaluate(params, hyper, eval_data, key)`` on held-out data.

The training loop, the stopping rules, the freeze masks, chunking and resume
are the same for both.

**Per-cell stopping.** A running cell *diverges* at the first step whose
loss, gradient or updated parameters are not finite: it is frozen at its last
state with finite parameters *and* a finite loss (the update is dropped; if
the loss itself is non-finite, the previous state is restored), with status
``diverged`` and ``steps`` the number of updates taken when the non-finite
value appeared. With ``tol_loss`` and/or ``tol_grad`` a cell *converges* at
the first record boundary where |L_k - L_{k-1}| <= tol_loss * max(1, |L_k|)
(L_k the recorded loss at record k) and the gradient norm of its last step
is <= tol_grad (every given rule must hold); it is then frozen with status
``converged``. With ``tol_dma`` (closed-form layer only) a cell whose every
D_MA to the closed form is <= tol_dma at a record stops with status
``verified``. With :class:`~linvae_jax.LBFGS`, a step whose line search finds
no decrease stops the cell at its current point with status ``stalled`` (at
the minimum up to round-off, or a failure: read ``gap``). A cell that runs
out of steps is ``max_steps`` (tolerances given) or ``done`` (fixed budget).
A frozen cell's updates are masked with ``jnp.where``; vmap keeps cells
independent and the only cross-cell reduction is ``any(status == running)``
on a boolean, so a NaN in one cell cannot reach another. The loop exits
early once no cell of the chunk is running.

**Determinism.** A cell's result depends only on its own coordinates (the
seed gives the init key ``fold_in(key(seed), 0)``, the shuffling key
``fold_in(key(seed), 1)`` per epoch, the noise key ``fold_in(key(seed), 2)``
per step and the evaluation key ``fold_in(key(seed), 3)``), not on the chunk
size, its position or the device count, up to floating-point reassociation
inside batched kernels. That is not bitwise: a different batch layout
changes rounding at 1e-16, which trajectories near saddles amplify
transiently (~1e-8) and Adam on round-off-level gradients turns into
~lr-sized wandering of the parameters; measured on CPU float64 (1 vs 4
devices), final losses, D_MA and KLs agree to ~1e-14 and a round-off-level
``tol_loss`` may stop a cell a few records apart. The same layout (same chunk
size and devices) reproduces bitwise.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from linvae_jax._src import compare as compare_lib
from linvae_jax._src.engine import optimizers as opt_lib
from linvae_jax._src.engine.result import (CONVERGED, DIVERGED, PADDING, RUNNING, STALLED,
                                           VERIFIED)

_TRACES = {"chunk": 0}


def trace_count() -> int:
  """How many times the chunk program has been traced (== compiled) so far."""
  return _TRACES["chunk"]


@dataclasses.dataclass(frozen=True)
class Config:
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
  has_eval: bool = False


def tree_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(l)) for l in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(l).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def select(pred, new, old):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


# ----------------------------------------------------------------- layers --

@dataclasses.dataclass(frozen=True)
class ClosedFormLayer:
  """Records and final comparison against ``model.optimum`` (see module doc)."""
  cfg: Config
  step_losses = False  # records read the analytic loss, not the training losses

  def prepare(self, moments, hyper):
    """(per-cell context, shared context): the optimum per cell, F F^T = E[u u^T]."""
    model = self.cfg.model
    optimum = jax.vmap(model.optimum, in_axes=(None, 0))(moments, hyper)
    return optimum, model.input_factor(moments)

  def record(self, moments, hyper, params, optimum, factor, train):
    del train
    return compare_lib.history_metrics(self.cfg.model, moments, hyper, params, optimum, factor,
                                       rank_rtol=self.cfg.rank_rtol)

  def verified(self, h, tol_dma):
    return jnp.all(jnp.stack([h[k] <= tol_dma for k in h if k.startswith("dma_")]))

  def final(self, moments, eval_data, hyper, params, optimum, key, last):
    del eval_data, key, last
    c = self.cfg
    return compare_lib.compare(c.model, moments, hyper, params, optimum, rank_rtol=c.rank_rtol,
                               eps=c.eps, delta=c.delta, au_threshold=c.au_threshold)


@dataclasses.dataclass(frozen=True)
class PlainLayer:
  """Records for a model without a closed form: training loss and gradient norm;
  at the end ``model.evaluate`` on ``eval_data`` when given."""
  cfg: Config
  step_losses = True

  def prepare(self, moments, hyper):
    del moments, hyper
    return {}, {}

  def record(self, moments, hyper, params, cell_ctx, shared_ctx, train):
    del moments, hyper, params, cell_ctx, shared_ctx
    return {"loss": train["loss"], "grad_norm": train["grad_norm"]}

  def verified(self, h, tol_dma):  # train_grid refuses tol_dma without a closed form
    raise AssertionError("tol_dma needs a closed form")

  def final(self, moments, eval_data, hyper, params, cell_ctx, key, last):
    del moments, cell_ctx
    out = {"loss": last["loss"], "grad_norm": last["grad_norm"]}
    if self.cfg.has_eval:
      out.update(self.cfg.model.evaluate(params, hyper, eval_data, key))
    return out


def has_closed_form(model) -> bool:
  return callable(getattr(model, "optimum", None))


def layer_for(cfg: Config):
  return ClosedFormLayer(cfg) if has_closed_form(cfg.model) else PlainLayer(cfg)


# ------------------------------------------------------------ the program --

def _init_cell(cfg: Config, moments, lr, init_scale, seed, live):
  key = jax.random.key(seed)
  params = cfg.model.init(jax.random.fold_in(key, 0), moments, init_scale)
  opt = opt_lib.make(cfg.optimizer, lr)
  with opt_lib.optax_promotion():
    opt_state = opt_lib.set_lr(cfg.optimizer, opt.init(params), lr)
  dt = lr.dtype
  # padding cells (copies of the chunk's last cell, discarded) start frozen:
  # with cell_batch they cost nothing
  status = jnp.where(live, RUNNING, PADDING).astype(jnp.int32)
  state = dict(params=params, opt_state=opt_state, status=status,
               steps=jnp.asarray(0, jnp.int32), prev_loss=jnp.asarray(jnp.inf, dt),
               gnorm=jnp.asarray(jnp.inf, dt), key=key, last_good=params)
  if cfg.objective == "sampled":
    state["perm"] = jnp.arange(cfg.n_data, dtype=jnp.int32)
  return state


def _make_step(cfg: Config, moments, data, hyper, lr, rec):
  """One optimisation step of one cell, as a ``lax.scan`` body."""
  model = cfg.model
  sampled = cfg.objective == "sampled"
  line_search = opt_lib.uses_value_fn(cfg.optimizer)
  n_batches = cfg.n_data // cfg.batch_size if sampled else 1
  opt = opt_lib.make(cfg.optimizer, lr)
  value_fn = lambda p: model.loss(p, moments, hyper)  # noqa: E731

  def gradient(st, t):
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
      return jax.value_and_grad(model.sampled_loss)(st["params"], batch, noise, hyper), perm
    if line_search:
      # the line search stored value and gradient at the accepted point (the
      # current params); only the very first step computes them
      return jax.lax.cond(
          t == 0, lambda: jax.value_and_grad(value_fn)(st["params"]),
          lambda: (optax.tree.get(st["opt_state"], "value"),
                   optax.tree.get(st["opt_state"], "grad"))), None
    return jax.value_and_grad(model.loss)(st["params"], moments, hyper), None

  def step(st, i):
    t = rec * cfg.record_every + i  # unbatched: the cond below stays a cond
    (loss, g), perm = gradient(st, t)
    with opt_lib.optax_promotion():
      if line_search:
        upd, new_os = opt.update(g, st["opt_state"], st["params"], value=loss, grad=g,
                                 value_fn=value_fn)
      else:
        upd, new_os = opt.update(g, st["opt_state"], st["params"])
    new_p = optax.apply_updates(st["params"], upd)
    st = dict(st)
    loss_ok = jnp.isfinite(loss)
    finite = loss_ok & tree_finite(g) & tree_finite(new_p)
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
    st["last_good"] = select(running & loss_ok, st["params"], st["last_good"])
    st["params"] = select(move, new_p, select(running, st["last_good"], st["params"]))
    st["opt_state"] = select(move, new_os, st["opt_state"])
    st["status"] = jnp.where(running & ~finite, DIVERGED, st["status"]).astype(jnp.int32)
    # steps: updates taken (for a diverged cell: when the non-finite value appeared)
    st["steps"] = st["steps"] + move.astype(jnp.int32)
    st["gnorm"] = jnp.where(move, optax.tree.norm(g).astype(st["gnorm"].dtype), st["gnorm"])
    if sampled:
      st["perm"] = perm
    return st, (jnp.where(move, loss, jnp.nan) if layer_for(cfg).step_losses else None)

  return step


def _stop_rules(cfg: Config, layer, state, h, tol_loss, tol_grad, tol_dma):
  """Status after a record: converged / verified / diverged (frozen cells keep theirs)."""
  loss = h["loss"]
  running = state["status"] == RUNNING
  status = state["status"]
  if cfg.use_tol_loss or cfg.use_tol_grad:
    conv = jnp.isfinite(loss)
    if cfg.use_tol_loss:
      conv &= jnp.abs(loss - state["prev_loss"]) <= tol_loss * jnp.maximum(1.0, jnp.abs(loss))
    if cfg.use_tol_grad:
      conv &= state["gnorm"] <= tol_grad
    status = jnp.where(running & conv, CONVERGED, status).astype(jnp.int32)
  if cfg.use_tol_dma:
    verified = running & (status == RUNNING) & jnp.isfinite(loss) & layer.verified(h, tol_dma)
    status = jnp.where(verified, VERIFIED, status).astype(jnp.int32)
  bad = running & ~jnp.isfinite(loss)
  return jnp.where(bad, DIVERGED, status).astype(jnp.int32), bad


def _make_block(cfg: Config, layer):
  """One record interval of one cell: ``record_every`` steps, then a record."""

  def block(state, cell_ctx, rec, moments, data, shared_ctx, hyper, lr, tol_loss, tol_grad,
            tol_dma, hist):
    step = _make_step(cfg, moments, data, hyper, lr, rec)
    state, losses = jax.lax.scan(step, state, jnp.arange(cfg.record_every, dtype=jnp.int32))
    train = None
    if layer.step_losses:
      # mean over the steps this cell moved (a frozen cell keeps its last record)
      moved = jnp.isfinite(losses)
      count = jnp.maximum(jnp.sum(moved), 1).astype(losses.dtype)
      mean = jnp.sum(jnp.where(moved, losses, jnp.zeros((), losses.dtype))) / count
      prev = jax.lax.dynamic_index_in_dim(hist["loss"], jnp.maximum(rec - 1, 0), keepdims=False)
      mean = jnp.where(jnp.any(moved), mean, jnp.where(rec > 0, prev, jnp.nan))
      train = {"loss": mean.astype(lr.dtype), "grad_norm": state["gnorm"]}
    h = layer.record(moments, hyper, state["params"], cell_ctx, shared_ctx, train)
    state["status"], bad = _stop_rules(cfg, layer, state, h, tol_loss, tol_grad, tol_dma)
    state["params"] = select(bad, state["last_good"], state["params"])
    state["prev_loss"] = h["loss"]
    hist = {k: hist[k].at[rec].set(v.astype(hist[k].dtype)) for k, v in h.items()}
    return state, hist

  return block


_IN_AXES = (0, 0, None, None, None, None, 0, 0, None, None, None, 0)


def _make_advance(cfg: Config, block):
  """Advance every cell of a chunk by one record: one vmap, or groups in sequence."""
  vmapped = jax.vmap(block, in_axes=_IN_AXES)

  def one_cell(*args):
    # a vmap of size 1 without the vmap: under vmap the line search's conds
    # (batched predicates) become selects that evaluate both branches
    args = [jax.tree.map(lambda a: a[0], x) if ax == 0 else x for x, ax in zip(args, _IN_AXES)]
    return jax.tree.map(lambda a: a[None], block(*args))
  advance_group = one_cell if cfg.cell_batch == 1 else vmapped

  def advance(st, cell_ctx, rec, moments, data, shared_ctx, hyper, lr, tol_loss, tol_grad,
              tol_dma, hist):
    if cfg.cell_batch is None:
      return vmapped(st, cell_ctx, rec, moments, data, shared_ctx, hyper, lr, tol_loss,
                     tol_grad, tol_dma, hist)

    # groups of cell_batch cells in sequence; a group with no running cell
    # skips its steps (a frozen cell's record repeats its previous one)
    def group(xs):
      st, cell_ctx, hyper, lr, hist = xs

      def run():
        return advance_group(st, cell_ctx, rec, moments, data, shared_ctx, hyper, lr, tol_loss,
                             tol_grad, tol_dma, hist)

      def skip():
        prev = jnp.maximum(rec - 1, 0)
        return st, {k: v.at[:, rec].set(v[:, prev]) for k, v in hist.items()}
      return jax.lax.cond(jnp.any(st["status"] == RUNNING), run, skip)

    def split(tree):
      n = lr.shape[0] // cfg.cell_batch  # explicit: leaves may be empty, e.g. (G, 0)
      return jax.tree.map(lambda a: a.reshape((n, cfg.cell_batch) + a.shape[1:]), tree)

    out = jax.lax.map(group, split((st, cell_ctx, hyper, lr, hist)))
    return jax.tree.map(lambda a: a.reshape((lr.shape[0],) + a.shape[2:]), out)

  return advance


def _empty_history(cfg: Config, layer, moments, hyper, state, cell_ctx, shared_ctx):
  """(G, n_records) arrays for every recorded name: NaN (floats) or 0 (ints)."""
  first = lambda tree: jax.tree.map(lambda a: a[0], tree)  # noqa: E731
  dt = state["prev_loss"].dtype
  train = {"loss": jnp.zeros((), dt), "grad_norm": jnp.zeros((), dt)}
  shapes = jax.eval_shape(
      lambda h, p, o: layer.record(moments, h, p, o, shared_ctx, train),
      first(hyper), first(state["params"]), first(cell_ctx))
  n = state["status"].shape[0]
  return {k: jnp.full((n, cfg.n_records), jnp.nan, dt) if jnp.issubdtype(s.dtype, jnp.inexact)
          else jnp.zeros((n, cfg.n_records), jnp.int32) for k, s in shapes.items()}


def build(cfg: Config) -> Callable:
  """The jitted chunk program for ``cfg`` (see the module docstring)."""
  layer = layer_for(cfg)
  advance = _make_advance(cfg, _make_block(cfg, layer))

  def chunk(moments, data, eval_data, hyper, lr, init_scale, seed, live, tol_loss, tol_grad,
            tol_dma):
    _TRACES["chunk"] += 1  # Python side effect: runs once per trace
    cell_ctx, shared_ctx = layer.prepare(moments, hyper)
    state = jax.vmap(functools.partial(_init_cell, cfg), in_axes=(None, 0, 0, 0, 0))(
        moments, lr, init_scale, seed, live)
    hist = _empty_history(cfg, layer, moments, hyper, state, cell_ctx, shared_ctx)

    def cond(c):
      rec, st, _ = c
      return (rec < cfg.n_records) & jnp.any(st["status"] == RUNNING)

    def body(c):
      rec, st, hs = c
      st, hs = advance(st, cell_ctx, rec, moments, data, shared_ctx, hyper, lr, tol_loss,
                       tol_grad, tol_dma, hs)
      return rec + 1, st, hs

    rec, state, hist = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state, hist))
    # records after an early exit repeat the last one (every cell is frozen by then)
    last = jnp.maximum(rec - 1, 0)
    keep = jnp.arange(cfg.n_records, dtype=jnp.int32) < rec
    hist = {k: jnp.where(keep, v, v[:, last][:, None]) for k, v in hist.items()}
    last_rec = {k: v[:, last] for k, v in hist.items()}
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 3))(state["key"])
    final = jax.vmap(functools.partial(layer.final, moments, eval_data))(
        hyper, state["params"], cell_ctx, eval_keys, last_rec)
    out = {"final": final, "hist": hist, "status": state["status"], "steps": state["steps"],
           "records": rec}
    if cfg.keep_params:
      out["params"] = state["params"]
    return out

  return jax.jit(chunk)


@functools.lru_cache(maxsize=32)
def program(cfg: Config) -> Callable:
  return build(cfg)
