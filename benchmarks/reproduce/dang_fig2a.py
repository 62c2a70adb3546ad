"""Dang et al. (2024) Fig 2(a): linear VAE on MNIST, d1 = 5, beta = 4, eta = 1.

Learnable Sigma: 3 of 5 latent coordinates (eps, 0.05)-collapse (theta_3..5 =
1.934, 1.796, 1.669 < sqrt(beta) eta_dec = 2); fixed Sigma = I: none (the
rank-2 optimum is rotation-invariant and training lands on a random rotation).
We train both on the analytic loss (uncentred moments of the 60k training set)
with L-BFGS and count, for each eps, the coordinates with P_x[KL_k(x) < eps] >= 0.95 on
MNIST images (``metrics.collapse_fraction_empirical``), for the trained
parameters and for the closed-form optimum. theta_3 = 1.934 sits 3% below
the threshold, so its mode collapses slowly: after 4000 Adam steps the
collapsed coordinates' KL was still ~5e-5, a factor 2 from eps = 1e-4 (the
count flipped between CI runs); 3000 L-BFGS steps bring it below 2e-6.

Run: ``python benchmarks/reproduce/dang_fig2a.py [--small]``
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from common import G, np, pd, plt  # noqa: E402

from linvae_jax._src import metrics  # noqa: E402
from linvae_jax._src import moments as M  # noqa: E402

DELTA = 0.05
PAPER = {"learnable": 3, "fixed": 0}


def main(argv=None, small=False):
  a = C.parse(argv, small, __doc__)
  m = C.mnist_moments("full")
  x, _ = C.mnist_images(2000 if a.small else 10000)
  x = x.astype(np.float64) / 255.0
  steps = 3000 if a.small else 10000
  eps_grid = np.logspace(-6, 0, 25)
  rows, curves = [], {}
  for setting in ("learnable", "fixed"):
    model = C.model("vae", latent_dim=5, encoder_var=setting)
    g = G.constant(beta=4.0, eta_enc=1.0, eta_dec=1.0) * G.seeds(2 if a.small else 4)
    if setting == "fixed":
      g = g * G.constant(sigma=1.0)
    res = C.train_lbfgs(model, m, g, steps, keep_params=True)
    h = {k: np.asarray(g.flatten()[0][k][0]) for k in model.hyper_names}
    opt = model.optimum(m, C.hyper(**h))
    post_opt = model.posterior(opt.params, C.hyper(**h))["z"]
    frac_opt = np.stack([C.np64(metrics.collapse_fraction_empirical(post_opt, x, e))
                         for e in eps_grid])
    n_seeds = len(res.table)
    counts = []
    for s in range(n_seeds):
      p = jax_tree_index(res.params, s)
      post = model.posterior(p, C.hyper(**h))["z"]
      fr = np.stack([C.np64(metrics.collapse_fraction_empirical(post, x, e)) for e in eps_grid])
      counts.append((fr >= 1 - DELTA).sum(1))
    counts = np.asarray(counts)
    curves[setting] = (counts.mean(0), (frac_opt >= 1 - DELTA).sum(1))
    at = int(np.searchsorted(eps_grid, 1e-4))
    rows.append(dict(setting=setting, paper_collapsed=PAPER[setting],
                     theory_rank_collapsed=5 - int(res.table["pred_active_z"].iloc[0]),
                     ours_collapsed_eps1e4_min=int(counts[:, at].min()),
                     ours_collapsed_eps1e4_max=int(counts[:, at].max()),
                     closed_form_collapsed_eps1e4=int((frac_opt[at] >= 1 - DELTA).sum()),
                     rank_active_learned=int(res.table["active_z"].min()),
                     max_gap=float(res.table["gap"].max()),
                     max_dma_omega=float(res.table["dma_omega"].max()), seeds=n_seeds,
                     steps=steps))
  theta = C.np64(M.theta(m))[:5]
  fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
  for setting, col in (("learnable", "C0"), ("fixed", "C3")):
    tr, cf = curves[setting]
    ax[0].semilogx(eps_grid, tr, "o-", color=col, label=f"{setting} Sigma: trained (seed mean)")
    ax[0].semilogx(eps_grid, cf, "--", color=col, alpha=.6,
                   label=f"{setting} Sigma: closed form (axis-aligned)")
  ax[0].set(xlabel="eps", ylabel=f"# (eps, {DELTA})-collapsed of 5", title="Dang Fig 2(a), MNIST")
  ax[0].legend(fontsize=7)
  ax[1].bar(range(1, 6), theta, color="C0")
  ax[1].axhline(2.0, color="k", ls="--", label="sqrt(beta) eta_dec = 2")
  ax[1].set(xlabel="i", ylabel="theta_i = sqrt(eig A)", title="MNIST theta vs threshold")
  ax[1].legend(fontsize=7)
  df = pd.DataFrame(rows)
  note = (f"theta_1..5 = {np.round(theta, 3).tolist()}; threshold sqrt(beta) eta_dec = 2. "
          "Closed form for fixed Sigma is the axis-aligned representative of a rotation-"
          "invariant optimum (so it shows the collapsed coordinates training does not pick).")
  files = C.save(fig, df, a.out, "dang_fig2a", note)
  return dict(table=df, files=files, theta=theta, curves=curves, eps=eps_grid)


def jax_tree_index(tree, i):
  import jax
  return jax.tree.map(lambda v: v[i], tree)


if __name__ == "__main__":
  r = main(sys.argv[1:])
  print(r["table"].to_string())
