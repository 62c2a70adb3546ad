"""Dang et al. (2024) Fig 3(a) with MLPs: a ReLU CVAE per digit subset {1}, {9}, {7}.

The paper (§5.2, A.1.2) trains the linear, ReLU and CNN CVAE on the MNIST
quadrant split restricted to one digit, d1 = 16, eta_enc = eta_dec = 0.5,
beta = 1, and shows (eps, 0.05)-collapse curves: "more collapse for 1 > 9 > 7",
explained by the sums of the top-16 theta_i = eig_i(B - C^T A^+ C), 6.41,
13.42, 18.64 (uncentred, all training examples of the digit;
``dang_digits.py`` reproduces them and the linear CVAE).

Here the **ReLU CVAE** of ``dang_cvae_relu.py`` (whose helpers and constants
this script imports): ``mlp_cvae`` with one ReLU hidden layer of width h = 32
(Dang's two added 16-wide MLPs, without the block constraint; their
``MNIST_CVAE_Relu_single_digit.py`` defaults to h = 100), a data-dependent
diagonal Sigma(x, y), d = 16, x = the condition quadrant (196 pixels), y = the
other three (588); eta_enc = eta_dec = 0.5 (eta_enc: the prior's std);
clip_grad_norm 0.01 + Adam 1e-3 (the single-digit code clips at 0.1), batch
128. **beta_D = 1 in Dang's code convention = beta 0.5 here** (their loss
has no 1/2 on the reconstruction).

Each digit is trained separately: one ``lv.train_grid`` call per digit (the
engine shares the data across a grid's cells), all seeds vmapped in it;
every digit gets the same number of training pairs, so the three calls share
one compiled program. Held-out: the same digit's MNIST test pairs. Measured
per (digit, seed): the (eps, 0.05)-collapse curve (units with
P_x[KL_k(x) < eps] >= 0.95, KL to the N(0, eta_enc^2) prior), Burda's AU
(Var mu_k > 0.01), Dang's code AU (fraction of (example, unit) pairs with
KL >= 0.01), KL and IW log p(y|x).

Theory overlay: the linear CVAE closed form (learnable Sigma) on the
**centred** moments of the same training pairs (the network has biases;
``linear_overlay.theory_per_cell``): mode i active iff theta_i > beta
eta_dec^2 = 0.125 (beta 0.5). ``dang_digits.py`` took beta = 1 literally in
the standard convention (threshold 0.25); both readings are tabulated. The
theory's own (eps, 0.05)-collapse curve (its per-example KL on the same training
pairs) is drawn beside the measured ones.

Sizes (``--small``: CI; default: this CPU; ``--full``: a GPU):

==========  ================  ==  ======  =====  ==========
size        n_train / digit   h   epochs  seeds  IW K / test
==========  ================  ==  ======  =====  ==========
small       512               32  12      3      10 / 200
default     5900              32  50      5      100 / 1000
full (GPU)  all (5949-6742)   32  100     5      100 / all
==========  ================  ==  ======  =====  ==========

(full: Dang's epochs and IW K; the digits' sizes differ, so it compiles once
per digit.)

Measured on the shared 2-core CPU (load average 7-10 from other jobs): ``--small``
52-67 s (its slow test), the default 316 s (5.3 min; training dominated by the first
digit's compile, 132 s against 79-83 s for the next two).

Run: ``python benchmarks/reproduce/dang_digits_relu.py [--small | --full] [--out DIR]``
(the committed results: ``--out benchmarks/results/reproduce``).
"""
from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C
import dang_cvae_relu as R
import nonlinear_common as N
from common import G, lv, np, pd, plt

from linvae_jax._src import linear_overlay
from linvae_jax._src.data.mnist import mnist_view

DIGITS = (1, 9, 7)                       # the paper's collapse order: most first
PAPER_SUM16 = {1: 6.41, 9: 13.42, 7: 18.64}  # uncentred top-16 theta sums (Fig 3(a))
D, H, BATCH, CLIP, EPS = R.D, R.H, R.BATCH, R.CLIP, R.EPS
BETA_D, ETA_ENC, ETA_DEC = 1.0, 0.5, 0.5
BETA = BETA_D / 2                        # ours
SIZES = {
    "small": {"n_train": 512, "n_test": 200, "epochs": 12, "seeds": 3, "iw": 10, "lr": 1e-3},
    "default": {"n_train": 5900, "n_test": 1000, "epochs": 50, "seeds": 5, "iw": 100, "lr": 1e-3},
    "full": {"n_train": None, "n_test": None, "epochs": 100, "seeds": 5, "iw": 100, "lr": 1e-3},
}


def digit_pairs(digit, n_train, n_test, seed=0):
  """(train (x, y), test (x, y)) quadrant pairs of one digit, pixels/255: a seeded subset
  of its 60k-train examples (all if ``n_train`` is None) and its first test examples."""
  x, y = C.mnist_images()
  xd = x[y == digit]
  if n_train is not None:
    xd = xd[np.sort(np.random.default_rng(seed + digit).choice(len(xd), n_train, replace=False))]
  te, lab = _test_set(C._mnist_path())
  xt = te[lab == digit][:n_test]
  f = lambda a: mnist_view(np.asarray(a, np.float64) / 255.0, "quadrants")
  return f(xd), f(xt)


def make(size):
  """The network and the optimiser factory, made once: the engine's compiled program is
  cached on both (by value and identity), so the digits' calls share it."""
  import optax
  model = lv.make_model("mlp_cvae", data_dim=588, cond_dim=196, latent_dim=D, hidden=(H,),
                        activation="relu", encoder_var="data_dependent",
                        iw_samples=size["iw"], iw_chunk=min(size["iw"], 10))
  opt = lambda lr: optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(lr))
  return model, opt


@functools.lru_cache(maxsize=1)
def _test_set(path):
  from linvae_jax._src.data import load_mnist
  te = load_mnist(path=path, split="test", scale=None)
  return np.asarray(te.images), np.asarray(te.labels)


def train_digit(size, model, opt, train, test):
  grid = G.seeds(size["seeds"]) * G.constant(beta=BETA, eta_enc=ETA_ENC, eta_dec=ETA_DEC,
                                             init_scale=1.0, lr=size["lr"])
  res = lv.train_grid(model, None, grid, objective="sampled", data=train, eval_data=test,
                      batch_size=BATCH, epochs=size["epochs"], keep_params=True,
                      progress=os.environ.get("LINVAE_PROGRESS", "") not in ("", "0"),
                      optimizer=opt, optimizer_id=f"clip{CLIP:g}+adam")
  if not (res.table.status == "done").all():
    raise RuntimeError(f"cells did not finish:\n{res.table.status.value_counts()}")
  return res


def collapse_curves(model, params, test):
  """(G, len(EPS)) (eps, 0.05)-collapsed units per cell, KL to N(0, eta_enc^2)
  (``dang_cvae_relu.collapse_curves`` with this prior); compiled once per model."""
  import jax.numpy as jnp
  return np.asarray(_curves_fn(model)(params, tuple(jnp.asarray(a) for a in test)))


@functools.lru_cache(maxsize=4)
def _curves_fn(model):
  import jax

  from linvae_jax._src import nonlinear_metrics as nm

  def all_cells(params, xt):
    def per_cell(p):
      mu, std = model.encoder(p, xt, {})
      return curve_from_kl(nm.gaussian_kl(mu, std, ETA_ENC))
    return jax.lax.map(per_cell, params)
  return jax.jit(all_cells)


def curve_from_kl(kl):
  """Units with P_x[KL_k(x) < eps] >= 0.95, per eps (``kl``: (n, d) per-example KLs)."""
  import jax.numpy as jnp
  q = jnp.quantile(jnp.asarray(kl), 0.95, axis=0)
  return jnp.sum(q[None, :] < jnp.asarray(EPS)[:, None], axis=1)


def centred_moments(train):
  """Centred moments of the training pairs (numpy float64; equal to
  ``lv.moments_from_arrays(x, y, centred=True)`` to 1e-15, a few times faster)."""
  x, y = (np.asarray(a, np.float64) for a in train)
  mx, my = x.mean(0), y.mean(0)
  xc, yc, n = x - mx, y - my, len(x)
  return lv.moments_from_second_moments(xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n, mean_x=mx,
                                        mean_y=my, count=float(n), centred=True, validate=False)


@functools.lru_cache(maxsize=2)
def _posterior_fn(lin):
  import jax

  def post(m, h):
    p = lin.posterior(lin.optimum(m, h).params, h)["z"]
    return p.mean_map, p.var
  return jax.jit(post)


def theory(model, train):
  """The linear CVAE closed form on the centred moments of ``train``
  (``linear_overlay.theory_per_cell``): theta (top D), the active count and KL at
  beta (ours) = BETA and at the literal beta = 1, and its (eps, 0.05)-collapse curve
  (per-example KL on the centred training pairs, at BETA: the pairs it is the optimum
  for; with fewer pairs than pixels the closed form's encoder is arbitrary off their span,
  and on test pairs its KL blows up)."""
  m = centred_moments(train)
  betas = [BETA, BETA_D]
  th = linear_overlay.theory_per_cell(model, train, {
      "beta": betas, "eta_enc": [ETA_ENC] * 2, "eta_dec": [ETA_DEC] * 2}, moments=m)
  theta = th["beta_thresholds"][0] * ETA_DEC ** 2    # beta_i = theta_i / eta_dec^2
  lin = linear_overlay.counterpart(model)[0]
  mean_map, var = _posterior_fn(lin)(m, C.hyper(beta=BETA, eta_enc=ETA_ENC, eta_dec=ETA_DEC))
  u = np.concatenate([train[0] - np.asarray(m.mean_x), train[1] - np.asarray(m.mean_y)], axis=1)
  mu = u @ np.asarray(mean_map, np.float64).T
  r = np.asarray(var, np.float64)[None, :] / ETA_ENC ** 2
  kl = 0.5 * (r + mu ** 2 / ETA_ENC ** 2 - 1.0 - np.log(r))
  return {"theta": theta, "active": int(th["active"][0]), "kl": float(th["kl"][0]),
          "active_beta1": int(th["active"][1]), "kl_beta1": float(th["kl"][1]),
          "curve": np.asarray(curve_from_kl(kl)), "kl_train": float(kl.sum(1).mean())}


def collapse_score(curves):
  """Mean over the log-spaced eps grid of the collapsed-unit count (area under the
  curve in log eps, per unit of log eps): one number per curve, larger = more collapse."""
  return np.asarray(curves, float).mean(axis=-1)


def ordered(v, order=DIGITS, more=True):
  """True iff v[d] is strictly decreasing along ``order`` (``more``) or increasing."""
  a = np.asarray([v[d] for d in order], float)
  return bool(np.all(np.diff(a) < 0) if more else np.all(np.diff(a) > 0))


def main(argv=None, small=False):
  a, key = C.parse_sized(argv, small, __doc__)
  size = SIZES[key]
  t0 = time.perf_counter()
  cells, curves, theo, n_used, walls = [], {}, {}, {}, {}
  model, opt = make(size)
  for dg in DIGITS:
    train, test = digit_pairs(dg, size["n_train"], size["n_test"])
    n_used[dg] = (len(train[0]), len(test[0]))
    res = train_digit(size, model, opt, train, test)
    walls[dg] = float(res.info.get("wall_s", np.nan))
    t = res.table.copy()
    t["digit"] = dg
    curves[dg] = collapse_curves(model, res.params, test)
    t["collapse_score"] = collapse_score(curves[dg])
    cells.append(t)
    theo[dg] = theory(model, train)
  load = os.getloadavg()
  wall = time.perf_counter() - t0
  t = pd.concat(cells, ignore_index=True)
  t["beta_d"] = BETA_D
  t["au_pct"] = 100.0 * t.au / D
  t["dang_au_pct"] = 100.0 * t.dang_au
  cols = ["au", "dang_au_pct", "n_collapsed", "collapse_score", "kl", "iw_ll", "elbo"]
  s = N.seed_stats(t, "digit", cols).set_index("digit").loc[list(DIGITS)].reset_index()
  for k in ("active", "kl", "active_beta1", "kl_beta1"):
    s[f"theory_{k}"] = [theo[d][k] for d in s.digit]
  s["theory_collapse_score"] = [float(collapse_score(theo[d]["curve"])) for d in s.digit]
  s["paper_sum_top16"] = [PAPER_SUM16[d] for d in s.digit]
  s["sum_top16_centred"] = [float(theo[d]["theta"].sum()) for d in s.digit]
  s["n_train"] = [n_used[d][0] for d in s.digit]
  s["n_test"] = [n_used[d][1] for d in s.digit]
  mach = N.machine()

  # ---- the paper's ordering, per metric: seed means and per seed
  by = lambda col: dict(zip(s.digit, s[col]))
  checks = {"collapse_score": ordered(by("collapse_score")),
            "kl": ordered(by("kl"), more=False), "au": ordered(by("au"), more=False),
            "theory_kl": ordered(by("theory_kl"), more=False),
            "theory_collapse_score": ordered(by("theory_collapse_score"))}
  per_seed = {}
  for col, more in (("collapse_score", True), ("kl", False)):
    per_seed[col] = int(sum(ordered(dict(zip(g.digit, g[col])), more=more)
                            for _, g in t.groupby("seed")))

  # ---- figure
  fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
  colors = {1: "C3", 9: "C2", 7: "C0"}
  for dg in DIGITS:
    c = curves[dg].astype(float)
    mean, se = c.mean(0), c.std(0, ddof=1) / np.sqrt(len(c))
    ax[0].plot(EPS, mean, "-", color=colors[dg], lw=1.8,
               label=f"digit {dg}: ReLU CVAE, mean ± s.e. ({len(c)} seeds)")
    ax[0].fill_between(EPS, mean - se, mean + se, color=colors[dg], alpha=.25)
    ax[0].plot(EPS, theo[dg]["curve"], "--", color=colors[dg], lw=1.1,
               label=f"digit {dg}: linear CVAE theory (active {theo[dg]['active']})")
  ax[0].set_xscale("log")
  ax[0].set(xlabel="eps", ylabel=f"(eps, 0.05)-collapsed units (of {D})", ylim=(-0.5, D * 1.45),
            yticks=range(0, D + 1, 2), title="Fig 3(a): (eps, 0.05)-collapse per digit")
  ax[0].axhline(D, color="grey", lw=.5)
  ax[0].legend(fontsize=6.5, loc="upper left", ncol=2)
  pos = np.arange(len(DIGITS))
  w = 0.2
  bars = ((s.au, s.au_se, "ReLU CVAE Burda AU", "C0"),
          (D * s.dang_au_pct / 100, D * s.dang_au_pct_se / 100, "ReLU CVAE Dang's code AU × 16",
           "C9"),
          (s.theory_active, None, f"linear theory active, beta {BETA:g} (beta_D {BETA_D:g})",
           "k"),
          (s.theory_active_beta1, None, "linear theory active, beta 1 (dang_digits.py)", "grey"))
  for j, (v, e, lab, col) in enumerate(bars):
    ax[1].bar(pos + (j - 1.5) * w, v, w, yerr=e, capsize=3, color=col, label=lab)
  ax[1].set_xticks(pos, [f"digit {d}" for d in DIGITS])
  ax[1].set(ylabel=f"active units (of {D})", ylim=(0, D * 1.45),
            title="active units per digit (± s.e. over seeds)")
  ax[1].legend(fontsize=6.5, loc="upper left", ncol=2)
  ax[2].bar(pos - 0.2, s.kl, 0.4, yerr=s.kl_se, capsize=3, color="C1",
            label="ReLU CVAE KL (held-out)")
  ax[2].bar(pos + 0.2, s.theory_kl, 0.4, color="k", alpha=.7,
            label=f"linear theory KL (beta {BETA:g})")
  ax[2].set_xticks(pos, [f"digit {d}\nsum theta {s.sum_top16_centred[i]:.2f}\n(paper {PAPER_SUM16[d]:g})"
                         for i, d in enumerate(DIGITS)], fontsize=7)
  ax[2].set_xlabel("sum of the top-16 theta_i: centred, this subset (paper: uncentred, all)",
                   fontsize=7)
  ax[2].set(ylabel="KL (nats)", title="KL per digit (paper order: 1 < 9 < 7)")
  ax[2].legend(fontsize=6.5, loc="upper left")
  fig.suptitle(f"Dang Fig 3(a), ReLU CVAE per MNIST digit, quadrants 196 -> 588. {key} size: "
               f"{size['n_train'] or 'all'} pairs per digit, h={H}, d={D}, {size['epochs']} epochs, "
               f"batch {BATCH}, clip {CLIP:g} + Adam {size['lr']:g}, beta_D={BETA_D:g} (ours "
               f"{BETA:g}), eta_enc=eta_dec={ETA_DEC:g}; {mach}", fontsize=8)

  rnd = lambda x: np.round(np.asarray(x, float), 3).tolist()
  note = (
      f"Machine: {mach}; load average (1/5/15 min) when training ended "
      f"{'/'.join(f'{v:.1f}' for v in load)}; {len(t)} cells (3 digits x {size['seeds']} seeds) "
      f"trained and evaluated in {wall:.0f} s (train_grid per digit: "
      f"{', '.join(f'{d}: {walls[d]:.0f} s' for d in DIGITS)}). {key} size: "
      f"n_train per digit {[n_used[d][0] for d in DIGITS]}, n_test {[n_used[d][1] for d in DIGITS]} "
      f"(digits {list(DIGITS)}), h={H}, d={D}, {size['epochs']} epochs, batch {BATCH}, "
      f"clip_grad_norm {CLIP:g} + Adam lr {size['lr']:g}, IW K={size['iw']}.\n\n"
      f"beta_D = {BETA_D:g} (Dang's code convention) = beta {BETA:g} here; eta_enc = eta_dec = "
      f"{ETA_DEC:g}. collapse_score: the (eps, 0.05)-collapse curve's mean over {len(EPS)} "
      f"log-spaced eps in [{EPS[0]:g}, {EPS[-1]:g}] (larger = more collapse); au: Burda "
      "(Var mu > 0.01); dang_au_pct: Dang's code AU; n_collapsed: (0.01, 0.05)-collapsed units; "
      "theory_*: the linear CVAE closed form on the centred moments of the same training pairs "
      f"(theory_active_beta1: at beta = 1, threshold 0.25, as dang_digits.py).\n\n"
      + "".join(f"digit {d}: centred theta_1..16 = {rnd(theo[d]['theta'])}.\n" for d in DIGITS)
      + f"\nPaper ordering (more collapse for 1 > 9 > 7), seed means: collapse_score "
      f"{checks['collapse_score']}, KL {checks['kl']}, Burda AU {checks['au']}; per seed: "
      f"collapse_score on {per_seed['collapse_score']} of {size['seeds']}, KL on "
      f"{per_seed['kl']} of {size['seeds']}. Theory: KL {checks['theory_kl']}, collapse score "
      f"{checks['theory_collapse_score']}; active counts {[theo[d]['active'] for d in DIGITS]} "
      f"(beta {BETA:g}) / {[theo[d]['active_beta1'] for d in DIGITS]} (beta 1).")
  name = "dang_digits_relu" + {"small": "_small", "default": "", "full": "_gpu"}[key]
  keep = ["digit", "n_train", "paper_sum_top16", "sum_top16_centred", "theory_active",
          "theory_active_beta1", "au", "au_se", "dang_au_pct", "dang_au_pct_se", "n_collapsed",
          "n_collapsed_se", "collapse_score", "collapse_score_se", "theory_collapse_score", "kl",
          "kl_se", "theory_kl", "theory_kl_beta1", "iw_ll", "iw_ll_se"]
  files = C.save(fig, s[keep], a.out, name, note)
  cdf = pd.DataFrame(np.concatenate([curves[d] for d in DIGITS]),
                     columns=[f"eps_{e:.3g}" for e in EPS])
  pd.concat([t[["digit", "seed"]].reset_index(drop=True), cdf], axis=1).to_csv(
      a.out / f"{name}_collapse_curves.csv", index=False)
  return {"table": s, "cells": t, "curves": curves, "theory": theo, "eps": EPS,
          "checks": checks, "per_seed": per_seed, "files": files, "note": note, "wall_s": wall,
          "machine": mach, "size": key}


if __name__ == "__main__":
  r = main(sys.argv[1:])
  print(r["note"])
  print(r["table"].to_string())
