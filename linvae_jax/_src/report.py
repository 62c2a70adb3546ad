r"""Report directories: results table, summary, figures, and their regeneration.

:func:`write` lays out one verification::

    DIR/results.csv         one row per cell (+ results.parquet with pyarrow)
    DIR/summary.json        counts, worst numbers, tolerances, settings
    DIR/arrays.npz          history, per-cell spectra, theory curves
    DIR/summary.md          human summary linking the figures
    DIR/dma_vs_step.png     D_MA against step (one curve per cell, or quantiles)
    DIR/phase_diagram.png   predicted vs learned active modes over the two swept
                            axes, with the closed-form boundaries
    DIR/spectra.png         learned spectra (markers) against the x axis, with
                            the theory curves
    DIR/scatter.png         learned vs predicted, every mode of every cell

:func:`write_suite` adds an index (``summary.md``, ``summary.json``,
``results.csv`` of all problems) above one such directory per problem.
:func:`regenerate` (``linvae report DIR``) rebuilds figures and summaries
from the saved files alone, for either layout.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from linvae_jax._src.figures import (FAIL_COLOR, MAX_LEGEND_CURVES, MAX_TEXT_CELLS, _plt,  # noqa: F401
                                     is_log_sweep, make_figures, render_figures)
from linvae_jax._src.results import VerifyReport, cell_label

FIGURES = ("dma_vs_step", "phase_diagram", "spectra", "scatter")


def _json_default(o):
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


# ---------------------------------------------------------------- writing --

def write(rep, out_dir, *, figures: bool = True) -> dict:
  """Write a :class:`~linvae_jax._src.results.VerifyReport` to ``out_dir``.

  Args:
    rep: the report.
    out_dir: directory (created).
    figures: also render the PNG figures.

  Returns:
    dict name -> path of every file written.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {"results": os.path.join(out_dir, "results.csv")}
  table = rep.table.copy()
  table.to_csv(paths["results"], index_label="cell")
  try:
    import pyarrow  # noqa: F401
    t = table.copy()
    for c in t.columns:  # tuples (diagonal sigma) are not Parquet scalars
      if t[c].map(lambda v: isinstance(v, tuple)).any():
        t[c] = t[c].map(str)
    paths["parquet"] = os.path.join(out_dir, "results.parquet")
    t.to_parquet(paths["parquet"])
  except ImportError:
    pass
  arrays = {f"history/{k}": np.asarray(v) for k, v in rep.history.items()}
  arrays.update({f"spectra/{k}": np.asarray(v) for k, v in rep.spectra.items()})
  meta = {}
  for k, v in rep.theory.items():
    if isinstance(v, str):
      meta[k] = v
    else:
      arrays[f"theory/{k}"] = np.asarray(v)
  paths["arrays"] = os.path.join(out_dir, "arrays.npz")
  np.savez(paths["arrays"], **arrays)
  summary = dict(rep.summary, theory_meta=meta)
  paths["summary_json"] = os.path.join(out_dir, "summary.json")
  with open(paths["summary_json"], "w") as f:
    json.dump(summary, f, indent=1, default=_json_default)
  rep.out_dir = str(out_dir)
  if figures:
    rep.figures = render_figures(rep, out_dir)
    paths.update(rep.figures)
  paths["summary_md"] = os.path.join(out_dir, "summary.md")
  with open(paths["summary_md"], "w") as f:
    f.write(summary_markdown(rep))
  return paths


def load(out_dir):
  """Read a report directory written by :func:`write` back into a ``VerifyReport``."""
  res = os.path.join(out_dir, "results.csv")
  if not os.path.exists(res):
    raise ValueError(f"{out_dir!r} is not a linvae report directory (no results.csv).")
  table = pd.read_csv(res, index_col="cell", keep_default_na=False, na_values=["nan", "NaN"])
  # an all-passed table has an empty reason column, which CSV reads as floats
  table["reason"] = table["reason"].astype(object).where(table["reason"].notna(), "").astype(str)
  table["passed"] = table["passed"].astype(bool)
  with open(os.path.join(out_dir, "summary.json")) as f:
    summary = json.load(f)
  meta = summary.pop("theory_meta", {})
  history, spectra, theory = {}, {}, dict(meta)
  apath = os.path.join(out_dir, "arrays.npz")
  if os.path.exists(apath):
    with np.load(apath) as z:
      for k in z.files:
        group, name = k.split("/", 1)
        {"history": history, "spectra": spectra, "theory": theory}[group][name] = z[k]
  return VerifyReport(table=table, summary=summary, history=history, spectra=spectra,
                      theory=theory, out_dir=str(out_dir))


def write_suite(reports: dict, out_dir) -> dict:
  """Index of several problem reports under ``out_dir`` (each in ``out_dir/<name>``).

  Writes ``results.csv`` (all cells, with a ``problem`` column),
  ``summary.json`` (per problem and overall) and ``summary.md``.
  """
  os.makedirs(out_dir, exist_ok=True)
  frames = []
  for name, rep in reports.items():
    t = rep.table.copy()
    t.insert(0, "problem", name)
    t.insert(1, "cell", np.arange(len(t)))
    frames.append(t[[c for c in t.columns if not c.startswith(("collapsed", "pred_collapsed",
                                                                 "au_", "pred_au", "kl_",
                                                                 "pred_kl"))]])
  allt = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
  paths = {"results": os.path.join(out_dir, "results.csv")}
  allt.to_csv(paths["results"], index=False)
  summ = {"ok": all(r.passed for r in reports.values()),
          "problems": {n: r.summary for n, r in reports.items()}}
  paths["summary_json"] = os.path.join(out_dir, "summary.json")
  with open(paths["summary_json"], "w") as f:
    json.dump(summ, f, indent=1, default=_json_default)
  paths["summary_md"] = os.path.join(out_dir, "summary.md")
  with open(paths["summary_md"], "w") as f:
    f.write(suite_markdown(reports))
  return paths


def regenerate(out_dir) -> dict:
  """Rebuild figures and summaries of a report directory (``linvae report DIR``).

  Works on a single report (``results.csv`` + ``summary.json``) and on a
  suite (sub-directories that are reports).

  Returns:
    dict name -> path of every file written.
  """
  if not os.path.isdir(out_dir):
    raise ValueError(f"report directory {out_dir!r} does not exist.")
  if os.path.exists(os.path.join(out_dir, "arrays.npz")):
    rep = load(out_dir)
    figs = render_figures(rep, out_dir)
    rep.figures = figs
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
      f.write(summary_markdown(rep))
    return {**figs, "summary_md": os.path.join(out_dir, "summary.md")}
  subs = sorted(d for d in os.listdir(out_dir)
                if os.path.exists(os.path.join(out_dir, d, "arrays.npz")))
  if not subs:
    raise ValueError(f"{out_dir!r} holds no linvae report (no arrays.npz here or one level down).")
  reps, paths = {}, {}
  for d in subs:
    sub = os.path.join(out_dir, d)
    paths.update({f"{d}/{k}": v for k, v in regenerate(sub).items()})
    reps[d] = load(sub)
    reps[d].figures = {n: os.path.join(sub, f"{n}.png") for n in FIGURES
                       if os.path.exists(os.path.join(sub, f"{n}.png"))}
  paths.update(write_suite(reps, out_dir))
  return paths


# --------------------------------------------------------------- markdown --

def _md_table(df: pd.DataFrame) -> str:
  cols = list(df.columns)
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for _, r in df.iterrows():
    cells = []
    for c in cols:
      v = r[c]
      cells.append(f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def summary_markdown(rep) -> str:
  """The ``summary.md`` of one report."""
  s = rep.summary
  verdict = "PASS" if rep.passed else "FAIL"
  tol = s["tolerances"]
  out = [f"# {s['name']}: {verdict} ({s['passed']}/{s['cells']} cells)", ""]
  if s.get("description"):
    out += [s["description"], ""]
  out += [f"* model: `{s['model_repr']}`", f"* data: {s['data']} ({s['dtype']})",
          f"* training: {s['objective']}, {s['steps']} steps per cell",
          f"* tolerances: D_MA <= {tol['dma']:.3g}, |L - L*|/max(1, |L*|) <= {tol['rel_gap']:.3g}, "
          f"active-count difference <= {tol['active']}",
          f"* worst D_MA: {s['max_dma']:.3g} "
          + ", ".join(f"{k} {v:.3g}" for k, v in s["max_dma_by_spectrum"].items()),
          f"* worst relative loss gap: {s['max_rel_gap']:.3g}",
          f"* active-count mismatches: {s['active_mismatches']}", ""]
  cols = [a for a in s["axes"] if a in rep.table.columns]
  show = cols + [c for c in rep.table.columns if c.startswith(("dma_", "active_", "pred_active_"))]
  show += [c for c in rep.table.columns if c.startswith("learned_active_")]
  show += ["rel_gap", "status", "passed"]
  out += ["## Cells", "", _md_table(rep.table[[c for c in show if c in rep.table.columns]]), ""]
  fails = rep.failures()
  if len(fails):
    out += ["## Failures", ""]
    out += [f"* cell {i} ({cell_label(r, s['axes'])}): {r['reason']}"
            for i, r in fails.iterrows()]
    out.append("")
  if rep.figures:
    out += ["## Figures", ""]
    for n, p in rep.figures.items():
      rel = os.path.basename(p)
      out += [f"### {n}", "", f"![{n}]({rel})", ""]
  return "\n".join(out)


def suite_markdown(reports: dict) -> str:
  """The index ``summary.md`` over several problem reports."""
  ok = all(r.passed for r in reports.values())
  out = [f"# linvae verify: {'PASS' if ok else 'FAIL'}", "",
         "| problem | model | cells | passed | max D_MA | max rel gap | report |",
         "|---|---|---|---|---|---|---|"]
  for n, r in reports.items():
    s = r.summary
    out.append(f"| {n} | {s['model']} | {s['cells']} | {s['passed']} | {s['max_dma']:.2g} | "
               f"{s['max_rel_gap']:.2g} | [{n}]({n}/summary.md) |")
  out.append("")
  for n, r in reports.items():
    if not r.passed:
      out += [f"## {n} failures", ""] + [
          f"* cell {i} ({cell_label(x, r.summary['axes'])}): {x['reason']}"
          for i, x in r.failures().iterrows()] + [""]
  return "\n".join(out)
