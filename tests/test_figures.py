"""Report figures stay readable from 2 to 500 cells: no overlapping tick labels,
integer colour bars, complete legends, failed cells marked in every mode."""
import numpy as np
import pandas as pd
import pytest

from linvae_jax._src import problems, report, verify
from linvae_jax._src.results import VerifyReport


def _report(betas, etas, n_failed=0):
  """A report without training: learned = closed form (+ a wrong cell per failure)."""
  import jax
  import jax.numpy as jnp
  prob = problems.get("vae-learnable")
  model, m = prob.model(), prob.moments(jnp.float64)
  bb, ee = np.meshgrid(betas, etas, indexing="ij")
  cells = {"beta": bb.ravel(), "eta_dec": ee.ravel(), "eta_enc": np.ones(bb.size)}
  hyper = {k: jnp.asarray(v) for k, v in cells.items()}
  opt = jax.vmap(lambda h: model.optimum(m, h))(hyper)
  pred = {k: np.asarray(v) for k, v in opt.spectra.items()}
  g = bb.size
  failed = np.zeros(g, bool)
  failed[np.linspace(0, g - 1, n_failed).astype(int)] = True
  learned = {k: v.copy() for k, v in pred.items()}
  learned["omega"][failed] *= 1.2
  act = np.asarray(opt.active["z"]).sum(axis=-1)
  steps = np.arange(1, 11) * 100
  table = pd.DataFrame({
      "beta": cells["beta"], "eta_dec": cells["eta_dec"], "pred_active_z": act,
      "learned_active_z": np.where(failed, act + 1, act), "dma_omega": np.where(failed, 0.1, 1e-9),
      "rel_gap": 0.0, "status": "done", "passed": ~failed,
      "reason": np.where(failed, "D_MA(omega) = 0.1 > tol dma 1e-05", "")})
  axes = ["beta", "eta_dec"] if len(etas) > 1 else ["beta"]
  theory = verify.theory_curves(model, m, cells, axes)
  hist = {"step": steps, "dma_omega": np.outer(np.where(failed, 0.1, 1e-9), np.ones(10))
          * np.linspace(10, 1, 10)}
  summary = {"name": "fig test", "model": model.label(), "passed": int((~failed).sum()),
             "cells": g, "axes": axes, "tolerances": {"dma": 1e-5}}
  spectra = {**{f"learned/{k}": v for k, v in learned.items()},
             **{f"predicted/{k}": v for k, v in pred.items()}}
  return VerifyReport(table=table, summary=summary, history=hist, spectra=spectra, theory=theory)


SIZES = {
    4: (np.asarray([0.5, 4.0]), np.asarray([1.0, 2.0])),
    50: (np.geomspace(0.1, 5.0, 50), np.asarray([1.0])),
    150: (np.linspace(0.1, 5.0, 50), np.asarray([0.5, 1.0, 2.0])),  # the README's old grid
    500: (np.geomspace(0.1, 10.0, 50), np.geomspace(0.5, 2.0, 10)),
}


def _tick_labels(fig):
  for ax in fig.axes:
    for axis in (ax.xaxis, ax.yaxis):
      yield ax, axis, [t for t in axis.get_ticklabels() + axis.get_ticklabels(minor=True)
                       if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("cells", sorted(SIZES))
def test_no_tick_labels_overlap(cells):
  plt = report._plt()  # noqa: SLF001
  rep = _report(*SIZES[cells], n_failed=3)
  figs = report.make_figures(rep, plt)
  assert set(figs) == {"dma_vs_step", "phase_diagram", "spectra", "scatter"}
  try:
    for name, fig in figs.items():
      fig.canvas.draw()
      r = fig.canvas.get_renderer()
      for ax, axis, labels in _tick_labels(fig):
        boxes = [t.get_window_extent(r) for t in labels]
        for i, a in enumerate(boxes):
          for j in range(i + 1, len(boxes)):
            assert not a.overlaps(boxes[j]), (cells, name, ax.get_label(), axis.axis_name,
                                              labels[i].get_text(), labels[j].get_text())
      # the phase diagram's counts never overlap either (text only where it fits)
      texts = [t for ax in fig.axes for t in ax.texts]
      boxes = [t.get_window_extent(r) for t in texts]
      for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
          assert not a.overlaps(boxes[j]), (cells, name, texts[i].get_text())
  finally:
    for fig in figs.values():
      plt.close(fig)


@pytest.mark.parametrize("cells", [4, 50, 500])
def test_failed_cells_marked_colour_bars_integer_legends_complete(cells):
  plt = report._plt()  # noqa: SLF001
  rep = _report(*SIZES[cells], n_failed=2)
  figs = report.make_figures(rep, plt)
  try:
    red = report.FAIL_COLOR
    for name, fig in figs.items():
      colors = {str(getattr(ln, "get_color")()) for ax in fig.axes for ln in ax.lines}
      colors |= {str(ln.get_markeredgecolor()) for ax in fig.axes for ln in ax.lines}
      assert red in colors, (name, cells)  # failed cells drawn red, at any size
      labels = [t.get_text() for lg in fig.legends + [ax.get_legend() for ax in fig.axes]
                if lg is not None for t in lg.get_texts()]
      assert any("failed" in lab for lab in labels), (name, labels)
    # integer colour bar ticks
    cbar_ax = [ax for ax in figs["phase_diagram"].axes if ax.get_label() == "<colorbar>"][0]
    ticks = cbar_ax.get_yticks()
    lo, hi = cbar_ax.get_ylim()
    ticks = ticks[(ticks >= lo) & (ticks <= hi)]
    assert len(ticks) >= 2 and np.allclose(ticks, np.round(ticks)), ticks
    # the D_MA legend names the tolerance; the spectra legend every eta_dec curve (<= 10)
    dma_labels = [t.get_text() for lg in figs["dma_vs_step"].legends for t in lg.get_texts()]
    assert any(lab.startswith("tolerance") for lab in dma_labels)
    spec_labels = [t.get_text() for lg in figs["spectra"].legends for t in lg.get_texts()]
    etas = SIZES[cells][1]
    if 1 < etas.size <= report.MAX_LEGEND_CURVES:
      assert all(any(f"eta_dec={e:.3g}" == lab for lab in spec_labels) for e in etas)
    # a log sweep gets a log axis
    ax = figs["spectra"].axes[0]
    assert ax.get_xscale() == ("log" if report.is_log_sweep(SIZES[cells][0]) else "linear")
  finally:
    for fig in figs.values():
      plt.close(fig)


def test_log_sweep_detection():
  assert report.is_log_sweep(np.geomspace(0.5, 5.0, 20))
  assert not report.is_log_sweep(np.linspace(1.0, 2.0, 20))
  assert report.is_log_sweep([0.1, 10.0])
  assert not report.is_log_sweep([-1.0, 1.0, 2.0])
