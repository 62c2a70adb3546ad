"""Grid engine vs a sequential Python loop over the same jitted per-config trainer.

For each shape case and grid size G it reports, side by side:

* ``engine``: :func:`linvae_jax._src.engine.train_grid` (one compiled program,
  cells under vmap, sharded over the local devices) with a fixed step budget
  (no tolerance), timed warm (second call) and including compile (first call);
  the engine also computes the closed-form optimum, a history record and the
  full comparison per cell, which the sequential trainer does not.
* ``sequential``: a Python loop calling one jitted single-config trainer
  (``baselines.sequential_trainer``: same loss, same Adam via
  ``inject_hyperparams`` with the engine's static arguments, same ``lax.scan``) once
  per cell; warm time measured on ``min(G, --seq-max)`` cells and
  extrapolated linearly to G (marked ``extrapolated``).

Throughput is configs * steps / s. Peak memory is the process's
``ru_maxrss`` (CPU: cumulative over the run, so it only ever grows) and,
where the backend reports it, the device's ``peak_bytes_in_use``.

Cases: ``small`` (VAE, D0 = 16, d1 = 4) and ``mnist_cvae`` (CVAE,
x: 196 -> z: 64 -> y: 588, random PSD moments of those shapes).

Usage::

    python benchmarks/grid_throughput.py --sizes 1 16 256 --steps 100
    python benchmarks/grid_throughput.py --sizes 1 16 256 4096  # accelerator

Writes ``benchmarks/results/grid_throughput_<device>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import linvae_jax as lv  # noqa: E402
from linvae_jax._src import engine  # noqa: E402
from linvae_jax._src import grid as G  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "reproduce"))
from baselines import random_moments, sequential_trainer  # noqa: E402
from common import cpu_model  # noqa: E402


def cases():
  return {
      "small": (lv.make_model("vae", latent_dim=4), random_moments(lv, 16, 0, 0)),
      "mnist_cvae": (lv.make_model("cvae", latent_dim=64), random_moments(lv, 196, 588, 1)),
  }


def make_grid(n):
  betas = np.geomspace(0.05, 5.0, n)
  return G.zipped(beta=betas, seed=np.arange(n)) * G.constant(eta_enc=1.0, eta_dec=1.0, lr=1e-2)


def peak_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak_mib():
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001
    return None
  v = stats.get("peak_bytes_in_use")
  return None if v is None else v / 2 ** 20


def bench_case(name, model, moments, sizes, steps, seq_max):
  rows = []
  seq_fn = sequential_trainer(jax, optax, model, moments, steps)
  dt = moments.dtype
  for n in sizes:
    _, cells, _ = make_grid(n).resolve(model)
    kw = dict(steps=steps, record_every=steps, progress=False)
    t0 = time.perf_counter()
    r = engine.train_grid(model, moments, make_grid(n), **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = engine.train_grid(model, moments, make_grid(n), **kw)
    warm = time.perf_counter() - t0
    assert len(r.table) == n

    k = min(n, seq_max)
    hyper = lambda i: {h: jnp.asarray(cells[h][i], dt) for h in model.hyper_names}
    args = lambda i: (hyper(i), jnp.asarray(cells["lr"][i], dt),
                      jnp.asarray(cells["init_scale"][i], dt), jnp.asarray(cells["seed"][i], jnp.uint32))
    t0 = time.perf_counter()
    jax.block_until_ready(seq_fn(*args(0)))
    seq_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(k):
      jax.block_until_ready(seq_fn(*args(i)))
    seq_k = time.perf_counter() - t0
    seq_warm = seq_k * n / k
    row = dict(case=name, model=model.label(), G=n, steps=steps,
               chunk_size=r.info["chunk_size"], n_chunks=r.info["n_chunks"],
               devices=len(r.info["devices"]),
               engine_first_s=first, engine_warm_s=warm, engine_compile_s=max(first - warm, 0.0),
               engine_cfg_steps_per_s=n * steps / warm,
               seq_first_s=seq_first, seq_compile_s=max(seq_first - seq_k / k, 0.0),
               seq_warm_s=seq_warm, seq_timed_cells=k, seq_extrapolated=k < n,
               seq_cfg_steps_per_s=n * steps / seq_warm,
               speedup_warm=seq_warm / warm,
               speedup_incl_compile=(seq_warm + seq_first) / first,
               peak_rss_mib=peak_rss_mib(), device_peak_mib=device_peak_mib())
    rows.append(row)
    print(f"{name:10s} G={n:5d}  engine {row['engine_cfg_steps_per_s']:10.0f} cfg*steps/s "
          f"(warm {warm:7.2f}s, compile {row['engine_compile_s']:6.2f}s)  sequential "
          f"{row['seq_cfg_steps_per_s']:10.0f} cfg*steps/s ({seq_warm:7.2f}s"
          f"{', extrapolated from %d cells' % k if k < n else ''})  "
          f"ratio {row['speedup_warm']:5.2f}x  rss {row['peak_rss_mib']:.0f} MiB", flush=True)
  return rows


def to_markdown(meta, rows):
  lines = [f"# Grid throughput on {meta['device']}", "",
           f"- device kind: `{meta['device_kind']}`, {meta['n_devices']} device(s), "
           f"backend `{meta['backend']}`",
           f"- CPU: {meta['cpu']} ({meta['cpu_count']} cores visible; load average at start "
           f"{meta['loadavg']})",
           f"- jax {meta['jax']}, float64, {meta['date']}",
           f"- command: `{meta['command']}`", "",
           "Throughput = configs * steps / s, warm (compile excluded). The engine also computes "
           "the closed-form optimum, one history record and the full comparison per cell. "
           "Sequential = Python loop over one jitted single-config trainer; rows marked * were "
           "timed on a subset of cells and extrapolated linearly. Peak RSS is cumulative "
           "over the process.", "",
           "| case | model | G | steps | engine cfg*steps/s | engine warm s | engine compile s "
           "| sequential cfg*steps/s | sequential s | ratio (warm) | ratio incl. compile "
           "| chunk | peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    star = "*" if r["seq_extrapolated"] else ""
    lines.append(
        f"| {r['case']} | {r['model']} | {r['G']} | {r['steps']} | "
        f"{r['engine_cfg_steps_per_s']:.0f} | {r['engine_warm_s']:.2f} | "
        f"{r['engine_compile_s']:.2f} | {r['seq_cfg_steps_per_s']:.0f}{star} | "
        f"{r['seq_warm_s']:.2f}{star} | {r['speedup_warm']:.2f}x | "
        f"{r['speedup_incl_compile']:.2f}x | {r['chunk_size']}x{r['n_chunks']} | "
        f"{r['peak_rss_mib']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 256, 4096])
  ap.add_argument("--steps", type=int, default=200)
  ap.add_argument("--cases", nargs="+", default=["small", "mnist_cvae"])
  ap.add_argument("--steps-mnist", type=int, default=None,
                  help="step budget for the mnist_cvae case (default: --steps)")
  ap.add_argument("--sizes-mnist", type=int, nargs="+", default=None,
                  help="grid sizes for the mnist_cvae case (default: --sizes)")
  ap.add_argument("--seq-max", type=int, default=32,
                  help="time the sequential loop on at most this many cells, extrapolate beyond")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = ap.parse_args(argv)
  dev = jax.devices()[0]
  kind = dev.device_kind
  label = re.sub(r"[^A-Za-z0-9]+", "-", kind if dev.platform != "cpu" else "cpu").strip("-").lower()
  meta = dict(device=f"{kind} ({dev.platform})", device_kind=kind, backend=jax.default_backend(),
              n_devices=len(jax.local_devices()), cpu=cpu_model(), cpu_count=os.cpu_count(),
              loadavg=" ".join(f"{x:.1f}" for x in os.getloadavg()), jax=jax.__version__,
              date=time.strftime("%Y-%m-%d %H:%M"),
              command="python benchmarks/grid_throughput.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items() if k != "out" and v is not None))
  rows = []
  all_cases = cases()
  for name in args.cases:
    model, m = all_cases[name]
    steps = args.steps_mnist if (name == "mnist_cvae" and args.steps_mnist) else args.steps
    sizes = args.sizes_mnist if (name == "mnist_cvae" and args.sizes_mnist) else args.sizes
    rows += bench_case(name, model, m, sizes, steps, args.seq_max)
  os.makedirs(args.out, exist_ok=True)
  base = os.path.join(args.out, f"grid_throughput_{label}")
  with open(base + ".json", "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
  with open(base + ".md", "w") as f:
    f.write(to_markdown(meta, rows))
  print(f"wrote {base}.json and {base}.md")


if __name__ == "__main__":
  main()
