"""OpenBLAS threads in jax's CPU LAPACK calls: one thread vs OpenBLAS's default, side by side.

jax's CPU SVD and eigh call scipy's OpenBLAS from an XLA thread; OpenBLAS's
own worker threads spin-wait beside XLA's pool and any other busy process.
``linvae_jax._src.lapack_threads`` runs the engine with one OpenBLAS thread.
This measures, in one process, with the thread count switched per call:

* ``svd``: singular values of a (588, 64) matrix (the CVAE's U1 on MNIST
  quadrant shapes), jitted;
* ``record``: one history record of that CVAE (``compare.history_metrics``:
  the analytic loss, D_MA of every spectrum, the rank view), jitted;
* ``grid``: a warm ``train_grid`` of 3 cells x 50 L-BFGS steps, a record
  every 10 steps (with ``LINVAE_LAPACK_THREADS=0``, i.e. unlimited, for the
  default rows).

each at ``--busy 0`` and ``1`` extra busy processes (a spinning Python loop
per process: what a second pytest worker or any other job does to a 2-core
machine), float32 (random PSD moments of the MNIST shapes, no MNIST needed).
Rounds alternate one thread / default; medians with min-max.

Run: ``python benchmarks/lapack_threads.py [--rounds 5]``; writes
``benchmarks/results/lapack_threads_cpu.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import linvae_jax as lv  # noqa: E402
from linvae_jax._src import compare, engine, lapack_threads, spectra  # noqa: E402
from linvae_jax._src import grid as G  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "reproduce"))
from baselines import random_moments  # noqa: E402
from common import cpu_model  # noqa: E402


def cases():
  m = random_moments(lv, 196, 588, seed=1).astype(jnp.float32)
  model = lv.make_model("cvae", latent_dim=64)
  h = {k: jnp.asarray(1.0, jnp.float32) for k in model.hyper_names}
  p = model.init(jax.random.key(0), m)
  o = model.optimum(m, h)
  f = model.input_factor(m)
  svd = jax.jit(spectra.svdvals)
  rec = jax.jit(lambda p: compare.history_metrics(model, m, h, p, o, f))
  grid = G.product(beta=[0.3, 1.0, 3.0]) * G.constant(eta_enc=1.0, eta_dec=1.0, lr=1e-2)
  run_grid = lambda: engine.train_grid(model, m, grid, steps=50, optimizer=engine.LBFGS(),  # noqa
                                       record_every=10, progress=False)
  return {"svd": lambda: jax.block_until_ready(svd(p.U1)),
          "record": lambda: jax.block_until_ready(rec(p)),
          "grid": run_grid}


def timed(fn, limit: bool, reps: int) -> float:
  """Median seconds of ``reps`` calls, OpenBLAS at one thread or at its default."""
  os.environ[lapack_threads.ENV] = "1" if limit else "0"
  ts = []
  for _ in range(reps):
    with lapack_threads.limited():  # a no-op at "0"
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def spin(n):
  return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--busy", type=int, nargs="+", default=[0, 1])
  ap.add_argument("--out", default=str(HERE / "results"))
  a = ap.parse_args(argv)
  from threadpoolctl import threadpool_info
  cs = cases()
  for fn in cs.values():  # compile
    fn()
  reps = {"svd": 20, "record": 10, "grid": 1}
  res = {}
  for busy in a.busy:
    procs = spin(busy)
    try:
      time.sleep(1.0)
      for name, fn in cs.items():
        one, dflt = [], []
        for r in range(a.rounds):
          for limit in ((True, False) if r % 2 == 0 else (False, True)):
            (one if limit else dflt).append(timed(fn, limit, reps[name]))
        res[f"{name}_busy{busy}"] = dict(
            one_thread_ms=[1e3 * t for t in one], default_ms=[1e3 * t for t in dflt],
            ratio_default_over_one=[d / o for d, o in zip(dflt, one)])
        print(name, busy, f"one {1e3 * statistics.median(one):.1f} ms, default "
              f"{1e3 * statistics.median(dflt):.1f} ms", flush=True)
    finally:
      for p in procs:
        p.kill()
        p.wait()
  os.environ.pop(lapack_threads.ENV, None)
  blas = [dict(lib=Path(i["filepath"]).name, num_threads=i["num_threads"],
               version=i.get("version")) for i in threadpool_info() if i["user_api"] == "blas"]
  meta = dict(cpu=cpu_model(), cores=os.cpu_count(), jax=jax.__version__, blas=blas,
              date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rounds=a.rounds,
              command="python benchmarks/lapack_threads.py " + " ".join(argv or sys.argv[1:]))
  Path(a.out).mkdir(parents=True, exist_ok=True)
  base = Path(a.out) / "lapack_threads_cpu"
  base.with_suffix(".json").write_text(json.dumps(dict(meta=meta, results=res), indent=1))
  md = ["# OpenBLAS threads in jax's CPU LAPACK calls: one vs default (cpu)", "",
        f"- {meta['cpu']}, {meta['cores']} cores, jax {meta['jax']}; no GPU",
        f"- {meta['date']}, `{meta['command']}`; OpenBLAS libraries loaded: "
        + ", ".join(f"{b['lib']} ({b['num_threads']} threads by default)" for b in blas),
        "- CVAE on MNIST quadrant shapes (x 196, y 588, d1 = 64), float32; medians over "
        f"{a.rounds} rounds (min-max), the two settings alternating", "",
        "| case | busy processes | one thread ms | default ms | default / one |",
        "|---|---|---|---|---|"]
  fmt = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"  # noqa: E731
  for k, v in res.items():
    name, busy = k.rsplit("_busy", 1)
    rx = v["ratio_default_over_one"]
    md.append(f"| {name} | {busy} | {fmt(v['one_thread_ms'])} | {fmt(v['default_ms'])} | "
              f"{statistics.median(rx):.2f}x ({min(rx):.2f}-{max(rx):.2f}) |")
  base.with_suffix(".md").write_text("\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
