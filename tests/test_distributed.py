"""Multi-process grids on JAX's distributed runtime, on one machine.

Two local processes (CPU, one device each, gloo collectives, a coordinator on
127.0.0.1 at a free port) call ``jax.distributed.initialize`` and then
``lv.train_grid(..., devices=jax.devices(), out_dir=...)`` on a tiny linear
VAE grid: each process fills its own shard of every chunk's cells, process 0
writes the store. The table process 0 returns must equal a single-process
run. With 2 devices in one process the cell layout (mesh, padding, chunking)
is the same, so the tables must agree bitwise; with 1 device it differs
(chunks padded to 1 instead of 2), and the float64 values must agree to
1e-12 (the same per-cell maths, batched differently).
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import linvae_jax as lv

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120  # both workers, start-up and compile included

# The grid and the run, shared by the workers and the in-process reference.
SETUP = textwrap.dedent("""
    import numpy as np
    import linvae_jax as lv

    def problem():
      a = np.diag([4.0, 2.0, 1.0, 0.25])
      m = lv.moments_from_second_moments(a)
      model = lv.make_model("vae", latent_dim=2)
      grid = (lv.grid.product(beta=[0.3, 0.9, 1.5, 2.5, 5.0])
              * lv.grid.constant(eta_enc=1.0, eta_dec=1.0, lr=3e-2))
      return model, m, grid

    RUN = dict(steps=120, record_every=40, chunk_size=4, progress=False)
""")

WORKER = textwrap.dedent("""
    import json, os, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    port, pid, out_dir, table_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from linvae_jax._src import distributed  # calls jax.distributed.initialize
    info0 = distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                                   timeout_s=60)
    assert info0["process_index"] == pid and info0["process_count"] == 2, info0
    import linvae_jax as lv
    from setup_problem import problem, RUN
    model, m, grid = problem()
    delay = float(os.environ.get("SLOW_WRITE_S", "0"))
    if pid == 0 and delay:  # process 0 slow to write its chunks (a busy file system)
      import time
      from linvae_jax._src.engine import store as store_lib
      write = store_lib.atomic_npz
      store_lib.atomic_npz = lambda *a, **k: (time.sleep(delay), write(*a, **k))[1]
    res = lv.train_grid(model, m, grid, devices=jax.devices(), out_dir=out_dir, **RUN)
    info = dict(process=jax.process_index(), processes=jax.process_count(),
                devices=[str(d) for d in jax.devices()], local=len(jax.local_devices()),
                n_chunks=res.info["n_chunks"], computed=res.info["chunks_computed"])
    if jax.process_index() == 0:
      res.table.to_pickle(table_path)
    print("WORKER-INFO " + json.dumps(info), flush=True)
    distributed.shutdown()
""")


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(tmp_path) -> dict:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "XLA_", "LINVAE_JAX_"))}
  env.update(JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")]))
  return env


def _reference(devices, out_dir):
  ns = {}
  exec(SETUP, ns)  # noqa: S102 -- the same problem the workers build
  model, m, grid = ns["problem"]()
  return lv.train_grid(model, m, grid, devices=devices, out_dir=out_dir, **ns["RUN"]).table


def _run_two_processes(tmp_path, slow_write_s=0.0):
  (tmp_path / "setup_problem.py").write_text(SETUP)
  (tmp_path / "worker.py").write_text(WORKER)
  port, out_dir, table = _free_port(), tmp_path / "store", tmp_path / "table.pkl"
  procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(port), str(i),
                             str(out_dir), str(table)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**_env(tmp_path), "SLOW_WRITE_S": str(slow_write_s)},
                            cwd=tmp_path)
           for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT_S)[0])
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    tails = [p.communicate()[0][-3000:] for p in procs]
    pytest.fail(f"2-process run did not finish in {TIMEOUT_S} s:\n" + "\n----\n".join(tails))
  for p, out in zip(procs, outs):
    assert p.returncode == 0, f"worker exited {p.returncode}:\n{out[-4000:]}"
  infos = [json.loads(line.split(" ", 1)[1]) for out in outs for line in out.splitlines()
           if line.startswith("WORKER-INFO ")]
  return pd.read_pickle(table), sorted(infos, key=lambda d: d["process"]), out_dir


def _assert_tables(got, want, *, exact):
  assert list(got.columns) == list(want.columns)
  assert len(got) == len(want) == 5
  for col in want.columns:
    a, b = got[col].to_numpy(), want[col].to_numpy()
    if exact or not np.issubdtype(b.dtype, np.floating):
      np.testing.assert_array_equal(a, b, err_msg=col)
    else:  # float64: the same per-cell maths batched differently
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=col)


def test_two_processes_equal_one_process(tmp_path):
  got, infos, out_dir = _run_two_processes(tmp_path)
  assert [d["processes"] for d in infos] == [2, 2]
  assert all(d["local"] == 1 and len(d["devices"]) == 2 for d in infos)
  assert infos[0]["n_chunks"] == 2  # 5 cells in chunks of 4: padding and a second chunk
  # process 0 wrote the store: it is complete and loads as the same table
  _assert_tables(lv.load_result(out_dir).table, got, exact=True)
  assert jax.device_count() >= 2, "tests/conftest.py forces 4 host devices"
  # same layout (2 devices, one process): bitwise
  _assert_tables(got, _reference(jax.devices()[:2], tmp_path / "ref2"), exact=True)
  # another layout (1 device): float64 to 1e-12
  _assert_tables(got, _reference(jax.devices()[:1], tmp_path / "ref1"), exact=False)


@pytest.mark.slow
def test_other_processes_wait_for_process_0_to_write(tmp_path):
  got, infos, out_dir = _run_two_processes(tmp_path, slow_write_s=3.0)
  assert [d["processes"] for d in infos] == [2, 2]
  _assert_tables(lv.load_result(out_dir).table, got, exact=True)


def test_initialize_rejects_partial_or_bad_arguments():
  from linvae_jax._src import distributed
  with pytest.raises(ValueError, match="process_id missing"):
    distributed.initialize("127.0.0.1:1234", num_processes=2)
  with pytest.raises(ValueError, match="coordinator must be 'host:port'"):
    distributed.initialize("127.0.0.1", num_processes=2, process_id=0)
  with pytest.raises(ValueError, match="process_id must be an integer in 0..1"):
    distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
  with pytest.raises(ValueError, match="num_processes must be an integer >= 1"):
    distributed.initialize("127.0.0.1:1234", num_processes=0, process_id=0)
  assert not jax.distributed.is_initialized()
