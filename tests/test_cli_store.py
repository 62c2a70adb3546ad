"""What ``linvae grid`` does to an existing output directory (#12, through the CLI).

Subprocess runs of a 2-cell, 10-step grid (float64, one CPU device): a rerun
continues, a different spec or a broken store is one ``linvae: error:`` line
naming the file and the way out, ``--overwrite`` starts afresh, a damaged
chunk is recomputed with a warning, and SIGINT says what was saved.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_cli import run

GRID = ("grid", "--model", "vae", "--latent-dim", "2", "--beta", "0.5,2", "--steps", "10",
        "--no-figures")


def chunks(out):
  return sorted(f for f in os.listdir(os.path.join(out, "train")) if f.startswith("chunk_"))


def test_rerun_continues_and_overwrite_only_when_asked(tmp_path):
  out = str(tmp_path / "g")
  r = run(*GRID, "--out", out)
  assert r.returncode in (0, 1), r.stderr
  files = chunks(out)
  mtimes = [os.stat(os.path.join(out, "train", f)).st_mtime_ns for f in files]
  table = (tmp_path / "g" / "results.csv").read_text()
  r = run(*GRID, "--out", out)  # the same command: continues, rewrites no chunk
  assert r.returncode in (0, 1), r.stderr
  assert [os.stat(os.path.join(out, "train", f)).st_mtime_ns for f in files] == mtimes
  assert (tmp_path / "g" / "results.csv").read_text() == table
  # a different spec is one line naming the directory and both ways out
  r = run(*GRID[:-3], "--steps", "20", "--no-figures", "--out", out)
  assert r.returncode == 2 and r.stderr.startswith("linvae: error: ") and \
      r.stderr.count("\n") == 1, r.stderr
  assert "different grid spec" in r.stderr and out in r.stderr and "--overwrite" in r.stderr
  assert [os.stat(os.path.join(out, "train", f)).st_mtime_ns for f in files] == mtimes
  r = run(*GRID[:-3], "--steps", "20", "--no-figures", "--out", out, "--overwrite")
  assert r.returncode in (0, 1), r.stderr


def test_broken_store_is_one_line_naming_the_file(tmp_path):
  out = str(tmp_path / "g")
  assert run(*GRID, "--out", out).returncode in (0, 1)
  manifest = os.path.join(out, "train", "manifest.json")
  with open(manifest, "w") as f:
    f.write("{not json")
  r = run(*GRID, "--out", out)
  assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
  assert "manifest.json" in r.stderr and "unreadable" in r.stderr and "--overwrite" in r.stderr
  os.remove(manifest)  # chunks without a manifest are never reused
  r = run(*GRID, "--out", out)
  assert r.returncode == 2 and "no manifest.json" in r.stderr, r.stderr
  assert run(*GRID, "--out", out, "--overwrite").returncode in (0, 1)


def test_damaged_chunk_is_recomputed_with_a_warning(tmp_path):
  out = str(tmp_path / "g")
  assert run(*GRID, "--out", out).returncode in (0, 1)
  table = (tmp_path / "g" / "results.csv").read_text()
  path = os.path.join(out, "train", chunks(out)[0])
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  arrays["final/loss"] = np.full_like(arrays["final/loss"], np.nan)
  with open(path, "wb") as f:
    np.savez(f, **arrays)
  r = run(*GRID, "--out", out)
  assert r.returncode in (0, 1), r.stderr
  assert "failed verification" in r.stderr and "recomputing" in r.stderr
  assert (tmp_path / "g" / "results.csv").read_text() == table


def test_optimizer_swap_is_a_different_spec(tmp_path):
  out = str(tmp_path / "g")
  assert run(*GRID, "--out", out).returncode in (0, 1)
  r = run(*GRID, "--optimizer", "lbfgs", "--out", out)
  assert r.returncode == 2 and "different grid spec" in r.stderr, r.stderr


def test_sigint_says_how_many_chunks_are_saved(tmp_path):
  out = str(tmp_path / "g")
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  args = ("grid", "--model", "vae", "--latent-dim", "2", "--beta", "0.1:3:40", "--steps",
          "20000", "--chunk-size", "1", "--no-figures", "--out", out)
  # Ctrl-C as at a terminal: a shell's background job starts with SIGINT ignored
  # and Python then installs no KeyboardInterrupt handler, so restore it first
  code = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "sys.argv = ['linvae', *sys.argv[1:]]; runpy.run_module('linvae_jax.cli', "
          "run_name='__main__')")
  p = subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and p.poll() is None and not (
      os.path.isdir(os.path.join(out, "train")) and chunks(out)):
    time.sleep(0.05)
  p.send_signal(signal.SIGINT)
  _, err = p.communicate(timeout=120)
  assert p.returncode == 130, err
  k = len([f for f in chunks(out) if f.endswith(".npz")])
  assert f"{k} of 40 chunks saved in {os.path.join(out, 'train')}; rerun the same command to " \
      "continue" in err, err
  shutil.rmtree(out)


@pytest.mark.slow  # 45 s; the API's shard test (test_store.py) stays in the default suite
def test_three_shards_then_merge_equal_one_run(tmp_path):
  out, one = str(tmp_path / "s"), str(tmp_path / "one")
  args = ("grid", "--model", "vae", "--latent-dim", "2", "--beta", "0.5:3:6", "--steps", "10",
          "--chunk-size", "2", "--no-figures")
  for i in range(3):
    r = run(*args, "--shard", f"{i}/3", "--out", out)
    assert r.returncode in (0, 1), r.stderr
    assert r.stdout.startswith(f"shard {i}/3: ") == (i < 2)
    assert ("cells passed" in r.stdout) == (i == 2)
  r = run("merge", out)
  assert r.returncode == 0 and "merged 3 chunks, 6 cells" in r.stdout, r.stderr
  assert run(*args, "--out", one).returncode in (0, 1)
  merged = (tmp_path / "s" / "merged.csv").read_text()
  assert (tmp_path / "s" / "results.csv").read_text() == (tmp_path / "one" / "results.csv").read_text()
  assert merged.splitlines()[0].startswith("beta,")
  r = run("merge", str(tmp_path / "nothing"))
  assert r.returncode == 2 and "not a grid store" in r.stderr
