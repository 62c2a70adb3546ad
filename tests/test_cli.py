"""The ``linvae`` command line: subprocess runs at reduced size, and bad arguments."""
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from linvae_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
_CACHE = None


def _cache_dir():
  """One cache directory per test session (moments and compiled programs)."""
  global _CACHE
  if _CACHE is None:
    import tempfile
    _CACHE = tempfile.mkdtemp(prefix="linvae-test-cache-")
  return _CACHE


def run(*args, cwd=None, timeout=900, env=None):
  e = dict(os.environ)
  e.pop("XLA_FLAGS", None)  # one CPU device in the child: the default user setup
  e.setdefault("LINVAE_CACHE_DIR", _cache_dir())
  e.update(env or {})
  return subprocess.run([sys.executable, "-m", "linvae_jax.cli", *args], capture_output=True,
                        text=True, cwd=cwd, env=e, timeout=timeout)


@pytest.fixture(autouse=True)
def _no_compile_cache_in_process(monkeypatch):
  """In-process ``cli.main`` must not switch the test session's JAX config."""
  monkeypatch.setattr(cli, "enable_compile_cache", lambda path=None: path)


def test_parse_axis_forms():
  assert cli.parse_axis("0.1:5:3") == pytest.approx([0.1, 2.55, 5.0], rel=1e-15)  # float64
  assert cli.parse_axis("log:1e-2:1e1:4") == pytest.approx([1e-2, 1e-1, 1.0, 10.0], rel=1e-12)
  assert cli.parse_axis("0.5,1,2") == [0.5, 1.0, 2.0]
  assert cli.parse_axis("3") == [3.0]
  assert cli.parse_axis("[1, 0.5]") == [[1.0, 0.5]]
  for bad in ("", "1:2", "a,b", "log:-1:2:3", "1:2:x", "1:2:0", "[]", "nan"):
    with pytest.raises(cli.UsageError):
      cli.parse_axis(bad, "beta")


@pytest.mark.parametrize("argv,match", [
    (["grid", "--model", "nope"], "unknown model 'nope'"),
    (["grid", "--model", "vae", "--beta", "1:2"], "malformed axis spec '1:2'"),
    (["grid", "--model", "vae", "--data", "missing.npz"], "does not exist"),
    (["grid", "--model", "vae", "--beta2", "1"], "not a hyperparameter of vae"),
    (["grid", "--model", "vae", "--sigma2-var", "fixed"], "does not apply"),
    (["theory", "--model", "vae", "--beta", "1,2"], "theory takes one value"),
    (["verify", "--problem", "nope"], "unknown problem 'nope'"),
    (["report", "/nonexistent/dir"], "does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_one_line_error(argv, match, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert match in err
  assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_argument_subprocess_is_one_line():
  r = run("grid", "--model", "vae", "--eta-dec", "log:0:1:3")
  assert r.returncode == 2
  assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
  assert "log spacing needs positive ends" in r.stderr


def test_help_on_every_subcommand(capsys):
  r = run("--help")  # the script itself, once
  assert r.returncode == 0 and "usage: linvae" in r.stdout
  for sub in (["verify"], ["grid"], ["theory"], ["report"]):
    with pytest.raises(SystemExit) as e:
      cli.main([*sub, "--help"])
    assert e.value.code == 0
    assert f"usage: linvae {sub[0]}" in capsys.readouterr().out


def test_rerun_into_directory_of_a_different_spec_is_refused(tmp_path):
  os.makedirs(tmp_path / "g" / "train")
  with open(tmp_path / "g" / "train" / "manifest.json", "w") as f:
    json.dump({"spec_hash": "0000", "chunk_size": 1, "n_chunks": 1, "cells": 1}, f)
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--beta", "1", "--steps", "10",
          "--out", str(tmp_path / "g"))
  assert r.returncode == 2, r.stderr
  assert r.stderr.startswith("linvae: error: ") and r.stderr.count("\n") == 1
  assert str(tmp_path / "g") in r.stderr and "overwrite" in r.stderr
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--beta", "1", "--steps", "10",
          "--out", str(tmp_path / "g"), "--overwrite", "--no-figures")
  assert r.returncode in (0, 1) and "cells passed" in r.stdout, r.stderr  # 10 steps: trained
  assert json.loads((tmp_path / "g" / "train" / "manifest.json").read_text())["spec_hash"] != "0000"


def test_theory_synthetic_prints_thresholds():
  r = run("theory", "--model", "vae", "--latent-dim", "4", "--data", "synthetic:vae-learnable",
          "--beta", "1")
  assert r.returncode == 0, r.stderr
  out = r.stdout
  assert "crit_beta" in out and "crit_eta_dec" in out
  assert "latent z: 3 of 4 modes active" in out
  # largest variance 2^2.5: complete collapse at beta = 5.657 (eta_dec = 1)
  assert "complete collapse of z at beta >= 5.657" in out


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
  out = tmp_path_factory.mktemp("verify") / "rep"
  r = run("verify", "--quick", "--problem", "vae-learnable", "--out", str(out))
  return r, out


def test_verify_quick_main_job(verified):
  r, out = verified
  assert r.returncode == 0, r.stdout + r.stderr
  assert "vae-learnable" in r.stdout and " ok" in r.stdout and "PASS" in r.stdout
  for f in ("summary.md", "summary.json", "results.csv", "vae-learnable/results.csv",
            "vae-learnable/summary.md", "vae-learnable/phase_diagram.png",
            "vae-learnable/dma_vs_step.png", "vae-learnable/spectra.png",
            "vae-learnable/scatter.png"):
    assert os.path.getsize(out / f) > 0, f
  assert json.loads((out / "summary.json").read_text())["ok"] is True


def test_report_regenerates(verified):
  _, out = verified
  png = out / "vae-learnable" / "phase_diagram.png"
  os.remove(png)
  r = run("report", str(out))
  assert r.returncode == 0, r.stderr
  assert os.path.getsize(png) > 0 and "phase_diagram" in r.stdout


@pytest.mark.slow
def test_verify_exit_code_on_failure(tmp_path):
  r = run("verify", "--quick", "--problem", "vae-learnable", "--tol-dma", "0", "--out",
          str(tmp_path / "r"))
  assert r.returncode == 1
  assert "FAIL" in r.stdout and "D_MA(" in r.stdout


@pytest.mark.slow
def test_grid_subcommand(tmp_path):
  x = __import__("numpy").random.default_rng(0).standard_normal((200, 3)) * [2.0, 1.0, 0.3]
  __import__("numpy").savez(tmp_path / "d.npz", x=x)
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--data", str(tmp_path / "d.npz"),
          "--beta", "0.5,2", "--eta-dec", "1", "--steps", "4000", "--out", str(tmp_path / "g"))
  assert r.returncode == 0, r.stderr
  assert "PASS" in r.stdout and "2/2 cells passed" in r.stdout and "report in" in r.stdout
  assert len(r.stdout.splitlines()) <= 4  # compact: the table goes to results.csv
  assert os.path.getsize(tmp_path / "g" / "results.csv") > 0
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--data", str(tmp_path / "d.npz"),
          "--beta", "0.5,2", "--eta-dec", "1", "--steps", "4000", "--out", str(tmp_path / "g"))
  assert r.returncode == 0, r.stderr  # the rerun continues from the saved chunks


def test_verify_with_lbfgs(tmp_path):
  r = run("verify", "--problem", "vae-learnable", "--quick", "--optimizer", "lbfgs",
          "--steps", "1000", "--no-figures", "--out", str(tmp_path / "v"))
  assert r.returncode == 0, r.stdout + r.stderr
  assert "PASS: 1 problems" in r.stdout
  r = run("verify", "--problem", "vae-learnable", "--optimizer", "lbfgs",
          "--objective", "sampled", "--out", str(tmp_path / "w"))
  assert r.returncode != 0 and "needs --objective analytic" in r.stderr


# ------------------------------------------------------------------ MNIST --

def _mnist_or_skip():
  from linvae_jax._src.data import mnist
  path = os.environ.get(mnist.ENV_VAR)
  if path and os.path.exists(path):
    return
  if os.environ.get("CI"):
    pytest.fail(f"CI is set but no MNIST source was found (${mnist.ENV_VAR}={path!r}); "
                f"{mnist.HOW_TO_GET}")
  pytest.skip(f"MNIST not available: {mnist.HOW_TO_GET}")


@pytest.mark.mnist
@pytest.mark.slow
def test_theory_mnist_cvae_complete_collapse_at_3_33():
  _mnist_or_skip()
  r = run("theory", "--model", "cvae", "--latent-dim", "64", "--data", "mnist:quadrant",
          "--beta", "1", "--eta-enc", "1", "--eta-dec", "1")
  assert r.returncode == 0, r.stderr
  assert "complete collapse of z at beta >= 3.331" in r.stdout  # Dang et al. Fig 6(a)
  assert "latent z: 6 of 64 modes active" in r.stdout  # Fig 8 prediction


@pytest.mark.mnist
@pytest.mark.slow
def test_theory_mnist_mhvae_z2_complete_collapse_at_6_17():
  _mnist_or_skip()
  r = run("theory", "--model", "mhvae", "--latent-dim", "64", "--latent-dim2", "64",
          "--data", "mnist:full", "--beta1", "1", "--beta2", "1", "--sigma1", "1",
          "--eta-enc", "1", "--eta-dec", "1")
  assert r.returncode == 0, r.stderr
  assert "complete collapse of z2 at beta2 >= 6.172" in r.stdout  # Dang et al. Fig 6(b)


# ------------------------------------------------- defects of issue 13 --

def _args(*argv):
  p = cli.build_parser()
  return p.parse_args(cli._join_negative_values(p, list(argv)))  # noqa: SLF001


def test_lr_axis_is_an_axis_not_a_conflict():
  from linvae_jax._src.models import make
  model = make("vae", latent_dim=2)
  g = cli._grid_from_args(_args("grid", "--model", "vae", "--lr", "0.01,0.03"), model)  # noqa: SLF001
  assert len(g) == 2
  _, cells, _ = g.resolve(model)
  assert sorted(np.asarray(cells["lr"]).tolist()) == [0.01, 0.03]


def test_seed_axis_takes_whole_numbers():
  assert cli.parse_axis("0,1,2", "seed", integer=True) == [0, 1, 2]
  with pytest.raises(cli.UsageError, match="whole numbers"):
    cli.parse_axis("1.5", "seed", integer=True)


@pytest.mark.parametrize("argv,match", [
    (["grid", "--model", "vae", "--beta", "-1,1"], "--beta must be > 0, got -1.0"),
    (["grid", "--model", "vae", "--eta-dec", "-0.5"], "--eta-dec must be > 0"),
    (["grid", "--model", "vae", "--lr", "-1e-3"], "--lr must be > 0"),
    (["theory", "--model", "vae", "--beta", "-2"], "--beta must be > 0"),
    (["grid", "--model", "vae", "--out", "README.md"], "is a file, not a directory"),
    (["grid", "--model", "vae", "--out", "/nonexistent/x/y"], "parent directory"),
    (["grid", "--model", "vae", "--batch-size", "0", "--objective", "sampled"],
     "--batch-size: must be a whole number >= 1"),
    (["grid", "--model", "vae", "--batch-size", "16"], "applies to --objective sampled only"),
    (["grid", "--model", "vae", "--seed", "1.5"], "--seed: takes whole numbers"),
    (["grid", "--model", "vae", "--seed", "-1"], "--seed takes whole numbers >= 0"),
    (["grid", "--model", "vae", "--steps", "2.5"], "--steps: must be a whole number >= 1"),
    (["verify", "--steps", "0"], "--steps: must be a whole number >= 1"),
    (["grid", "--model", "vae", "--digit", "3"], "--digit applies to MNIST data only"),
    (["theory", "--model", "vae", "--digit", "12", "--data", "mnist:full"], "digit 0-9"),
    (["grid", "--model", "vae", "--tol-dma", "-1"], "--tol-dma: must be a finite number >= 0"),
    (["grid", "--model", "vae", "--devices", "0"], "--devices: must be a whole number >= 1"),
    (["grid", "--model", "vae", "--devices", "99"], "--devices 99: 4 device(s) available"),
    (["theory", "--model", "mhvae", "--latent-dim", "6", "--data", "synthetic:mhvae-thm3"],
     "larger than the data dimension"),
    (["grid", "--model", "vae", "--optimizer", "lbfgs", "--objective", "sampled"],
     "needs --objective analytic"),
])
def test_bad_input_one_line_with_one_prefix(argv, match, capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)  # README.md exists here
  code = cli.main(argv + ([] if "--out" in argv else ["--out", str(tmp_path / "o")])
                  if argv[0] != "theory" else argv)
  err = capsys.readouterr().err
  assert code == 2, err
  assert err.startswith("linvae: error: ") and err.count("\n") == 1, err
  assert match in err, err
  assert "error: linvae" not in err  # one prefix, not two


def test_every_error_has_the_same_prefix(capsys):
  for argv in (["frobnicate"], ["grid"], ["grid", "--model", "nope"], ["verify", "--bogus"],
               ["report", "/nonexistent"], ["grid", "--model", "vae", "--beta", "1:2"]):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("linvae: error: ") and err.count("\n") == 1, (argv, err)


def test_help_is_plain_and_complete(capsys):
  for sub in ("verify", "grid", "theory", "report", "merge"):
    with pytest.raises(SystemExit):
      cli.main([sub, "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out, sub
    p = cli.build_parser()
    sp = p._subparsers._group_actions[0].choices[sub]  # noqa: SLF001
    for a in sp._actions:  # noqa: SLF001
      if a.option_strings and a.help != "==SUPPRESS==":
        assert a.help, (sub, a.option_strings)  # every option is explained
        if a.default not in (None, False) and not isinstance(a, type(sp._actions[0])):  # noqa: SLF001
          assert "default" in a.help, (sub, a.option_strings, a.help)
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  top = capsys.readouterr().out
  assert "``" not in top and "continues" in top and "--overwrite" in top
  with pytest.raises(SystemExit):
    cli.main(["grid", "--help"])
  g = " ".join(capsys.readouterr().out.split())
  for needle in ("--dtype", "--objective", "--tol-dma", "--tol-gap", "--overwrite",
                 "--progress", "--no-progress", "--no-cache", "--no-compile-cache",
                 "standard deviation (not a variance", "different settings are refused",
                 "--overwrite deletes them and starts afresh", "continues from the finished"):
    assert needle in g, needle


def test_theory_mhvae_d2_above_d1_prints_no_nan():
  r = run("theory", "--model", "mhvae", "--latent-dim", "2", "--latent-dim2", "4",
          "--data", "synthetic:mhvae-thm3")
  assert r.returncode == 0, r.stderr
  assert "nan" not in r.stdout.lower()
  assert "latent z2: 2 of 4 modes active" in r.stdout


def test_grid_on_two_host_devices_progress_and_failures(tmp_path):
  # --devices 2 on a CPU; a grid that fails every cell exits 1 and names cells by values
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--beta", "0.5,2", "--steps", "20",
          "--devices", "2", "--tol-dma", "0", "--out", str(tmp_path / "g"), "--progress",
          "--no-figures")
  assert r.returncode == 1, r.stderr
  assert "FAIL: vae[learnable] on synthetic:vae-learnable: 0/2 cells passed" in r.stdout
  assert "FAIL beta=0.5" in r.stdout and "FAIL beta=2" in r.stdout and "cell 0" not in r.stdout
  assert re.search(r"\d+/\d+ \[", r.stderr)  # a tqdm bar on stderr
  assert len(json.loads((tmp_path / "g" / "summary.json").read_text())["engine"]["devices"]) == 2
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--beta", "0.5,2", "--steps", "20",
          "--tol-dma", "0", "--out", str(tmp_path / "h"), "--no-progress", "--no-figures")
  assert r.returncode == 1 and r.stderr == "", r.stderr  # no bar, no noise


@pytest.mark.slow
def test_readme_grid_example_passes_every_cell(tmp_path):
  readme = (ROOT / "README.md").read_text()
  line = next(ln for ln in readme.splitlines() if ln.startswith("linvae grid "))
  argv = line.split("#")[0].split()[1:]
  i = argv.index("--out")
  argv[i + 1] = str(tmp_path / "runs")
  r = run(*argv)
  assert r.returncode == 0, r.stdout + r.stderr
  assert re.search(r"PASS: .* (\d+)/\1 cells passed", r.stdout), r.stdout
  assert len(r.stdout.splitlines()) <= 4


def test_import_does_not_start_jax_backends():
  # else `linvae grid --devices N` cannot ask for N host devices any more
  code = ("import linvae_jax, linvae_jax.cli\nfrom jax._src import xla_bridge\n"
          "assert not xla_bridge.backends_are_initialized()\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
