"""The pytest helpers, and the example of docs/testing.md run as a test."""
import pathlib
import re

import numpy as np
import pandas as pd
import pytest

import linvae_jax as lv
from linvae_jax import testing

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def _python_blocks():
  return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_docs_example_runs():
  blocks = _python_blocks()
  assert len(blocks) == 1
  ns = {}
  exec(compile(blocks[0], str(DOC), "exec"), ns)
  tests = [v for k, v in ns.items() if k.startswith("test_") and callable(v)]
  assert tests
  for t in tests:
    t()


M = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
MODEL = lv.make_model("vae", latent_dim=2)
H = {"beta": 0.5, "eta_enc": 1.0, "eta_dec": 1.0}


def test_assert_at_optimum_passes_at_and_fails_off_the_optimum():
  opt = MODEL.optimum(M, lv.as_hyper(H))
  testing.assert_at_optimum(MODEL, opt.params, M, H)
  off = opt.params.replace(U=opt.params.U * 1.05)
  with pytest.raises(AssertionError) as e:
    testing.assert_at_optimum(MODEL, off, M, H)
  msg = str(e.value)
  assert "vae[learnable] at [beta=0.5" in msg
  # sqrt(4 - 0.5) = 1.8708287, scaled by 1.05 (float64)
  assert "spectrum 'omega' mode 1: learned 1.9643701 vs predicted 1.8708287 (|diff| 0.0935" in msg
  assert "> atol 1e-06" in msg and "relative gap" in msg


def test_assert_collapse_pattern_message():
  testing.assert_collapse_pattern(MODEL, M, {**H, "beta": 2.0}, {"z": 1})
  with pytest.raises(AssertionError, match=r"latent z: expected 2 active modes, the closed "
                                           r"form has 1 \(thresholds"):
    testing.assert_collapse_pattern(MODEL, M, {**H, "beta": 2.0}, {"z": 2})
  with pytest.raises(ValueError, match="unknown latent"):
    testing.assert_collapse_pattern(MODEL, M, H, {"z9": 1})


def test_assert_grid_matches_theory_on_grid_result():
  from linvae_jax._src.engine import GridResult
  table = pd.DataFrame({"beta": [0.5, 2.0], "loss": [1.0, 2.0], "loss_star": [1.0, 2.0],
                        "gap": [0.0, 0.0], "dma_omega": [1e-9, 0.25], "active_z": [2, 1],
                        "pred_active_z": [2, 1], "status": ["done", "done"], "steps": [5, 5]})
  ok = GridResult(table=table.iloc[:1], history={}, spec={"dtype": "float64",
                                                         "objective": "analytic"},
                  info={"model": "vae[learnable]"})
  testing.assert_grid_matches_theory(ok)
  bad = GridResult(table=table, history={}, spec={"dtype": "float64", "objective": "analytic"},
                   info={"model": "vae[learnable]"})
  with pytest.raises(AssertionError) as e:
    testing.assert_grid_matches_theory(bad)
  msg = str(e.value)
  assert "vae[learnable]: 1 of 2 cells do not match" in msg
  assert "cell 1 [beta=2]: D_MA(omega) = 0.25 > tol dma 1e-05" in msg
  testing.assert_grid_matches_theory(bad, tolerances={"dma": 0.3})
  with pytest.raises(TypeError, match="VerifyReport or a GridResult"):
    testing.assert_grid_matches_theory(table)
