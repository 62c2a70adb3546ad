"""W&Z Fig 1 (ReLU) and Fig 5 (Tanh) regression VAE reproduction
(benchmarks/reproduce/wz_fig1_fig5.py): ``main(small=True)`` trains both networks over a
4-value beta grid through ``lv.train_grid`` and writes its figure and tables; the test checks
the data's thresholds, the theory overlay and the measured trends.

``slow`` (about a minute on 2 cores: two compiles).
"""
import numpy as np
import pytest

# the linear reproductions' loader and promotion fixture (tests/test_reproduce.py)
from test_reproduce import _load, _written, loose_promotion  # noqa: F401 (fixture)


def _zeta2_centred(x, y):
  """zeta_i^2 of the centred moments, computed here without the library."""
  xc, yc = x - x.mean(0), y - y.mean(0)
  w, p = np.linalg.eigh(xc.T @ xc / len(x))
  z = (yc.T @ xc / len(x)) @ p / np.sqrt(w)
  return np.linalg.svd(z, compute_uv=False) ** 2


@pytest.mark.slow
@pytest.mark.usefixtures("loose_promotion")
def test_wz_fig1_fig5_small(tmp_path):
  mod = _load("wz_fig1_fig5")
  r = mod.main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  assert (tmp_path / "wz_fig1_fig5_small_cells.csv").stat().st_size > 0
  x, y = mod.regression_data()
  assert x.shape == y.shape == (4096, 5)
  # the theory's thresholds are the data's zeta_i^2 (centred), near the official plot's
  z2 = _zeta2_centred(x, y)
  np.testing.assert_allclose(r["thresholds"], z2, rtol=1e-8)
  np.testing.assert_allclose(np.sqrt(r["thresholds"]), mod.OFFICIAL_ZETA, rtol=0.03)
  assert r["theory_complete"] == pytest.approx(z2[0]) and r["theory_first"] == pytest.approx(z2[-1])
  plateau = 0.5 * np.trace(np.cov(y.T, bias=True))  # complete collapse: f = mean of y
  c, t = r["cells"], r["table"]
  assert len(c) == 2 * 3 * len(mod.SIZES["small"]["betas"])
  sig = [f"sigma{i}" for i in range(1, 6)]
  assert np.isfinite(c[["loss_wz", "recon", "kl"] + sig].to_numpy()).all()
  assert (np.diff(c[sig].to_numpy(), axis=1) >= 0).all()  # sorted ascending per cell
  assert ((c[sig] > 0) & (c[sig] < 1.5)).all().all()
  for act in ("relu", "tanh"):
    s = t[t.activation == act].sort_values("beta")
    b = s.beta.to_numpy()
    # theory overlay: 5 active modes at the smallest beta, none past zeta_1^2, L* rising to the
    # plateau 1/2 tr Cov(y) (noiseless y = M x: R = 0)
    ta = s.theory_active.to_numpy()
    assert ta[0] == 5 and ta[-1] == 0 and np.all(np.diff(ta) <= 0)
    assert np.all(np.diff(s.theory_loss.to_numpy()) > 0)
    assert s.theory_loss.iloc[-1] == pytest.approx(plateau, rel=1e-9)
    np.testing.assert_allclose(s.sigma1_theory, np.minimum(1, np.sqrt(b / z2[0])))
    # measured: the training loss rises with beta (seed means) and, past complete collapse,
    # lands within 5% of the theory's plateau (the CI size, 24 epochs: 0.1-1% above it)
    loss = s.loss_wz.to_numpy()
    assert np.all(np.diff(loss) > 0), loss
    assert abs(loss[-1] / plateau - 1) < 0.05, loss[-1]
    assert loss[0] < 0.3 * plateau
    # sigma-bar: small at beta = 0.05 (theory 0.06-0.14), near 1 past zeta_1^2 on every seed
    # (> 0.9 for every unit; the CI size reaches 0.97-1.0)
    assert s.sigma1.iloc[0] < 0.3
    last = c[(c.activation == act) & (c.beta == b[-1])]
    assert (last[sig].to_numpy() > 0.9).all(), last[sig]
    # AU: every unit active at beta = 0.05, complete collapse reached on every seed by the
    # last grid beta (18 > zeta_1^2 = 14.18)
    first = c[(c.activation == act) & (c.beta == b[0])]
    assert (first.au == 5).all() and (last.au == 0).all()
    cp = r["per"][act]["collapse"]
    assert np.isfinite(cp["complete"]).all() and (cp["complete"] <= b[-1]).all()
    assert np.isfinite(r["per"][act]["ratio_complete"])
  assert "Machine:" in r["note"] and "ratio" in r["note"] and "load average" in r["note"]
  md = r["files"]["md"].read_text()
  assert "theory_loss" in md and "14.18" in md
