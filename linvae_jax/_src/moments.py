r"""Data second moments: the only thing the analytic losses read from data.

For an input ``x`` in R^{D0} and a target ``y`` in R^{D2} (``y = x`` for a VAE),

.. math::
   A = E[x x^T],\quad B = E[y y^T],\quad C = E[x y^T].

The papers use *uncentred* moments (Dang et al. §5; W&Z §3). Centred moments
(``centred=True``: covariances) are equivalent to learnable encoder/decoder
biases (W&Z App. B, Prop. 4).

Accumulation is always float64 (numpy), whatever the input dtype or the JAX
x64 flag; the stored leaves are then cast to ``dtype``.

Spectral helpers (all jittable, fixed shape, sorted non-increasing):

* :func:`positive_eigh` -- eigen-pairs of A with a *relative* cut-off
  ``rtol * max eig``; eigenvalues at or below it are set to exactly 0. The
  default ``rtol = D * eps(dtype)`` (as numpy's ``matrix_rank``) is 4e-14 for
  D = 196 in float64, far below MNIST's smallest positive eigenvalue ratio
  (~6e-9 / 21 = 3e-10).
* :func:`theta` -- theta_i = sqrt(eig_i(A)), the VAE/MHVAE data singular values.
* :func:`zeta` -- singular values of Z = E[y x~^T] (W&Z), x~ the whitened x.
* :func:`linear_residual` -- R = tr B - ||Z||_F^2, the part of E||y||^2 no
  linear map of x explains (W&Z Prop. 1, corrected).
* :func:`residual_moment` -- E = B - C^T A^+ C, the residual second moment of
  y given x (the CVAE's theta_i = eig_i(E), *not* square-rooted).
"""
from __future__ import annotations

from typing import Iterable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from linvae_jax._src import fastpath, validation


def _default_dtype():
  return jnp.zeros(()).dtype  # float64 under jax_enable_x64, else float32


@flax.struct.dataclass
class Moments:
  r"""Second moments of (x, y), a pytree.

  Attributes:
    xx: A = E[x x^T], shape (D0, D0).
    yy: B = E[y y^T], shape (D2, D2). Equal to ``xx`` when ``paired``.
    xy: C = E[x y^T], shape (D0, D2). Equal to ``xx`` when ``paired``.
    mean_x: E[x], shape (D0,).
    mean_y: E[y], shape (D2,).
    count: number of samples N (float; ``inf`` for population moments).
    x_factor: F with F F^T = A (symmetric PSD square root), shape (D0, D0).
      The encoder singular values sqrt(eig(W A W^T)) are ``svdvals(W F)``,
      whose gradient stays finite at collapsed (zero) modes.
    paired: static; True when y is x (a VAE / MHVAE).
    centred: static; True when the moments are covariances.
  """
  xx: jax.Array
  yy: jax.Array
  xy: jax.Array
  mean_x: jax.Array
  mean_y: jax.Array
  count: jax.Array
  x_factor: jax.Array
  paired: bool = flax.struct.field(pytree_node=False, default=True)
  centred: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def dim_x(self) -> int:
    return self.xx.shape[-1]

  @property
  def dim_y(self) -> int:
    return self.yy.shape[-1]

  @property
  def dtype(self):
    return self.xx.dtype

  def astype(self, dtype) -> "Moments":
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), self)


def _psd_sqrt(a) -> jax.Array:
  """Symmetric PSD square root, negative round-off eigenvalues clipped to 0."""
  a = jnp.asarray(a)
  w, v = jnp.linalg.eigh(0.5 * (a + a.T))
  return (v * jnp.sqrt(jnp.clip(w, 0.0))[None, :]) @ v.T


psd_sqrt = fastpath.function(_psd_sqrt, "psd_sqrt")


def _leaves(xx, yy, xy, mean_x, mean_y, count, dtype) -> dict:
  """The distinct :class:`Moments` leaves from checked inputs (jitted on
  concrete ones); ``None`` for ``yy``, ``xy``, ``mean_y`` where they alias x's."""
  xx = jnp.asarray(xx, dtype)
  paired = yy is None
  out = {"xx": xx, "count": jnp.asarray(count, dtype), "x_factor": _psd_sqrt(xx),
         "yy": None if paired else jnp.asarray(yy, dtype),
         "xy": None if paired else jnp.asarray(xy, dtype),
         "mean_x": jnp.zeros(xx.shape[0], dtype) if mean_x is None else jnp.asarray(mean_x, dtype)}
  if mean_y is None:
    out["mean_y"] = None if paired else jnp.zeros(out["yy"].shape[0], dtype)
  else:
    out["mean_y"] = jnp.asarray(mean_y, dtype)
  return out


_leaves_fast = fastpath.function(_leaves, "moments.assemble")


def from_second_moments(xx, yy=None, xy=None, *, mean_x=None, mean_y=None,
                        count=np.inf, centred: bool = False, dtype=None,
                        validate: bool = True) -> Moments:
  """Build :class:`Moments` from given (e.g. population) second moments.

  ``yy`` and ``xy`` must be both given (paired data x, y) or both omitted
  (y = x). Concrete inputs are checked: shapes, finiteness, symmetry and
  positive semi-definiteness of A and B, and of the joint moment.
  """
  dtype = dtype or _default_dtype()
  if (yy is None) != (xy is None):
    raise ValueError("yy and xy must be given together (or both omitted for y = x).")
  paired = yy is None
  if validate:
    validation.check_psd("xx (A = E[x x^T])", xx)
    d0 = np.shape(xx)[0]
    if not paired:
      validation.check_psd("yy (B = E[y y^T])", yy)
      d2 = np.shape(yy)[0]
      validation.check_shape("xy (C = E[x y^T])", xy, (d0, d2))
      validation.check_finite("xy (C = E[x y^T])", xy)
      joint = np.block([[np.asarray(xx, np.float64), np.asarray(xy, np.float64)],
                        [np.asarray(xy, np.float64).T, np.asarray(yy, np.float64)]])
      validation.check_psd("joint moment [[A, C], [C^T, B]]", joint)
  lv = _leaves_fast(xx, yy, xy, mean_x, mean_y, count, np.dtype(dtype))
  xx, mx = lv["xx"], lv["mean_x"]
  yy, xy = (xx, xx) if paired else (lv["yy"], lv["xy"])  # y = x: one array, aliased
  my = mx if lv["mean_y"] is None else lv["mean_y"]
  return Moments(xx=xx, yy=yy, xy=xy, mean_x=mx, mean_y=my, count=lv["count"],
                 x_factor=lv["x_factor"], paired=paired, centred=centred)


class MomentAccumulator:
  """Streaming float64 accumulator of first and second moments.

  Feed batches with :meth:`update` (``x`` of shape (n, D0), optional ``y`` of
  shape (n, D2)); only one batch is ever converted to float64 at a time.
  Centring, if asked for, is done at the end from the raw sums.
  """

  def __init__(self):
    self.n = 0
    self._sx = self._sy = self._sxx = self._syy = self._sxy = None
    self.paired: Optional[bool] = None

  def update(self, x, y=None) -> "MomentAccumulator":
    x = np.asarray(x)
    if x.ndim != 2:
      raise ValueError(f"x batch must be 2-D (n, D0), got shape {x.shape}.")
    paired = y is None
    if self.paired is None:
      self.paired = paired
    elif self.paired != paired:
      raise ValueError("every batch must give y, or none may (mixed paired/unpaired batches).")
    x = x.astype(np.float64)
    validation.check_finite("x batch", x)
    if not paired:
      y = np.asarray(y).astype(np.float64)
      if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y batch must be 2-D with {x.shape[0]} rows, got shape {y.shape}.")
      validation.check_finite("y batch", y)
    if self._sx is None:
      self._sx = np.zeros(x.shape[1]); self._sxx = np.zeros((x.shape[1],) * 2)
      if not paired:
        self._sy = np.zeros(y.shape[1]); self._syy = np.zeros((y.shape[1],) * 2)
        self._sxy = np.zeros((x.shape[1], y.shape[1]))
    elif x.shape[1] != self._sx.shape[0] or (not paired and y.shape[1] != self._sy.shape[0]):
      raise ValueError("batch feature dimension changed between batches.")
    self.n += x.shape[0]
    self._sx += x.sum(0); self._sxx += x.T @ x
    if not paired:
      self._sy += y.sum(0); self._syy += y.T @ y; self._sxy += x.T @ y
    return self

  def result(self, *, centred: bool = False, dtype=None) -> Moments:
    if self.n == 0:
      raise ValueError("no samples were accumulated (empty dataset).")
    n = self.n
    mx = self._sx / n
    a = self._sxx / n
    if self.paired:
      b = c = None
      my = None
      if centred:
        a = a - np.outer(mx, mx)
    else:
      my = self._sy / n
      b = self._syy / n
      c = self._sxy / n
      if centred:
        a = a - np.outer(mx, mx); b = b - np.outer(my, my); c = c - np.outer(mx, my)
    sym = lambda m: None if m is None else 0.5 * (m + m.T)
    return from_second_moments(sym(a), sym(b), c, mean_x=mx, mean_y=my, count=n,
                               centred=centred, dtype=dtype)


def array_batches(x, y=None, batch_size: int = 8192):
  """Row batches of arrays ``x`` (n, D0) and optional ``y`` (n, D2), checked.

  Yields ``x_batch`` or ``(x_batch, y_batch)`` views in the arrays' dtype.
  """
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"x must be 2-D (n, D0), got shape {x.shape}.")
  if y is not None:
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
      raise ValueError(f"y must be 2-D with {x.shape[0]} rows like x, got shape {y.shape}.")
  for s in range(0, x.shape[0], batch_size):
    yield x[s:s + batch_size] if y is None else (x[s:s + batch_size], y[s:s + batch_size])


def from_arrays(x, y=None, *, centred: bool = False, dtype=None,
                batch_size: int = 8192) -> Moments:
  """Moments of a dataset given as arrays (rows are samples)."""
  return from_batches(array_batches(x, y, batch_size), centred=centred, dtype=dtype)


def from_batches(batches: Iterable, *, centred: bool = False, dtype=None) -> Moments:
  """Moments from an iterable of ``x`` batches or ``(x, y)`` batch pairs."""
  acc = MomentAccumulator()
  for b in batches:
    if isinstance(b, (tuple, list)):
      acc.update(*b)
    else:
      acc.update(b)
  return acc.result(centred=centred, dtype=dtype)


# ----------------------------------------------------------------- spectra --

def default_rtol(dim: int, dtype) -> float:
  """Relative eigenvalue cut-off ``dim * eps(dtype)`` (numpy ``matrix_rank``)."""
  return float(dim * jnp.finfo(dtype).eps)


def positive_eigh(a, rtol: Optional[float] = None):
  """Eigen-decomposition of a PSD matrix, sorted non-increasing, cut off.

  Returns ``(w, v, mask)``: eigenvalues ``w`` (D,), with entries at or below
  ``rtol * max(w)`` set to exactly 0, eigenvectors ``v`` (columns, same
  order) and the boolean ``mask`` of kept (positive) eigenvalues.
  """
  a = jnp.asarray(a)
  rtol = default_rtol(a.shape[-1], a.dtype) if rtol is None else rtol
  w, v = jnp.linalg.eigh(0.5 * (a + a.T))
  w, v = w[::-1], v[:, ::-1]
  mask = w > rtol * jnp.maximum(w[0], jnp.finfo(a.dtype).tiny)
  return jnp.where(mask, w, 0.0), v, mask


def whitening(m: Moments, rtol: Optional[float] = None):
  """Whitening restricted to the positive eigenvalues of A.

  Returns ``(P, phi, inv_sqrt_phi, mask)`` with x~ = diag(inv_sqrt_phi) P^T x,
  zero-padded beyond rank(A) so shapes stay fixed (jittable).
  """
  phi, p, mask = positive_eigh(m.xx, rtol)
  inv = jnp.where(mask, 1.0 / jnp.sqrt(jnp.where(mask, phi, 1.0)), 0.0)
  return p, phi, inv, mask


def theta(m: Moments, rtol: Optional[float] = None) -> jax.Array:
  """theta_i = sqrt(eig_i(A)), non-increasing, length D0 (zeros past rank)."""
  w, _, _ = positive_eigh(m.xx, rtol)
  return jnp.sqrt(w)


def zeta(m: Moments, rtol: Optional[float] = None) -> jax.Array:
  """Singular values of Z = E[y x~^T] (W&Z §3), length min(D0, D2).

  For y = x this equals :func:`theta` (truncated to D0).
  """
  if m.paired:
    return theta(m, rtol)
  p, _, inv, _ = whitening(m, rtol)
  z = (m.xy.T @ p) * inv[None, :]  # E[y x^T] P Phi^{-1/2}
  return jnp.linalg.svd(z, compute_uv=False)


def linear_residual(m: Moments, rtol: Optional[float] = None) -> jax.Array:
  """R = tr B - ||Z||_F^2 >= 0 (0 when y is a linear function of x)."""
  if m.paired:
    return jnp.zeros((), m.dtype)
  return jnp.maximum(jnp.trace(m.yy) - jnp.sum(zeta(m, rtol) ** 2), 0.0)


def _residual_moment_impl(xx, xy, yy, rtol, xp):
  """Shared numpy / jax.numpy body of :func:`residual_moment`."""
  w, p = xp.linalg.eigh(0.5 * (xx + xx.T))
  eps = float(xp.finfo(xx.dtype).eps)
  cut = (xx.shape[0] * eps if rtol is None else rtol) * xp.maximum(w[-1], 0.0)
  keep = w > cut
  inv = xp.where(keep, 1.0 / xp.where(keep, w, 1.0), 0.0)
  k = ((xy.T @ p) * inv[None, :]) @ p.T  # K = C^T A^+
  # E[(y - Kx)(y - Kx)^T] expanded: exact for any K and only second-order
  # sensitive to an error in K, unlike B - C^T A^+ C.
  e = (yy - k @ xy) - (xy.T - k @ xx) @ k.T
  return 0.5 * (e + e.T)


def residual_moment(m: Moments, rtol: Optional[float] = None) -> jax.Array:
  """E = B - C^T A^+ C, the second moment of the regression residual y - Kx.

  Computed as the expanded residual moment E[(y - Kx)(y - Kx)^T] with
  K = C^T A^+ (pseudo-inverse over eigenvalues of A above ``rtol`` times the
  largest, default ``D * eps``). That form is exact for any K and only
  second-order sensitive to an error in K, so it stays at float32's limit
  when A is ill-conditioned or y is on another scale than x, where the
  subtraction B - C^T A^+ C or a square root of the joint moment lose it.

  Concrete moments are processed in float64 (numpy) whatever their dtype and
  the result cast back: MNIST's A has genuine eigenvalues at 3e-10 of the
  largest, below what a float32 eigen-decomposition resolves. Under ``jit``
  the same algorithm runs in the moments' dtype.
  """
  if m.paired:
    return jnp.zeros_like(m.yy)
  if validation.is_concrete(m):
    f64 = lambda a: np.asarray(a, np.float64)
    e = _residual_moment_impl(f64(m.xx), f64(m.xy), f64(m.yy), rtol, np)
    return jnp.asarray(e, m.dtype)
  return _residual_moment_impl(m.xx, m.xy, m.yy, rtol, jnp)


def residual_eigvals(m: Moments, rtol: Optional[float] = None) -> jax.Array:
  """eig(E), non-increasing and clipped at 0: the CVAE theta of Dang et al. Thm 2."""
  w = jnp.linalg.eigvalsh(residual_moment(m, rtol))[::-1]
  return jnp.clip(w, 0.0)
