"""Wang & Ziyin (2022) Fig 2: an MNIST ReLU beta-VAE swept over beta, collapse near zeta_1^2.

The network (``mlp_vae``): a ReLU MLP encoder 784-h-d with a data-dependent
log-variance head (W&Z's ``ReLUBetaVAE``), decoder d-h-784, biases, Gaussian
decoder with eta_dec = eta_enc = 1, the standard beta-ELBO (W&Z use the same
beta as ours). Adam at lr 1e-3 (the official repo's), batch 100, every
(beta, seed) cell in one vmapped program. Held-out metrics on MNIST test
images: AU (Burda: Var_x mu_k > 0.01), KL, IW log-likelihood (K samples),
W&Z's sigma-bar_k (mean posterior std per unit, sorted).

Theory overlay: the *linear* VAE closed form (learnable Sigma) on the centred
moments of the same training images predicts mode i active iff beta <
beta_i = zeta_i^2 (W&Z print 5.12, 3.74, 3.25, 2.84, 2.57 for the 60k set),
sigma_i* = min(1, sqrt(beta)/zeta_i) and a KL per beta; it is drawn on the
same axes. We report, per seed, the first grid beta with AU < d (first
collapse) and with AU = 0 (complete collapse) and their ratio to the
theory's beta_d and beta_1.

Sizes (``--small``: CI, ~1-2 min on 2 cores; default: this CPU, a few
minutes; ``--full``: a GPU, W&Z's paper setting):

==========  =======  =====  ==  ======  =====  ======  ==========
size        n_train  h      d   epochs  seeds  betas   IW K / n_test
==========  =======  =====  ==  ======  =====  ======  ==========
small       1000     32     5   8       3      4       10 / 300
default     4000     48     5   10      3      8       50 / 1000
full (GPU)  60000    2048   5   100     5      16      1000 / 10000
==========  =======  =====  ==  ======  =====  ======  ==========

Reference numbers: the official repo's committed ``output/mnist_relu_losses.csv``
(latent 8, h 1024, 60k images, batch 16, 256 epochs) has beta*KL = 5.92 at
beta = 1.2 and 0.089 at beta = 5.1 (training data): KL 4.93 and 0.017.

Run: ``python benchmarks/reproduce/wz_fig2.py [--small | --full] [--out DIR]``
(the committed results: ``--out benchmarks/results/reproduce``).
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C
import nonlinear_common as N
from common import G, lv, np, plt

PAPER_ZETA2 = [5.12, 3.74, 3.25, 2.84, 2.57]
PAPER_CSV = {1.2: 5.92 / 1.2, 5.1: 0.089 / 5.1}  # W&Z official CSV: beta -> KL (beta*KL / beta)

SIZES = {
    "small": {"n_train": 1000, "n_test": 300, "hidden": 32, "d": 5, "epochs": 8, "seeds": 3,
              "iw": 10, "betas": [0.5, 2.0, 4.0, 8.0]},
    "default": {"n_train": 4000, "n_test": 1000, "hidden": 48, "d": 5, "epochs": 10, "seeds": 3,
                "iw": 50, "betas": [0.5, 1.0, 2.0, 2.75, 3.5, 4.5, 6.0, 9.0]},
    "full": {"n_train": 60000, "n_test": 10000, "hidden": 2048, "d": 5, "epochs": 100, "seeds": 5,
             "iw": 1000, "betas": [0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.25,
                                   5.0, 5.5, 6.5, 9.0]},
}
BATCH, LR = 100, 1e-3


def run(size: dict):
  x, xt = N.mnist_arrays(size["n_train"], size["n_test"])
  d = size["d"]
  model = lv.make_model("mlp_vae", data_dim=784, latent_dim=d, hidden=(size["hidden"],),
                        activation="relu", encoder_var="data_dependent",
                        iw_samples=size["iw"], iw_chunk=min(size["iw"], 10))
  grid = (G.product(beta=size["betas"]) * G.seeds(size["seeds"])
          * G.constant(eta_enc=1.0, eta_dec=1.0, init_scale=1.0, lr=LR))
  t0 = time.perf_counter()
  res = lv.train_grid(model, None, grid, objective="sampled", data=x, eval_data=xt,
                      batch_size=BATCH, epochs=size["epochs"], progress=False)
  wall = time.perf_counter() - t0
  theory, thr = N.linear_theory(x, size["betas"], d)
  return res, theory, thr, wall


def main(argv=None, small=False):
  a, key = C.parse_sized(argv, small, __doc__)
  size = SIZES[key]
  d = size["d"]
  res, theory, thr, wall = run(size)
  t = res.table.copy()
  if not (t.status == "done").all():
    raise RuntimeError(f"cells did not finish: {t[t.status != 'done'][['beta', 'seed', 'status']]}")
  sig = np.sort(np.asarray(res.arrays["mean_std"]), axis=1)  # ascending per cell
  for i in range(d):
    t[f"sigma{i + 1}"] = sig[:, i]
  cols = ["au", "kl", "iw_ll", "elbo", "mi", "dang_au"] + [f"sigma{i + 1}" for i in range(d)]
  s = N.seed_stats(t, "beta", cols).merge(theory, on="beta")
  zeta = np.sqrt(thr)  # eta_dec = 1: beta_i = zeta_i^2
  for i in range(d):
    s[f"sigma{i + 1}_theory"] = np.minimum(1.0, np.sqrt(s.beta) / zeta[i])
  cp = N.collapse_points(t, d)
  th_first, th_comp = float(thr[-1]), float(thr[0])
  out = {"table": s, "cells": t, "thresholds": thr, "collapse": cp, "size": key, "wall_s": wall,
             "machine": N.machine(), "theory_first": th_first, "theory_complete": th_comp}
  out["ratio_first"] = N.nanstat(np.nanmean, cp["first"]) / th_first
  out["ratio_complete"] = N.nanstat(np.nanmean, cp["complete"]) / th_comp
  # the grid brackets each collapse point: (last beta before, first beta at) / theory
  out["bracket_first"] = (N.nanstat(np.nanmin, cp["first_lo"]) / th_first,
                          N.nanstat(np.nanmax, cp["first"]) / th_first)
  out["bracket_complete"] = (N.nanstat(np.nanmin, cp["complete_lo"]) / th_comp,
                             N.nanstat(np.nanmax, cp["complete"]) / th_comp)

  fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
  b = s.beta.to_numpy()
  jit = lambda k: b * (1 + 0.025 * (k - 1))
  for k, (_, ts) in enumerate(t.sort_values("beta").groupby("seed")):
    ax[0].plot(jit(k % 3), ts.au, ".", color="C0", alpha=.35, ms=5,
                   label="measured, per seed" if k == 0 else None)
  ax[0].errorbar(b, s.au, yerr=s.au_se, fmt="o-", color="C0", capsize=3,
                 label=f"ReLU VAE AU, mean ± s.e. ({size['seeds']} seeds)")
  bb = np.geomspace(b.min(), b.max(), 400)
  pred = [(thr > v).sum() for v in bb]
  ax[0].plot(bb, pred, "-", color="k", lw=1.2, label="linear theory: active modes")
  for v in thr:
    for axx in ax:
      axx.axvline(v, color="grey", ls=":", lw=.7)
  ax[0].set(xlabel="beta", ylabel=f"active units (of {d})", ylim=(-0.3, d + 0.5),
            title="W&Z Fig 2: AU vs beta (dotted: zeta_i^2)")
  ax[0].legend(fontsize=7, loc="lower left")
  ax[1].errorbar(b, s.kl, yerr=s.kl_se, fmt="o-", color="C1", capsize=3,
                 label="ReLU VAE KL (held-out), mean ± s.e.")
  ax[1].plot(b, s.theory_kl, "s--", color="k", ms=4, lw=1, label="linear theory KL (same data)")
  ax[1].plot(list(PAPER_CSV), list(PAPER_CSV.values()), "r*", ms=10,
             label="W&Z official CSV (ld 8, h 1024, 60k)")
  ax[1].set_yscale("symlog", linthresh=0.1)
  ax[1].set_ylim(bottom=0)
  ax[1].set(xlabel="beta", ylabel="KL (nats)", title="KL vs beta")
  ax[1].legend(fontsize=7)
  for i in range(d):
    ax[2].errorbar(b, s[f"sigma{i + 1}"], yerr=s[f"sigma{i + 1}_se"], fmt="o", ms=3,
                   color=f"C{i}", capsize=2)
    ax[2].plot(bb, np.minimum(1, np.sqrt(bb) / zeta[i]), "-", color=f"C{i}", lw=.8)
  ax[2].set(xlabel="beta", ylabel="sigma-bar_k (sorted)", ylim=(0, 1.15),
            title="sigma-bar_k: dots ReLU, lines linear theory")
  for axx in ax:
    N.beta_axis(axx, b)
  fig.suptitle(f"{key} size: n={size['n_train']}, h={size['hidden']}, d={d}, "
               f"{size['epochs']} epochs, batch {BATCH}, Adam {LR:g}; {out['machine']}",
               fontsize=8)
  rnd = lambda v: np.round(np.asarray(v, float), 3).tolist()
  note = (
      f"Machine: {out['machine']}; {len(t)} cells in {wall:.0f} s ({key} size: "
      f"n_train={size['n_train']}, n_test={size['n_test']}, h={size['hidden']}, d={d}, "
      f"{size['epochs']} epochs, batch {BATCH}, Adam lr {LR:g}, IW K={size['iw']}).\n\n"
      f"Theory (linear VAE, learnable Sigma, centred moments of the same {size['n_train']} "
      f"images): beta_i = zeta_i^2 = {rnd(thr)}; W&Z print {PAPER_ZETA2} (60k set).\n\n"
      f"First collapse (AU < {d}) per seed at beta = {rnd(cp['first'])} (previous grid beta "
      f"{rnd(cp['first_lo'])}); theory beta_{d} = {th_first:.3f}; ratio "
      f"{out['ratio_first']:.2f} (bracket over seeds: "
      f"{out['bracket_first'][0]:.2f}-{out['bracket_first'][1]:.2f}).\n\n"
      f"Complete collapse (AU = 0) per seed at beta = {rnd(cp['complete'])} (previous grid "
      f"beta {rnd(cp['complete_lo'])}; NaN: not reached on the grid); theory beta_1 = "
      f"{th_comp:.3f}; ratio {out['ratio_complete']:.2f} (bracket over seeds: "
      f"{out['bracket_complete'][0]:.2f}-{out['bracket_complete'][1]:.2f}).\n\n"
      f"W&Z official CSV (latent 8, h 1024, training data): KL = 4.93 at beta 1.2, 0.017 at 5.1. "
      f"Columns: mean and s.e. over seeds; `*_theory`: the linear closed form.")
  name = "wz_fig2" + {"small": "_small", "default": "", "full": "_gpu"}[key]
  t.drop(columns=[c for c in t.columns if t[c].dtype == object and c != "status"]).to_csv(
      a.out / f"{name}_cells.csv", index=False, float_format="%.6g")
  keep = ["beta", "theory_active", "au", "au_se", "kl", "kl_se", "theory_kl", "iw_ll",
          "iw_ll_se", "mi", "sigma1", "sigma1_theory", "sigma5", "sigma5_theory"]
  out["files"] = C.save(fig, s[keep], a.out, name, note)
  out["note"] = note
  return out


if __name__ == "__main__":
  r = main(sys.argv[1:])
  print(r["note"])
  print(r["table"].to_string())
