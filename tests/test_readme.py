"""The README's Python example runs, and CI runs exactly the README's test command."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
  blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
  test_cmd = [b for b in blocks if "pytest" in b][0].strip().split(" && ")
  pytest_part = " && ".join(c for c in test_cmd if "pytest" in c)
  assert pytest_part in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_readme_python_example_runs(capsys):
  code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
  with pytest.MonkeyPatch.context() as mp:
    import jax
    mp.setattr(jax.config, "update", lambda *a, **k: None)  # conftest already set x64
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)
  out = capsys.readouterr().out
  t = ns["res"].table
  assert (t["pred_active_z"] == t["active_z"]).all()
  # float64, 12k Adam steps: the beta = 1 cells (4 active modes) are the slowest
  assert t["gap"].abs().max() < 1e-6 and t["dma_omega"].max() < 1e-4
  assert "omega*" in out and "critical beta" in out
  # the example's convergence claims, read back from its printed table
  assert re.search(r"active\s+\[ True  True  True False\]", out)
