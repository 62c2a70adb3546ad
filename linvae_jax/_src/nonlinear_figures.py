"""The figures of a nonlinear grid report, with the linear theory on the same axes.

* ``au_kl_vs_beta``: AU and held-out KL against the swept beta (mean +- s.e.
  over seeds, faint dots per seed), the linear closed form's active count and
  KL as dashed lines in the same colour, its critical betas dotted, diverged
  cells as red crosses on the x axis;
* ``eps_delta``: the percentage of (eps, delta)-collapsed latent coordinates
  against eps (log), one curve per beta (mean over seeds), the theory's
  collapsed percentage as a marker at the left edge.

The conventions of :mod:`figures` hold: ticks thinned at grid values until no
labels overlap, log axes for log sweeps, complete legends, failures in
``FAIL_COLOR``.
"""
from __future__ import annotations


import numpy as np

from linvae_jax._src import nonlinear_report as R
from linvae_jax._src.figures import (_CURVE_COLORS, FAIL_COLOR, MAX_LEGEND_CURVES, _declutter,
                                     _plt, _setup_axis, is_log_sweep, render_figures)

MAX_PANELS = 4  # eps_delta: one panel per curve group, up to this many


def render(rep, out_dir) -> dict:
  """Render every figure to ``out_dir``; returns name -> path."""
  return render_figures(rep, out_dir, make_figures)


def make_figures(rep, plt=None) -> dict:
  """name -> matplotlib Figure (the caller closes them)."""
  plt = plt or _plt()
  out = {}
  for name, fn in (("au_kl_vs_beta", _fig_au_kl), ("eps_delta", _fig_eps)):
    fig = fn(rep, plt)
    if fig is not None:
      fig.canvas.draw()
      for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
          _declutter(fig, ax)
      out[name] = fig
  return out


def _colors(plt, n):
  if n <= MAX_LEGEND_CURVES:
    return [_CURVE_COLORS[i] for i in range(n)]
  cmap = plt.get_cmap("viridis")
  return [cmap(i / max(1, n - 1)) for i in range(n)]


def _fig_au_kl(rep, plt):
  from matplotlib.lines import Line2D
  from matplotlib.ticker import MaxNLocator
  s, t, a = rep.summary, rep.table, rep.arrays
  x = s["x_name"]
  if x not in t.columns or "au" not in t.columns:
    return None
  st = R.seed_stats(rep)
  grp = R.groups(t, s["group_axes"])
  colors = _colors(plt, len(grp))
  xs = t[x].to_numpy(np.float64)
  fig, axs = plt.subplots(1, 2, figsize=(10.5, 4.0))
  n_seeds = int(t["seed"].nunique()) if "seed" in t else 1
  for ax, col, th_key in ((axs[0], "au", "theory_active"), (axs[1], "kl", "theory_kl")):
    for gi, (_, m) in enumerate(grp):
      ok = m & ~t["diverged"].to_numpy(bool)
      ax.plot(xs[ok], t[col].to_numpy(np.float64)[ok], ls="none", marker="o", ms=3,
              color=colors[gi], alpha=0.35)
      sg = st[st["group"] == gi]
      ax.errorbar(sg[x], sg[col], yerr=sg[f"{col}_se"].fillna(0.0), fmt="o-", ms=4, lw=1.2,
                  capsize=2.5, color=colors[gi])
      if th_key in a and gi < len(a[th_key]):
        ax.plot(a["theory_x"], a[th_key][gi], ls="--", lw=1.2, color=colors[gi],
                drawstyle="steps-post" if col == "au" else "default")
    bad = t["diverged"].to_numpy(bool)
    if bad.any():
      ax.plot(xs[bad], np.zeros(int(bad.sum())), ls="none", marker="x", ms=7, mew=1.5,
              color=FAIL_COLOR, clip_on=False, zorder=4)
    _setup_axis(ax, "x", xs)
    ax.set_xlabel(x)
  if "beta_thresholds" in a and x == "beta" and len(grp) == 1:
    lo, hi = axs[0].get_xlim()
    for v in np.asarray(a["beta_thresholds"])[0]:
      if np.isfinite(v) and lo < v < hi:
        for ax in axs:
          ax.axvline(v, color="0.6", ls=":", lw=0.8)
  d = s["latent_dim"]
  axs[0].set_ylim(-0.3, d + 0.4)
  axs[0].yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(d + 1, 8)))
  axs[0].set_ylabel(f"active units (of {d})")
  axs[0].set_title(f"AU (Var_x mu_k > {s['au_threshold']:g}) vs {x}", fontsize=9)
  kl = t["kl"].to_numpy(np.float64)
  pos = kl[np.isfinite(kl) & (kl > 0)]
  if pos.size and pos.max() / max(pos.min(), 1e-12) > 100:
    axs[1].set_yscale("symlog", linthresh=0.1)
  axs[1].set_ylim(bottom=0)
  axs[1].set_ylabel("KL (nats, held-out)")
  axs[1].set_title(f"KL vs {x}", fontsize=9)
  k = "0.3" if len(grp) > 1 else colors[0]
  handles = [Line2D([], [], color=k, marker="o", ms=4, lw=1.2,
                    label=f"measured, mean ± s.e. over {n_seeds} seed(s)"),
             Line2D([], [], color=k, marker="o", ms=3, ls="none", alpha=0.35, label="one cell"),
             Line2D([], [], color=k, ls="--", lw=1.2,
                    label=(f"linear theory ({s['theory_model']}, centred moments)"
                           if s.get("theory_model") else "no linear theory"))]
  if "beta_thresholds" in a and x == "beta" and len(grp) == 1:
    handles.append(Line2D([], [], color="0.6", ls=":", lw=0.8, label="theory critical beta_i"))
  if rep.n_diverged:
    handles.append(Line2D([], [], color=FAIL_COLOR, marker="x", ls="none", mew=1.5,
                          label=f"diverged cell ({rep.n_diverged}), not in the means"))
  _group_legend(fig, plt, handles, grp, colors, s, axs)
  return fig


def _group_legend(fig, plt, handles, grp, colors, s, axs):
  from matplotlib.lines import Line2D
  label = ", ".join(s["group_axes"])
  if 1 < len(grp) <= MAX_LEGEND_CURVES:
    handles += [Line2D([], [], color=colors[i], lw=2, label=lab) for i, (lab, _) in enumerate(grp)]
  ncol = min(len(handles), 3)
  rows = -(-len(handles) // ncol)
  fig.suptitle(_title(s), fontsize=9)
  fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False)
  bottom = 0.02 + 0.05 * rows
  many = len(grp) > MAX_LEGEND_CURVES
  fig.tight_layout(rect=(0, bottom, 0.9 if many else 1, 1))
  if many:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    cax = fig.add_axes((0.92, bottom + 0.08, 0.015, 0.72 - bottom))
    fig.colorbar(ScalarMappable(norm=Normalize(0, len(grp) - 1), cmap=plt.get_cmap("viridis")),
                 cax=cax, label=f"curve index ({label})")


def _title(s) -> str:
  return (f"{s['name']} on {s['data']}\n{s['cells']} cells, {s['diverged']} diverged, "
          f"{s['steps']} steps, evaluated on {s['n_eval']} held-out samples")


def _fig_eps(rep, plt):
  from matplotlib.lines import Line2D
  s, t, a = rep.summary, rep.table, rep.arrays
  if "eps_curves" not in a or "eps" not in a:
    return None
  x = s["x_name"]
  eps, curves = np.asarray(a["eps"]), 100.0 * np.asarray(a["eps_curves"], np.float64)
  grp = R.groups(t, s["group_axes"])[:MAX_PANELS]
  xv = np.unique(t[x].to_numpy(np.float64))
  colors = _colors(plt, xv.size)
  ok = ~t["diverged"].to_numpy(bool)
  d = s["latent_dim"]
  fig, axs = plt.subplots(1, len(grp), figsize=(max(6.6, 4.6 * len(grp) + 0.8), 3.9), squeeze=False)
  for ax, (label, m) in zip(axs[0], grp):
    for i, v in enumerate(xv):
      sel = m & ok & (t[x].to_numpy(np.float64) == v)
      if sel.any():
        ax.plot(eps, curves[sel].mean(axis=0), color=colors[i], lw=1.1)
      if "theory_collapse_pct" in t and (m & (t[x].to_numpy(np.float64) == v)).any():
        p = float(t["theory_collapse_pct"][m & (t[x].to_numpy(np.float64) == v)].iloc[0])
        ax.plot([eps[0]], [p], marker=">", ms=6, ls="none", color=colors[i], clip_on=False)
    ax.axvline(s["eval_eps"], color="k", ls=":", lw=0.9)
    ax.set_xscale("log")
    ax.set_xlim(eps[0], eps[-1])
    ax.set_ylim(-3, 103)
    ax.set_xlabel("eps (nats)")
    ax.set_ylabel(f"% of the {d} coordinates collapsed")
    ax.set_title(f"(eps, delta = {s['eval_delta']:g})-collapse" + (f", {label}" if label else ""),
                 fontsize=9)
  handles = [Line2D([], [], color="0.3", lw=1.1, label="measured, mean over seeds"),
             Line2D([], [], color="0.3", marker=">", ls="none",
                    label="linear theory: % collapsed modes" if "theory_collapse_pct" in t
                    else "no linear theory"),
             Line2D([], [], color="k", ls=":", lw=0.9, label=f"report's eps = {s['eval_eps']:g}")]
  if rep.n_diverged:
    handles.append(Line2D([], [], color=FAIL_COLOR, lw=1.1,
                          label=f"diverged cell ({rep.n_diverged}), not drawn"))
  many = xv.size > MAX_LEGEND_CURVES
  if not many:
    handles += [Line2D([], [], color=colors[i], lw=2, label=f"{x}={v:.3g}")
                for i, v in enumerate(xv)]
  ncol = min(len(handles), 4)
  rows = -(-len(handles) // ncol)
  extra = len(R.groups(t, s["group_axes"])) - len(grp)
  fig.suptitle(_title(s) + (f"; first {len(grp)} of {len(grp) + extra} curve groups"
                             if extra else ""), fontsize=9)
  fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False)
  bottom = 0.02 + 0.055 * rows
  fig.tight_layout(rect=(0, bottom, 0.88 if many else 1, 1))
  if many:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    norm = (LogNorm if is_log_sweep(xv) else Normalize)(xv.min(), xv.max())
    cax = fig.add_axes((0.9, bottom + 0.08, 0.015, 0.72 - bottom))
    fig.colorbar(ScalarMappable(norm=norm, cmap=plt.get_cmap("viridis")), cax=cax, label=x)
  return fig
