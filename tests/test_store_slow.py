"""Twenty SIGKILLs at random moments in a row lose nothing (#12, slow).

A subprocess trains a 48-chunk toy grid into one store and is killed with
SIGKILL at a seeded random moment, twenty times in a row (each restart
resumes the same store); a final run completes it. The parent watches the
store, so a try is killed at its random deadline, shortly after its first
new chunk lands, or at once when a second lands, whichever comes first: each
try saves at most two chunks, so the store cannot finish before the twentieth
kill however fast the machine,
and a slow one still gets kills during the open, the compile and the writes. Its table and history
must be bitwise identical to one uninterrupted run (same layout: float64,
one CPU device, chunks of one cell).
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import test_store as ts  # noqa: E402
from linvae_jax._src import grid as G  # noqa: E402

SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_enable_x64", True)
import test_store_slow as t
print("started", flush=True)
t.run({out!r})
"""


def grid():
  return G.product(beta=np.geomspace(0.01, 5.0, 24).tolist()) * G.constant(eta_dec=1.0, lr=5e-2) \
      * G.seeds([0, 1])


def run(out=None):
  return ts.run(out, grid=grid(), epochs=2000, record_every=400, chunk_size=1)


def _saved(out):
  if not os.path.isdir(out):
    return []
  return [f for f in os.listdir(out) if f.startswith("chunk_") and f.endswith(".npz")]


@pytest.mark.slow
def test_twenty_random_sigkills_then_bitwise_identical(tmp_path):
  out = str(tmp_path / "s")
  rng = np.random.default_rng(20261201)
  env = dict(os.environ, JAX_ENABLE_X64="1")
  code = SCRIPT.format(tests=os.path.dirname(__file__), out=out)
  kills = 0
  for _ in range(20):
    before = len(_saved(out))
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    # a random moment after the imports: opening the store, the compile (~4 s),
    # a chunk's compute (~0.4 s each) or a write
    assert p.stdout.readline().strip() == "started"
    deadline, late = time.monotonic() + rng.uniform(0.0, 12.0), False
    while time.monotonic() < deadline and p.poll() is None:
      landed = len(_saved(out)) - before
      if landed >= 2:
        break
      if landed == 1 and not late:  # kill within about the next chunk, often mid-write
        late = True
        deadline = min(deadline, time.monotonic() + rng.uniform(0.0, 0.5))
      time.sleep(0.01)
    if p.poll() is None:
      p.send_signal(signal.SIGKILL)
      kills += 1
    p.wait(timeout=120)
    p.stdout.close()
  assert kills == 20  # every try really was interrupted
  saved = _saved(out)
  assert 1 <= len(saved) <= 40  # the killed runs made progress between kills
  resumed = run(out)
  fresh = run()
  ts.same(resumed, fresh)
  assert sorted(os.listdir(out)) == [f"chunk_{c:05d}.npz" for c in range(48)] + ["manifest.json"]
