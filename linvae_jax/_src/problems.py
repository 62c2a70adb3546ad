r"""Built-in synthetic problems: every model and setting, straddling its thresholds.

Each :class:`Problem` pairs a model configuration with *exact population*
moments (no sampling error: the closed form is the target to round-off) and a
small hyperparameter grid that crosses the collapse thresholds. The spectra
are placed so that, in every cell, every mode sits at least ~20% (relative,
in beta units) from its critical value: training then converges fast and a
failed check means a wrong theory or a broken trainer, not a slow mode.

The design trick: the sweeps use powers of two (beta, beta * eta_dec^2,
beta c^2 sigma^2 are powers of two) and the data variances sit at half powers
of two, so every mode/threshold ratio is >= sqrt(2) or <= 1/sqrt(2)
(a 29-41% margin). :func:`threshold_margin` measures it; the tests assert
it is >= 0.2 for every cell of every problem.

>>> p = get("vae-learnable")
>>> p.model().label(), len(p.grid())
('vae[learnable]', 15)
>>> sorted(names())[:3]
['cvae-fixed', 'cvae-learnable', 'mhvae-thm3']
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

from linvae_jax._src import grid as grid_lib
from linvae_jax._src import moments as moments_lib
from linvae_jax._src.data.synthetic import random_orthogonal
from linvae_jax._src.model import as_hyper
from linvae_jax._src.models import make as make_model

R2 = float(np.sqrt(2.0))
HALF_POW = lambda ks: 2.0 ** (np.asarray(ks, np.float64) + 0.5)  # noqa: E731


@dataclasses.dataclass(frozen=True)
class Problem:
  """A model configuration, exact moments and a grid that crosses thresholds.

  Attributes:
    name: identifier (``linvae verify --problem NAME``, ``synthetic:NAME``).
    model_name: registry name for :func:`linvae_jax.make_model`.
    config: static model configuration (as ``make_model`` keywords).
    build: zero-argument function returning ``(xx, yy, xy)`` numpy float64
      population second moments (``yy``/``xy`` None for y = x).
    axes: swept axes (Cartesian product), name -> values.
    constants: fixed hyperparameters (and engine settings such as ``lr``).
    quick_axes: a smaller sweep for ``--quick`` (still on both sides).
    steps: analytic full-batch training steps that converge every cell.
    lr: initial Adam learning rate (decayed by the verifier's optimiser).
    description: the theorem checked, for reports.
  """
  name: str
  model_name: str
  config: dict
  build: Callable[[], tuple]
  axes: dict
  constants: dict
  quick_axes: dict
  steps: int = 10000
  lr: float = 3e-2
  description: str = ""

  def model(self):
    """The configured :class:`~linvae_jax.LinearModel`."""
    return make_model(self.model_name, **self.config)

  def moments(self, dtype=None) -> moments_lib.Moments:
    """Exact population moments (``count = inf``)."""
    xx, yy, xy = self.build()
    return moments_lib.from_second_moments(xx, yy, xy, dtype=dtype)

  def grid(self, quick: bool = False) -> grid_lib.Grid:
    """Product of the (quick) axes with the constants and the learning rate."""
    axes = self.quick_axes if quick else self.axes
    consts = {"lr": self.lr, **self.constants}
    return grid_lib.product(**axes) * grid_lib.constant(**consts)

  def hyper_at(self, **values) -> dict:
    """A single hyper dict: constants overridden by ``values`` (engine axes dropped)."""
    h = {k: v for k, v in {**self.constants, **values}.items()
         if k not in grid_lib.ENGINE_AXES}
    return h


# ----------------------------------------------------------- moment builders --

def _rotated(eigvals, seed: int) -> np.ndarray:
  q = random_orthogonal(len(eigvals), seed)
  return (q * np.asarray(eigvals, np.float64)[None, :]) @ q.T


def _paired(eigvals, seed: int):
  return lambda: (_rotated(eigvals, seed), None, None)


def _regression(a_eig, zeta, noise_var, d2: int, seed: int):
  """y = Z x~ + n with x~ = Phi^{-1/2} P^T x white: Z has singular values ``zeta``.

  C = E[x y^T] = P Phi^{1/2} Z^T, B = Z Z^T + noise_var I (W&Z's general target).
  """
  def build():
    d0 = len(a_eig)
    p = random_orthogonal(d0, seed)
    phi = np.asarray(a_eig, np.float64)
    f = random_orthogonal(d2, seed + 1)[:, :len(zeta)]
    g = random_orthogonal(d0, seed + 2)[:, :len(zeta)]
    z = (f * np.asarray(zeta)[None, :]) @ g.T  # (D2, D0)
    xx = (p * phi[None, :]) @ p.T
    xy = (p * np.sqrt(phi)[None, :]) @ z.T
    yy = z @ z.T + noise_var * np.eye(d2)
    return xx, yy, xy
  return build


def _conditional(a_eig, e_eig, d2: int, seed: int):
  """y = K^T x + n, Cov(n) = E with eigenvalues ``e_eig`` (the CVAE's theta).

  C = A K, B = K^T A K + E, so B - C^T A^+ C = E exactly.
  """
  def build():
    d0 = len(a_eig)
    xx = _rotated(a_eig, seed)
    k = np.random.default_rng(seed + 1).standard_normal((d0, d2)) / np.sqrt(d0)
    e = _rotated(e_eig, seed + 2)
    return xx, k.T @ xx @ k + e, xx @ k
  return build


def _ldv_betas(zeta, residual, d1: int, d2: int) -> list:
  """Geometric midpoints between W&Z's critical betas b_p, plus one beyond each end."""
  from linvae_jax._src.models.vae_ldv import ldv_beta_thresholds
  b = np.asarray(ldv_beta_thresholds(jnp.asarray(zeta), jnp.asarray(residual), d1, d2))
  mids = np.sqrt(b[:-1] * b[1:])
  return [float(b[0] * 1.5)] + [float(m) for m in mids] + [float(b[-1] / 1.5)]


# Shared data: variances at half powers of two (k + 1/2), 5 modes.
_VAE_EIG = HALF_POW([2, 1, 0, -1, -3])          # 5.66, 2.83, 1.41, 0.71, 0.088
_BETAS = [0.25, 0.5, 1.0, 2.0, 4.0]
_ETAS = [1 / R2, 1.0, R2]                       # eta_dec^2 in {1/2, 1, 2}
_VAE_AXES = {"beta": _BETAS, "eta_dec": _ETAS}
_VAE_QUICK = {"beta": [0.5, 4.0], "eta_dec": [1.0]}

# MHVAE: theta = sqrt(eig A) = 2^(k + 1/4) with p_thr = sqrt(beta1) sigma1 = 2^(1/4), so
# the z2 critical beta2 = p_thr max(p_thr, theta) / eta_dec^2 is a half power of two;
# k = 0 is left out: theta = p_thr is exactly z1's own threshold (quartic, slow).
_MH_THETA = 2.0 ** (np.asarray([2, 1, -1, -2, -3], np.float64) + 0.25)
_MH_CONST = {"beta1": 1.0, "eta_enc": 1.0, "sigma1": 2.0 ** 0.25}
_MH_AXES = {"beta2": [1.0, 2.0, 4.0, 8.0], "eta_dec": _ETAS}
_MH_QUICK = {"beta2": [1.0, 8.0], "eta_dec": [1.0]}

# W&Z target y != x: zeta^2 at half powers of two, D0 = 5, D2 = 4.
_WZ_ZETA = np.sqrt(HALF_POW([2, 1, 0, -2]))
_WZ_A = [2.0, 1.5, 1.0, 0.5, 0.25]

# CVAE: the residual moment E's eigenvalues (theta, variance units) at half powers.
_CVAE_E = HALF_POW([2, 1, 0, -1, -3])

# LDV: paired, zeta^2 spread so the b_p are far apart; d1 = 2.
_LDV_EIG = np.asarray([16.0, 2.0, 0.25, 0.05, 0.01])


def _problems() -> dict:
  ps = [
      Problem("vae-learnable", "vae", {"latent_dim": 4, "encoder_var": "learnable"},
              _paired(_VAE_EIG, 1), _VAE_AXES, {"eta_enc": 1.0}, _VAE_QUICK,
              description="linear VAE, learnable diagonal Sigma (Dang Thm 4; W&Z Thm 2)"),
      Problem("vae-learnable-full", "vae", {"latent_dim": 4, "encoder_var": "learnable_full"},
              _paired(_VAE_EIG, 2), _VAE_AXES, {"eta_enc": 1.0}, _VAE_QUICK,
              description="linear VAE, learnable full Sigma (Dang Thm 4, any rotation)"),
      Problem("vae-fixed-iso", "vae", {"latent_dim": 4, "encoder_var": "fixed"},
              _paired(_VAE_EIG, 3), _VAE_AXES, {"eta_enc": 1.0, "sigma": 1 / R2}, _VAE_QUICK,
              description="linear VAE, fixed isotropic Sigma (Dang Thm 1; W&Z Thm 1)"),
      Problem("vae-fixed-diag", "vae", {"latent_dim": 4, "encoder_var": "fixed"},
              _paired(_VAE_EIG, 4), _VAE_AXES,
              {"eta_enc": 1.0, "sigma": np.asarray([1.0, 1 / R2, R2, 0.5])}, _VAE_QUICK,
              description="linear VAE, fixed diagonal Sigma, stds paired ascending "
                          "(Dang Thm 1; W&Z Prop. 2 corrected)"),
      Problem("wz-regression", "vae", {"latent_dim": 3, "encoder_var": "learnable"},
              _regression(_WZ_A, _WZ_ZETA, 0.1, 4, 5), _VAE_AXES, {"eta_enc": 1.0}, _VAE_QUICK,
              steps=20000, description="W&Z linear VAE with a target y != x (zeta = sv of E[y x~^T])"),
      Problem("cvae-learnable", "cvae", {"latent_dim": 4, "encoder_var": "learnable"},
              _conditional([2.0, 1.0, 0.5], _CVAE_E, 5, 6), _VAE_AXES, {"eta_enc": 1.0},
              _VAE_QUICK, description="linear CVAE, learnable Sigma (Dang Thm 2)"),
      Problem("cvae-fixed", "cvae", {"latent_dim": 4, "encoder_var": "fixed"},
              _conditional([2.0, 1.0, 0.5], _CVAE_E, 5, 7), _VAE_AXES,
              {"eta_enc": 1.0, "sigma": 1 / R2}, _VAE_QUICK,
              description="linear CVAE, fixed isotropic Sigma (Thm 1 with sqrt(eig E))"),
      Problem("mhvae-thm3", "mhvae", {"latent_dim1": 4, "latent_dim2": 3,
                                      "sigma2_var": "learnable"},
              _paired(_MH_THETA ** 2, 8), _MH_AXES, _MH_CONST, _MH_QUICK, steps=20000,
              description="linear MHVAE, Sigma1 fixed, Sigma2 learnable (Dang Thm 3 corrected)"),
      Problem("mhvae-thm5", "mhvae", {"latent_dim1": 4, "latent_dim2": 3,
                                      "sigma2_var": "fixed"},
              _paired(_MH_THETA ** 2, 9), _MH_AXES, {**_MH_CONST, "sigma2": 1.0}, _MH_QUICK,
              steps=20000,
              description="linear MHVAE, Sigma1 and Sigma2 fixed (Dang Thm 5)"),
      Problem("vae-ldv", "vae_ldv", {"latent_dim": 2},
              _paired(_LDV_EIG, 10),
              {"beta": _ldv_betas(np.sqrt(_LDV_EIG), 0.0, 2, 5), "eta_enc": [1.0, R2]},
              {}, {"beta": _ldv_betas(np.sqrt(_LDV_EIG), 0.0, 2, 5)[::2], "eta_enc": [1.0]},
              description="W&Z linear VAE with learnable decoder variance (App. D, corrected)"),
  ]
  return {p.name: p for p in ps}


_REGISTRY: dict = {}


def registry() -> dict:
  """name -> :class:`Problem`, built on first use.

  Building runs a JAX function (the LDV thresholds), which starts JAX's
  backends; importing this module must not, or ``linvae grid --devices N``
  could no longer ask for N CPU devices.
  """
  if not _REGISTRY:
    _REGISTRY.update(_problems())
  return _REGISTRY


def __getattr__(name):  # ``problems.PROBLEMS``, lazily
  if name == "PROBLEMS":
    return registry()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def names() -> list:
  """Names of the built-in problems, in a fixed order."""
  return list(registry())


def get(name: str) -> Problem:
  """The built-in problem ``name`` (``ValueError`` listing the known ones)."""
  if name not in registry():
    raise ValueError(f"unknown synthetic problem {name!r}; known problems: {names()}.")
  return registry()[name]


# ------------------------------------------------------------------ margin --

BETA_LIKE = ("beta", "beta2")


def threshold_margin(model, moments, hyper) -> float:
  r"""Smallest relative distance of the cell to any beta-like critical value.

  min over ``Optimum.thresholds`` entries whose name starts with ``beta`` /
  ``beta2`` (finite, > 0) of |h / c - 1|, h the cell's value of that
  hyperparameter. A margin in beta units is the same as in variance units
  (theta^2 vs beta eta_dec^2), whichever axis the grid sweeps.

  Returns:
    The margin (``inf`` if no finite positive threshold exists).
  """
  hyper = as_hyper(hyper, moments.dtype)
  opt = model.optimum(moments, hyper)
  best = np.inf
  for key, vals in opt.thresholds.items():
    base = next((b for b in sorted(BETA_LIKE, key=len, reverse=True)
                 if key == b or key.startswith(b + "_")), None)
    if base is None or base not in hyper:
      continue
    c = np.asarray(vals, np.float64)
    c = c[np.isfinite(c) & (c > 0)]
    if c.size:
      best = min(best, float(np.min(np.abs(float(hyper[base]) / c - 1.0))))
  return best


def stable_within(model, moments, hyper, margin: float = 0.2) -> bool:
  """True if no active mask changes when any beta-like hyperparameter is scaled
  by (1 - margin) or (1 + margin): no threshold (stated or not) is that close.

  This catches thresholds :func:`threshold_margin` cannot see, e.g. the
  MHVAE's z1 modes at theta = sqrt(beta1) sigma1 (a beta1 threshold).
  """
  hyper = as_hyper(hyper, moments.dtype)
  ref = model.optimum(moments, hyper).active
  for name in ("beta", "beta1", "beta2"):
    if name not in hyper:
      continue
    for f in (1.0 - margin, 1.0 + margin):
      act = model.optimum(moments, {**hyper, name: hyper[name] * f}).active
      if any(not np.array_equal(np.asarray(act[k]), np.asarray(ref[k])) for k in ref):
        return False
  return True


def cell_hypers(problem: Problem, quick: bool = False) -> list:
  """The model hyperparameters of every cell of ``problem.grid(quick)``."""
  model = problem.model()
  _, cells, _ = problem.grid(quick).resolve(model)
  n = len(next(iter(cells.values())))
  return [{k: cells[k][i] for k in model.hyper_names} for i in range(n)]

