"""Dang et al. (2024) Table 4: a ReLU CVAE on the synthetic rho data.

Data (``lv.data`` ``cvae_rho``): y ~ N(0, I_D), x = rho y + sqrt(1 - rho^2) u with
u ~ N(0, I_D) independent; x is the condition, y the output; n = 1000 pairs,
D = d = 128, rho in {1, 0.5, 0.25, 0.125, 0} (x = y ... independent). The
network (``mlp_cvae``): mu([x; y]) a ReLU MLP with hidden width h and biases,
decoder f([z; x]) likewise, learnable data-independent Sigma, eta_enc = 1,
eta_dec = 0.5, beta = 1 (ours; the paper does not give beta), Adam at lr 1e-3,
batch 16 (Dang's). Each rho is one ``train_grid`` call over the seeds (the
data differ, the shapes do not: one compile).

Theory overlay: the linear CVAE closed form (learnable Sigma) on the centred
moments of the same pairs: E = B - C^T A^+ C ~ (1 - rho^2) I, every mode active
iff its eigenvalue exceeds beta eta_dec^2 = 0.25 (100% for rho <= 0.5, 0% at
rho = 1), and its KL. Dang's printed ReLU numbers (KL / AU %) sit beside ours;
their "AU" is most likely their code's pair fraction (``dang_au``), so both it
and Burda's unit count are reported.

Sizes (``--small``: CI; default: this CPU; ``--full``: Dang's, a GPU or a long
CPU run): small D=d=h=16, 20 epochs, 3 seeds; default D=d=h=128, 25 epochs,
3 seeds; full D=d=h=128, 1000 epochs, 5 seeds. Always n = 1000, batch 16,
IW K = 100 (small 10) on 1000 held-out pairs.

Run: ``python benchmarks/reproduce/dang_table4_relu.py [--small | --full] [--epochs N] [--out DIR]``
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

from linvae_jax._src.data import synthetic as S

RHOS = [1.0, 0.5, 0.25, 0.125, 0.0]
# Table 4 (A.2.2), ReLU CVAE: KL, AU %
PAPER = {1.0: (0.01, 0.1), 0.5: (66.20, 54.1), 0.25: (77.10, 63.0), 0.125: (79.64, 64.7),
         0.0: (80.37, 67.2)}
BETA, ETA_DEC, BATCH, LR, N_PAIRS = 1.0, 0.5, 16, 1e-3, 1000
SIZES = {
    "small": {"dim": 16, "epochs": 20, "seeds": 3, "iw": 10},
    "default": {"dim": 128, "epochs": 25, "seeds": 3, "iw": 100},
    "full": {"dim": 128, "epochs": 1000, "seeds": 5, "iw": 100},
}


def theory(x, y, d):
  """Linear CVAE closed form on the centred moments of (x, y): active count, KL."""
  m = lv.moments_from_arrays(x, y, centred=True)
  mod = C.model("cvae", latent_dim=d, encoder_var="learnable")
  h = C.hyper(beta=BETA, eta_enc=1.0, eta_dec=ETA_DEC)
  o = mod.optimum(m, h)
  second, _ = mod.input_moments(m)
  kl = float(np.sum(lv.metrics.kl_per_dim(mod.posterior(o.params, h)["z"], second)))
  return int(np.sum(o.active["z"])), kl


def main(argv=None, small=False):
  argv = list(argv or [])
  full = "--full" in argv
  if full:
    argv.remove("--full")
  epochs = None
  if "--epochs" in argv:  # a training-budget study: --epochs N (output name gets _eN)
    i = argv.index("--epochs")
    try:
      epochs = int(argv[i + 1])
    except (IndexError, ValueError):
      raise SystemExit("linvae: error: --epochs needs a positive integer") from None
    if epochs < 1:
      raise SystemExit("linvae: error: --epochs needs a positive integer")
    del argv[i:i + 2]
  a = C.parse(argv, small, __doc__)
  key = "small" if a.small else ("full" if full else "default")
  size = dict(SIZES[key])
  if epochs is not None:
    size["epochs"] = epochs
  dim = size["dim"]
  model = lv.make_model("mlp_cvae", data_dim=dim, cond_dim=dim, latent_dim=dim, hidden=(dim,),
                        activation="relu", encoder_var="learnable", iw_samples=size["iw"],
                        iw_chunk=10)
  grid = G.seeds(size["seeds"]) * G.constant(beta=BETA, eta_enc=1.0, eta_dec=ETA_DEC,
                                             init_scale=1.0, lr=LR)
  t0 = time.perf_counter()
  cells, rows = [], []
  for k, rho in enumerate(RHOS):
    tr = S.cvae_rho(N_PAIRS, dim, rho, seed=100 + k)
    te = S.cvae_rho(N_PAIRS, dim, rho, seed=200 + k)
    res = lv.train_grid(model, None, grid, objective="sampled", data=(tr.x, tr.y),
                        eval_data=(te.x, te.y), batch_size=BATCH, epochs=size["epochs"],
                        progress=False)
    t = res.table.copy()
    if not (t.status == "done").all():
      raise RuntimeError(f"rho={rho}: cells did not finish: {t.status.tolist()}")
    t["rho"] = rho
    t["au_pct"] = 100.0 * t.au / dim
    t["dang_au_pct"] = 100.0 * t.dang_au
    cells.append(t)
    act, tkl = theory(tr.x, tr.y, dim)
    s = N.seed_stats(t, "rho", ["kl", "au_pct", "dang_au_pct", "iw_ll"])
    s["theory_active_pct"], s["theory_kl"] = 100.0 * act / dim, tkl
    s["paper_kl"], s["paper_au_pct"] = PAPER[rho]
    rows.append(s)
  wall = time.perf_counter() - t0
  df = pd.concat(rows, ignore_index=True).sort_values("rho", ascending=False)
  cells = pd.concat(cells, ignore_index=True)
  mach = N.machine()

  fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
  r = df.rho.to_numpy()
  pos = np.arange(len(r))
  for j, (col, pcol, tcol, yl) in enumerate((("kl", "paper_kl", "theory_kl", "KL (nats)"),
                                             ("dang_au_pct", "paper_au_pct",
                                              "theory_active_pct", "active (%)"))):
    ax[j].errorbar(pos, df[col], yerr=df[f"{col}_se"], fmt="o-", capsize=3, color="C0",
                   label=f"ours, ReLU CVAE ({size['seeds']} seeds, ± s.e.)"
                   + (": Dang's pair AU" if j else ""))
    ax[j].plot(pos, df[pcol], "*--", ms=9, color="C3", label="Dang Table 4 (ReLU, 1 run)")
    ax[j].plot(pos, df[tcol], "s:", color="k", label="linear theory, same data")
    if j:
      ax[j].errorbar(pos, df.au_pct, yerr=df.au_pct_se, fmt="^-", capsize=3, color="C2",
                     label="ours: Burda AU (units)")
    ax[j].set_xticks(pos, [f"{v:g}" for v in r])
    ax[j].set(xlabel="rho (x = rho y + sqrt(1-rho^2) u)", ylabel=yl)
    ax[j].legend(fontsize=7)
  ax[0].set_title("Dang Table 4: KL of the ReLU CVAE")
  ax[1].set_title("active units")
  fig.suptitle(f"{key} size: D = d = h = {dim}, n = {N_PAIRS}, {size['epochs']} epochs, batch "
               f"{BATCH}, Adam {LR:g}, beta {BETA:g}, eta_dec {ETA_DEC:g}; {mach}", fontsize=8)
  note = (
      f"Machine: {mach}; {len(cells)} cells in {wall:.0f} s. {key} size: D = d = h = {dim}, "
      f"n = {N_PAIRS} pairs (held-out: another {N_PAIRS}), {size['epochs']} epochs (Dang: "
      f"1000), batch {BATCH}, Adam lr {LR:g}, beta = {BETA:g} (ours; Dang's code convention "
      f"would call it {2 * BETA:g}), eta_enc = 1, eta_dec = {ETA_DEC:g}.\n\n"
      "au_pct: Burda's units with Var mu > 0.01; dang_au_pct: Dang's code's fraction of "
      "(example, unit) pairs with KL >= 0.01; theory_*: linear CVAE closed form on the centred "
      "moments of the training pairs.")
  name = "dang_table4_relu" + {"small": "_small", "default": "", "full": "_gpu"}[key]
  name += f"_e{epochs}" if epochs is not None else ""
  cells.drop(columns=[c for c in cells.columns if cells[c].dtype == object and c != "status"]
             ).to_csv(a.out / f"{name}_cells.csv", index=False, float_format="%.6g")
  keep = ["rho", "kl", "kl_se", "paper_kl", "theory_kl", "dang_au_pct", "dang_au_pct_se",
          "au_pct", "au_pct_se", "paper_au_pct", "theory_active_pct", "iw_ll"]
  files = C.save(fig, df[keep], a.out, name, note)
  return {"table": df, "cells": cells, "files": files, "note": note, "wall_s": wall,
          "machine": mach, "size": key}


if __name__ == "__main__":
  res = main(sys.argv[1:])
  print(res["note"])
  print(res["table"].to_string())
