"""Dang et al. (2024) Table 2: a ReLU VAE on MNIST, learnable vs fixed encoder Sigma.

The network (``mlp_vae``): ReLU MLP encoder 784-h-16 with biases, decoder
16-h-784, Gaussian decoder with eta_enc = eta_dec = 1; encoder Sigma either a
learnable data-independent diagonal (Dang's "learnable") or fixed at
0.5^2 I ("unlearnable"). Adam, batch 128, every (beta, seed) cell of one
setting in one vmapped program. Held-out metrics on MNIST test images:
IW log-likelihood with K samples (nats per image, with the decoder's
normalising constant), total KL, AU (Burda: Var_x mu_k > 0.01, as the paper
cites) and Dang's code's "AU" (the fraction of (example, unit) pairs with
KL >= 0.01).

**beta convention.** Dang's code minimises ||x - f(z)||^2 + beta_D KL (no 1/2), so
beta_D = 2 beta in the standard ELBO used here; Table 2 does not restate beta
(their Fig 2(a) uses 4). We run beta = 2 (beta_D = 4, the code's convention)
and beta = 4 (the value taken literally) and print both.

Theory overlay: the linear VAE closed form with the same Sigma setting on the
centred moments of the same training images: active modes (the rank view:
for fixed isotropic Sigma the AU count is basis-dependent, Dang §4) and KL.

Sizes (``--small``: CI; default: this CPU; ``--full``: a GPU, Dang's setting):
small n=1000, h=32, 5 epochs, 3 seeds, beta {2}, IW K=10 on 300 test images;
default n=4000, h=48, 10 epochs, 3 seeds, beta {2, 4}, K=100 on 1000;
full n=60000, h=256, 100 epochs, 5 seeds, beta {2, 4}, K=10000 on 10000 (Dang:
lr 1e-4 for 100 epochs; the reduced sizes use 1e-3 to converge in fewer
epochs).

Run: ``python benchmarks/reproduce/dang_table2_relu.py [--small | --full] [--out DIR]``
(the committed results: ``--out benchmarks/results/reproduce``).
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C
import nonlinear_common as N
from common import G, lv, np, pd, plt

# Table 2 (A.2.1): test IW log-likelihood / KL / AU %
PAPER = {"learnable": (-744.99, 9.54, 69.0), "fixed": (-743.63, 9.80, 100.0)}
SIGMA_FIXED = 0.5
D = 16
SIZES = {
    "small": {"n_train": 1000, "n_test": 300, "hidden": 32, "epochs": 5, "seeds": 3, "iw": 10,
              "betas": [2.0], "lr": 1e-3},
    "default": {"n_train": 4000, "n_test": 1000, "hidden": 48, "epochs": 10, "seeds": 3,
                "iw": 100, "betas": [2.0, 4.0], "lr": 1e-3},
    "full": {"n_train": 60000, "n_test": 10000, "hidden": 256, "epochs": 100, "seeds": 5,
             "iw": 10000, "betas": [2.0, 4.0], "lr": 1e-4},
}
BATCH = 128


def run(size, x, xt, encoder_var):
  model = lv.make_model("mlp_vae", data_dim=784, latent_dim=D, hidden=(size["hidden"],),
                        activation="relu", encoder_var=encoder_var,
                        iw_samples=size["iw"], iw_chunk=min(size["iw"], 10))
  const = {"eta_enc": 1.0, "eta_dec": 1.0, "init_scale": 1.0, "lr": size["lr"]}
  if encoder_var == "fixed":
    const["sigma"] = SIGMA_FIXED
  grid = G.product(beta=size["betas"]) * G.seeds(size["seeds"]) * G.constant(**const)
  res = lv.train_grid(model, None, grid, objective="sampled", data=x, eval_data=xt,
                      batch_size=BATCH, epochs=size["epochs"], progress=False)
  if not (res.table.status == "done").all():
    raise RuntimeError(f"{encoder_var}: cells did not finish:\n{res.table.status}")
  return res


def main(argv=None, small=False):
  a, key = C.parse_sized(argv, small, __doc__)
  size = SIZES[key]
  x, xt = N.mnist_arrays(size["n_train"], size["n_test"])
  t0 = time.perf_counter()
  rows, cells, kld = [], [], {}
  for ev in ("learnable", "fixed"):
    res = run(size, x, xt, ev)
    t = res.table.copy()
    t["setting"] = ev
    t["au_pct"] = 100.0 * t["au"] / D
    t["dang_au_pct"] = 100.0 * t["dang_au"]
    cells.append(t)
    kld[ev] = np.asarray(res.arrays["kl_per_dim"])
    theory, _ = N.linear_theory(x, size["betas"], D, encoder_var=ev,
                                sigma=SIGMA_FIXED if ev == "fixed" else None)
    s = N.seed_stats(t, "beta", ["iw_ll", "kl", "au_pct", "dang_au_pct", "elbo"]).merge(
        theory, on="beta")
    s.insert(0, "setting", ev)
    s.insert(2, "beta_dang", 2 * s.beta)
    s["theory_active_pct"] = 100.0 * s.theory_active / D
    s["paper_iw_ll"], s["paper_kl"], s["paper_au_pct"] = PAPER[ev]
    rows.append(s)
  wall = time.perf_counter() - t0
  df = pd.concat(rows, ignore_index=True)
  cells = pd.concat(cells, ignore_index=True)
  mach = N.machine()
  name = "dang_table2_relu" + {"small": "_small", "default": "", "full": "_gpu"}[key]
  cells.drop(columns=[c for c in cells.columns if cells[c].dtype == object
                      and c not in ("status", "setting")]).to_csv(
      a.out / f"{name}_cells.csv", index=False, float_format="%.6g")

  fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
  labels = [f"{r.setting}\nbeta={r.beta:g} (D:{r.beta_dang:g})" for r in df.itertuples()]
  pos = np.arange(len(df))
  w = 0.2
  ours = f"ours, ReLU ({size['seeds']} seeds, ± s.e.)"
  panels = ((("au_pct", f"{ours}: Burda AU", "C0"), ("dang_au_pct", "ours: Dang's code AU", "C9"),
             ("paper_au_pct", "Dang Table 2 (1 run)", "C3"),
             ("theory_active_pct", "linear theory, same data (rank)", "grey")),
            (("kl", ours, "C0"), ("paper_kl", "Dang Table 2 (1 run)", "C3"),
             ("theory_kl", "linear theory, same data", "grey")))
  for j, (bars, yl) in enumerate(zip(panels, ("AU (% of 16 units)", "KL (nats)"))):
    off = (np.arange(len(bars)) - (len(bars) - 1) / 2) * w
    for o, (col, lab, c) in zip(off, bars):
      se = df.get(f"{col}_se")
      ax[j].bar(pos + o, df[col], w, yerr=se, capsize=3, color=c, label=lab)
    ax[j].set_xticks(pos, labels, fontsize=7)
    ax[j].set(ylabel=yl)
    ax[j].set_ylim(0, 1.45 * max(df[c].max() for c, _, _ in bars))
    ax[j].legend(fontsize=6, loc="upper center", ncol=2)
  ax[0].set_title("Dang Table 2: active units")
  ax[1].set_title("KL")
  for ev, c in (("learnable", "C0"), ("fixed", "C1")):
    k = np.sort(kld[ev], axis=1)[:, ::-1]
    for i, (rw, kr) in enumerate(zip(cells[cells.setting == ev].itertuples(), k)):
      ax[2].plot(np.arange(1, D + 1), kr, ".-", color=c, alpha=.4 + .6 * (rw.beta == min(
          size["betas"])), lw=.8, label=f"{ev} Sigma" if i == 0 else None)
  ax[2].set_yscale("log")
  ax[2].set(xlabel="unit (sorted)", ylabel="KL per unit (nats)",
            title=f"per-unit KL, every seed (dark: beta={min(size['betas']):g})")
  ax[2].legend(fontsize=7)
  fig.suptitle(f"{key} size: n={size['n_train']}, h={size['hidden']}, {size['epochs']} epochs, "
               f"batch {BATCH}, Adam {size['lr']:g}, IW K={size['iw']} on {size['n_test']} "
               f"test images; {mach}", fontsize=8)
  note = (
      f"Machine: {mach}; {len(cells)} cells in {wall:.0f} s. {key} size: n_train="
      f"{size['n_train']}, h={size['hidden']}, d={D}, {size['epochs']} epochs, batch {BATCH}, "
      f"Adam lr {size['lr']:g}, IW K={size['iw']} on {size['n_test']} test images "
      f"(Dang: 60k, h=256, 100 epochs, lr 1e-4, K=10000 on 10k).\n\n"
      "beta is ours (standard ELBO); beta_dang = 2 beta is the same run in Dang's code "
      "convention (no 1/2 on the reconstruction). AU: Burda's Var_x mu_k > 0.01 (the paper's "
      "cited definition); dang_au: the fraction of (example, unit) pairs with KL >= 0.01 "
      "(their code). theory_*: the linear VAE closed form with the same Sigma on the centred "
      "moments of the training images (active = rank view).")
  keep = ["setting", "beta", "beta_dang", "iw_ll", "iw_ll_se", "paper_iw_ll", "kl", "kl_se",
          "paper_kl", "theory_kl", "au_pct", "au_pct_se", "paper_au_pct", "theory_active_pct",
          "dang_au_pct"]
  files = C.save(fig, df[keep], a.out, name, note)
  return {"table": df, "cells": cells, "files": files, "note": note, "wall_s": wall, "machine": mach,
              "size": key}


if __name__ == "__main__":
  r = main(sys.argv[1:])
  print(r["note"])
  print(r["table"].to_string())
