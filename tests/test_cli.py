"""The ``linvae`` command line: subprocess runs at reduced size, and bad arguments."""
import json
import os
import subprocess
import sys

import pytest

from linvae_jax import cli


def run(*args, cwd=None, timeout=900):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device in the child: the default user setup
  return subprocess.run([sys.executable, "-m", "linvae_jax.cli", *args], capture_output=True,
                        text=True, cwd=cwd, env=env, timeout=timeout)


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


def test_resume_into_directory_of_a_different_spec(tmp_path):
  os.makedirs(tmp_path / "g" / "train")
  with open(tmp_path / "g" / "train" / "manifest.json", "w") as f:
    json.dump({"spec_hash": "0000", "chunk_size": 1, "n_chunks": 1, "cells": 1}, f)
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--beta", "1", "--steps", "10",
          "--out", str(tmp_path / "g"), "--resume")
  assert r.returncode == 2, r.stderr
  assert "different grid spec" in r.stderr and "Traceback" not in r.stderr


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
  assert "dma_omega" in r.stdout and "report in" in r.stdout
  assert os.path.getsize(tmp_path / "g" / "results.csv") > 0
  r = run("grid", "--model", "vae", "--latent-dim", "2", "--data", str(tmp_path / "d.npz"),
          "--beta", "0.5,2", "--eta-dec", "1", "--steps", "4000", "--out", str(tmp_path / "g"),
          "--resume")
  assert r.returncode == 0, r.stderr


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
