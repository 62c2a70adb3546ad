"""Grid engine vs the official code's approach: a PyTorch loop, one configuration at a time.

Both sides minimise the *same* analytic loss (linear CVAE, learnable
diagonal Sigma, Dang et al. Thm 2) on the same moments with Adam for the
same number of full-batch steps over the same beta grid. The PyTorch side
trains one configuration after another, as the official per-config scripts
do (landscape.md §1.1), on float64 CPU tensors; linvae_jax trains the whole
grid in one compiled, vmapped program (compile time reported separately).
Measured side by side in one run; results in
``benchmarks/results/peer_torch_<tag>.{json,md}`` with the machine named.

Data: synthetic CVAE moments (D0 = 32, D2 = 96, d1 = 16) by default, or the
MNIST quadrant moments with ``--mnist`` (D0 = 196, D2 = 588, d1 = 64).
torch is optional (``pip install torch==2.13.0 --index-url
https://download.pytorch.org/whl/cpu``); without it the script says so and
exits 0.

Run: ``python benchmarks/peer_torch.py [--small] [--mnist]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "reproduce"))
import common as C  # noqa: E402
from common import G, np  # noqa: E402

import jax  # noqa: E402

from linvae_jax._src import engine  # noqa: E402
from linvae_jax._src.data import synthetic as S  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def machine() -> dict:
  d = jax.devices()[0]
  return dict(cpu=C.cpu_model(), cores=os.cpu_count(), jax=jax.__version__,
              jax_device=getattr(d, "device_kind", str(d)), jax_platform=d.platform,
              python=platform.python_version(), gpu="none available in this run")


def torch_cvae_loss(torch, p, A, B, Cm, beta, d1):
  # the library's LinearCVAE.loss (eta_enc = eta_dec = 1), O(d1 D^2) form
  u1, u2, w1, w2, sraw = p
  cov = torch.exp(sraw)
  pj_x = w1 @ A + w2 @ Cm.T
  pj_y = w1 @ Cm + w2 @ B
  pjp = pj_x @ w1.T + pj_y @ w2.T
  cross = pj_x @ (u2.T @ u1) - pj_y @ u1
  njn = ((u2 @ A) * u2).sum() - 2 * (u2 * Cm.T).sum() + torch.trace(B)
  recon_sq = ((u1.T @ u1) * pjp).sum() + 2 * torch.trace(cross) + njn + (u1 * u1 * cov).sum()
  d2 = B.shape[0]
  recon = 0.5 * recon_sq + 0.5 * d2 * np.log(2 * np.pi)
  kl = 0.5 * (cov.sum() + torch.trace(pjp) - d1 - torch.log(cov).sum())
  return recon + beta * kl


def run_torch(torch, m, betas, d1, steps, lr):
  A, B, Cm = (torch.tensor(np.asarray(v), dtype=torch.float64) for v in (m.xx, m.yy, m.xy))
  d0, d2 = A.shape[0], B.shape[0]
  losses = []
  t0 = time.perf_counter()
  for i, beta in enumerate(betas):
    g = torch.Generator().manual_seed(i)
    p = [0.1 * torch.randn(s, generator=g, dtype=torch.float64)
         for s in ((d2, d1), (d2, d0), (d1, d0), (d1, d2))] + [torch.zeros(d1, dtype=torch.float64)]
    for t in p:
      t.requires_grad_(True)
    opt = torch.optim.Adam(p, lr=lr)
    for _ in range(steps):
      opt.zero_grad()
      loss = torch_cvae_loss(torch, p, A, B, Cm, float(beta), d1)
      loss.backward()
      opt.step()
    losses.append(float(loss.detach()))
  return time.perf_counter() - t0, np.asarray(losses)


def main(argv=None, small=False):
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--small", action="store_true")
  ap.add_argument("--mnist", action="store_true")
  ap.add_argument("--out", default=str(OUT))
  a = ap.parse_args([] if argv is None else argv)
  small = a.small or small
  try:
    import torch
  except ImportError:
    print("torch is not installed: skipping the PyTorch peer benchmark "
          "(pip install 'linvae_jax[benchmark]').")
    return None
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  if a.mnist:
    m, d1, tag = C.mnist_moments("quadrants"), 64, "mnist"
  else:
    q = S.random_orthogonal(96, seed=3)
    e = np.geomspace(4.0, 0.05, 96)
    m = C.lv.moments_from_second_moments(np.eye(32), q @ np.diag(e) @ q.T + 0.25 * np.eye(96),
                                         0.5 * q[:32])
    d1, tag = 16, "synthetic"
  n_cells = 8 if small else 32
  steps = 200 if small else 1000
  lr = 1e-2
  betas = np.geomspace(0.1, 5.0, n_cells)
  model = C.model("cvae", latent_dim=d1)
  grid = G.product(beta=betas) * G.constant(eta_enc=1.0, eta_dec=1.0, lr=lr)
  before = engine.trace_count()
  r1 = engine.train_grid(model, m, grid, steps=steps, record_every=steps, progress=False)
  t0 = time.perf_counter()
  r2 = engine.train_grid(model, m, grid, steps=steps, record_every=steps, progress=False)
  jax_run = time.perf_counter() - t0
  compiles = engine.trace_count() - before
  jax_first = r1.info["wall_s"]
  t_torch, l_torch = run_torch(torch, m, betas, d1, steps, lr)
  l_jax = r2.table["loss"].to_numpy()
  res = dict(
      experiment=f"linear CVAE analytic loss, {tag} moments (D0={m.dim_x}, D2={m.dim_y}, d1={d1})",
      cells=n_cells, steps=steps, optimizer="Adam lr 1e-2, full batch, float64",
      jax_first_call_s=jax_first, jax_warm_s=jax_run, jax_compiles=compiles,
      torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
      torch_sequential_s=t_torch, speedup_warm=t_torch / jax_run,
      speedup_incl_compile=t_torch / jax_first,
      max_rel_loss_diff=float(np.max(np.abs(l_jax - l_torch) / np.abs(l_torch))),
      max_gap_jax=float(r2.table["gap"].max()), machine=machine(),
      note=("Both sides use the O(d1 D^2) trace form of the loss (the library's). Shared CPU with other jobs running: ratios measured side by side, "
            "absolute times are noisy."))
  out = Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  stem = out / f"peer_torch_{tag}{'_small' if small else ''}"
  with open(f"{stem}.json", "w") as f:
    json.dump(res, f, indent=1)
  with open(f"{stem}.md", "w") as f:
    f.write(f"# linvae_jax grid engine vs a PyTorch per-configuration loop ({tag})\n\n")
    for k, v in res.items():
      f.write(f"- **{k}**: {v}\n")
  return res


if __name__ == "__main__":
  print(json.dumps(main(sys.argv[1:]), indent=1))
