"""Dang et al. Fig 3(a) with MLPs (benchmarks/reproduce/dang_digits_relu.py): a ReLU CVAE
per digit subset {1}, {9}, {7}; ``main(small=True)`` (about a minute on 2 cores) against
the paper's ordering "more collapse for 1 > 9 > 7" and the linear closed form.
"""
import numpy as np
import pytest
from test_reproduce import _load, _written, loose_promotion, need_mnist  # noqa: F401 (fixtures)


@pytest.mark.slow
@pytest.mark.mnist
def test_dang_digits_relu_small(tmp_path, need_mnist, loose_promotion):
  mod = _load("dang_digits_relu")
  r = mod.main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  assert (tmp_path / "dang_digits_relu_small_collapse_curves.csv").stat().st_size > 0
  s = r["table"].set_index("digit")
  assert list(s.index) == [1, 9, 7]
  c = r["cells"]
  assert len(c) == 9 and sorted(c.seed.unique()) == [0, 1, 2]
  for col in ("au", "kl", "iw_ll", "collapse_score", "dang_au_pct"):
    assert np.all(np.isfinite(c[col])), col
  assert np.all((c.au >= 0) & (c.au <= 16)) and np.all(c.kl > 0)
  for d in (1, 9, 7):
    cur = r["curves"][d]
    assert cur.shape == (3, len(r["eps"]))
    assert np.all(np.diff(cur, axis=1) >= 0)  # more units collapsed at a larger eps
    assert cur.min() >= 0 and cur.max() <= 16

  # the theory on the same (centred) pairs: the paper's ordering of the theta sums, and
  # of the linear KL; the active count 1 < 9 <= 7 (9 and 7 both keep all 16 at this
  # threshold, 0.125: a strict 9 < 7 is not what the closed form says)
  th = r["theory"]
  assert s.paper_sum_top16.tolist() == [6.41, 13.42, 18.64]
  sums = s.sum_top16_centred
  assert sums[1] < sums[9] < sums[7]
  assert s.loc[1, "theory_active"] < s.loc[9, "theory_active"] <= s.loc[7, "theory_active"]
  assert s.loc[1, "theory_kl"] < s.loc[9, "theory_kl"] < s.loc[7, "theory_kl"]
  for d in (1, 9, 7):
    t = th[d]
    assert t["active"] == int(np.sum(t["theta"] > mod.BETA * mod.ETA_DEC ** 2))
    assert t["active_beta1"] == int(np.sum(t["theta"] > 1.0 * mod.ETA_DEC ** 2))
    # the theory's eps-curve (its per-example KL on the training pairs) is the same optimum
    # as the overlay's KL, and its collapsed modes are collapsed at every eps
    assert t["kl_train"] == pytest.approx(t["kl"], rel=1e-6)
    assert t["curve"][0] == 16 - t["active"]

  # measured at the CI size (512 pairs, 12 epochs): the paper's ordering holds in the
  # seed means of the collapse curves' area and of Burda's AU (measured: scores 5.30 /
  # 4.87 / 4.31, AU 2.7 / 8.7 / 12.7), and in the KL between 1 and 7
  assert r["checks"]["collapse_score"] and r["checks"]["au"], r["note"]
  assert s.loc[1, "kl"] < s.loc[7, "kl"]
  assert r["per_seed"]["collapse_score"] >= 2
  assert "Machine:" in r["note"] and "theory_active" in r["files"]["md"].read_text()
