"""Checks of ``train_grid``'s arguments and the run's identity (its spec and hash)."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linvae_jax._src.engine import optimizers as opt_lib
from linvae_jax._src.engine import program as prog_lib
from linvae_jax._src.moments import Moments, from_arrays
from linvae_jax._src.version import __version__


def digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def as_arrays(data, name: str):
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


def check_sampling(model, moments, objective, data, eval_data, batch_size, epochs, steps):
  """Check the data arguments; returns (moments, data, eval_data, n, batch, steps)."""
  if objective not in ("analytic", "sampled"):
    raise ValueError(f"objective must be 'analytic' or 'sampled', got {objective!r}.")
  closed = prog_lib.has_closed_form(model)
  n_data = bsz = 0
  if objective == "sampled":
    if data is None:
      raise ValueError("objective='sampled' needs data (x or (x, y) arrays).")
    arrays, is_tuple = as_arrays(data, "data")
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
    arrays, is_tuple = as_arrays(eval_data, "eval_data")
    eval_data = arrays if is_tuple else arrays[0]
  if steps is None or isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
    raise ValueError(f"steps must be a positive integer, got {steps}.")
  return moments, data, eval_data, n_data, bsz, int(steps)


# A record (analytic loss, every D_MA, rank views: a few small SVDs per cell) costs
# about as much as 3-4 training steps of a small model on CPU, so by default
# records come at most 100 times and at least this many steps apart.
MIN_DEFAULT_RECORD_EVERY = 10


def record_every_for(steps: int, record_every) -> int:
  if record_every is None:
    record_every = min(steps, max(1, steps // 100, MIN_DEFAULT_RECORD_EVERY))
    while steps % record_every:
      record_every -= 1
  if isinstance(record_every, bool) or int(record_every) != record_every:
    raise ValueError(f"record_every must be an integer, got {record_every}.")
  record_every = int(record_every)
  if record_every < 1 or steps % record_every:
    raise ValueError(f"record_every={record_every} must be >= 1 and divide steps={steps}.")
  return record_every


def check_optimizer(model, moments, optimizer, objective, cells):
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


def cell_batch_for(cell_batch, optimizer, devices):
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


_INIT_SHAPES: dict = {}  # (model, moments' structure, shapes, dtypes, x64) -> init's shapes
_INIT_SHAPES_MAX = 64
_INIT_SHAPES_TRACES = {"n": 0}


def init_shapes(model, moments):
  """``jax.eval_shape`` of ``model.init``: the parameters' shapes and dtypes.

  Cached by the model (a hashable static configuration), the moments' pytree
  structure, leaf shapes and dtypes, and the x64 flag: all that parameter
  shapes may depend on, since the chunk program traces ``init`` on abstract
  moments as well. Saves a trace of ``init`` (~5-20 ms) in every warm call.
  """
  leaves, treedef = jax.tree.flatten(moments)
  try:
    key = (model, treedef, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves),
           bool(jax.config.read("jax_enable_x64")))
    hit = _INIT_SHAPES.get(key)
  except TypeError:  # an unhashable model: no cache
    key = hit = None
  if hit is not None:
    return hit
  _INIT_SHAPES_TRACES["n"] += 1
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), moments, 0.1))
  if key is not None:
    if len(_INIT_SHAPES) >= _INIT_SHAPES_MAX:
      _INIT_SHAPES.clear()
    _INIT_SHAPES[key] = shapes
  return shapes


def init_shape_traces() -> int:
  """How many times :func:`init_shapes` traced ``model.init`` (cache misses) so far."""
  return _INIT_SHAPES_TRACES["n"]


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
  shapes = init_shapes(model, moments)
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


def spec_of(model, moments, full_grid, dt, data, eval_data, steps, record_every, tols,
          objective, bsz, opt_id, keep_params, metric_kw):
  """Everything that changes a result, JSON-able; its SHA-256 names the run."""
  def data_digest(d):
    return None if d is None else digest(*(d if isinstance(d, tuple) else (d,)))
  mom = None if moments is None else digest(moments.xx, moments.yy, moments.xy,
                                             moments.mean_x, moments.mean_y, moments.count)
  major_minor = ".".join(__version__.split(".")[:2])
  spec = dict(grid=full_grid.spec(), model=repr(model), dtype=str(dt), moments=mom,
              steps=steps, record_every=record_every, objective=objective,
              data=data_digest(data), eval_data=data_digest(eval_data), batch_size=bsz,
              optimizer=opt_id, keep_params=keep_params, version=major_minor,
              **tols, **metric_kw)
  return spec, hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()[:16]


def check_shard(shard):
  if shard is None:
    return 0, 1
  try:
    i, n = (int(s) for s in shard)
  except (TypeError, ValueError):
    raise ValueError(f"shard must be a pair (i, n) of integers, got {shard!r}.") from None
  if not (n >= 1 and 0 <= i < n):
    raise ValueError(f"shard (i, n) needs n >= 1 and 0 <= i < n, got {shard!r}.")
  return i, n


def overwrite_flag(overwrite: bool, resume) -> bool:
  """``resume`` is the old spelling: ``resume=False`` means ``overwrite=True``."""
  if resume is None:
    return bool(overwrite)
  if resume and overwrite:
    raise ValueError("resume=True and overwrite=True contradict each other.")
  return bool(overwrite) or not resume


def check_rules(model, tols: dict, **metric_kw) -> dict:
  """Stopping tolerances and metric parameters: finite and positive, else ValueError."""
  for name, tol in tols.items():
    if tol is not None and not (np.isfinite(tol) and tol > 0):
      raise ValueError(f"{name} must be a finite number > 0, got {tol}.")
  if tols.get("tol_dma") is not None and not prog_lib.has_closed_form(model):
    raise ValueError(f"tol_dma needs a closed form; model {model.label()} has no optimum.")
  out = {}
  for name, v in metric_kw.items():
    strict = name in ("rank_rtol", "delta")
    try:
      v = float(v)
    except (TypeError, ValueError):
      raise ValueError(f"{name} must be a number, got {v!r}.") from None
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
      raise ValueError(f"{name} must be a finite number {'> 0' if strict else '>= 0'}, got {v}.")
    out[name] = v
  return out


def run_dtype(moments, data) -> np.dtype:
  """The moments' dtype, else the data's (a float), else JAX's default float."""
  if moments is not None:
    return np.dtype(moments.dtype)
  x0 = (data if isinstance(data, tuple) else (data,))[0]
  return np.dtype(x0.dtype if np.issubdtype(x0.dtype, np.floating) else jnp.zeros(()).dtype)


def check_model_inputs(model, moments, data, eval_data, hyper_np: dict) -> None:
  hyper0 = {k: v[0] for k, v in hyper_np.items()}
  if prog_lib.has_closed_form(model):
    model.check(moments, hyper0)  # shapes; positivity: Grid.resolve
    return
  model.check_hyper(hyper0)
  if callable(getattr(model, "check_data", None)):
    for d in (data, eval_data):
      if d is not None:
        model.check_data(d)


def optimizer_identity(optimizer, optimizer_id, out_dir) -> str:
  """The optimiser's identity for the spec; with ``out_dir`` one that can be told apart."""
  opt_id = opt_lib.identity(optimizer, optimizer_id)
  if opt_id is not None:
    return opt_id
  if out_dir is not None:
    raise ValueError(f"cannot tell the optimizer {opt_lib.describe(optimizer)} from another "
                     "(its hyperparameters are not visible), so a store in out_dir could mix "
                     "runs; pass optimizer_id='...' naming it with its hyperparameters "
                     "(e.g. 'sgd(lr=1e-2, momentum=0.9)'), or use None/AdamDecay/LBFGS.")
  return opt_lib.describe(optimizer)


def chunk_size_for(store, chunk_size, model, moments, n_dev: int, G: int, *, n_records: int,
                   batch_size: int, data, dtype) -> int:
  """The resumed store's chunk size, else the given or estimated one (a device multiple)."""
  if store is not None and store.chunk_size is not None:
    return store.chunk_size
  if chunk_size is None:
    rows = None
    if data is not None:
      rows = sum(math.prod(a.shape[1:]) for a in (data if isinstance(data, tuple) else (data,)))
    chunk_size = estimate_chunk_size(model, moments, n_dev, n_records=n_records,
                                     batch_size=batch_size, row_size=rows, dtype=dtype)
  if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or int(chunk_size) < 1:
    raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size}.")
  return min(-(-int(chunk_size) // n_dev) * n_dev, -(-G // n_dev) * n_dev)
