"""The figures of a report directory, readable from 2 to 500 cells.

Ticks are thinned at grid values until no labels overlap, log sweeps get log
axes, colour bars are integers, legends are complete and failed cells are
red in every mode (``tests/test_figures.py`` renders them at 4, 50, 150 and
500 cells and checks the label bounding boxes).
"""
from __future__ import annotations

import os

import numpy as np

def _plt():
  import matplotlib
  matplotlib.use("Agg", force=True)  # headless: never open a window
  import matplotlib.pyplot as plt
  return plt


# ---------------------------------------------------------------- figures --

FAIL_COLOR = "#d62728"  # failed cells, in every figure and every mode
MAX_TEXT_CELLS = 12     # phase diagram: per-cell counts as text up to this many columns/rows
MAX_LEGEND_CURVES = 9   # spectra: one legend entry per curve family up to this many
# tab10 without its red (C3, the failure colour)
_CURVE_COLORS = ("C0", "C1", "C2", "C4", "C5", "C6", "C7", "C8", "C9")


def render_figures(rep, out_dir, make=None) -> dict:
  """Render a report's PNG figures (``make(rep, plt) -> name -> Figure``; default
  the four of a verification, :func:`make_figures`); returns name -> path."""
  plt = _plt()
  paths = {}
  for name, fig in (make or make_figures)(rep, plt).items():
    p = os.path.join(out_dir, f"{name}.png")
    fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    paths[name] = p
  return paths


def make_figures(rep, plt=None) -> dict:
  """name -> matplotlib Figure (not saved; the caller closes them)."""
  plt = plt or _plt()
  out = {}
  for name, fn in (("dma_vs_step", _fig_dma), ("phase_diagram", _fig_phase),
                   ("spectra", _fig_spectra), ("scatter", _fig_scatter)):
    fig = fn(rep, plt)
    if fig is not None:
      fig.canvas.draw()
      for ax in fig.axes:
        _declutter(fig, ax)
      out[name] = fig
  return out


def _title(rep) -> str:
  s = rep.summary
  return f"{s['name']} ({s['model']}): {s['passed']}/{s['cells']} passed"


def _failed(rep) -> np.ndarray:
  return ~rep.table["passed"].to_numpy(bool)


# -------------------------------------------------------------- tick helpers --

def is_log_sweep(vals) -> bool:
  """A sweep is drawn on a log axis when its values are positive and either
  span >= 10x or are spaced more evenly in log than in linear terms."""
  v = np.unique(np.asarray(vals, np.float64))
  if v.size < 2 or np.any(v <= 0):
    return False
  if v[-1] / v[0] >= 10:
    return True
  if v.size < 3:
    return False
  dl, dv = np.diff(np.log(v)), np.diff(v)
  return np.std(dl) / np.mean(dl) < np.std(dv) / np.mean(dv)


def _value_ticks(axis, vals, k: int = 6):
  """Major ticks at up to ``k`` of the grid values (first and last kept), no minor labels."""
  from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
  v = np.unique(np.asarray(vals, np.float64))
  if v.size > k:
    v = v[np.unique(np.round(np.linspace(0, v.size - 1, k)).astype(int))]
  axis.set_major_locator(FixedLocator(v))
  axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
  axis.set_minor_locator(NullLocator())
  axis.set_minor_formatter(NullFormatter())


def _labels_overlap(fig, labels) -> bool:
  r = fig.canvas.get_renderer()
  boxes = [t.get_window_extent(r) for t in labels if t.get_visible() and t.get_text()]
  boxes.sort(key=lambda b: (b.x0, b.y0))
  return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _declutter(fig, ax):
  """Drop every other tick label until no two labels of an axis overlap."""
  from matplotlib.ticker import FixedLocator, NullFormatter
  for axis in (ax.xaxis, ax.yaxis):
    axis.set_minor_formatter(NullFormatter())
    for _ in range(8):
      fig.canvas.draw()
      labels = [t for t in axis.get_ticklabels() if t.get_text()]
      if not _labels_overlap(fig, labels):
        break
      locs = [v for v in axis.get_majorticklocs()]
      lo, hi = axis.get_view_interval()
      locs = [v for v in locs if min(lo, hi) <= v <= max(lo, hi)]
      if len(locs) <= 2:
        break
      axis.set_major_locator(FixedLocator(locs[::2]))


def _setup_axis(ax, which: str, vals):
  """Log or linear by the sweep, thinned ticks at grid values."""
  axis = ax.xaxis if which == "x" else ax.yaxis
  if is_log_sweep(vals):
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
  _value_ticks(axis, vals)


# ------------------------------------------------------------------ figures --

def _fig_dma(rep, plt):
  keys = sorted(k[4:] for k in rep.history if k.startswith("dma_"))
  if not keys or "step" not in rep.history:
    return None
  step = np.asarray(rep.history["step"])
  fig, axs = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
  tol = rep.summary["tolerances"]["dma"]
  failed = _failed(rep)
  for ax, k in zip(axs[0], keys):
    h = np.asarray(rep.history[f"dma_{k}"], np.float64)
    h = np.maximum(h, 1e-17)  # exact zeros on a log axis
    if h.shape[0] <= 40:
      for i in np.argsort(failed, kind="stable"):  # failed cells drawn last, on top
        ax.plot(step, h[i], lw=1.1 if failed[i] else 0.9, alpha=0.9 if failed[i] else 0.6,
                color=FAIL_COLOR if failed[i] else "C0")
      ax.plot([], [], color="C0", lw=0.9, label="passed cell")
    else:
      qs = np.nanquantile(h, [0.0, 0.5, 0.9, 1.0], axis=0)
      ax.fill_between(step, qs[0], qs[3], alpha=0.2, color="C0", label="min-max, all cells")
      ax.plot(step, qs[1], color="C0", label="median")
      ax.plot(step, qs[2], color="C0", ls="--", label="90% quantile")
      for i in np.flatnonzero(failed)[:40]:
        ax.plot(step, h[i], lw=0.8, alpha=0.7, color=FAIL_COLOR)
    if failed.any():
      ax.plot([], [], color=FAIL_COLOR, lw=1.1,
              label=f"failed cell ({int(failed.sum())}{', 40 shown' if failed.sum() > 40 else ''})")
    ax.axhline(tol, color="k", ls=":", lw=1, label=f"tolerance {tol:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"D_MA({k})")
    ax.set_title(f"D_MA({k}) during training", fontsize=9)
  handles, labels = axs[0][0].get_legend_handles_labels()
  fig.suptitle(_title(rep), fontsize=10)
  fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8,
             frameon=False, bbox_to_anchor=(0.5, 0.0))
  fig.tight_layout(rect=(0, 0.1, 1, 1))
  return fig


def _edges(vals, log):
  v = np.asarray(vals, np.float64)
  if v.size == 1:
    return np.asarray([v[0] / 1.5, v[0] * 1.5]) if log else np.asarray([v[0] - 0.5, v[0] + 0.5])
  mids = np.sqrt(v[:-1] * v[1:]) if log else 0.5 * (v[:-1] + v[1:])
  if log:
    return np.concatenate([[v[0] ** 2 / mids[0]], mids, [v[-1] ** 2 / mids[-1]]])
  return np.concatenate([[2 * v[0] - mids[0]], mids, [2 * v[-1] - mids[-1]]])


def _fig_phase(rep, plt):
  from matplotlib.colors import BoundaryNorm
  from matplotlib.ticker import MaxNLocator
  th = rep.theory
  x_name = str(th.get("x_name", ""))
  if not x_name or x_name not in rep.table.columns:
    return None
  y_name = str(th.get("y_name", ""))
  lats = sorted(c[len("pred_active_"):] for c in rep.table.columns if c.startswith("pred_active_"))
  t = rep.table
  xs = np.unique(t[x_name].to_numpy(np.float64))
  ys = np.unique(t[y_name].to_numpy(np.float64)) if y_name else np.asarray([1.0])
  xlog, ylog = is_log_sweep(xs), bool(y_name) and is_log_sweep(ys)
  text = xs.size <= MAX_TEXT_CELLS and ys.size <= MAX_TEXT_CELLS
  fig, axs = plt.subplots(1, len(lats), figsize=(5.0 * len(lats), 4.2), squeeze=False)
  failed = _failed(rep)
  for ax, lat in zip(axs[0], lats):
    lcol = f"learned_active_{lat}" if f"learned_active_{lat}" in t.columns else f"active_{lat}"
    pred = np.full((ys.size, xs.size), np.nan)
    xi = np.searchsorted(xs, t[x_name].to_numpy(np.float64))
    yi = np.searchsorted(ys, t[y_name].to_numpy(np.float64)) if y_name else np.zeros(len(t), int)
    pred[yi, xi] = t[f"pred_active_{lat}"].to_numpy(np.float64)
    vmax = int(max(1, np.nanmax(pred)))
    cmap = plt.get_cmap("Blues", vmax + 1)
    norm = BoundaryNorm(np.arange(-0.5, vmax + 1.5), cmap.N)
    mesh = ax.pcolormesh(_edges(xs, xlog), _edges(ys, ylog), pred, cmap=cmap, norm=norm,
                         shading="flat")
    cb = fig.colorbar(mesh, ax=ax, label=f"predicted active modes of {lat}")
    cb.set_ticks(np.arange(0, vmax + 1))
    cb.locator = MaxNLocator(integer=True, nbins=min(vmax + 1, 8))
    cb.update_ticks()
    la = t[lcol].to_numpy(int)
    pa = t[f"pred_active_{lat}"].to_numpy(int)
    xv = t[x_name].to_numpy(np.float64)
    yv = t[y_name].to_numpy(np.float64) if y_name else np.ones(len(t))
    if text:
      for j in range(len(t)):
        ok = la[j] == pa[j]
        ax.text(xv[j], yv[j], f"{la[j]}" if ok else f"{la[j]}≠{pa[j]}", ha="center",
                va="center", fontsize=8, color="k" if ok else FAIL_COLOR,
                fontweight="normal" if ok else "bold")
    else:
      mis = la != pa
      ax.plot(xv[mis], yv[mis], ls="none", marker="s", ms=4, mfc="none", mec=FAIL_COLOR,
              label="learned count ≠ predicted")
    ax.plot(xv[failed], yv[failed], ls="none", marker="x", ms=5 if not text else 9,
            color=FAIL_COLOR, alpha=0.8 if not text else 0.35, label="failed cell")
    keys = [k for k in th if k.startswith("thr/") and
            (k == f"thr/{x_name}" and lat == lats[-1] or k == f"thr/{x_name}_{lat}")]
    if y_name and "y_dense" in th:
      for k in keys:
        thr = np.asarray(th[k])  # (n_y, modes)
        for m in range(thr.shape[1]):
          c = thr[:, m]
          ok = np.isfinite(c) & (c > 0)
          if ok.any():
            ax.plot(c[ok], np.asarray(th["y_dense"])[ok], color="C1", lw=1.1,
                    label="closed-form boundary" if m == 0 else None)
    if xlog:
      ax.set_xscale("log")
    ex, ey = _edges(xs, xlog), _edges(ys, ylog)
    ax.set_xlim(ex[0], ex[-1])
    _value_ticks(ax.xaxis, xs)
    ax.set_xlabel(x_name)
    if y_name:
      if ylog:
        ax.set_yscale("log")
      ax.set_ylim(ey[0], ey[-1])
      _value_ticks(ax.yaxis, ys)
      ax.set_ylabel(y_name)
    else:
      ax.set_yticks([])
    what = "learned count (text) vs predicted (shade)" if text else "predicted count (shade)"
    ax.set_title(f"latent {lat}: {what}", fontsize=9)
  handles, labels = [], []
  for ax in axs[0]:
    for h, lab in zip(*ax.get_legend_handles_labels()):
      if lab not in labels:
        handles.append(h)
        labels.append(lab)
  fig.suptitle(_title(rep), fontsize=10)
  if handles:
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
  fig.tight_layout(rect=(0, 0.07 if handles else 0, 1, 1))
  return fig


def _fig_spectra(rep, plt):
  from matplotlib.lines import Line2D
  th = rep.theory
  x_name = str(th.get("x_name", ""))
  keys = sorted(k[8:] for k in rep.spectra if k.startswith("learned/"))
  keys = [k for k in keys if f"spec/{k}" in th and np.asarray(th[f"spec/{k}"]).shape[-1] > 0]
  if not x_name or not keys or x_name not in rep.table.columns:
    return None
  y_name = str(th.get("y_name", ""))
  yv = np.asarray(th["y_values"], np.float64)
  n_y = yv.size
  if n_y <= MAX_LEGEND_CURVES:
    colors = [_CURVE_COLORS[i] for i in range(n_y)]
  else:
    cmap = plt.get_cmap("viridis")
    colors = [cmap(i / max(1, n_y - 1)) for i in range(n_y)]
  failed = _failed(rep)
  xcell = rep.table[x_name].to_numpy(np.float64)
  fig, axs = plt.subplots(1, len(keys), figsize=(4.3 * len(keys), 3.8), squeeze=False)
  for ax, k in zip(axs[0], keys):
    curves = np.asarray(th[f"spec/{k}"])  # (n_y, n_x, modes)
    for yi in range(curves.shape[0]):
      for m in range(curves.shape[2]):
        ax.plot(th["x"], curves[yi, :, m], color=colors[yi], lw=1, alpha=0.7)
    learned = np.asarray(rep.spectra[f"learned/{k}"])
    ycell = (np.argmin(np.abs(yv[None, :] - rep.table[y_name].to_numpy(np.float64)[:, None]),
                       axis=1) if y_name else np.zeros(len(xcell), int))
    for i in range(learned.shape[0]):
      ax.plot(np.full(learned.shape[1], xcell[i]), learned[i], ls="none",
              marker="x" if failed[i] else "o", ms=5 if failed[i] else 3.5,
              mfc="none", color=FAIL_COLOR if failed[i] else colors[ycell[i]], zorder=3)
    _setup_axis(ax, "x", xcell)
    ax.set_xlim(float(np.min(th["x"])), float(np.max(th["x"])))
    ax.set_xlabel(x_name)
    ax.set_ylabel(k)
    ax.set_title(f"{k}: learned vs closed form", fontsize=9)
  handles = [Line2D([], [], color="0.3", lw=1, label="closed form (lines)"),
             Line2D([], [], color="0.3", ls="none", marker="o", mfc="none",
                    label="learned, every mode of every cell")]
  if failed.any():
    handles.append(Line2D([], [], color=FAIL_COLOR, ls="none", marker="x",
                          label=f"failed cell ({int(failed.sum())})"))
  if y_name and n_y <= MAX_LEGEND_CURVES:
    handles += [Line2D([], [], color=colors[i], lw=2, label=f"{y_name}={yv[i]:.3g}")
                for i in range(n_y)]
  fig.suptitle(_title(rep), fontsize=10)
  ncol = min(len(handles), 6)
  fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
  rows = -(-len(handles) // ncol)
  bottom = 0.03 + 0.05 * rows
  fig.tight_layout(rect=(0, bottom, 1 if (not y_name or n_y <= MAX_LEGEND_CURVES) else 0.9, 1))
  if y_name and n_y > MAX_LEGEND_CURVES:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    norm = (LogNorm if is_log_sweep(yv) else Normalize)(yv.min(), yv.max())
    cax = fig.add_axes((0.92, bottom + 0.1, 0.015, 0.9 - bottom - 0.2))
    fig.colorbar(ScalarMappable(norm=norm, cmap=plt.get_cmap("viridis")), cax=cax, label=y_name)
  return fig


def _fig_scatter(rep, plt):
  keys = sorted(k[8:] for k in rep.spectra if k.startswith("learned/")
                and f"predicted/{k[8:]}" in rep.spectra)
  if not keys:
    return None
  failed = _failed(rep)
  fig, ax = plt.subplots(figsize=(4.6, 4.6))
  lo, hi = np.inf, -np.inf
  for c, k in enumerate(keys):
    lv = np.asarray(rep.spectra[f"learned/{k}"])
    pv = np.asarray(rep.spectra[f"predicted/{k}"])
    n = min(lv.shape[-1], pv.shape[-1])
    lv, pv = lv[:, :n], pv[:, :n]
    ax.plot(pv[~failed].ravel(), lv[~failed].ravel(), ls="none", marker="o", ms=3.5, mfc="none",
            color=f"C{c}", label=k)
    if failed.any():
      ax.plot(pv[failed].ravel(), lv[failed].ravel(), ls="none", marker="x", ms=5,
              color=FAIL_COLOR, label="failed cell" if c == 0 else None)
    lo, hi = min(lo, pv.min(), lv.min()), max(hi, pv.max(), lv.max())
  ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls=":", label="y = x")
  ax.set_xlabel("predicted (closed form)")
  ax.set_ylabel("learned")
  ax.legend(fontsize=7, loc="upper left")
  ax.set_title(_title(rep), fontsize=9)
  fig.tight_layout()
  return fig
