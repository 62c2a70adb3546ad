r"""Critical hyperparameters per mode and derivatives of the closed forms.

Two questions a user asks of a closed form before training anything:

* **where does mode i collapse?** :func:`critical_values` returns, per latent
  and per sorted mode, the value of one hyperparameter at which the mode
  switches between active and collapsed (the others held fixed). It reads
  ``Optimum.thresholds`` when the model states them in closed form, and
  otherwise finds them by bracketing and bisection on the active count of
  ``model.optimum`` (e.g. the MHVAE's critical ``eta_dec``).
* **how sensitive is the optimum?** :func:`jacobians` differentiates every
  optimal spectrum (``omega``, ``lambda``, ``sigma_std``, ...) and L* with
  respect to the hyperparameters by forward-mode autodiff
  (``jax.jacfwd`` of ``model.optimum``). The closed forms use
  ``spectra.safe_sqrt``, so the derivatives are finite at the thresholds too
  (one-sided: the collapsed side's zero slope).

:func:`theory_table` puts both into one DataFrame, one row per mode (what
``linvae theory`` prints).
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from linvae_jax._src.model import as_hyper

# Keys of Optimum.thresholds: ``name`` belongs to the model's last latent (z,
# or z2 for the MHVAE, whose omega is U2); ``name_<latent>`` to that latent.


def _primary_latent(model) -> str:
  return model.latents[-1]


def closed_form_key(model, name: str, latent: str, thresholds: Mapping) -> Optional[str]:
  """The ``Optimum.thresholds`` key holding ``name``'s critical values for ``latent``."""
  if f"{name}_{latent}" in thresholds:
    return f"{name}_{latent}"
  if latent == _primary_latent(model) and name in thresholds:
    return name
  return None


@functools.partial(jax.jit, static_argnums=(0, 1))
def _counts(model, name, moments, hyper, values):
  def count(v):
    h = {**hyper, name: jnp.broadcast_to(v, jnp.shape(hyper[name]))}
    opt = model.optimum(moments, h)
    return {lat: jnp.sum(a) for lat, a in opt.active.items()}
  return jax.vmap(count)(values)


def _active_counts(model, moments, hyper, name, values):
  """Active count per latent at each value of hyperparameter ``name`` (vmapped).

  Module-level jit with the model and the name static: the bisection's
  repeated calls reuse one compiled program.
  """
  out = _counts(model, name, moments, hyper, jnp.asarray(values, moments.dtype))
  return jax.tree.map(np.asarray, out)


def _root_find(model, moments, hyper, name, latent, *, span=1e8, n_scan=161, iters=60):
  """Critical values of ``name`` for ``latent`` by scan + bisection in log space.

  All modes are bisected together (one vmapped ``optimum`` call per step).
  Returns ``(values, direction)``: ``values[i]`` is where the active count
  crosses ``i + 1`` (mode i, 0-based, sorted) and ``direction`` is
  ``"collapse_above"`` (active iff the hyperparameter is below the value) or
  ``"collapse_below"``. Modes that never switch within ``span`` get ``inf``
  (never collapse) or ``0`` (never active) for ``collapse_above``.
  """
  h0 = float(np.max(np.asarray(hyper[name])))
  grid = h0 * np.logspace(-np.log10(span), np.log10(span), n_scan)
  counts = _active_counts(model, moments, hyper, name, grid)[latent]
  n_modes = int(np.size(model.optimum(moments, hyper).active[latent]))
  decreasing = counts[0] >= counts[-1]
  direction = "collapse_above" if decreasing else "collapse_below"
  out = np.full(n_modes, np.nan)
  lo, hi = np.zeros(n_modes), np.zeros(n_modes)
  todo = np.zeros(n_modes, bool)
  for i in range(n_modes):
    act = counts >= i + 1  # mode i is active iff the count reaches i + 1
    if act.all():
      out[i] = np.inf if decreasing else 0.0
    elif not act.any():
      out[i] = 0.0 if decreasing else np.inf
    else:
      k = int(np.argmax(act != act[0]))  # first change in scan order
      lo[i], hi[i], todo[i] = np.log(grid[k - 1]), np.log(grid[k]), True
  first_active = counts[0] >= np.arange(1, n_modes + 1)  # activity at the scan's low end
  for _ in range(iters if todo.any() else 0):
    mid = 0.5 * (lo + hi)
    c = _active_counts(model, moments, hyper, name, np.exp(mid))[latent]
    same = (c >= np.arange(1, n_modes + 1)) == first_active
    lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
  out = np.where(todo, np.exp(0.5 * (lo + hi)), out)
  return out, direction


def critical_values(model, moments, hyper, name: str, *, latent: Optional[str] = None,
                    method: str = "auto") -> dict:
  """Per-mode critical value of hyperparameter ``name``, others held fixed.

  Args:
    model: a :class:`~linvae_jax.LinearModel`.
    moments: data :class:`~linvae_jax.Moments`.
    hyper: a complete hyperparameter mapping (scalars or arrays).
    name: the hyperparameter to vary (``beta``, ``eta_dec``, ``beta2``, ...).
    latent: one latent (default: all of ``model.latents``).
    method: ``"closed_form"`` (``Optimum.thresholds``; ``ValueError`` if the
      model does not state it), ``"root_finding"`` (scan + bisection on the
      active count), or ``"auto"`` (closed form when available).

  Returns:
    dict latent -> ``{"values": (n_modes,) float64 array, "direction":
    "collapse_above" | "collapse_below", "source": "closed_form" |
    "root_finding"}``. With ``collapse_above``, sorted mode i is active iff
    ``hyper[name] < values[i]``; ``inf`` means it never collapses.

  >>> import numpy as np, linvae_jax as lv
  >>> m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  >>> model = lv.make_model("vae", latent_dim=2)
  >>> h = {"beta": 1.0, "eta_enc": 1.0, "eta_dec": 1.0}
  >>> critical_values(model, m, h, "beta")["z"]["values"].round(6).tolist()
  [4.0, 1.0]
  """
  if method not in ("auto", "closed_form", "root_finding"):
    raise ValueError(f"method must be 'auto', 'closed_form' or 'root_finding', got {method!r}.")
  if name not in model.hyper_names:
    raise ValueError(f"{name!r} is not a hyperparameter of {model.label()}; "
                     f"choose one of {list(model.hyper_names)}.")
  lats = model.latents if latent is None else (latent,)
  for lat in lats:
    if lat not in model.latents:
      raise ValueError(f"unknown latent {lat!r}; {model.label()} has {list(model.latents)}.")
  hyper = as_hyper(hyper, moments.dtype)
  model.check(moments, hyper)
  opt = model.optimum(moments, hyper)
  out = {}
  for lat in lats:
    key = closed_form_key(model, name, lat, opt.thresholds)
    if method == "closed_form" and key is None:
      raise ValueError(f"{model.label()} states no closed-form critical {name!r} for latent "
                       f"{lat!r}; use method='root_finding'.")
    if key is not None and method != "root_finding":
      vals = np.asarray(opt.thresholds[key], np.float64)
      out[lat] = {"values": vals, "direction": "collapse_above", "source": "closed_form"}
    else:
      vals, direction = _root_find(model, moments, hyper, name, lat)
      out[lat] = {"values": vals, "direction": direction, "source": "root_finding"}
  return out


def jacobians(model, moments, hyper, wrt: Optional[Sequence[str]] = None) -> dict:
  """Derivatives of the optimal spectra and L* w.r.t. hyperparameters (autodiff).

  Args:
    model: a :class:`~linvae_jax.LinearModel`.
    moments: data :class:`~linvae_jax.Moments` (float64 recommended).
    hyper: complete hyperparameter mapping.
    wrt: hyperparameter names to differentiate by (default: all).

  Returns:
    dict output -> dict hyperparameter -> array: for every key of
    ``Optimum.spectra`` (shape ``(n_modes,) + shape(hyper[h])``) and
    ``"loss"`` (shape ``shape(hyper[h])``). Sorted-spectrum derivatives are
    those of the sorted values (well defined away from ties).

  >>> import numpy as np, linvae_jax as lv
  >>> m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  >>> model = lv.make_model("vae", latent_dim=2)
  >>> j = jacobians(model, m, {"beta": 0.5, "eta_enc": 1.0, "eta_dec": 1.0}, ["beta"])
  >>> round(float(j["omega"]["beta"][0]), 12)  # d sqrt(4 - beta)/d beta = -1/(2 sqrt(3.5))
  -0.267261241912
  """
  hyper = as_hyper(hyper, moments.dtype)
  model.check(moments, hyper)
  wrt = tuple(model.hyper_names if wrt is None else wrt)
  bad = [w for w in wrt if w not in hyper]
  if bad:
    raise ValueError(f"cannot differentiate by {bad}: not in hyper ({sorted(hyper)}).")

  def f(sub):
    opt = model.optimum(moments, {**hyper, **sub})
    return {**opt.spectra, "loss": opt.loss}

  jac = jax.jacfwd(f)({k: hyper[k] for k in wrt})
  return jax.tree.map(np.asarray, jac)


def theory_table(model, moments, hyper, names: Optional[Sequence[str]] = None,
                 *, method: str = "auto") -> pd.DataFrame:
  """One row per (latent, sorted mode): optimal spectra, activity, critical values.

  Args:
    model, moments, hyper: as :func:`critical_values`.
    names: hyperparameters whose critical values to add (default: the
      ``beta``-like and ``eta_dec`` hyperparameters the model has).
    method: passed to :func:`critical_values`.

  Returns:
    DataFrame (see :func:`mode_table`).
  """
  hyper = as_hyper(hyper, moments.dtype)
  opt = model.optimum(moments, hyper)
  if names is None:
    names = [n for n in ("beta", "beta1", "beta2", "eta_dec") if n in model.hyper_names]
  crit = {n: critical_values(model, moments, hyper, n, method=method) for n in names}
  return mode_table(model, opt, crit)


def mode_table(model, opt, crit: Mapping) -> pd.DataFrame:
  """Per-mode table of an :class:`~linvae_jax.Optimum` and critical values.

  Args:
    model: the model (to map spectra to latents).
    opt: its optimum.
    crit: name -> latent -> :func:`critical_values` entry.

  Returns:
    DataFrame with ``latent``, ``mode`` (1-based), ``active``, each spectrum
    of that latent and ``crit_<name>`` (``crit_<name> (below)`` when the
    mode collapses *below* the value). Spectra are stored sorted
    non-increasing; standard deviations (``*_std``) are listed ascending
    here, so row i is the std of mode i (larger modes get smaller stds).
    A latent with more modes than a spectrum has entries (the MHVAE's z2
    when d2 > d1: omega has rank <= min(d1, d2)) lists 0 for the rest.
  """
  rows = []
  for lat in model.latents:
    act = np.asarray(opt.active[lat])
    for i in range(act.size):
      row = {"latent": lat, "mode": i + 1, "active": bool(act[i])}
      for key, spec in opt.spectra.items():
        s = np.asarray(spec)
        if key.endswith("_std"):
          s = np.sort(s)
        if _spectrum_latent(model, key) == lat and s.ndim == 1:
          # a mode past the spectrum's length (MHVAE d2 > d1: rank <= min) is exactly 0
          row[key] = float(s[i]) if i < s.size else 0.0
      for n, per in crit.items():
        if lat in per and i < np.size(per[lat]["values"]):
          suffix = "" if per[lat]["direction"] == "collapse_above" else " (below)"
          row[f"crit_{n}{suffix}"] = float(per[lat]["values"][i])
      rows.append(row)
  return pd.DataFrame(rows)


def _spectrum_latent(model, key: str) -> str:
  """Which latent a spectrum describes (MHVAE: lambda is z1, omega/sigma2 z2)."""
  if len(model.latents) == 1:
    return model.latents[0]
  return "z1" if key == "lambda" else model.latents[-1]
