"""JAX's persistent compilation cache: a second ``linvae verify --quick`` against the first.

Both runs are fresh processes with the same empty cache directory
(``LINVAE_CACHE_DIR``) and each writes a fresh report directory, so nothing
is resumed: the only difference is that the second finds the compiled
programs of the first on disk. A third run with ``--no-compile-cache`` is the
reference for an uncached start. Run (about 5 minutes on 2 CPU cores)::

    python benchmarks/compile_cache.py            # -> benchmarks/results/compile_cache_cpu.{md,json}
    python benchmarks/compile_cache.py --problem vae-learnable   # one problem, seconds
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "reproduce"))
from common import cpu_model, write_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(args, env) -> float:
  t0 = time.perf_counter()
  r = subprocess.run([sys.executable, "-m", "linvae_jax.cli", *args], capture_output=True,
                     text=True, env=env, check=False)
  wall = time.perf_counter() - t0
  if r.returncode != 0:
    raise SystemExit(f"linvae {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
  return wall


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--problem", default=None, help="one problem instead of all")
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
  a = p.parse_args(argv)
  tmp = Path(tempfile.mkdtemp(prefix="linvae-compile-cache-"))
  env = dict(os.environ, LINVAE_CACHE_DIR=str(tmp / "cache"))
  env.pop("XLA_FLAGS", None)
  base = ["verify", "--quick", "--no-figures", "--no-progress"]
  if a.problem:
    base += ["--problem", a.problem]
  load_before = os.getloadavg()[0]
  cold = run(base + ["--out", str(tmp / "r1")], env)
  warm = run(base + ["--out", str(tmp / "r2")], env)
  off = run(base + ["--out", str(tmp / "r3"), "--no-compile-cache"], env)
  files = list((tmp / "cache" / "jax_compilation_cache").glob("*"))
  size = sum(f.stat().st_size for f in files if f.is_file())
  out = {
      "command": "linvae " + " ".join(base),
      "first_run_s (empty cache)": round(cold, 2),
      "second_run_s (warm cache)": round(warm, 2),
      "run_s with --no-compile-cache": round(off, 2),
      "speedup second vs first": round(cold / warm, 2),
      "speedup second vs --no-compile-cache": round(off / warm, 2),
      "cache entries": len(files),
      "cache size MB": round(size / 2 ** 20, 1),
      "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} (CPU, no GPU)",
      "jax": __import__("jax").__version__,
      "load average (1 min) before / after": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
  }
  name = "compile_cache_cpu" if not a.problem else f"compile_cache_cpu_{a.problem}"
  write_record(out, a.out, name, "Persistent compilation cache: second `linvae verify --quick` "
               "vs the first, one run")
  for k, v in out.items():
    print(f"{k}: {v}")


if __name__ == "__main__":
  main()
