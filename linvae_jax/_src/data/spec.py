r"""Data specs: one call that turns ``"synthetic:..."``, ``"mnist:..."``, a ``.npz``
path, arrays or moments into a :class:`Dataset` (``lv.data.load``).

MNIST moments are cached on disk (``load(..., cache=True)``, the default): the
key is a SHA-256 of the source's bytes (the ``$LINVAE_MNIST`` file, or every
file of an IDX directory), the view, the digit and the scale. The cache lives
in :func:`user_cache_dir` (``$LINVAE_CACHE_DIR``, else
``$XDG_CACHE_HOME/linvae_jax``, else ``~/.cache/linvae_jax``), one float64
``.npz`` per key; a changed source gets a new key, a corrupt entry is
recomputed. Moments of tensorflow-datasets' MNIST are keyed by the loaded
images' bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from linvae_jax._src import moments as moments_lib
from linvae_jax._src.moments import Moments

MNIST_VIEWS = {"full": "full", "quadrant": "quadrants", "quadrants": "quadrants"}
CACHE_ENV = "LINVAE_CACHE_DIR"
_CACHE_VERSION = "1"


@dataclasses.dataclass
class Dataset:
  """Resolved data: moments always, arrays when there are samples, and a label.

  Attributes:
    moments: :class:`~linvae_jax.Moments` (float64 accumulation, ``dtype``).
    arrays: ``(x,)`` or ``(x, y)`` samples, or ``None`` (MNIST gives moments).
    label: the spec as given (for reports).
    problem: the built-in synthetic problem, for ``"synthetic:<name>"``.
  """
  moments: Moments
  arrays: Optional[tuple] = None
  label: str = "moments"
  problem: Any = None


def user_cache_dir() -> str:
  """``$LINVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/linvae_jax``, else ``~/.cache/linvae_jax``."""
  d = os.environ.get(CACHE_ENV)
  if d:
    return os.path.abspath(os.path.expanduser(d))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "linvae_jax")


def _hash_source(path: Path, h) -> None:
  if path.is_dir():
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
      h.update(str(f.relative_to(path)).encode())
      _hash_file(f, h)
  else:
    _hash_file(path, h)


def _hash_file(path: Path, h) -> None:
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)


def mnist_cache_key(view: str, digit: Optional[int], *, path=None, scale: float = 255.0) -> tuple:
  """``(key, data)``: the cache key of an MNIST view, and the data if it had to be loaded.

  The key hashes the source file's bytes when MNIST comes from a file or a
  directory (``path`` or ``$LINVAE_MNIST``), else the loaded images.
  """
  from linvae_jax._src.data import mnist
  h = hashlib.sha256(f"v{_CACHE_VERSION}|{view}|{digit}|{float(scale)!r}|".encode())
  src = path or os.environ.get(mnist.ENV_VAR) or None
  data = None
  if src is not None and Path(src).expanduser().exists():
    _hash_source(Path(src).expanduser(), h)
  else:
    data = mnist.load_mnist(path=src, scale=None)
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
  return h.hexdigest()[:32], data


_STATIC = ("paired", "centred")


def _save_moments(path: str, m: Moments) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npz"
  arrs = {f.name: np.asarray(getattr(m, f.name)) for f in dataclasses.fields(m)}
  np.savez(tmp, **arrs)
  os.replace(tmp, path)  # atomic: a reader never sees half a file


def _read_moments(path: str, dtype) -> Optional[Moments]:
  import jax.numpy as jnp
  try:
    with np.load(path) as z:
      d = {k: z[k] for k in z.files}
    kw = {f.name: (bool(d[f.name]) if f.name in _STATIC else jnp.asarray(d[f.name]))
          for f in dataclasses.fields(Moments)}
    m = Moments(**kw)
  except (OSError, KeyError, ValueError, EOFError, TypeError):
    return None  # missing, corrupt or from another version: recompute
  return m.astype(dtype) if dtype is not None else m


def mnist_moments_cached(view: str, digit: Optional[int] = None, *, dtype=None,
                         cache: bool = True, path=None) -> Moments:
  """:func:`~linvae_jax.data.mnist_moments` through the on-disk cache (module docstring)."""
  from linvae_jax._src.data import mnist
  if not cache:
    return mnist.mnist_moments(view, digit, path=path, dtype=dtype)
  key, data = mnist_cache_key(view, digit, path=path)
  file = os.path.join(user_cache_dir(), "mnist_moments", f"{view}-{key}.npz")
  if os.path.exists(file):
    m = _read_moments(file, dtype)
    if m is not None:
      return m
  m = mnist.mnist_moments(view, digit, data=data, path=path)  # float64 storage
  try:
    _save_moments(file, m)
  except OSError:
    pass  # a read-only cache directory only costs the recomputation
  return m.astype(dtype) if dtype is not None else m


def load(data, *, dtype=None, digit: Optional[int] = None, n_samples: int = 4096,
         seed: int = 0, cache: bool = True) -> Dataset:
  """Resolve a data spec to a :class:`Dataset`.

  Args:
    data: :class:`~linvae_jax.Moments`; an array ``x`` (n, D0); a pair
      ``(x, y)``; a path to an ``.npz`` with ``x`` (and optionally ``y``);
      or a name: ``"synthetic:<problem>"`` (``linvae verify --list``),
      ``"mnist:full"`` or ``"mnist:quadrant"``; or a :class:`Dataset`
      (returned as is).
    dtype: dtype of the moments (default: JAX's default float).
    digit: MNIST digit subset (0-9); an error for other data.
    n_samples: rows of the exact-moment sample design drawn for synthetic
      problems (used by ``objective="sampled"``).
    seed: seed of that design.
    cache: read and write MNIST moments in the on-disk cache.

  Returns:
    A :class:`Dataset`.

  >>> ds = load("synthetic:vae-learnable")  # doctest: +SKIP
  >>> ds.moments.xx.shape, ds.arrays[0].shape  # doctest: +SKIP
  ((5, 5), (4096, 5))
  """
  import jax
  import jax.numpy as jnp
  if isinstance(data, Dataset):
    return data
  dtype = dtype or jnp.zeros(()).dtype
  is_mnist = isinstance(data, (str, os.PathLike)) and str(data).startswith("mnist:")
  if digit is not None:
    if not is_mnist:
      raise ValueError(f"digit applies to MNIST data only, not {_describe(data)}.")
    if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
      raise ValueError(f"digit must be an integer 0-9, got {digit!r}.")
  if isinstance(data, Moments):
    return Dataset(data.astype(dtype), None, "moments")
  if isinstance(data, (str, os.PathLike)):
    s = str(data)
    if s.startswith("synthetic:"):
      from linvae_jax._src import problems as problems_lib  # problems build on data
      prob = problems_lib.get(s.split(":", 1)[1])
      xx, yy, xy = prob.build()
      from linvae_jax._src.data.synthetic import exact_design
      smp = exact_design(n_samples, xx, yy, xy, seed=seed, moments_dtype=dtype)
      arrays = (smp.x,) if smp.y is None else (smp.x, smp.y)
      return Dataset(prob.moments(dtype), arrays, s, prob)
    if is_mnist:
      view = s.split(":", 1)[1]
      if view not in MNIST_VIEWS:
        raise ValueError(f"unknown MNIST view {view!r}; use mnist:full or mnist:quadrant.")
      m = mnist_moments_cached(MNIST_VIEWS[view], digit, dtype=dtype, cache=cache)
      return Dataset(m, None, s + (f" (digit {digit})" if digit is not None else ""))
    if s.endswith(".npz"):
      if not os.path.exists(s):
        raise ValueError(f"data file {s!r} does not exist.")
      if not os.path.isfile(s):
        raise ValueError(f"data file {s!r} is not a file.")
      try:
        with np.load(s) as z:
          if "x" not in z.files:
            raise ValueError(f"data file {s!r} has no array 'x' (found {z.files}).")
          arrays = (z["x"],) + ((z["y"],) if "y" in z.files else ())
      except (OSError, EOFError) as e:
        raise ValueError(f"data file {s!r} is not a readable .npz ({e}).") from None
      return Dataset(moments_lib.from_arrays(*arrays, dtype=dtype), arrays, s)
    raise ValueError(f"cannot read data {s!r}: use synthetic:<problem>, mnist:full, "
                     "mnist:quadrant or a .npz file with x[, y].")
  if isinstance(data, (tuple, list)):
    if len(data) not in (1, 2):
      raise ValueError(f"data as a tuple must be (x,) or (x, y), got {len(data)} arrays.")
    arrays = tuple(np.asarray(a) for a in data)
    return Dataset(moments_lib.from_arrays(*arrays, dtype=dtype), arrays, "arrays")
  if isinstance(data, (np.ndarray, jax.Array)):
    x = np.asarray(data)
    return Dataset(moments_lib.from_arrays(x, dtype=dtype), (x,), "arrays")
  raise ValueError(f"data must be Moments, arrays, a .npz path or a dataset name, "
                   f"got {type(data).__name__}.")


def _describe(data) -> str:
  return repr(str(data)) if isinstance(data, (str, os.PathLike)) else type(data).__name__
