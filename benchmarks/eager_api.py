"""Eager public API: the jitted, cached fast path vs the old op-by-op path.

A notebook calls the closed forms eagerly. On a shape not seen before the
op-by-op path compiles every primitive on its own; the fast path
(``linvae_jax._src.fastpath``) compiles one program per function, shape and
model config and then reuses it. For each case this times, side by side in
one run:

* ``first``: the first call on a new shape (what a notebook pays once);
* ``repeat``: the median of later calls on the same shape with new
  hyperparameter values (Python floats), validation included;

for ``moments_from_second_moments``, ``model.optimum``, ``model.init`` and
``model.loss``, with the fast path on (``fast``) and off (``eager``: the old
path, ``fastpath.disabled()``). Every (path, case, repetition) runs in a fresh
process after a warm-up op, so each first call really is the first on its
shape; the paths alternate and the median over ``--reps`` repetitions is
reported, with the ratios eager / fast.

Usage::

    python benchmarks/eager_api.py --reps 3

Writes ``benchmarks/results/eager_api_<device>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {
    "vae_D8": dict(kind="vae", dims=(8, None), model=dict(latent_dim=4),
                   hyper=dict(beta=0.5, eta_enc=1.0, eta_dec=1.0)),
    "cvae_D4x6": dict(kind="cvae", dims=(4, 6), model=dict(latent_dim=3),
                      hyper=dict(beta=0.5, eta_enc=1.0, eta_dec=1.0)),
    "mhvae_D8": dict(kind="mhvae", dims=(8, None), model=dict(latent_dim1=4, latent_dim2=2),
                     hyper=dict(beta1=0.5, beta2=0.5, eta_enc=1.0, eta_dec=1.0, sigma1=0.5)),
}
FUNCS = ("moments", "optimum", "init", "loss")


def child(path: str, case: str, n_repeat: int) -> dict:
  """One fresh process: time first and repeat calls of each function."""
  import contextlib

  import jax
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  import numpy as np

  import linvae_jax as lv
  from linvae_jax._src import fastpath

  jnp.ones(3).block_until_ready()  # backend start-up is not part of any call
  (jnp.ones(3) * 2.0).block_until_ready()
  spec = CASES[case]
  d0, d2 = spec["dims"]
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, d0))
  if d2 is None:
    args = (x.T @ x / 200,)
  else:
    y = x @ rng.normal(size=(d0, d2)) + 0.3 * rng.normal(size=(200, d2))
    args = (x.T @ x / 200, y.T @ y / 200, x.T @ y / 200)
  model = lv.make_model(spec["kind"], **spec["model"])
  hyper = dict(spec["hyper"])
  key = jax.random.key(0)
  ctx = fastpath.disabled() if path == "eager" else contextlib.nullcontext()

  def timed(f):
    t = time.perf_counter()
    out = jax.block_until_ready(f())
    return time.perf_counter() - t, out

  def bump(i):  # new hyperparameter values, same shapes
    return {k: v * (1.0 + 0.01 * (i + 1)) for k, v in hyper.items()}

  res = {}
  with ctx:
    calls = {
        "moments": lambda i: lv.moments_from_second_moments(*[a * (1.0 + 0.01 * i) for a in args]),
        "optimum": lambda i: model.optimum(m, bump(i)),
        "init": lambda i: model.init(jax.random.fold_in(key, i), m),
        "loss": lambda i: model.loss(params, m, bump(i)),
    }
    for name in FUNCS:
      call = calls[name]
      first, out = timed(lambda call=call: call(0))
      if name == "moments":
        m = out
      elif name == "init":
        params = out
      reps = [timed(lambda i=i, call=call: call(i + 1))[0] for i in range(n_repeat)]
      res[name] = {"first_s": first, "repeat_s": float(np.median(reps))}
  return res


def machine() -> dict:
  import platform

  import jax
  sys.path.insert(0, str(HERE / "reproduce"))
  from common import cpu_model
  gpus = [d for d in jax.devices() if d.platform != "cpu"]
  return {"cpu": cpu_model(), "cores": os.cpu_count(), "jax": jax.__version__,
          "python": platform.python_version(), "jax_platform": jax.default_backend(),
          "gpu": str(gpus[0].device_kind) if gpus else "none available in this run"}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--reps", type=int, default=3, help="fresh processes per (path, case)")
  p.add_argument("--repeat-calls", type=int, default=20)
  p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
  p.add_argument("--out", default=str(HERE / "results"))
  p.add_argument("--child", nargs=2, metavar=("PATH", "CASE"), help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.child:
    print(json.dumps(child(a.child[0], a.child[1], a.repeat_calls)))
    return {}
  load0 = os.getloadavg()
  t0 = time.perf_counter()
  env = dict(os.environ)
  env.pop("LINVAE_JAX_EAGER", None)
  raw = {c: {"fast": [], "eager": []} for c in a.cases}
  for r in range(a.reps):
    for case in a.cases:
      for path in (("fast", "eager") if r % 2 == 0 else ("eager", "fast")):
        out = subprocess.run([sys.executable, __file__, "--child", path, case,
                              "--repeat-calls", str(a.repeat_calls)],
                             capture_output=True, text=True, env=env, check=True)
        raw[case][path].append(json.loads(out.stdout.strip().splitlines()[-1]))
  import numpy as np
  rows = []
  for case in a.cases:
    for name in FUNCS:
      row = {"case": case, "function": name}
      for path in ("eager", "fast"):
        for what in ("first_s", "repeat_s"):
          row[f"{path}_{what}"] = float(np.median([d[name][what] for d in raw[case][path]]))
      row["first_ratio"] = row["eager_first_s"] / row["fast_first_s"]
      row["repeat_ratio"] = row["eager_repeat_s"] / row["fast_repeat_s"]
      rows.append(row)
  dev = machine()
  tag = "cpu" if dev["jax_platform"] == "cpu" else dev["jax_platform"]
  out = {"rows": rows, "reps": a.reps, "repeat_calls": a.repeat_calls, "machine": dev,
         "load_average_start": load0, "load_average_end": os.getloadavg(),
         "wall_s": time.perf_counter() - t0, "raw": raw}
  res = Path(a.out)
  res.mkdir(parents=True, exist_ok=True)
  with open(res / f"eager_api_{tag}.json", "w") as f:
    json.dump(out, f, indent=1)
  with open(res / f"eager_api_{tag}.md", "w") as f:
    f.write("# Eager public API: jitted, cached fast path vs the op-by-op path\n\n")
    f.write(f"- machine: {dev}\n")
    f.write(f"- one run of `benchmarks/eager_api.py --reps {a.reps}`: every (path, case, "
            "repetition) in a fresh process after a warm-up op; medians over the repetitions; "
            f"`repeat` is the median of {a.repeat_calls} later calls on the same shape with new "
            "hyperparameter values, validation included; ratio = eager / fast (> 1: fast path "
            "faster)\n")
    f.write(f"- load average at start {' '.join(f'{v:.1f}' for v in load0)}, at end "
            f"{' '.join(f'{v:.1f}' for v in out['load_average_end'])} (the host is shared)\n\n")
    f.write("| case | function | eager first (s) | fast first (s) | first ratio "
            "| eager repeat (ms) | fast repeat (ms) | repeat ratio |\n")
    f.write("|---|---|---|---|---|---|---|---|\n")
    for r in rows:
      f.write(f"| {r['case']} | {r['function']} | {r['eager_first_s']:.3f} | "
              f"{r['fast_first_s']:.3f} | {r['first_ratio']:.1f}x | "
              f"{1e3 * r['eager_repeat_s']:.2f} | {1e3 * r['fast_repeat_s']:.2f} | "
              f"{r['repeat_ratio']:.1f}x |\n")
  return out


if __name__ == "__main__":
  res = main(sys.argv[1:])
  if res:
    print(json.dumps(res["rows"], indent=1))
