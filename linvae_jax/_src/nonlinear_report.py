r"""The report directory of a nonlinear grid against the linear theory.

:func:`write` lays out one run of :func:`nonlinear_grid.run`::

    DIR/results.csv        one row per cell: hyperparameters, AU, KL, IW log-lik,
                           (eps, delta)-collapse %, the theory's predicted active
                           count and KL, status and ``diverged``
    DIR/summary.json       settings, counts, the measured and predicted beta of
                           first and complete collapse (``"kind": "nonlinear"``)
    DIR/arrays.npz         KL per dimension, the (eps, delta) curves, dense theory
    DIR/summary.md         the summary with the mean +- s.e. table over seeds
    DIR/au_kl_vs_beta.png  AU and KL against beta, theory drawn on the same axes
    DIR/eps_delta.png      the (eps, delta)-collapse curves against eps

:func:`regenerate` (``linvae report DIR``) rebuilds the figures and
``summary.md`` from those files alone. Means and standard errors are over
seeds and leave out diverged cells; the first collapse is the first grid beta
where AU < d, the complete collapse the first where AU = 0 (per seed, cells
sorted by beta), each against the theory's beta_d and beta_1.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import pandas as pd

BETA_AXES = ("beta", "beta2", "beta1")
FIRST = ["au", "kl", "iw_ll", "iw_ll_se", "collapse_pct", "n_collapsed", "pred_active",
         "theory_kl", "theory_collapse_pct", "dang_au", "mi", "cov_rank", "elbo", "loss"]
STAT_COLS = ("au", "kl", "iw_ll", "collapse_pct")
FIGURES = ("au_kl_vs_beta", "eps_delta")


@dataclasses.dataclass
class NonlinearReport:
  """Table (one row per cell), summary dict, arrays (name -> ndarray)."""
  table: pd.DataFrame
  summary: dict
  arrays: dict
  figures: dict = dataclasses.field(default_factory=dict)
  out_dir: Optional[str] = None

  @property
  def n_diverged(self) -> int:
    return int(self.table["diverged"].sum())


# ------------------------------------------------------------------ tables --

def _swept(cells: dict) -> list:
  return [k for k, v in cells.items()
          if len({tuple(np.ravel(r)) for r in np.asarray(v).reshape(len(v), -1)}) > 1]


def layout(axes: list) -> tuple:
  """``(x_name, group_axes)``: the beta-like (else first) swept axis and the other swept
  axes (each combination is one curve); seeds are averaged over."""
  ax = [a for a in axes if a != "seed"]
  x = next((a for a in BETA_AXES if a in ax), ax[0] if ax else "beta")
  return x, [a for a in ax if a != x]


def groups(table: pd.DataFrame, group_axes: list) -> list:
  """``[(label, row mask)]``, one per combination of ``group_axes`` (in table order)."""
  if not group_axes:
    return [("", np.ones(len(table), bool))]
  keys = table[group_axes].astype(str).agg(", ".join, axis=1)
  out = []
  for k in dict.fromkeys(keys):
    m = (keys == k).to_numpy()
    r = table[m].iloc[0]
    out.append((", ".join(f"{a}={_fmt(r[a])}" for a in group_axes), m))
  return out


def _fmt(v) -> str:
  return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def seed_stats(rep) -> pd.DataFrame:
  """Per curve group and x value: mean and s.e. over seeds of AU, KL, IW log-lik and
  collapse % (diverged cells left out), the theory's values, cell counts."""
  t, s = rep.table, rep.summary
  x = s["x_name"]
  rows = []
  for gi, (label, m) in enumerate(groups(t, s["group_axes"])):
    for xv, sub in t[m].groupby(x, sort=True):
      ok = sub[~sub["diverged"]]
      r = {"group": gi, "group_label": label, x: xv, "n": len(ok), "n_diverged": len(sub) - len(ok)}
      for c in STAT_COLS:
        v = ok[c].to_numpy(np.float64)
        r[c] = float(np.mean(v)) if v.size else np.nan
        r[f"{c}_se"] = float(np.std(v, ddof=1) / np.sqrt(v.size)) if v.size > 1 else np.nan
      for c in ("pred_active", "theory_kl"):
        if c in sub:
          r[c] = float(sub[c].iloc[0])
      rows.append(r)
  return pd.DataFrame(rows)


def _first_hit(xs, hit):
  i = int(np.argmax(hit)) if hit.any() else -1
  return (float(xs[i]) if i >= 0 else np.nan), (float(xs[i - 1]) if i > 0 else np.nan)


def collapse_points(table, x, group_axes, d, theory_thr=None) -> list:
  """Per curve group: the measured x of first (AU < d) and complete (AU = 0) collapse,
  per seed and their mean, the grid value before it, the theory's and the ratio."""
  out = []
  for label, m in groups(table, group_axes):
    t = table[m & ~table["diverged"].to_numpy(bool)].sort_values(x)
    entry = {"group": label}
    for key, test, mode in (("first", lambda a: a < d, d - 1), ("complete", lambda a: a == 0, 0)):
      at, lo = [], []
      for _, ts in t.groupby("seed"):
        a, b = _first_hit(ts[x].to_numpy(np.float64), test(ts["au"].to_numpy()))
        at.append(a)
        lo.append(b)
      at = np.asarray(at, np.float64)
      mean = float(np.mean(at[np.isfinite(at)])) if np.isfinite(at).any() else np.nan
      th = np.nan
      if theory_thr is not None and np.any(m):
        th = float(np.asarray(theory_thr)[np.flatnonzero(m)[0]][mode])
      entry[key] = {"per_seed": at.tolist(), "before": lo, "measured": mean, "theory": th,
                    "ratio": mean / th if np.isfinite(mean) and np.isfinite(th) and th > 0
                    else np.nan}
    out.append(entry)
  return out


def build(res, model, cells, *, theory, no_theory_reason, eps, eps_curves, name, data,
          n_train, n_eval, steps, batch_size) -> NonlinearReport:
  """The report of a finished grid (``res``: the :class:`~linvae_jax.GridResult`)."""
  d = int(model.latent_dim)
  t = res.table.copy()
  t["diverged"] = (t["status"] == "diverged").to_numpy()
  t["collapse_pct"] = 100.0 * t["n_collapsed"].to_numpy(np.float64) / d
  if theory is not None:
    t["pred_active"] = theory["active"]
    t["theory_kl"] = theory["kl"]
    t["theory_collapse_pct"] = 100.0 * (d - theory["active"]) / d
  coords = [c for c in cells if c in t.columns]
  first = coords + [c for c in FIRST if c in t.columns]
  t = t[first + [c for c in t.columns if c not in first]]
  axes = _swept(cells)
  x, gaxes = layout(axes)
  arrays = {"eps": np.asarray(eps, np.float64), "eps_curves": np.asarray(eps_curves)}
  for k in ("kl_per_dim", "collapse_frac", "mean_std", "mean_var"):
    if k in res.arrays:
      arrays[k] = np.asarray(res.arrays[k])
  if theory is not None:
    arrays["beta_thresholds"] = theory["beta_thresholds"]
  summary = {
      "kind": "nonlinear", "name": name, "model": model.label(), "model_repr": repr(model),
      "data": data, "n_train": n_train, "n_eval": n_eval, "steps": int(steps),
      "batch_size": int(batch_size), "objective": "sampled", "latent_dim": d,
      "cells": int(len(t)), "diverged": int(t["diverged"].sum()),
      "status_counts": {str(k): int(v) for k, v in t["status"].value_counts().items()},
      "axes": axes, "x_name": x, "group_axes": gaxes,
      "eval_eps": float(model.eval_eps), "eval_delta": float(model.eval_delta),
      "au_threshold": float(model.au_threshold), "iw_samples": int(model.iw_samples),
      "theory_model": theory["model"] if theory is not None else None,
      "no_theory_reason": no_theory_reason if theory is None else "",
  }
  if x == "beta" and "au" in t:
    summary["collapse"] = collapse_points(t, x, gaxes, d,
                                          None if theory is None else theory["beta_thresholds"])
  return NonlinearReport(table=t, summary=summary, arrays=arrays)


def dense_theory(lin, moments, rep, n: int = 240) -> dict:
  """The theory's active count and KL on a dense x axis, one curve per group."""
  from linvae_jax._src import linear_overlay
  from linvae_jax._src.figures import is_log_sweep
  t, s = rep.table, rep.summary
  x = s["x_name"]
  if x not in lin.hyper_names:
    return {}
  xv = t[x].to_numpy(np.float64)
  lo, hi = xv.min(), xv.max()
  if lo == hi:
    lo, hi = lo / 2.0, hi * 2.0
  dense = np.geomspace(lo, hi, n) if is_log_sweep(xv) or xv.min() == xv.max() \
      else np.linspace(lo, hi, n)
  act, kl = [], []
  for _, m in groups(t, s["group_axes"]):
    r = t[m].iloc[0]
    hyper = {k: np.full(n, float(r[k])) for k in lin.hyper_names if k != x}
    hyper[x] = dense
    th = linear_overlay.theory_per_cell(lin, None, hyper, moments=moments)
    act.append(th["active"])
    kl.append(th["kl"])
  return {"theory_x": dense, "theory_active": np.asarray(act), "theory_kl": np.asarray(kl)}


# ------------------------------------------------------------------ files --

def _json_default(o):
  if isinstance(o, np.integer):
    return int(o)
  if isinstance(o, np.floating):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


def write(rep: NonlinearReport, out_dir, *, figures: bool = True) -> dict:
  """Write the report directory (module docstring); returns name -> path."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"results": os.path.join(out_dir, "results.csv"),
           "arrays": os.path.join(out_dir, "arrays.npz"),
           "summary_json": os.path.join(out_dir, "summary.json")}
  rep.table.to_csv(paths["results"], index_label="cell")
  np.savez(paths["arrays"], **rep.arrays)
  with open(paths["summary_json"], "w") as f:
    json.dump(rep.summary, f, indent=1, default=_json_default)
  rep.out_dir = str(out_dir)
  paths.update(_render(rep, out_dir, figures))
  return paths


def _render(rep, out_dir, figures: bool) -> dict:
  paths = {}
  if figures:
    from linvae_jax._src import nonlinear_figures
    rep.figures = nonlinear_figures.render(rep, out_dir)
    paths.update(rep.figures)
  paths["summary_md"] = os.path.join(out_dir, "summary.md")
  with open(paths["summary_md"], "w") as f:
    f.write(summary_markdown(rep))
  return paths


def is_nonlinear_dir(out_dir) -> bool:
  """Whether ``out_dir`` holds a report written by :func:`write`."""
  p = os.path.join(out_dir, "summary.json")
  if not os.path.exists(p):
    return False
  try:
    with open(p) as f:
      return json.load(f).get("kind") == "nonlinear"
  except (OSError, ValueError, AttributeError):
    return False


def load(out_dir) -> NonlinearReport:
  """Read a directory written by :func:`write`."""
  if not is_nonlinear_dir(out_dir):
    raise ValueError(f"{out_dir!r} holds no nonlinear grid report (summary.json).")
  table = pd.read_csv(os.path.join(out_dir, "results.csv"), index_col="cell")
  table["diverged"] = table["diverged"].astype(bool)
  with open(os.path.join(out_dir, "summary.json")) as f:
    summary = json.load(f)
  with np.load(os.path.join(out_dir, "arrays.npz")) as z:
    arrays = {k: z[k] for k in z.files}
  return NonlinearReport(table=table, summary=summary, arrays=arrays, out_dir=str(out_dir))


def regenerate(out_dir) -> dict:
  """Rebuild the figures and ``summary.md`` from the saved files (``linvae report``)."""
  rep = load(out_dir)
  return _render(rep, out_dir, True)


# --------------------------------------------------------------- summaries --

def collapse_lines(rep) -> list:
  """One line per curve group and collapse kind: measured vs theory."""
  s = rep.summary
  d = s["latent_dim"]
  out = []
  for c in s.get("collapse", []):
    pre = f"{c['group']}: " if c["group"] else ""
    if not c["first"]["per_seed"]:
      out.append(f"{pre}every cell diverged")
      continue
    for key, what in (("first", f"first collapse (AU < {d})"), ("complete", "complete collapse (AU = 0)")):
      e = c[key]
      seeds = ", ".join("-" if not np.isfinite(v) else f"{v:.3g}" for v in e["per_seed"])
      meas = "not reached" if not np.isfinite(e["measured"]) else f"{e['measured']:.3g}"
      th = "" if not np.isfinite(e["theory"]) else f", theory {e['theory']:.3g}"
      ratio = "" if not np.isfinite(e["ratio"]) else f" (ratio {e['ratio']:.2f})"
      out.append(f"{pre}beta of {what}: measured {meas} (per seed {seeds}){th}{ratio}")
  return out


def _md_table(df) -> str:
  lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
  for _, r in df.iterrows():
    lines.append("| " + " | ".join(_fmt(v) for v in r) + " |")
  return "\n".join(lines)


def summary_markdown(rep) -> str:
  """The ``summary.md`` of a nonlinear grid report."""
  s = rep.summary
  x = s["x_name"]
  out = [f"# {s['name']} on {s['data']}: {s['cells']} cells, {s['diverged']} diverged", "",
         f"* model: `{s['model_repr']}`",
         f"* data: {s['data']}: {s['n_train']} training samples, {s['n_eval']} held out "
         "(every metric is on the held-out samples)",
         f"* training: sampled ELBO, Adam, {s['steps']} steps per cell, batch {s['batch_size']}",
         f"* metrics: AU = #{{k: Var_x mu_k > {s['au_threshold']:g}}}; collapse % = "
         f"(eps, delta)-collapsed coordinates at eps = {s['eval_eps']:g}, "
         f"delta = {s['eval_delta']:g}; IW log-lik with K = {s['iw_samples']}",
         ("* theory: the linear closed form " f"`{s['theory_model']}` on the centred moments of "
          "the training samples: predicted active modes and KL" if s.get("theory_model")
          else f"* theory: none ({s.get('no_theory_reason', '')})"), ""]
  lines = collapse_lines(rep)
  if lines:
    out += ["## Collapse, measured vs linear theory", ""] + [f"* {ln}" for ln in lines] + [""]
  st = seed_stats(rep)
  if len(st):
    cols = ["group_label", x, "n", "n_diverged"]
    for c in ("au", "pred_active", "kl", "theory_kl", "iw_ll", "collapse_pct"):
      if c in st:
        cols.append(c)
        if f"{c}_se" in st:
          cols.append(f"{c}_se")
    show = st[[c for c in cols if c in st]]
    if not s["group_axes"]:
      show = show.drop(columns="group_label")
    out += [f"## Mean and s.e. over seeds per {x} (diverged cells left out)", "",
            _md_table(show), ""]
  bad = rep.table[rep.table["diverged"]]
  if len(bad):
    out += ["## Diverged cells", ""] + [
        "* cell {}: {}".format(i, ", ".join(f"{a}={_fmt(r[a])}" for a in
                                            dict.fromkeys(s["axes"] + ["lr"]) if a in r))
        for i, r in bad.iterrows()] + [""]
  if rep.figures:
    out += ["## Figures", ""]
    for n, p in rep.figures.items():
      out += [f"### {n}", "", f"![{n}]({os.path.basename(p)})", ""]
  return "\n".join(out)
