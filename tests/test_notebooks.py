"""Execute the notebooks (small sizes, LINVAE_SMALL=1) with nbclient; fail on any error.

The quick start needs no MNIST and runs by default. The paper notebooks run
their MNIST cells only when ``LINVAE_MNIST`` is set, and take minutes on a
shared CPU, so they are ``slow``.
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"


def _run(name, tmp_path, timeout=900):
  nb = nbformat.read(NB / name, as_version=4)
  env = {"LINVAE_SMALL": "1", "LINVAE_ROOT": str(ROOT), "LINVAE_NB_OUT": str(tmp_path),
         "JAX_ENABLE_X64": "1", "XLA_FLAGS": ""}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)  # the kernel inherits this process's environment
  try:
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB)}})
    client.execute()
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors, errors
  return nb


MAX_NOTEBOOK_BYTES = 400_000


def test_notebooks_use_only_the_public_api():
  for p in sorted(NB.glob("*.ipynb")):
    nb = nbformat.read(p, as_version=4)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "_src" not in src, f"{p.name} imports a private module"


def test_notebooks_committed_with_small_outputs():
  """Committed executed (figures show in a repository browser), small, without errors."""
  for p in sorted(NB.glob("*.ipynb")):
    assert p.stat().st_size < MAX_NOTEBOOK_BYTES, f"{p.name}: {p.stat().st_size} bytes"
    nb = nbformat.read(p, as_version=4)
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error"], p.name
  qs = nbformat.read(NB / "quickstart.ipynb", as_version=4)
  outs = [o for c in qs.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert any("image/png" in o.get("data", {}) for o in outs), "quickstart shows no figure"


def test_run_outputs_are_git_ignored():
  import subprocess
  r = subprocess.run(["git", "check-ignore", "-q", "notebooks/_outputs/x.png"], cwd=ROOT,
                     check=False)
  assert r.returncode == 0, "notebooks/_outputs/ is not in .gitignore"


def test_quickstart(tmp_path):
  _run("quickstart.ipynb", tmp_path)
  assert (tmp_path / "dang_dma.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dang2024.ipynb", "wang_ziyin2022.ipynb", "lucas2019.ipynb",
                                  "theory_vs_nonlinear.ipynb"])
def test_paper_notebook(name, tmp_path):
  _run(name, tmp_path)
