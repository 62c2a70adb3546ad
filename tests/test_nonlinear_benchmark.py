"""benchmarks/nonlinear_grid.py --small: the three-way speed benchmark (engine, sequential
JAX, PyTorch one process per beta) runs end to end and writes its records with finite
numbers. Not a timing assertion. Run as a user would: a fresh process with JAX's
defaults (float32, one CPU device), not this suite's float64 / strict settings."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "nonlinear_grid.py"


def _env():
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_ENABLE_X64", "JAX_NUMPY_DTYPE_PROMOTION")}
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  return env


@pytest.mark.slow
def test_small_benchmark_writes_finite_records(tmp_path):
  pytest.importorskip("torch")
  p = subprocess.run([sys.executable, str(SCRIPT), "--small", "--out", str(tmp_path)],
                     capture_output=True, text=True, env=_env(), timeout=900, check=False)
  assert p.returncode == 0, p.stderr[-3000:]
  rec = json.loads((tmp_path / "nonlinear_grid_small.json").read_text())
  md = (tmp_path / "nonlinear_grid_small.md").read_text()
  assert "SYNTHETIC" in rec["data"] and rec["small"] is True
  for k in ("engine_cold_s", "engine_warm_s", "engine_compile_s", "sequential_s",
            "sequential_compile_s", "torch_wall_s", "torch_train_s", "torch_startup_s",
            "speedup_vs_torch_warm", "speedup_vs_torch_incl_compile",
            "speedup_vs_sequential_warm", "engine_over_torch_time",
            "engine_over_sequential_time", "max_rel_final_loss_seq_vs_engine"):
    assert isinstance(rec[k], float) and math.isfinite(rec[k]) and rec[k] >= 0, k
  assert rec["engine_compiles"] == 1 and rec["engine_cold_equals_warm_bitwise"] is True
  assert rec["torch_processes"] == 2 and rec["cells"] == 4
  # the sequential loop replays the engine's keys: same losses up to float32 reassociation
  assert rec["max_rel_final_loss_seq_vs_engine"] < 1e-4
  for row in rec["final_loss_per_beta"]:
    assert all(math.isfinite(row[k]) for k in ("engine", "sequential", "torch"))
  assert len(rec["load_average_start"]) == 3 and rec["machine"]["cores"] >= 1
  assert "Load average" in md and "speed-up vs PyTorch" in md and rec["machine"]["cpu"] in md


def test_bad_arguments_are_one_line_errors(tmp_path):
  p = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "0", "--out", str(tmp_path)],
                     capture_output=True, text=True, env=_env(), timeout=120, check=False)
  assert p.returncode == 2 and "--epochs must be >= 1" in p.stderr
