"""Peak memory of a grid run against its number of cells, with and without a store.

Each size runs in a fresh subprocess (``ru_maxrss`` is cumulative, so one
process per measurement): a linear VAE (D0 = 3, d1 = 2, learnable Sigma),
100 Adam steps recorded at every step (100 records: the history is the
large part, ~3.2 KB per cell), chunks of 2048 cells. ``store`` writes every
chunk to ``out_dir`` and keeps only the table in memory (history and arrays
are read lazily from the chunks); ``memory`` keeps everything in RAM.

Usage::

    python benchmarks/store_memory.py --sizes 1000 10000 100000

Writes ``benchmarks/results/store_memory_cpu.{json,md}`` (``--out`` elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "reproduce"))

CHILD = r"""
import json, os, resource, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import linvae_jax as lv
from linvae_jax._src import grid as G
n, out = int(sys.argv[1]), (sys.argv[2] if sys.argv[2] != "-" else None)
m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
betas = np.linspace(0.1, 5.0, n // 10)
g = G.product(beta=betas) * G.constant(eta_enc=1.0, eta_dec=1.0, lr=3e-2) * G.seeds(10)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
r = lv.train_grid(lv.make_model("vae", latent_dim=2), m, g, steps=100, record_every=1,
                  chunk_size=2048, out_dir=out, progress=False)
wall = time.perf_counter() - t0
assert len(r.table) == n and np.all(np.isfinite(r.table.loss))
print(json.dumps(dict(cells=n, mode="store" if out else "memory", wall_s=wall,
                      rss_start_mib=rss0 / 1024,
                      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      table_mib=r.table.memory_usage(deep=True).sum() / 2**20)))
"""


def main():
  from common import cpu_model
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
  ap.add_argument("--modes", nargs="+", default=["store", "memory"])
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = ap.parse_args()
  rows = []
  for n in args.sizes:
    for mode in args.modes:
      with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "store") if mode == "store" else "-"
        p = subprocess.run([sys.executable, "-c", CHILD, str(n), target], capture_output=True,
                           text=True, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
  meta = dict(cpu=cpu_model(), cores=os.cpu_count(), load=os.getloadavg(),
              date=time.strftime("%Y-%m-%d %H:%M"), command="python benchmarks/store_memory.py "
              + " ".join(sys.argv[1:]))
  os.makedirs(args.out, exist_ok=True)
  base = os.path.join(args.out, "store_memory_cpu")
  with open(base + ".json", "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
  lines = ["# Peak memory against grid size (cpu)", "",
           f"- CPU: {meta['cpu']} ({meta['cores']} cores; load average at the end "
           f"{' '.join(f'{x:.1f}' for x in meta['load'])})",
           f"- {meta['date']}, float64, command: `{meta['command']}`",
           "- linear VAE D0 = 3, d1 = 2, 100 Adam steps, a record every step (100 records), "
           "chunks of 2048 cells, one fresh process per row (peak RSS = `ru_maxrss`).", "",
           "| cells | mode | peak RSS MiB | RSS after imports MiB | growth MiB | table MiB | wall s |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['cells']} | {r['mode']} | {r['peak_rss_mib']:.0f} | "
                 f"{r['rss_start_mib']:.0f} | {r['peak_rss_mib'] - r['rss_start_mib']:.0f} | "
                 f"{r['table_mib']:.1f} | {r['wall_s']:.1f} |")
  with open(base + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
