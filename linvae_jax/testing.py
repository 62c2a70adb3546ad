"""pytest helpers: assert that trained linear VAEs match their closed forms.

Use them in your own test suites (see ``docs/testing.md``)::

    from linvae_jax import testing
    testing.assert_at_optimum(model, params, moments, hyper)
    testing.assert_grid_matches_theory(report_or_grid_result)

Every failure message names the model, the cell or spectrum, the mode and
the learned and predicted numbers, and the tolerance that was exceeded.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from linvae_jax._src.model import as_hyper
from linvae_jax._src.verify import (Tolerances, VerifyReport, check_cells,
                                    resolve_tolerances)

__all__ = ["assert_at_optimum", "assert_grid_matches_theory", "assert_collapse_pattern",
           "Tolerances"]

# |learned - predicted| per mode, and relative loss gap, by dtype
_AT_OPTIMUM_ATOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 2e-3}
_AT_OPTIMUM_GAP = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-5}


def assert_at_optimum(model, params, moments, hyper: Mapping, *, atol: Optional[float] = None,
                      rel_gap: Optional[float] = None) -> None:
  """Assert that ``params`` sit at the closed-form optimum of ``model``.

  Compares every spectrum of ``model.spectrum(params)`` with
  ``model.optimum(...).spectra`` mode by mode (both sorted) and the loss with
  L*.

  Args:
    model: a :class:`~linvae_jax.LinearModel`.
    params: learned parameters (one cell).
    moments: the data :class:`~linvae_jax.Moments`.
    hyper: hyperparameters.
    atol: largest allowed |learned - predicted| per mode (default 1e-6 in
      float64, 2e-3 in float32).
    rel_gap: largest allowed |L - L*| / max(1, |L*|) (default 1e-9 in
      float64, 1e-5 in float32).

  Raises:
    AssertionError: naming the spectrum, the mode and both values.

  >>> import numpy as np, linvae_jax as lv
  >>> m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  >>> model = lv.make_model("vae", latent_dim=2)
  >>> h = {"beta": 0.5, "eta_enc": 1.0, "eta_dec": 1.0}
  >>> assert_at_optimum(model, model.optimum(m, lv.as_hyper(h)).params, m, h)
  """
  dt = np.dtype(moments.dtype)
  atol = _AT_OPTIMUM_ATOL.get(dt, 2e-3) if atol is None else atol
  rel_gap = _AT_OPTIMUM_GAP.get(dt, 1e-5) if rel_gap is None else rel_gap
  h = as_hyper(hyper, moments.dtype)
  opt = model.optimum(moments, h)
  learned = model.spectrum(params, moments, h)
  hv = ", ".join(f"{k}={np.asarray(v).tolist()}" for k, v in h.items())
  problems = []
  for key in sorted(opt.spectra):
    lv, pv = np.asarray(learned[key], np.float64), np.asarray(opt.spectra[key], np.float64)
    n = max(lv.size, pv.size)
    lv, pv = np.pad(lv, (0, n - lv.size)), np.pad(pv, (0, n - pv.size))
    err = np.abs(lv - pv)
    for j in np.flatnonzero(~(err <= atol)):
      problems.append(f"spectrum {key!r} mode {j + 1}: learned {lv[j]:.8g} vs predicted "
                      f"{pv[j]:.8g} (|diff| {err[j]:.3g} > atol {atol:.3g})")
  loss = float(model.loss(params, moments, h))
  lstar = float(opt.loss)
  rel = (loss - lstar) / max(1.0, abs(lstar))
  if not abs(rel) <= rel_gap:
    problems.append(f"loss {loss:.12g} vs L* {lstar:.12g} (relative gap {rel:.3g} > "
                    f"rel_gap {rel_gap:.3g})")
  if problems:
    raise AssertionError(f"{model.label()} at [{hv}] is not at the closed-form optimum:\n  "
                         + "\n  ".join(problems))


def assert_grid_matches_theory(result, *, tolerances=None, max_lines: int = 10) -> None:
  """Assert that every cell of a verified grid passed.

  Args:
    result: a :class:`~linvae_jax._src.verify.VerifyReport` (its stored
      verdicts are used, or re-judged when ``tolerances`` is given) or an
      engine ``GridResult`` (judged with ``tolerances`` or the defaults for
      its dtype and objective).
    tolerances: :class:`~linvae_jax._src.verify.Tolerances`, a dict of
      overrides, or ``None``.
    max_lines: failed cells listed in the message.

  Raises:
    AssertionError: listing each failed cell's coordinates and reason
      (spectrum, worst mode, learned vs predicted, tolerance).
  """
  if isinstance(result, VerifyReport):
    table, label = result.table, result.summary.get("name", result.summary.get("model", ""))
    axes = result.summary.get("axes", [])
    if tolerances is not None:
      s = result.summary
      tol = resolve_tolerances(tolerances, s["dtype"], s["objective"])
      table = check_cells(table, tol)
  elif hasattr(result, "table") and hasattr(result, "spec"):
    spec = result.spec
    tol = resolve_tolerances(tolerances, spec.get("dtype", "float64"),
                             spec.get("objective", "analytic"))
    table = check_cells(result.table, tol)
    label = result.info.get("model", "grid")
    axes = [c for c in ("beta", "beta1", "beta2", "eta_enc", "eta_dec", "sigma", "sigma1",
                        "sigma2", "lr", "seed") if c in table.columns
            and table[c].astype(str).nunique() > 1]
  else:
    raise TypeError(f"result must be a VerifyReport or a GridResult, got {type(result).__name__}.")
  bad = table[~table["passed"]]
  if len(bad) == 0:
    return
  lines = []
  for i, r in bad.head(max_lines).iterrows():
    coords = ", ".join(f"{a}={r[a]:.4g}" if isinstance(r[a], (float, np.floating)) else f"{a}={r[a]}"
                       for a in axes if a in r)
    lines.append(f"cell {i} [{coords}]: {r['reason']}")
  more = f"\n  ... and {len(bad) - max_lines} more" if len(bad) > max_lines else ""
  raise AssertionError(f"{label}: {len(bad)} of {len(table)} cells do not match the closed form:"
                       "\n  " + "\n  ".join(lines) + more)


def assert_collapse_pattern(model, moments, hyper: Mapping, expected: Mapping) -> None:
  """Assert the closed form's number of active modes per latent.

  Args:
    model, moments, hyper: as :func:`assert_at_optimum`.
    expected: latent -> expected number of active modes, e.g. ``{"z": 2}``.

  Raises:
    AssertionError: naming the latent, the expected and the predicted count
      and the per-mode critical values when the model states them.

  >>> import numpy as np, linvae_jax as lv
  >>> m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  >>> model = lv.make_model("vae", latent_dim=2)
  >>> assert_collapse_pattern(model, m, {"beta": 2.0, "eta_enc": 1.0, "eta_dec": 1.0}, {"z": 1})
  """
  h = as_hyper(hyper, moments.dtype)
  opt = model.optimum(moments, h)
  bad = []
  for lat, n in expected.items():
    if lat not in opt.active:
      raise ValueError(f"unknown latent {lat!r}; {model.label()} has {sorted(opt.active)}.")
    got = int(np.sum(np.asarray(opt.active[lat])))
    if got != int(n):
      thr = {k: np.round(np.asarray(v, np.float64), 6).tolist() for k, v in opt.thresholds.items()}
      bad.append(f"latent {lat}: expected {n} active modes, the closed form has {got} "
                 f"(thresholds {thr})")
  if bad:
    raise AssertionError(f"{model.label()}: " + "; ".join(bad))

