"""Lucas, Tucker, Grosse & Norouzi (2019) Table 2 at reduced size: a deep Gaussian VAE on
MNIST (logit preprocessing) with a *fixed* vs a *learned* decoder variance sigma^2.

The network (``mlp_vae``): ReLU MLP encoder 784-h1-h2-d with biases and a learnable
data-independent diagonal Sigma, decoder d-h2-h1-784 (Lucas: 784-1024-512-200-512-1024-784),
Gaussian decoder N(f(z), sigma^2 I) with sigma^2 = eta_dec^2 fixed
(``decoder_var="fixed"``) or eta_dec^2 exp(2 s) with a learned scalar s initialised at 0
(``decoder_var="learnable"``), so eta_dec^2 = sigma^2_init in both settings; beta = 1,
prior N(0, I). Adam at a constant lr (Lucas: the best of {1e-4, 3e-4, 1e-3, 3e-3} by training
ELBO; we use 3e-3 at the reduced sizes, so that the learned sigma^2 can travel from 30 or
0.001 in a few thousand steps), every (sigma^2_init, seed) cell of one setting in one vmapped
``train_grid``.

**Preprocessing** (Lucas: "as in Papamakarios et al. [31]", MAF): uniform dequantisation
x = (pixel + u) / 256, u ~ U[0, 1), then the logit transform y = logit(lam + (1 - 2 lam) x)
with MAF's MNIST value **lam = 1e-6**. The noise is drawn once (numpy seed 0) and the same
array is used by every cell and by the theory (MAF and Lucas redraw it each epoch). We then
subtract the training mean (pixel-wise). The model family and every metric are unchanged by
it (the encoder's first-layer bias and the decoder's output bias absorb a shift of the data),
so it only moves the initialisation: the decoder's output bias starts at the data mean instead
of 0. Without it, Adam at lr 3e-3 moves that bias by about lr per step and spends thousands of
steps walking it to the background's logit mean (about -7); Lucas's 600k steps do not notice
this, our 1000 do (a run without it ended with a mean squared residual of 5-8 per pixel).

**Metrics, on the training data** (as Lucas): ELBO (nats per image, the decoder's normalising
constant included, K = 10 samples of q), total KL, and the (eps, delta)-collapse % at
eps = delta = 0.01: unit k is collapsed if KL(q(z_k|x) || p(z_k)) < eps for at least 99% of
the training images (``mlp_vae(eval_eps=0.01, eval_delta=0.01)``, ``n_collapsed``); for the
learned setting also the final sigma^2. ``resid`` is the mean squared reconstruction residual
per pixel, recovered from the ELBO's reconstruction term.

**Linear theory on the same data** (centred moments of the preprocessed training array; the
network has biases): with sigma^2 fixed, a beta = 1 VAE with decoder variance eta_dec^2 is the
linear VAE whose mode i is active iff its covariance eigenvalue lambda_i > beta eta_dec^2 =
sigma^2 (Lucas §4 / W&Z Thm 2), so the predicted collapse % is 100 (1 - min(d, #{lambda_i >
sigma^2}) / d) (``make_model("vae", encoder_var="learnable").optimum``: active count, KL, ELBO).
With sigma^2 learned the optimum does not depend on sigma^2_init: ``make_model("vae_ldv")``
gives s* (= the pPCA sigma^2_ML, the mean of the discarded eigenvalues, at beta = 1), its active
count (every mode with lambda_i > s*) and ELBO (= the pPCA maximum likelihood).

Sizes (``--small``: CI; default: this CPU; ``--full``: a GPU, Lucas's setting):

==========  =======  ===========  ===  ======  =====  =====  ====  ======================
size        n_train  hidden       d    epochs  batch  seeds  lr    sigma^2_init
==========  =======  ===========  ===  ======  =====  =====  ====  ======================
small       1000     (64,)        64   6       100    3      3e-3  30, 1, 0.03
default     1000     (64, 64)     64   100     100    3      3e-3  30, 10, 3, 1, 0.3, 0.1
full (GPU)  60000    (1024, 512)  200  1000    100    5      1e-3  all 10 of Table 2
==========  =======  ===========  ===  ======  =====  =====  ====  ======================

The default size trains 36 cells for 1000 steps each in 456 s on the shared 2-core CPU (load
average 4-9); ``--small`` (60 steps: too few for (0.01, 0.01)-collapse, enough for the trends
in KL and sigma^2) takes about 50 s on an idle one. The default and full sizes also evaluate the
linear theory at the paper's size (all 60k images, d = 200; about 15 s).
(Lucas do not state the batch size; 100 is our choice.)

Run: ``python benchmarks/reproduce/lucas_table2.py [--small | --full] [--out DIR]``
(the committed results: ``--out benchmarks/results/reproduce``).
"""
from __future__ import annotations

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C
import nonlinear_common as N
from common import G, lv, np, pd, plt

LAM = 1e-6  # MAF's MNIST logit parameter (Papamakarios et al. 2017)
EPS = DELTA = 0.01
S2_ALL = [30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
# Lucas et al. (2019) Table 2 (MNIST, logit preprocessing, 5 trials; ± as printed)
PAPER = {
    "fixed": {
        "elbo": [-1850.4, -1450.3, -1114.9, -1022.1, -1816.7, -3697.3, -18549.3, -38612.5,
                 -139538.8, -504259.1],
        "collapse_pct": [95.00, 89.88, 76.75, 27.38, 2.00, 3.25, 0, 0, 0, 0],
        "kl": [10.9, 28.8, 58.5, 125.4, 179.3, 368.7, 305.3, 560.9, 695.9, 756.2],
        "final_s2": S2_ALL,
    },
    "learned": {
        "elbo": [-1060.9, -1022.2, -1004.6, -1011.1, -1020.0, -1025.4, -1030.6, -1030.6,
                 -1033.7, -1038.7],
        "collapse_pct": [33.75, 73.75, 58.38, 47.88, 37.75, 29.25, 22.62, 23.00, 16.62, 27.00],
        "kl": [70.9, 73.8, 99.8, 106.3, 111.6, 116.1, 120.2, 121.9, 126.4, 124.9],
        "final_s2": [1.478, 1.32, 1.178, 1.183, 1.195, 1.194, 1.197, 1.194, 1.19, 1.208],
    },
}
PAPER_D = 200
SIZES = {
    "small": {"n_train": 1000, "hidden": (64,), "d": 64, "epochs": 6, "seeds": 3, "lr": 3e-3,
              "s2": [30.0, 1.0, 0.03]},
    "default": {"n_train": 1000, "hidden": (64, 64), "d": 64, "epochs": 100, "seeds": 3,
                "lr": 3e-3, "s2": [30.0, 10.0, 3.0, 1.0, 0.3, 0.1]},
    "full": {"n_train": 60000, "hidden": (1024, 512), "d": 200, "epochs": 1000, "seeds": 5,
             "lr": 1e-3, "s2": S2_ALL},
}
BATCH, IW = 100, 10
SETTINGS = {"fixed": "fixed", "learned": "learnable"}


def preprocess(pixels, seed: int = 0, lam: float = LAM):
  """Uniform dequantisation and MAF's logit transform of uint8 pixels (float64)."""
  u = np.random.default_rng(seed).uniform(size=pixels.shape)
  x = (pixels.astype(np.float64) + u) / 256.0
  y = lam + (1.0 - 2.0 * lam) * x
  return np.log(y) - np.log1p(-y)


def theory(x, s2_values, d: int) -> pd.DataFrame:
  """The linear closed forms on the centred moments of ``x`` (module docstring)."""
  from linvae_jax._src import linear_overlay
  m = linear_overlay.centred_moments((x,))
  lam = np.sort(np.linalg.eigvalsh(np.asarray(m.xx)))[::-1]
  vae = C.model("vae", latent_dim=d, encoder_var="learnable")
  rows = []
  for s2 in s2_values:
    o = vae.optimum(m, C.hyper(beta=1.0, eta_enc=1.0, eta_dec=math.sqrt(s2)))
    act = int(np.sum(np.asarray(o.active["z"])))
    kl = 0.5 * float(np.sum(np.log(lam[:act] / s2)))  # W&Z Cor 2: KL_i = ½ log(lam_i / sigma^2)
    rows.append({"setting": "fixed", "sigma2_init": s2, "theory_active": act,
                 "theory_collapse_pct": 100.0 * (1 - act / d), "theory_kl": kl,
                 "theory_elbo": -float(o.loss), "theory_s2": s2})
  o = C.model("vae_ldv", latent_dim=d).optimum(m, C.hyper(beta=1.0, eta_enc=1.0))
  s_star = float(o.extras["decoder_var"])
  act = int(o.extras["active_count"])
  kl = 0.5 * float(np.sum(np.log(lam[:act] / s_star)))
  for s2 in s2_values:
    rows.append({"setting": "learned", "sigma2_init": s2, "theory_active": act,
                 "theory_collapse_pct": 100.0 * (1 - act / d), "theory_kl": kl,
                 "theory_elbo": -float(o.loss), "theory_s2": s_star})
  # check: s* is the pPCA sigma^2_ML (mean of the discarded eigenvalues), beta = 1
  s_ml = float(np.mean(lam[d:]))
  if not abs(s_star / s_ml - 1) < 1e-6:
    raise RuntimeError(f"vae_ldv s* = {s_star} differs from sigma^2_ML = {s_ml}")
  return pd.DataFrame(rows), lam


def theory_paper_size(s2_values, d: int = PAPER_D) -> pd.DataFrame:
  """The linear theory at Lucas's own size: d = 200 on all 60k preprocessed training images
  (the same dequantisation seed): predicted collapse % per fixed sigma^2 and s* (learned)."""
  pix, _ = C.mnist_images()
  n = pix.shape[0]
  s1, s2m = np.zeros(784), np.zeros((784, 784))
  for i in range(0, n, 10000):  # float64 moments in chunks (60k x 784 at once is 376 MB)
    x = preprocess(pix[i:i + 10000], seed=i)
    s1 += x.sum(0)
    s2m += x.T @ x
  mu = s1 / n
  lam = np.sort(np.linalg.eigvalsh(s2m / n - np.outer(mu, mu)))[::-1]
  s_star = float(np.mean(lam[d:]))
  rows = [{"setting": "fixed", "sigma2_init": q,
           "theory60k_collapse_pct": 100.0 * (1 - min(d, int(np.sum(lam > q))) / d),
           "theory60k_s2": q} for q in s2_values]
  rows += [{"setting": "learned", "sigma2_init": q,
            "theory60k_collapse_pct": 100.0 * (1 - min(d, int(np.sum(lam > s_star))) / d),
            "theory60k_s2": s_star} for q in s2_values]
  return pd.DataFrame(rows), lam


def run(size, x, setting):
  model = lv.make_model("mlp_vae", data_dim=784, latent_dim=size["d"], hidden=size["hidden"],
                        activation="relu", encoder_var="learnable",
                        decoder_var=SETTINGS[setting], iw_samples=IW, iw_chunk=IW,
                        eval_eps=EPS, eval_delta=DELTA)
  grid = (G.product(eta_dec=[math.sqrt(s) for s in size["s2"]]) * G.seeds(size["seeds"])
          * G.constant(beta=1.0, eta_enc=1.0, init_scale=1.0, lr=size["lr"]))
  xf = x.astype(np.float32)
  res = lv.train_grid(model, None, grid, objective="sampled", data=xf, eval_data=xf,
                      batch_size=BATCH, epochs=size["epochs"], progress=False)
  if not (res.table.status == "done").all():
    raise RuntimeError(f"{setting}: cells did not finish:\n{res.table.status}")
  t = res.table.copy()
  t["setting"] = setting
  t["sigma2_init"] = np.round(t.eta_dec.to_numpy(np.float64) ** 2, 12)
  t["final_s2"] = t.eta_dec_std.to_numpy(np.float64) ** 2
  t["collapse_pct"] = 100.0 * t.n_collapsed / size["d"]
  t["au_pct"] = 100.0 * t.au / size["d"]
  # recon = ½ E||r||^2 / s2 + (D/2) log(2 pi s2)  =>  mean squared residual per pixel
  t["resid"] = 2 * t.final_s2 * (t.recon - 392 * np.log(2 * np.pi * t.final_s2)) / 784
  return t


def plot(df, size, key, mach):
  """The figure, from the summary table's columns only (so it can be redrawn from the CSV)."""
  fig, ax = plt.subplots(1, 4, figsize=(16, 4.6))
  col = {"fixed": "C1", "learned": "C0"}
  panels = (("collapse_pct", "theory_collapse_pct"), ("kl", "theory_kl"),
            ("elbo", "theory_elbo"), ("final_s2", "theory_s2"))
  for setting in SETTINGS:
    s = df[df.setting == setting].sort_values("sigma2_init")
    q = s.sigma2_init.to_numpy()
    for j, (c, th_c) in enumerate(panels):
      sign = -1 if c == "elbo" else 1
      ax[j].errorbar(q, sign * s[c], yerr=s[f"{c}_se"], fmt="o-", color=col[setting], capsize=3,
                     label=f"ours, {setting} σ² ({size['seeds']} seeds, ± s.e.)")
      ax[j].plot(q, sign * s[f"paper_{c}"], "s--", color=col[setting], alpha=.45, mfc="none",
                 label=f"Lucas Table 2, {setting} σ² (d=200, 60k, 1000 epochs)")
      if c == "final_s2" and setting == "fixed":
        continue
      ax[j].plot(q, sign * s[th_c], "v-" if setting == "fixed" else "^:",
                 color="grey" if setting == "fixed" else "k", ms=4, lw=1.2,
                 label=f"linear theory, {setting} σ², same data (d={size['d']})")
      if c == "collapse_pct" and "theory60k_collapse_pct" in s:
        ax[j].plot(q, s.theory60k_collapse_pct, "x:", color=col[setting], ms=5, lw=.9,
                   label=f"linear theory at Lucas's size (60k, d=200), {setting} σ²")
  titles = (("collapse % (ε = δ = 0.01)", "(ε, δ)-collapse, training data"),
            ("KL (nats)", "KL, training data"), ("−ELBO (nats)", "−ELBO, training data"),
            ("final σ²", "decoder σ² at the end (learned)"))
  for j, (yl, tt) in enumerate(titles):
    N.beta_axis(ax[j], df.sigma2_init)
    ax[j].set(xlabel="σ²_init (fixed: σ²)", ylabel=yl, title=tt)
    if j:
      ax[j].set_yscale("log")
  ax[0].set_ylim(-5, 105)
  h, lab = ax[0].get_legend_handles_labels()
  fig.legend(h, lab, loc="lower center", ncol=4, fontsize=7, frameon=False)
  fig.suptitle(f"Lucas et al. Table 2, {key} size: n={size['n_train']}, ReLU "
               f"784-{'-'.join(map(str, size['hidden']))}-{size['d']}, {size['epochs']} epochs, "
               f"batch {BATCH}, Adam {size['lr']:g}, logit λ={LAM:g} (centred); {mach}",
               fontsize=8)
  fig.tight_layout(rect=(0, 0.13, 1, 1))
  fig.tight_layout = lambda *a, **k: None  # C.save's tight_layout would drop the legend's room
  return fig


def main(argv=None, small=False):
  a, key = C.parse_sized(argv, small, __doc__)
  size = SIZES[key]
  d = size["d"]
  pix, _ = C.mnist_images(size["n_train"], seed=0)
  x = preprocess(pix)
  x = x - x.mean(0)  # = the decoder's output bias initialised at the data mean (see docstring)
  t0 = time.perf_counter()
  cells = pd.concat([run(size, x, s) for s in SETTINGS], ignore_index=True)
  wall = time.perf_counter() - t0
  th, lam = theory(x, size["s2"], d)
  if key != "small":  # the theory at the paper's size, beside the paper's numbers
    th60, lam60 = theory_paper_size(S2_ALL)
  else:
    th60, lam60 = None, None
  cols = ["elbo", "collapse_pct", "kl", "final_s2", "au_pct", "resid"]
  rows = []
  for setting in SETTINGS:
    s = N.seed_stats(cells[cells.setting == setting], "sigma2_init", cols)
    s.insert(0, "setting", setting)
    for k, v in PAPER[setting].items():
      m = dict(zip(S2_ALL, v))
      s[f"paper_{k}"] = [m.get(float(q), np.nan) for q in s.sigma2_init]
    s = s.merge(th, on=["setting", "sigma2_init"])
    if th60 is not None:
      s = s.merge(th60, on=["setting", "sigma2_init"])
    rows.append(s)
  df = pd.concat(rows, ignore_index=True).sort_values(
      ["setting", "sigma2_init"], ascending=[True, False]).reset_index(drop=True)
  mach = N.machine()
  try:
    load = os.getloadavg()[0]
  except OSError:
    load = float("nan")
  name = "lucas_table2" + {"small": "_small", "default": "", "full": "_gpu"}[key]
  cells.drop(columns=[c for c in cells.columns if cells[c].dtype == object
                      and c not in ("status", "setting")]).to_csv(
      a.out / f"{name}_cells.csv", index=False, float_format="%.6g")

  fig = plot(df, size, key, mach)

  s_star = float(df[df.setting == "learned"].theory_s2.iloc[0])
  note = (
      f"Machine: {mach}, load average {load:.1f} at the end; {len(cells)} cells in {wall:.0f} s. "
      f"{key} size: {size['n_train']} training images, ReLU 784-"
      f"{'-'.join(map(str, size['hidden']))}-{d} (decoder mirrored), {size['epochs']} epochs, "
      f"batch {BATCH}, Adam lr {size['lr']:g}, {size['seeds']} seeds; (Lucas: 60k, 784-1024-512-200, "
      f"1000 epochs, lr from {{1e-4..3e-3}}, 5 trials).\n\n"
      f"Data: uniform dequantisation (pixel + u)/256, then logit(λ + (1 - 2λ) x), λ = {LAM:g} "
      "(MAF's MNIST value), drawn once, then centred. Every metric is on the training images. collapse_pct: "
      f"(ε, δ)-collapsed units, ε = δ = {EPS:g}, as % of d; paper_* are Lucas's (d = 200, so "
      "KL and collapse counts scale differently). theory_*: the linear VAE closed form on the "
      "centred moments of the same array: fixed σ² -> mode i active iff λ_i > σ²; learned "
      f"σ² -> s* = σ²_ML = {s_star:.4g} (mean of the {784 - d} discarded eigenvalues), "
      f"{int(df[df.setting == 'learned'].theory_active.iloc[0])} of {d} active. Covariance "
      f"eigenvalues: λ_1 = {lam[0]:.4g}, λ_{d} = {lam[d - 1]:.4g}, λ_{d + 1} = {lam[d]:.4g}, "
      f"median {np.median(lam):.3g}, trace/784 = {lam.mean():.4g}. resid: mean squared "
      "reconstruction residual per pixel.")
  if th60 is not None:
    note += (" theory60k_*: the same closed form at Lucas's size (all 60k images, d = 200): "
             f"λ_1 = {lam60[0]:.4g}, λ_200 = {lam60[199]:.4g}, s* = "
             f"{float(th60.theory60k_s2.iloc[-1]):.4g}.")
  keep = ["setting", "sigma2_init", "elbo", "elbo_se", "paper_elbo", "theory_elbo",
          "collapse_pct", "collapse_pct_se", "paper_collapse_pct", "theory_collapse_pct",
          "kl", "kl_se", "paper_kl", "theory_kl", "final_s2", "final_s2_se", "paper_final_s2",
          "theory_s2", "au_pct", "resid"] + (
              [] if th60 is None else ["theory60k_collapse_pct", "theory60k_s2"])
  files = C.save(fig, df[keep], a.out, name, note)
  return {"table": df, "cells": cells, "files": files, "note": note, "wall_s": wall,
          "machine": mach, "size": key, "eigvals": lam, "theory_s2_learned": s_star,
          "eigvals_60k": lam60}


if __name__ == "__main__":
  r = main(sys.argv[1:])
  print(r["note"])
  with pd.option_context("display.width", 250, "display.max_columns", 40):
    print(r["table"].to_string())
