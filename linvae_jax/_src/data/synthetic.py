r"""Seeded synthetic data sets with known (population or exact) second moments.

Every generator returns a :class:`Sample`: the arrays ``x`` (n, D0) and ``y``
(n, D2) or ``None`` (a VAE: y is x), and ``moments``, the *population*
:class:`~linvae_jax._src.moments.Moments` of the distribution sampled
(``count = inf``), uncentred unless ``centred=True``. The exact-moment design
(:func:`exact_design`) instead returns sample arrays whose sample moments equal
the target to round-off, so ``moments_from_arrays(x, y)`` reproduces
``moments`` to ~1e-15 relative in float64.

All randomness comes from ``np.random.default_rng(seed)``; nothing depends on
global state. Arrays are float64 unless ``dtype`` says otherwise.
"""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Optional, Union

import numpy as np

from linvae_jax._src import moments as moments_lib
from linvae_jax._src import validation

ArrayLike = Union[np.ndarray, list, tuple]


class Sample(NamedTuple):
  """A synthetic data set and the second moments it was drawn from.

  Attributes:
    x: inputs, shape (n, D0).
    y: targets, shape (n, D2), or ``None`` when y is x (VAE / MHVAE data).
    moments: population moments (``count = inf``) for the random generators;
      the exact target (``count = n``) for :func:`exact_design`.
  """
  x: np.ndarray
  y: Optional[np.ndarray]
  moments: moments_lib.Moments


# ------------------------------------------------------------------ helpers --

def random_orthogonal(dim: int, seed: int = 0) -> np.ndarray:
  """Haar-random orthogonal matrix (QR of a Gaussian matrix, sign-fixed).

  Args:
    dim: size D.
    seed: seed of ``np.random.default_rng``.

  Returns:
    (D, D) float64 orthogonal matrix.
  """
  validation.check_latent_dim("dim", dim, np.iinfo(np.int32).max, "int32 max")
  q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
  return q * np.where(np.diag(r) < 0, -1.0, 1.0)  # signs make it Haar


def _spectrum(name: str, eigvals) -> np.ndarray:
  w = np.asarray(eigvals, np.float64)
  if w.ndim != 1 or w.size == 0:
    raise ValueError(f"{name} must be a non-empty 1-D array, got shape {w.shape}.")
  validation.check_finite(name, w)
  if np.any(w < 0):
    raise ValueError(f"{name} must be >= 0 (variances), got min {w.min():.6g}.")
  return w


def _rotation(rotation, dim: int, rng: np.random.Generator) -> np.ndarray:
  if rotation is None:
    return np.eye(dim)
  if isinstance(rotation, str):
    if rotation != "random":
      raise ValueError(f"rotation must be None, 'random' or a (D, D) array, got {rotation!r}.")
    return random_orthogonal(dim, int(rng.integers(2**63 - 1)))
  q = np.asarray(rotation, np.float64)
  validation.check_shape("rotation", q, (dim, dim))
  validation.check_finite("rotation", q)
  err = float(np.max(np.abs(q.T @ q - np.eye(dim))))
  if err > 1e-8:
    raise ValueError(f"rotation is not orthogonal (max |Q^T Q - I| = {err:.3g}).")
  return q


def _mean(name: str, mean, dim: int) -> np.ndarray:
  if mean is None:
    return np.zeros(dim)
  m = np.broadcast_to(np.asarray(mean, np.float64), (dim,)).copy()
  validation.check_finite(name, m)
  return m


def _factor(name: str, cov: np.ndarray) -> np.ndarray:
  """F with F F^T = cov for a PSD cov (eigen-factor; works when singular)."""
  validation.check_psd(name, cov)
  w, v = np.linalg.eigh(0.5 * (cov + cov.T))
  return v * np.sqrt(np.clip(w, 0.0, None))


def _population(cov_x, mean_x, cov_y=None, cov_xy=None, mean_y=None, *,
                centred: bool, dtype=None) -> moments_lib.Moments:
  """Population moments from covariances and means (uncentred adds m m^T)."""
  if centred:
    a, b, c = cov_x, cov_y, cov_xy
  else:
    a = cov_x + np.outer(mean_x, mean_x)
    b = None if cov_y is None else cov_y + np.outer(mean_y, mean_y)
    c = None if cov_y is None else cov_xy + np.outer(mean_x, mean_y)
  return moments_lib.from_second_moments(a, b, c, mean_x=mean_x, mean_y=mean_y,
                                         count=np.inf, centred=centred, dtype=dtype)


def _check_n(n, at_least: int = 1) -> int:
  if not isinstance(n, (int, np.integer)) or n < at_least:
    raise ValueError(f"n (number of samples) must be an integer >= {at_least}, got {n!r}.")
  return int(n)


# --------------------------------------------------------------- generators --

def gaussian(n: int, eigvals, *, rotation=None, mean=None, seed: int = 0,
             centred: bool = False, dtype=np.float64, moments_dtype=None) -> Sample:
  r"""Gaussian VAE data x ~ N(mean, Q diag(eigvals) Q^T).

  Args:
    n: number of samples.
    eigvals: covariance eigenvalues (variances, data units squared), (D,),
      any order; >= 0 (zeros give a rank-deficient A).
    rotation: ``None`` (identity), ``"random"`` (Haar, drawn from ``seed``)
      or a given orthogonal (D, D) matrix Q whose columns are the eigenvectors.
    mean: optional mean, scalar or (D,).
    seed: seed of ``np.random.default_rng``.
    centred: population moments as covariances (default: uncentred
      A = Sigma + mean mean^T, the papers' convention).
    dtype: dtype of ``x``.
    moments_dtype: dtype of the returned moments (default: JAX default float).

  Returns:
    :class:`Sample` with ``y = None`` and population moments.
  """
  n = _check_n(n)
  w = _spectrum("eigvals", eigvals)
  rng = np.random.default_rng(seed)
  q = _rotation(rotation, w.size, rng)
  mu = _mean("mean", mean, w.size)
  x = (rng.standard_normal((n, w.size)) * np.sqrt(w)) @ q.T + mu
  cov = (q * w) @ q.T
  return Sample(x.astype(dtype), None,
                _population(cov, mu, centred=centred, dtype=moments_dtype))


def gaussian_batches(n: int, eigvals, *, batch_size: int = 8192, rotation=None,
                     mean=None, seed: int = 0, dtype=np.float32) -> Iterator[np.ndarray]:
  """Stream of Gaussian batches as :func:`gaussian` (for n too large to hold).

  The rotation is drawn once from ``seed``; batch k uses its own child seed,
  so the stream is deterministic. Yields (<= batch_size, D) arrays of ``dtype``.
  """
  n = _check_n(n)
  batch_size = _check_n(batch_size)
  w = _spectrum("eigvals", eigvals)
  q = _rotation(rotation, w.size, np.random.default_rng([seed, 0]))
  mu = _mean("mean", mean, w.size)
  for k, s in enumerate(range(0, n, batch_size)):
    rng = np.random.default_rng([seed, k + 1])  # own stream per batch
    m = min(batch_size, n - s)
    yield ((rng.standard_normal((m, w.size)) * np.sqrt(w)) @ q.T + mu).astype(dtype)


def exact_design(n: int, xx, yy=None, xy=None, *, mean_x=None, mean_y=None,
                 centred: bool = False, seed: int = 0, moments_dtype=None) -> Sample:
  r"""n samples whose *sample* second moments equal the target exactly.

  A Gaussian matrix is orthonormalised (QR: G = Q R, Q^T Q = I_k) and coloured
  by a square-root factor F of the target (F F^T = target), giving
  X = sqrt(n) Q F^T with X^T X / n = F F^T to round-off. For ``centred=True``
  Q is also made orthogonal to the all-ones vector, so the sample mean is
  exactly ``mean_x`` and the sample covariance the target.

  Args:
    n: number of samples; >= D0 + D2 (+1 when centred).
    xx: target A, (D0, D0) PSD: E[x x^T] (uncentred) or Cov(x) (centred).
    yy, xy: optional targets B (D2, D2) and C = E[x y^T] (D0, D2), given
      together; the joint [[A, C], [C^T, B]] must be PSD.
    mean_x, mean_y: sample means for ``centred=True`` (default 0). With
      ``centred=False`` the design has its own (random) mean; only the
      uncentred moments are pinned.
    centred: which second moment the target is.
    seed: seed of ``np.random.default_rng``.
    moments_dtype: dtype of the returned (target) moments.

  Returns:
    :class:`Sample` with float64 arrays and ``moments`` = the target, with
    ``count = n``.
  """
  if (yy is None) != (xy is None):
    raise ValueError("yy and xy must be given together (or both omitted for y = x).")
  xx = np.asarray(xx, np.float64)
  validation.check_psd("xx", xx)
  d0 = xx.shape[0]
  if yy is None:
    joint, d2 = xx, 0
  else:
    yy, xy = np.asarray(yy, np.float64), np.asarray(xy, np.float64)
    validation.check_psd("yy", yy)
    d2 = yy.shape[0]
    validation.check_shape("xy", xy, (d0, d2))
    joint = np.block([[xx, xy], [xy.T, yy]])
  d = d0 + d2
  if not centred and (mean_x is not None or mean_y is not None):
    raise ValueError("mean_x/mean_y are only used with centred=True (uncentred "
                     "targets already contain the mean).")
  n = _check_n(n, d + int(centred))
  f = _factor("joint moment [[xx, xy], [xy^T, yy]]" if d2 else "xx", joint)
  g = np.random.default_rng(seed).standard_normal((n, d))
  if centred:
    q, _ = np.linalg.qr(np.concatenate([np.ones((n, 1)), g], axis=1))
    q = q[:, 1:]  # orthogonal to 1: zero sample mean
  else:
    q, _ = np.linalg.qr(g)
  z = np.sqrt(n) * q @ f.T
  mx = _mean("mean_x", mean_x, d0)
  x = z[:, :d0] + (mx if centred else 0.0)
  y = None
  my = None
  if d2:
    my = _mean("mean_y", mean_y, d2)
    y = z[:, d0:] + (my if centred else 0.0)
  if not centred:
    mx = x.mean(0)
    my = None if y is None else y.mean(0)
  m = moments_lib.from_second_moments(xx, yy, xy, mean_x=mx, mean_y=my, count=n,
                                      centred=centred, dtype=moments_dtype)
  return Sample(x, y, m)


def cvae_rho(n: int, dim: int, rho: float, *, seed: int = 0, dtype=np.float64,
             moments_dtype=None) -> Sample:
  r"""CVAE pairs of Dang et al. Table 4: y ~ N(0, I), x = rho y + sqrt(1 - rho^2) u.

  u ~ N(0, I) independent of y. Population moments A = B = I, C = rho I, so the
  residual moment is E = B - C^T A^+ C = (1 - rho^2) I: every CVAE mode is
  active iff 1 - rho^2 > beta eta_dec^2.

  Args:
    n: number of samples.
    dim: D0 = D2.
    rho: correlation in [-1, 1] (|rho| = 1: x = +-y, E = 0).
    seed: seed of ``np.random.default_rng``.
    dtype: dtype of the arrays.
    moments_dtype: dtype of the population moments.

  Returns:
    :class:`Sample` (x, y, population moments).
  """
  n = _check_n(n)
  validation.check_latent_dim("dim", dim, np.iinfo(np.int32).max, "int32 max")
  rho = float(rho)
  if not (np.isfinite(rho) and -1.0 <= rho <= 1.0):
    raise ValueError(f"rho must be a correlation in [-1, 1], got {rho!r}.")
  rng = np.random.default_rng(seed)
  y = rng.standard_normal((n, dim))
  x = rho * y + np.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dim))
  eye = np.eye(dim)
  m = moments_lib.from_second_moments(eye, eye, rho * eye, count=np.inf,
                                      dtype=moments_dtype)
  return Sample(x.astype(dtype), y.astype(dtype), m)


def cvae_gaussian(n: int, cov_x, cov_y, cov_xy, *, mean_x=None, mean_y=None,
                  seed: int = 0, centred: bool = False, dtype=np.float64,
                  moments_dtype=None) -> Sample:
  r"""Jointly Gaussian CVAE pairs (x, y) with a general cross-covariance.

  Args:
    n: number of samples.
    cov_x: Cov(x), (D0, D0).
    cov_y: Cov(y), (D2, D2).
    cov_xy: Cov(x, y) = E[(x - mx)(y - my)^T], (D0, D2); the joint covariance
      must be PSD.
    mean_x, mean_y: optional means (scalars or vectors).
    seed: seed of ``np.random.default_rng``.
    centred: population moments as covariances (default uncentred).
    dtype, moments_dtype: dtypes of the arrays and of the moments.

  Returns:
    :class:`Sample` (x, y, population moments).
  """
  n = _check_n(n)
  cx, cy, cxy = (np.asarray(a, np.float64) for a in (cov_x, cov_y, cov_xy))
  validation.check_psd("cov_x", cx)
  validation.check_psd("cov_y", cy)
  d0, d2 = cx.shape[0], cy.shape[0]
  validation.check_shape("cov_xy", cxy, (d0, d2))
  f = _factor("joint covariance [[cov_x, cov_xy], [cov_xy^T, cov_y]]",
              np.block([[cx, cxy], [cxy.T, cy]]))
  mx, my = _mean("mean_x", mean_x, d0), _mean("mean_y", mean_y, d2)
  z = np.random.default_rng(seed).standard_normal((n, d0 + d2)) @ f.T
  x, y = z[:, :d0] + mx, z[:, d0:] + my
  m = _population(cx, mx, cy, cxy, my, centred=centred, dtype=moments_dtype)
  return Sample(x.astype(dtype), y.astype(dtype), m)


def regression(n: int, weight, *, x_eigvals=None, cov_x=None, noise_std=1.0,
               seed: int = 0, dtype=np.float64, moments_dtype=None) -> Sample:
  r"""Linear regression data of Wang & Ziyin: y = M x + noise.

  x ~ N(0, Cov_x), noise ~ N(0, noise_std^2 I_{D2}) independent. Population
  moments: A = Cov_x, C = A M^T, B = M A M^T + noise_std^2 I, so the residual
  E = B - C^T A^+ C = M (A - A A^+ A) M^T + noise_std^2 I = noise_std^2 I.

  Args:
    n: number of samples.
    weight: M, (D2, D0).
    x_eigvals: Cov_x = diag(x_eigvals) (default I); exclusive with ``cov_x``.
    cov_x: full Cov_x, (D0, D0) PSD.
    noise_std: standard deviation of the additive noise (data units), >= 0.
    seed: seed of ``np.random.default_rng``.
    dtype, moments_dtype: dtypes of the arrays and of the moments.

  Returns:
    :class:`Sample` (x, y, population moments).
  """
  n = _check_n(n)
  m_ = np.asarray(weight, np.float64)
  if m_.ndim != 2:
    raise ValueError(f"weight (M) must be 2-D (D2, D0), got shape {m_.shape}.")
  validation.check_finite("weight (M)", m_)
  d2, d0 = m_.shape
  if x_eigvals is not None and cov_x is not None:
    raise ValueError("give x_eigvals or cov_x, not both.")
  if cov_x is not None:
    a = np.asarray(cov_x, np.float64)
    validation.check_shape("cov_x", a, (d0, d0))
  else:
    w = np.ones(d0) if x_eigvals is None else _spectrum("x_eigvals", x_eigvals)
    validation.check_shape("x_eigvals", w, (d0,))
    a = np.diag(w)
  s = float(noise_std)
  if not (np.isfinite(s) and s >= 0):
    raise ValueError(f"noise_std must be a finite standard deviation >= 0, got {noise_std!r}.")
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d0)) @ _factor("cov_x", a).T
  y = x @ m_.T + s * rng.standard_normal((n, d2))
  mom = moments_lib.from_second_moments(a, m_ @ a @ m_.T + s * s * np.eye(d2), a @ m_.T,
                                        count=np.inf, dtype=moments_dtype)
  return Sample(x.astype(dtype), y.astype(dtype), mom)


def straddling_spectrum(threshold: float, n_above: int, n_below: int, *,
                        margin: float = 0.25, ratio: float = 1.5) -> np.ndarray:
  r"""Eigenvalues on both sides of a collapse threshold, with a margin.

  For the VAE/MHVAE a mode collapses iff eig_i(A) < beta eta_dec^2; for the
  CVAE iff eig_i(E) < beta eta_dec^2. Pass ``threshold = beta * eta_dec**2``
  (variance units) and use the result as ``eigvals`` of :func:`gaussian`
  (population A) or :func:`exact_design`.

  The modes above are threshold * (1 + margin) * ratio^k, k = n_above-1..0;
  those below threshold * (1 - margin) / ratio^k, k = 0..n_below-1, so no
  mode is within a relative ``margin`` of the threshold.

  Args:
    threshold: beta * eta_dec^2 > 0 (variance units).
    n_above: number of active modes (>= 0).
    n_below: number of collapsed modes (>= 0); n_above + n_below >= 1.
    margin: relative distance to the threshold, in (0, 1).
    ratio: geometric spacing between neighbouring modes on one side, > 1.

  Returns:
    (n_above + n_below,) float64, strictly decreasing.
  """
  validation.check_positive("threshold", threshold)
  for name, k in (("n_above", n_above), ("n_below", n_below)):
    if not isinstance(k, (int, np.integer)) or k < 0:
      raise ValueError(f"{name} must be an integer >= 0, got {k!r}.")
  if n_above + n_below < 1:
    raise ValueError("n_above + n_below must be >= 1.")
  if not (0.0 < margin < 1.0):
    raise ValueError(f"margin must be in (0, 1), got {margin!r}.")
  if not ratio > 1.0:
    raise ValueError(f"ratio must be > 1, got {ratio!r}.")
  t = float(threshold)
  above = t * (1.0 + margin) * float(ratio) ** np.arange(n_above - 1, -1, -1)
  below = t * (1.0 - margin) * float(ratio) ** -np.arange(n_below)
  return np.concatenate([above, below]).astype(np.float64)


# --------------------------------------------------------------- streaming --

def iterate_batches(x, y=None, *, batch_size: int = 8192) -> Iterator:
  """Re-batch a data source into batches of ``batch_size`` rows.

  Args:
    x: an array (n, D0) (rows are samples), or an iterable of chunks: arrays
      (m, D0) of any m, or ``(x_chunk, y_chunk)`` pairs for paired data.
    y: optional array (n, D2) aligned with an array ``x``.
    batch_size: rows per batch (the last one may be shorter).

  Yields:
    ``x_batch`` or ``(x_batch, y_batch)``, in the source's dtype (the moment
    accumulator converts each batch to float64).
  """
  batch_size = _check_n(batch_size)
  if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
    yield from moments_lib.array_batches(x, y, batch_size)
    return
  if y is not None:
    raise ValueError("y may only be given with an array x; pass (x, y) chunks instead.")
  yield from _rebatch(x, batch_size)


def _rebatch(chunks: Iterable, batch_size: int) -> Iterator:
  buf_x, buf_y, held, paired = [], [], 0, None
  for c in chunks:
    is_pair = isinstance(c, (tuple, list))
    if paired is None:
      paired = is_pair
    elif paired != is_pair:
      raise ValueError("chunks must all be (x, y) pairs or all be x arrays.")
    cx = np.asarray(c[0] if is_pair else c)
    cx = cx[None] if cx.ndim == 1 else cx  # a single sample
    if cx.ndim != 2:
      raise ValueError(f"x chunk must be 1-D or 2-D, got shape {cx.shape}.")
    buf_x.append(cx)
    if is_pair:
      cy = np.asarray(c[1])
      cy = cy[None] if cy.ndim == 1 else cy
      if cy.ndim != 2 or cy.shape[0] != cx.shape[0]:
        raise ValueError(f"y chunk must be 2-D with {cx.shape[0]} rows, got shape {cy.shape}.")
      buf_y.append(cy)
    held += cx.shape[0]
    while held >= batch_size:
      bx = np.concatenate(buf_x)
      by = np.concatenate(buf_y) if paired else None
      yield bx[:batch_size] if not paired else (bx[:batch_size], by[:batch_size])
      buf_x, held = [bx[batch_size:]], held - batch_size
      buf_y = [by[batch_size:]] if paired else []
  if held:
    bx = np.concatenate(buf_x)
    yield bx if not paired else (bx, np.concatenate(buf_y))


def streaming_moments(x, y=None, *, batch_size: int = 8192, centred: bool = False,
                      dtype=None) -> moments_lib.Moments:
  """Moments of any array or chunk iterable, accumulated in float64.

  Args:
    x, y, batch_size: as :func:`iterate_batches`.
    centred: covariances instead of uncentred second moments.
    dtype: dtype of the stored moments (accumulation is float64 regardless).

  Returns:
    :class:`~linvae_jax._src.moments.Moments` with ``count = n``.
  """
  return moments_lib.from_batches(iterate_batches(x, y, batch_size=batch_size),
                                  centred=centred, dtype=dtype)
