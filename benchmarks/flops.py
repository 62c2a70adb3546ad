"""Achieved FLOP/s of a grid step against the measured matmul peak of the same device.

The step is one vmapped Adam step of the linear CVAE's analytic loss (value
and gradient) over G cells on the MNIST-quadrant shapes (D0 = 196,
D2 = 588, d1 = 64; random moments, so no MNIST is needed). Its flop count
comes from XLA's cost analysis of the compiled step; the peak is the best of
a few large float64 and float32 matmuls timed on the same device. The
library's loss is the O(d1 D^2) trace form. Results: ``benchmarks/results/flops_<tag>.{json,md}``.

Run: ``python benchmarks/flops.py [--small]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "reproduce"))
import common as C  # noqa: E402
from common import np  # noqa: E402
from peer_torch import machine  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def _best(f, *args, reps=3):
  jax.block_until_ready(f(*args))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t)
  return min(ts)


def matmul_peak(n, dtype):
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  return 2 * n ** 3 / _best(f, a)


def _flops(compiled) -> float:
  ca = compiled.cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  return float(ca.get("flops", float("nan")))


def step_rate(model, m, n_cells, inner=10):
  h = C.lv.as_hyper(dict(beta=np.ones(n_cells), eta_enc=np.ones(n_cells), eta_dec=np.ones(n_cells)))
  keys = jax.random.split(jax.random.key(0), n_cells)
  params = jax.vmap(lambda k: model.init(k, m, 0.1))(keys)
  opt = optax.adam(1e-3)
  with jax.numpy_dtype_promotion("standard"):
    state = jax.vmap(opt.init)(params)

  def one(p, s, hh):
    g = jax.grad(model.loss)(p, m, hh)
    with jax.numpy_dtype_promotion("standard"):
      u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  def steps(p, s):
    def body(c, _):
      return jax.vmap(one)(*c, h), None
    return jax.lax.scan(body, (p, s), None, length=inner)[0]

  f = jax.jit(steps)
  comp = f.lower(params, state).compile()
  flops = _flops(comp)  # XLA counts the scan body once per iteration? we divide safely below
  t = _best(f, params, state)
  # cost_analysis of a scan reports the body's flops (not x length); measure one step too
  f1 = jax.jit(lambda p, s: jax.vmap(one)(p, s, h))
  flops1 = _flops(f1.lower(params, state).compile())
  return dict(flops_per_step=flops1, seconds_per_step=t / inner, scan_flops_reported=flops,
              achieved_flops=flops1 * inner / t)


def main(argv=None, small=False):
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--small", action="store_true")
  ap.add_argument("--out", default=str(OUT))
  a = ap.parse_args([] if argv is None else argv)
  small = a.small or small
  load = os.getloadavg()
  rng = np.random.default_rng(0)
  d0, d2, d1 = (196, 588, 64) if not small else (64, 192, 16)
  n_cells = 8 if small else 16
  z = rng.standard_normal((2000, d0 + d2)) / np.sqrt(d0 + d2)
  m = C.lv.moments_from_arrays(z[:, :d0], z[:, d0:])
  n = 512 if small else 1024
  peak64, peak32 = matmul_peak(n, jnp.float64), matmul_peak(n, jnp.float32)
  rows = {}
  for label, model in (("library loss", C.lv.make_model("cvae", latent_dim=d1)),):
    r = step_rate(model, m, n_cells)
    r["fraction_of_f64_peak"] = r["achieved_flops"] / peak64
    rows[label] = r
  out = dict(step=f"vmapped Adam step, linear CVAE analytic loss, G={n_cells}, D0={d0}, "
                  f"D2={d2}, d1={d1}, float64",
             matmul_peak_f64=peak64, matmul_peak_f32=peak32, matmul_n=n, results=rows,
             machine=machine(),
             note=("peak and step timed back to back; load average at start "
                   f"{' '.join(f'{v:.1f}' for v in load)}"))
  p = Path(a.out)
  p.mkdir(parents=True, exist_ok=True)
  tag = "small" if small else "cvae_mnist_shapes"
  with open(p / f"flops_{tag}.json", "w") as f:
    json.dump(out, f, indent=1)
  with open(p / f"flops_{tag}.md", "w") as f:
    f.write("# Achieved FLOP/s of a grid step vs matmul peak\n\n")
    f.write(f"- step: {out['step']}\n- matmul peak ({n}x{n}): f64 {peak64 / 1e9:.2f} GFLOP/s, "
            f"f32 {peak32 / 1e9:.2f} GFLOP/s\n")
    for k, r in rows.items():
      f.write(f"- {k}: {r['flops_per_step'] / 1e6:.1f} MFLOP/step, "
              f"{r['seconds_per_step'] * 1e3:.2f} ms/step, "
              f"{r['achieved_flops'] / 1e9:.2f} GFLOP/s = "
              f"{100 * r['fraction_of_f64_peak']:.1f}% of f64 peak\n")
    f.write(f"- machine: {out['machine']}\n- {out['note']}\n")
  return out


if __name__ == "__main__":
  print(json.dumps(main(sys.argv[1:]), indent=1, default=str))
