"""The verifier: tolerances, cell judgement, data resolution, built-in problems."""
import os

import numpy as np
import pandas as pd
import pytest

from linvae_jax._src import problems, verify


def test_default_tolerances_table():
  assert verify.default_tolerances("float64") == verify.Tolerances(1e-5, 1e-8, 0)
  assert verify.default_tolerances(np.float32) == verify.Tolerances(2e-3, 1e-5, 0)
  assert verify.default_tolerances("float64", "sampled") == verify.Tolerances(2e-2, 1e-2, None)
  t = verify.resolve_tolerances({"dma": 1e-3}, "float64", "analytic")
  assert t.dma == 1e-3 and t.rel_gap == 1e-8
  with pytest.raises(ValueError, match="unknown tolerance keys"):
    verify.resolve_tolerances({"dmax": 1.0}, "float64", "analytic")
  with pytest.raises(ValueError, match="objective"):
    verify.default_tolerances("float64", "exact")


def _table():
  return pd.DataFrame({
      "beta": [0.5, 2.0, 4.0, 8.0], "loss": [1.0, 2.0, 3.0, 4.0],
      "loss_star": [1.0, 2.0, 3.0 - 1e-3, 4.0 + 1e-3], "gap": [0.0, 1e-12, 1e-3, -1e-3],
      "dma_omega": [1e-7, 3e-3, 1e-7, 1e-7], "active_z": [2, 1, 1, 0],
      "pred_active_z": [2, 1, 0, 0], "status": ["done", "done", "done", "diverged"],
      "steps": [100, 100, 100, 7]})


def test_check_cells_reasons_name_spectrum_mode_and_tolerance():
  learned = {"omega": np.array([[2.0, 1.0], [1.5, 0.01], [1.0, 0.0], [0.0, 0.0]])}
  pred = {"omega": np.array([[2.0, 1.0], [1.5, 0.0], [1.0, 0.0], [0.0, 0.0]])}
  out = verify.check_cells(_table(), verify.Tolerances(1e-5, 1e-8, 0), learned=learned,
                           predicted=pred)
  assert list(out["passed"]) == [True, False, False, False]
  assert out["reason"][0] == ""
  r1 = out["reason"][1]
  assert "D_MA(omega) = 0.003 > tol dma 1e-05" in r1
  assert "worst mode 2: learned 0.01 vs predicted 0" in r1
  r2 = out["reason"][2]
  assert "loss gap" in r2 and "tol rel_gap 1e-08" in r2
  assert "active z: learned 1 vs predicted 0 modes" in r2
  r3 = out["reason"][3]
  assert "diverged after 7 steps" in r3 and "below L*" in r3


def test_check_cells_active_none_skips_count():
  out = verify.check_cells(_table().iloc[[2]], verify.Tolerances(1.0, 1.0, None))
  assert bool(out["passed"].iloc[0])


def test_load_data_errors_and_forms(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    verify.load_data(str(tmp_path / "missing.npz"))
  with pytest.raises(ValueError, match="unknown synthetic problem"):
    verify.load_data("synthetic:nope")
  with pytest.raises(ValueError, match="unknown MNIST view"):
    verify.load_data("mnist:left")
  with pytest.raises(ValueError, match="cannot read data"):
    verify.load_data("data.csv")
  x = np.random.default_rng(0).standard_normal((50, 3))
  np.savez(tmp_path / "d.npz", x=x, y=x[:, :2])
  ds = verify.load_data(str(tmp_path / "d.npz"))
  assert not ds.moments.paired and ds.moments.dim_y == 2
  np.savez(tmp_path / "bad.npz", z=x)
  with pytest.raises(ValueError, match="no array 'x'"):
    verify.load_data(str(tmp_path / "bad.npz"))
  ds = verify.load_data("synthetic:cvae-learnable", n_samples=64)
  # the exact design reproduces the population moments (float64 round-off)
  from linvae_jax._src.moments import from_arrays
  np.testing.assert_allclose(from_arrays(*ds.arrays).xy, ds.moments.xy, atol=1e-12)


def test_verify_rejects_bad_calls():
  with pytest.raises(ValueError, match="model is required"):
    verify.verify(None, np.eye(3))
  with pytest.raises(ValueError, match="objective"):
    verify.verify(None, "synthetic:vae-learnable", objective="exact")


@pytest.mark.parametrize("name", ["vae-fixed-diag", "mhvae-thm3"])
def test_problem_quick_grid_keeps_margin(name):
  p = problems.get(name)
  m, model = p.moments(), p.model()
  counts = set()
  for h in problems.cell_hypers(p, quick=True):
    assert problems.threshold_margin(model, m, h) >= 0.2
    assert problems.stable_within(model, m, h, 0.2)
    counts.add(tuple(int(np.sum(a)) for a in model.optimum(m, {k: np.asarray(v) for k, v in
                                                              h.items()}).active.values()))
  assert len(counts) > 1  # the quick grid still crosses a threshold


@pytest.mark.slow
def test_every_problem_grid_straddles_with_margin():
  for name in problems.names():
    p = problems.get(name)
    m, model = p.moments(), p.model()
    counts = set()
    for h in problems.cell_hypers(p):
      assert problems.threshold_margin(model, m, h) >= 0.2, name
      assert problems.stable_within(model, m, h, 0.2), name
      opt = model.optimum(m, {k: np.asarray(v) for k, v in h.items()})
      counts.add(sum(int(np.sum(a)) for a in opt.active.values()))
    assert len(counts) >= 3, (name, counts)  # collapse on both sides, several levels


@pytest.mark.slow  # `linvae verify --quick` in test_cli covers the same path by default
def test_verify_quick_end_to_end(tmp_path):
  rep = verify.verify(None, "synthetic:vae-learnable", quick=True, out_dir=tmp_path / "r")
  assert rep.passed, str(rep)
  assert rep.summary["cells"] == 2 and rep.summary["max_dma"] <= 1e-5
  for f in ("results.csv", "summary.json", "summary.md", "arrays.npz", "dma_vs_step.png",
            "phase_diagram.png", "spectra.png", "scatter.png"):
    assert os.path.getsize(tmp_path / "r" / f) > 0, f
  from linvae_jax._src import report
  back = report.load(tmp_path / "r")
  assert back.passed and len(back.table) == 2
  # stricter tolerances turn the same numbers into failures with reasons
  from linvae_jax import testing
  with pytest.raises(AssertionError, match=r"cell \d+ \[beta=.*D_MA"):
    testing.assert_grid_matches_theory(rep, tolerances={"dma": 0.0, "rel_gap": 1.0})


@pytest.mark.slow
def test_verify_all_problems_pass(tmp_path):
  reps = verify.verify_problems(out_dir=tmp_path)
  bad = {n: str(r) for n, r in reps.items() if not r.passed}
  assert not bad, bad


@pytest.mark.slow
def test_verify_sampled_objective_quick():
  """Every built-in problem's quick grid passes on minibatches with the default recipe."""
  reps = verify.verify_problems(None, quick=True, objective="sampled", figures=False)
  assert len(reps) == len(problems.names())
  for name, rep in reps.items():
    assert rep.summary["tolerances"]["dma"] == 2e-2
    assert rep.summary["steps"] == 8000, name
    assert rep.passed, str(rep)


def test_counts_are_never_truncated():
  import linvae_jax as lv
  for bad in (2.5, 0, -3, True, "10"):
    with pytest.raises(ValueError, match="steps must be a whole number >= 1"):
      lv.verify(None, "synthetic:vae-learnable", quick=True, steps=bad)
  with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
    lv.verify(None, "synthetic:vae-learnable", quick=True, objective="sampled", batch_size=0)
  with pytest.raises(ValueError, match="sampled' only"):
    lv.verify(None, "synthetic:vae-learnable", quick=True, batch_size=64)


def test_data_load_is_public_and_digit_is_mnist_only():
  import linvae_jax as lv
  ds = lv.data.load("synthetic:vae-learnable", n_samples=64)
  assert isinstance(ds, lv.data.Dataset) and ds.arrays[0].shape == (64, 5)
  assert lv.data.load(ds) is ds
  with pytest.raises(ValueError, match="digit applies to MNIST data only"):
    lv.data.load("synthetic:vae-learnable", digit=3)
  with pytest.raises(ValueError, match="digit must be an integer 0-9"):
    lv.data.load("mnist:full", digit=11)
  assert verify.load_data is lv.data.load  # the old name, kept


def test_report_depends_on_the_result_type_not_on_verify():
  import ast
  import pathlib
  src = pathlib.Path(verify.__file__).with_name("report.py").read_text()
  mods = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
  mods |= {a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names}
  assert not any(m and m.endswith("verify") for m in mods), mods
  assert "linvae_jax._src.results" in mods
