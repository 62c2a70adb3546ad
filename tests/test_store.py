"""The on-disk store never loses, mixes or silently rewrites results (#12).

Through the API on the toy model (no closed form; float64, conftest); the
CLI cases are in tests/test_cli_store.py. Every bad state either recomputes
with a StoreWarning naming the file or refuses with a one-line ValueError.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import optax
import pandas as pd
import pytest

import linvae_jax as lv
from linvae_jax._src import engine
from linvae_jax._src import grid as G
from linvae_jax._src.engine import optimizers as opt_lib

sys.path.insert(0, os.path.dirname(__file__))
from toy_model import ToyModel  # noqa: E402

TESTS = os.path.dirname(__file__)


def toy_data(n=128, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 3)) * np.array([2.0, 1.0, 0.5])


def toy_grid(extra=None):
  g = G.product(beta=[0.01, 0.1, 1.0]) * G.constant(eta_dec=1.0, lr=5e-2) * G.seeds([0, 1])
  return g if extra is None else g * extra


def run(out=None, grid=None, **kw):
  kw = dict(dict(objective="sampled", data=toy_data(), batch_size=32, epochs=10,
                 record_every=8, chunk_size=2, progress=False), **kw)
  return engine.train_grid(ToyModel(), None, grid or toy_grid(), out_dir=out, **kw)


@pytest.fixture(scope="module")
def fresh():
  return run()


def same(a, b):
  pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
  for k in b.history:
    np.testing.assert_array_equal(a.history[k], b.history[k])


def chunk(out, c):
  return os.path.join(out, f"chunk_{c:05d}.npz")


# --------------------------------------------------------------- resume rules --

def test_plain_rerun_resumes_and_never_touches_finished_chunks(tmp_path, fresh):
  out = str(tmp_path / "s")
  first = run(out)
  same(first, fresh)
  assert isinstance(first.history, engine.result.LazyArrays)  # history stays on disk
  mtimes = {c: os.stat(chunk(out, c)).st_mtime_ns for c in range(3)}
  again = run(out)
  assert again.info["chunks_loaded"] == 3 and again.info["chunks_computed"] == 0
  assert {c: os.stat(chunk(out, c)).st_mtime_ns for c in range(3)} == mtimes
  same(again, fresh)


def test_different_spec_is_refused_in_one_line_and_overwrite_only_when_asked(tmp_path):
  out = str(tmp_path / "s")
  run(out)
  with pytest.raises(ValueError) as e:
    run(out, grid=toy_grid(G.constant(init_scale=0.2)))
  msg = str(e.value)
  assert "\n" not in msg and "different grid spec" in msg and repr(out) in msg
  assert "overwrite=True" in msg and "another output directory" in msg
  assert len(os.listdir(out)) == 4  # nothing was deleted
  redo = run(out, grid=toy_grid(G.constant(init_scale=0.2)), overwrite=True)
  assert redo.info["chunks_computed"] == 3
  with pytest.raises(ValueError, match="contradict"):
    run(out, resume=True, overwrite=True)


@pytest.mark.parametrize("change", [
    dict(epochs=12), dict(record_every=4), dict(batch_size=16), dict(optimizer=lv.AdamDecay(80)),
    dict(data=toy_data(seed=5)), dict(eval_data=toy_data(seed=6)), dict(tol_loss=1e-9),
])
def test_spec_identity_covers_everything_that_changes_a_result(tmp_path, change):
  out = str(tmp_path / "s")
  base = dict(objective="sampled", data=toy_data(), batch_size=32, epochs=10, record_every=8,
              chunk_size=2, progress=False)
  engine.train_grid(ToyModel(), None, toy_grid(), out_dir=out, steps=None, **base)
  with pytest.raises(ValueError, match="different grid spec"):
    engine.train_grid(ToyModel(), None, toy_grid(), out_dir=out, **dict(base, **change))


def test_optimizer_swap_is_never_mixed(tmp_path):
  out = str(tmp_path / "s")
  with pytest.raises(ValueError, match="optimizer_id"):
    run(out, optimizer=optax.sgd(1e-2))
  sgd = run(out, optimizer=optax.sgd(1e-2), optimizer_id="sgd(1e-2)")
  with pytest.raises(ValueError, match="different grid spec"):
    run(out, optimizer=optax.adam(1e-2), optimizer_id="adam(1e-2)")
  adam = run(str(tmp_path / "a"), optimizer=optax.adam(1e-2), optimizer_id="adam(1e-2)")
  assert not np.array_equal(sgd.table.loss, adam.table.loss)
  # the built-in optimisers are described with every hyperparameter
  assert opt_lib.identity(lv.AdamDecay(100)) != opt_lib.identity(lv.AdamDecay(200))
  assert opt_lib.identity(lv.LBFGS(5)) != opt_lib.identity(lv.LBFGS(10))
  assert opt_lib.identity(optax.sgd(1e-2)) is None


def test_chunks_without_a_manifest_are_never_reused(tmp_path, fresh):
  out = str(tmp_path / "s")
  run(out)
  os.remove(os.path.join(out, "manifest.json"))
  with pytest.raises(ValueError, match="no manifest.json"):
    run(out)
  with pytest.raises(ValueError, match="no manifest.json"):  # nor under another spec
    run(out, grid=toy_grid(G.constant(init_scale=0.2)))
  redo = run(out, overwrite=True)
  assert redo.info["chunks_computed"] == 3
  same(redo, fresh)


# ----------------------------------------------------------------- bad chunks --

def _rewrite(path, edit):
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  edit(arrays)
  with open(path, "wb") as f:
    np.savez(f, **arrays)


def _nan_loss(arrays):
  arrays["final/loss"] = np.full_like(arrays["final/loss"], np.nan)


def _truncate(path):
  with open(path, "rb") as f:
    head = f.read(100)
  with open(path, "wb") as f:
    f.write(head)


@pytest.mark.parametrize("damage, why", [
    (lambda out: shutil.copy(chunk(out, 0), chunk(out, 1)), "holds chunk 0"),
    (lambda out: _rewrite(chunk(out, 1), _nan_loss), "do not match their checksum"),
    (lambda out: _truncate(chunk(out, 1)), "cannot be read"),
    (lambda out: open(chunk(out, 1), "w").close(), "cannot be read"),
])
def test_bad_chunk_is_recomputed_with_a_warning_or_refused(tmp_path, fresh, damage, why):
  out = str(tmp_path / "s")
  run(out)
  damage(out)
  with pytest.raises(ValueError, match=why):
    run(out, on_corrupt="raise")
  with pytest.warns(engine.StoreWarning, match=f"chunk_00001.npz.*{why}"):
    redo = run(out)
  assert redo.info["chunks_computed"] == 1 and redo.info["chunks_loaded"] == 2
  same(redo, fresh)
  assert run(out).info["chunks_computed"] == 0  # mended on disk


def test_chunk_of_another_spec_is_not_loaded(tmp_path, fresh):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  run(a)
  run(b, grid=toy_grid(G.constant(init_scale=0.2)))
  shutil.copy(chunk(b, 1), chunk(a, 1))
  with pytest.warns(engine.StoreWarning, match="belongs to another spec"):
    same(run(a), fresh)


@pytest.mark.parametrize("content, why", [
    ("{}", "lacks or mistypes"), ("not json", "unreadable"), ("[1, 2]", "not a JSON object"),
    (None, "was edited"),
])
def test_broken_manifest_is_refused_naming_the_file(tmp_path, fresh, content, why):
  out = str(tmp_path / "s")
  run(out)
  path = os.path.join(out, "manifest.json")
  if content is None:  # an edited chunk_size
    with open(path) as f:
      m = json.load(f)
    m["chunk_size"] = 4
    content = json.dumps(m)
  with open(path, "w") as f:
    f.write(content)
  with pytest.raises(ValueError, match=why) as e:
    run(out)
  assert repr(path) in str(e.value) and "overwrite=True" in str(e.value)
  same(run(out, overwrite=True), fresh)


def test_stale_temporary_files_are_removed_at_start(tmp_path):
  out = str(tmp_path / "s")
  run(out)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  host = socket.gethostname()
  stale = os.path.join(out, f"chunk_00001.npz.tmp-{host}-{dead.pid}")
  live = os.path.join(out, f"chunk_00002.npz.tmp-{host}-{os.getpid()}")
  for p in (stale, live):
    with open(p, "wb") as f:
      f.write(b"partial")
  run(out)
  assert not os.path.exists(stale)
  assert os.path.exists(live)  # a writer that is still alive keeps its file
  os.remove(live)


# ------------------------------------------------------- kills and interrupts --

KILL_IN_WRITE = r"""
import os, signal, sys
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_enable_x64", True)
from linvae_jax._src.engine import store
import test_store as t
real, n = os.replace, [0]
def replace(src, dst):
  if dst.endswith("chunk_00001.npz"):
    os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is written, not renamed
  real(src, dst)
store.os.replace = replace
t.run({out!r})
"""


def test_sigkill_during_a_write_loses_nothing(tmp_path, fresh):
  out = str(tmp_path / "s")
  p = subprocess.run([sys.executable, "-c", KILL_IN_WRITE.format(tests=TESTS, out=out)],
                     env=dict(os.environ, JAX_ENABLE_X64="1"), capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
  files = sorted(os.listdir(out))
  assert files[:2] == ["chunk_00000.npz", "chunk_00001.npz.tmp-" + files[1].split(".tmp-")[1]]
  assert "chunk_00001.npz" not in files
  resumed = run(out)
  assert resumed.info["chunks_loaded"] == 1 and resumed.info["chunks_computed"] == 2
  assert sorted(os.listdir(out)) == [f"chunk_{c:05d}.npz" for c in range(3)] + ["manifest.json"]
  same(resumed, fresh)


INTERRUPTIBLE = r"""
import signal, sys
# Ctrl-C as at a terminal: a shell's background job starts with SIGINT ignored,
# and Python then installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_enable_x64", True)
import test_store as t
from linvae_jax._src import grid as G
t.run({out!r}, grid=G.product(beta=list(0.01 + 0.01 * __import__("numpy").arange(40)))
      * G.constant(eta_dec=1.0, lr=5e-2), epochs=200, chunk_size=1)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_says_how_many_chunks_are_saved(tmp_path, sig):
  out = str(tmp_path / "s")
  p = subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE.format(tests=TESTS, out=out)],
                       env=dict(os.environ, JAX_ENABLE_X64="1"), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not os.path.exists(chunk(out, 0)) and time.time() < deadline and p.poll() is None:
    time.sleep(0.05)
  p.send_signal(sig)
  _, err = p.communicate(timeout=120)
  assert p.returncode != 0
  k = len([f for f in os.listdir(out) if f.startswith("chunk_") and f.endswith(".npz")])
  assert f"{k} of 40 chunks saved in {out}; rerun the same command to continue" in err, err


# ------------------------------------------------------- job-array shards (#16) --

def test_three_shards_merge_to_the_single_run(tmp_path, fresh):
  out = str(tmp_path / "s")
  parts = [run(out, shard=(i, 3)) for i in range(3)]
  assert [p.info["complete"] for p in parts] == [False, False, True]
  assert [len(p.table) for p in parts] == [2, 2, 2]
  merged = lv.load_result(out)
  same(merged, fresh)
  with pytest.raises(ValueError, match="incomplete: 1 of 3 chunks missing"):
    os.remove(chunk(out, 2))
    lv.load_result(out)
  with pytest.raises(ValueError, match="shard"):
    run(out, shard=(3, 3))
