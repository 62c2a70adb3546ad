"""Lucas et al. (2019) Table 2 at reduced size (benchmarks/reproduce/lucas_table2.py): a ReLU
Gaussian VAE on logit-preprocessed MNIST with a fixed vs a learned decoder variance, beside the
paper's numbers and the linear closed forms on the same data.

``slow`` (about 1-2 min on 2 cores) and ``mnist``.
"""
import math

import numpy as np
import pytest

# the loader, the MNIST requirement and the promotion fixture are the linear
# reproductions' own (tests/test_reproduce.py)
from test_reproduce import _load, _written, loose_promotion, need_mnist  # noqa: F401 (fixtures)


def test_lucas_preprocess_bounds():
  mod = _load("lucas_table2")
  pix = np.array([[0, 255, 128]] * 500, np.uint8)
  y = mod.preprocess(pix, seed=1)
  lo, hi = math.log(mod.LAM / (1 - mod.LAM)), math.log((1 - mod.LAM) / mod.LAM)
  assert np.all(np.isfinite(y)) and y.min() >= lo and y.max() <= hi
  # dequantised background (pixel 0): logit(lam + u / 256) <= logit(1/256 + lam) ~ -5.54;
  # pixel 255 symmetric; pixel 128 near 0
  edge = math.log(1 / 255) + 1e-3
  assert y[:, 0].max() < edge and y[:, 1].min() > -edge and np.all(np.abs(y[:, 2]) < 0.02)
  # log of a uniform has variance 1: the background noise floor of the logit data
  assert 0.6 < np.var(y[:, 0]) < 1.3
  np.testing.assert_array_equal(y, mod.preprocess(pix, seed=1))  # seeded


@pytest.mark.slow
@pytest.mark.mnist
def test_lucas_table2_small(tmp_path, need_mnist, loose_promotion):
  mod = _load("lucas_table2")
  r = mod.main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  size = mod.SIZES["small"]
  d, s2 = size["d"], sorted(size["s2"])
  c = r["cells"]
  assert len(c) == 2 * len(s2) * size["seeds"] and (c.status == "done").all()
  for col in ("elbo", "kl", "collapse_pct", "final_s2", "resid"):
    assert np.all(np.isfinite(c[col])), col
  assert np.all((c.collapse_pct >= 0) & (c.collapse_pct <= 100)) and np.all(c.kl >= 0)
  fx, le = c[c.setting == "fixed"], c[c.setting == "learned"]
  # fixed: sigma^2 stays at its value; learned: it moves away from its init, towards the data
  np.testing.assert_allclose(fx.final_s2, fx.sigma2_init, rtol=1e-5)
  step = np.log(le.final_s2 / le.sigma2_init).to_numpy()
  assert np.all(np.abs(step) > 0.05), step
  assert np.all(step[le.sigma2_init.to_numpy() == max(s2)] < 0)
  assert np.all(step[le.sigma2_init.to_numpy() == min(s2)] > 0)

  t = r["table"]
  f = t[t.setting == "fixed"].sort_values("sigma2_init")
  # a larger fixed sigma^2 is a larger beta: less KL, no less collapse (seed means; 60 steps
  # are too few for (0.01, 0.01)-collapse: test_lucas_table2_committed checks it at 1000)
  assert np.all(np.diff(f.collapse_pct.to_numpy()) >= 0)
  assert np.all(np.diff(f.kl.to_numpy()) < 0) and f.kl.iloc[-1] < 0.2 * f.kl.iloc[0]
  # the linear theory: mode i active iff lambda_i > sigma^2 (fixed), on the same data
  lam = r["eigvals"]
  for row in f.itertuples():
    assert row.theory_active == min(d, int(np.sum(lam > row.sigma2_init)))
  assert f.theory_collapse_pct.iloc[-1] > 0 and f.theory_collapse_pct.iloc[0] == 0
  # learned: s* is sigma^2_ML and the ELBO the pPCA maximum log-likelihood (Lucas Cor 1)
  lt = t[t.setting == "learned"]
  s_ml = float(np.mean(lam[d:]))
  np.testing.assert_allclose(lt.theory_s2, s_ml, rtol=1e-8)
  ll = -0.5 * (784 * math.log(2 * math.pi) + np.sum(np.log(lam[:d])) + (784 - d) * math.log(s_ml)
               + 784)
  np.testing.assert_allclose(lt.theory_elbo, ll, rtol=1e-6)
  assert (lt.theory_collapse_pct == 0).all()
  # learning sigma^2 can only raise the linear optimum's ELBO
  assert np.all(lt.sort_values("sigma2_init").theory_elbo.to_numpy()
                >= f.theory_elbo.to_numpy() - 1e-6)
  # the paper's numbers are beside ours
  assert f.set_index("sigma2_init").loc[30.0, "paper_collapse_pct"] == 95.0
  assert lt.set_index("sigma2_init").loc[1.0, "paper_final_s2"] == 1.183
  assert "Machine:" in r["note"] and "1e-06" in r["files"]["md"].read_text()


def test_lucas_table2_committed():
  """The committed default-size results (benchmarks/results/reproduce/lucas_table2.*)."""
  import pandas as pd
  from test_reproduce import REPRO
  mod = _load("lucas_table2")
  res = REPRO.parents[1] / "benchmarks" / "results" / "reproduce"
  for ext in ("png", "csv", "md"):
    assert (res / f"lucas_table2.{ext}").stat().st_size > 0
  assert "Machine:" in (res / "lucas_table2.md").read_text()
  t = pd.read_csv(res / "lucas_table2.csv")
  s2 = mod.SIZES["default"]["s2"]
  assert len(t) == 2 * len(s2)
  f = t[t.setting == "fixed"].set_index("sigma2_init").loc[sorted(s2)]
  le = t[t.setting == "learned"].set_index("sigma2_init").loc[sorted(s2)]
  # fixed sigma^2: collapse grows with sigma^2, complete at the largest, none at sigma^2 <= 1
  assert np.all(np.diff(f.collapse_pct.to_numpy()) >= 0)
  assert f.collapse_pct.iloc[-1] == 100 and (f.loc[:1.0, "collapse_pct"] == 0).all()
  assert np.all(np.diff(f.kl.to_numpy()) < 0)
  # learned: sigma^2 left every init; the completely collapsed cells sit at the collapsed
  # stationary point sigma^2 = tr S / 784 = 9.048 (decoder = data mean), the others keep every unit
  assert np.all(np.abs(np.log(le.final_s2 / le.index.to_numpy())) > 0.05)
  full = le[le.collapse_pct == 100]
  assert len(full) >= 1
  np.testing.assert_allclose(full.final_s2, 9.048, rtol=0.01)
  assert (le.loc[:1.0, "collapse_pct"] == 0).all()
  # theory: learned s* on the same data (d = 64) and at the paper's size (60k, d = 200);
  # fixed: collapse only above lambda_64 = 13.9 on the same data
  np.testing.assert_allclose(le.theory_s2, 1.6677, rtol=1e-3)
  np.testing.assert_allclose(le.theory60k_s2, 1.1407, rtol=1e-3)
  assert (le.theory_collapse_pct == 0).all() and (f.loc[:10.0, "theory_collapse_pct"] == 0).all()
  assert f.theory_collapse_pct.iloc[-1] == 37.5
  np.testing.assert_allclose(f.theory60k_collapse_pct.loc[[30.0, 10.0, 3.0, 1.0]],
                             [81.0, 63.0, 26.5, 0.0])
  # the paper's numbers beside ours
  for setting, g in (("fixed", f), ("learned", le)):
    m = dict(zip(mod.S2_ALL, mod.PAPER[setting]["collapse_pct"]))
    np.testing.assert_allclose(g.paper_collapse_pct, [m[q] for q in g.index])
