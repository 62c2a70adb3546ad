"""The verifier's result type, shared by ``verify`` (which builds it) and ``report``
(which writes, reads and draws it); neither needs the other to name it."""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import pandas as pd


def fmt(v) -> str:
  return f"{float(v):.4g}"


def cell_label(row: Mapping, axes) -> str:
  """``beta=0.5, eta_dec=1``: a cell named by its swept hyperparameter values."""
  parts = []
  for a in axes:
    v = row[a]
    parts.append(f"{a}={v if isinstance(v, (tuple, str)) else fmt(v)}")
  return ", ".join(parts)


@dataclasses.dataclass
class VerifyReport:
  """Result of :func:`~linvae_jax.verify` (also rebuilt by ``report.load``).

  Attributes:
    table: one row per cell: the grid coordinates, the engine's comparison
      columns, ``rel_gap``, ``passed`` and ``reason``.
    summary: JSON-able dict (model, data, counts, worst numbers, tolerances).
    history: engine history, name -> (G, R) arrays and ``step`` (R,).
    spectra: ``learned/<key>`` and ``predicted/<key>``: (G, n) arrays.
    theory: dense theory curves for the figures (``verify.theory_curves``).
    figures: figure name -> path, once written.
    out_dir: the report directory, once written.

  ``report.write(rep, out_dir)`` writes one (``verify(..., out_dir=...)`` does).
  """
  table: pd.DataFrame
  summary: dict
  history: dict = dataclasses.field(default_factory=dict)
  spectra: dict = dataclasses.field(default_factory=dict)
  theory: dict = dataclasses.field(default_factory=dict)
  figures: dict = dataclasses.field(default_factory=dict)
  out_dir: Optional[str] = None

  @property
  def passed(self) -> bool:
    return bool(self.table["passed"].all())

  def failures(self) -> pd.DataFrame:
    """The failed cells (their coordinates and reasons)."""
    return self.table[~self.table["passed"]]

  def cell_label(self, i: int) -> str:
    """Cell ``i`` named by its swept hyperparameter values."""
    return cell_label(self.table.iloc[int(i)], self.summary.get("axes", []))

  def __str__(self) -> str:
    s = self.summary
    head = (f"{s.get('name') or s['model']}: {s['passed']}/{s['cells']} cells passed "
            f"(max D_MA {s['max_dma']:.2g}, max rel gap {s['max_rel_gap']:.2g})")
    fails = self.failures()
    lines = [head] + [f"  FAIL [{cell_label(r, s['axes'])}]: {r['reason']}"
                      for _, r in fails.head(10).iterrows()]
    if len(fails) > 10:
      lines.append(f"  ... and {len(fails) - 10} more failed cells")
    return "\n".join(lines)
