"""Dang et al. (2024) Table 3 and Fig 2(b): a ReLU CVAE on MNIST quadrants, beta and eta_dec sweeps.

Data: MNIST pixels/255 split as in App. A (``mnist_view(..., "quadrants")``):
the condition x is the bottom-left 14 x 14 quadrant (196 pixels), the output y
the other three (588). The network (``mlp_cvae``): encoder mu, log sigma^2
= one ReLU hidden layer of width h on [x; y] with biases and a **data-dependent**
diagonal Sigma(x, y) (a linear log-variance head, as in Dang's
``MNIST_CVAE_Relu.py``, whose sigma heads are linear in the hidden features;
the paper's text says data-independent), decoder f([z; x]) a ReLU MLP of the
same width, d_z = 16, eta_enc = 1, Gaussian decoder with fixed std eta_dec.
Dang's code *adds* two 16-wide MLPs (mu = MLP_x(x) + MLP_y(y), f = MLP_z(z) +
MLP_x(x)); that sum is a 32-wide MLP of the concatenation with a
block-diagonal first layer, so we use h = 32 without the block constraint (a
superset of their function class). Adam at lr 1e-3 (the code's default; the
paper says 1e-4) after the code's ``clip_grad_norm(0.01)``, batch 128, every
(beta, eta_dec, seed) cell in one vmapped program.

**beta convention.** Dang's code minimises ||y - f||^2 / eta_dec^2 + beta_D KL
(no 1/2), so beta_D = 2 beta in the standard ELBO used here. Every table and
axis gives beta_D (the paper's numbers) and ours.

**Only beta eta_dec^2 matters for training.** With a fixed decoder std the
loss is (1/eta_dec^2) [||y - f||^2 / 2 + beta eta_dec^2 KL] + const, and
clipped-gradient Adam is invariant to the loss's scale, so (beta, eta_dec) and
(beta eta_dec^2, 1) follow the same trajectory from the same seed: the
encoder, KL and AU are identical (up to rounding) and only the IW
log-likelihood differs, by the decoder's normalising constant and the 1/eta^2
on the residual. The eta_dec sweep is a beta sweep in disguise (the linear
theory's threshold theta_i > beta eta_dec^2 says the same); the cells with
equal products are kept as a check (the test asserts equal KLs).

Grids (in beta_D): Table 3's beta rows are at eta_dec = 0.5 (its beta = 1 and
eta_dec = 0.5 rows are identical), beta_D in {0.25, 0.5, 1, 2, 3}; its eta_dec
rows at beta_D = 1, eta_dec in {0.25, 0.5, 0.75, 1, 2}. Fig 2(b): (i) eta_dec
= 1, beta_D in {0.1, 0.5, 1, 2}, (ii) beta_D = 1, eta_dec in {0.25, 0.5, 1,
2}. We extend (i) to beta_D = 10 and (ii) to eta_dec = 3 so that both sweeps
reach the linear theory's complete collapse, and take the union of all cells.

Held-out metrics on MNIST test images: IW log p(y|x) with K samples (nats per
image, the decoder's normalising constant included, as in Dang's code: hence
Table 3's +142.56 at eta_dec = 0.25), total KL, Burda's AU (Var mu_k > 0.01)
and Dang's code's "AU" (the fraction of (example, unit) pairs with KL >=
0.01), and Fig 2(b)'s (eps, 0.05)-collapse curves (the number of units with
P_x[KL_k(x) < eps] >= 0.95, against eps) from the learned encoders.

Theory overlay: the linear CVAE closed form (learnable Sigma; App. C: the
data-dependent optimum is the same) on the **centred** moments of the same
training pairs: unit i active iff theta_i = eig_i(B - C^T A^+ C) > beta
eta_dec^2 (beta ours), i.e. beta_i = theta_i / eta_dec^2 and eta_i =
sqrt(theta_i / beta); its active count and KL are drawn on the same axes. The
measured beta (eta_dec) of first collapse (Burda AU < 16) and of complete
collapse (AU = 0) per seed, and their ratio to beta_16, beta_1 (eta_16,
eta_1), are reported.

Sizes (``--small``: CI; default: this CPU; ``--full``: a GPU, Dang's size):

==========  =======  ==  ======  =====  =====  ===============  ==========
size        n_train  h   epochs  seeds  cells  lr               IW K / test
==========  =======  ==  ======  =====  =====  ===============  ==========
small       1500     32  4       3      15     1e-3             10 / 300
default     8000     32  10      3      51     1e-3             100 / 1000
full (GPU)  60000    32  100     5      120    1e-3 (code)      1000 / 10000
==========  =======  ==  ======  =====  =====  ===============  ==========

Run: ``python benchmarks/reproduce/dang_cvae_relu.py [--small | --full] [--out DIR]``
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

from linvae_jax._src import nonlinear_metrics as nm
from linvae_jax._src.data.mnist import mnist_view

# Table 3 (A.2.2), ReLU CVAE on MNIST: (IW log-likelihood, KL, AU %); beta in Dang's convention
PAPER_BETA = {0.25: (-177.14, 18.85, 56.0), 0.5: (-174.72, 15.42, 56.0),
              1.0: (-173.93, 10.22, 44.0),
              2.0: (-174.32, 6.37, 37.0), 3.0: (-176.43, 3.57, 25.0)}   # eta_dec = 0.5
PAPER_ETA = {0.25: (142.56, 17.58, 50.0), 0.5: (-173.93, 10.22, 44.0), 0.75: (-392.68, 5.64, 38.0),
             1.0: (-553.32, 2.10, 13.0), 2.0: (-951.16, 0.00, 0.0)}     # beta_D = 1
TABLE3_ETA, TABLE3_BETA_D = 0.5, 1.0      # the fixed value of each Table 3 sweep
FIG_ETA, FIG_BETA_D = 1.0, 1.0            # the fixed value of each Fig 2(b) sweep
D, H, BATCH, CLIP = 16, 32, 128, 0.01
SIZES = {
    "small": {"n_train": 1500, "n_test": 300, "epochs": 4, "seeds": 3, "iw": 10, "lr": 1e-3,
              "beta_d": [0.25, 1.0, 4.0], "eta": [0.5, 1.0, 2.0], "t3_beta_d": [1.0]},
    "default": {"n_train": 8000, "n_test": 1000, "epochs": 10, "seeds": 3, "iw": 100, "lr": 1e-3,
                "beta_d": [0.1, 0.5, 1.0, 2.0, 4.0, 6.0, 10.0],
                "eta": [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                "t3_beta_d": [0.25, 0.5, 1.0, 2.0, 3.0]},
    "full": {"n_train": 60000, "n_test": 10000, "epochs": 100, "seeds": 5, "iw": 1000, "lr": 1e-3,
             "beta_d": [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0],
             "eta": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0],
             "t3_beta_d": [0.25, 0.5, 1.0, 2.0, 3.0]},
}
EPS = np.geomspace(1e-4, 10.0, 61)  # the (eps, 0.05)-collapse curves' eps axis


def configs(size):
  """The union of every sweep's (beta_D, eta_dec), in a stable order."""
  pairs = [(b, FIG_ETA) for b in size["beta_d"]] + [(FIG_BETA_D, e) for e in size["eta"]]
  pairs += [(b, TABLE3_ETA) for b in size["t3_beta_d"]] + [(TABLE3_BETA_D, TABLE3_ETA)]
  out = []
  for p in pairs:
    if p not in out:
      out.append(p)
  return out


def quadrants(n_train, n_test):
  x, xt = N.mnist_arrays(n_train, n_test)
  return mnist_view(x, "quadrants"), mnist_view(xt, "quadrants")


def theory(train, pairs):
  """Linear CVAE closed form on the centred moments of ``train``, per (beta_D, eta_dec):
  a DataFrame (beta_d, eta_dec, theory_active, theory_kl) and theta_i = eig_i(E)
  (descending, the top ``D``)."""
  m = lv.moments_from_arrays(*train, centred=True)
  mod = C.model("cvae", latent_dim=D, encoder_var="learnable")
  second, _ = mod.input_moments(m)
  rows, theta = [], None
  for bd, eta in pairs:
    h = C.hyper(beta=bd / 2, eta_enc=1.0, eta_dec=eta)
    o = mod.optimum(m, h)
    kl = float(np.sum(lv.metrics.kl_per_dim(mod.posterior(o.params, h)["z"], second)))
    rows.append({"beta_d": bd, "eta_dec": eta, "theory_active": int(np.sum(o.active["z"])),
                 "theory_kl": kl})
    # thresholds["beta"] = theta_i / eta_dec^2 (ours)
    theta = np.sort(np.asarray(o.thresholds["beta"], np.float64))[::-1] * eta ** 2
  return pd.DataFrame(rows), theta


def collapse_curves(model, res, test, cells):
  """(G, len(EPS)) number of (eps, 0.05)-collapsed units per cell (Fig 2(b))."""
  import jax
  import jax.numpy as jnp
  xt = tuple(jnp.asarray(a) for a in test)

  def per_cell(p):
    mu, std = model.encoder(p, xt, {})
    kl = nm.gaussian_kl(mu, std, 1.0)                               # (n, d)
    q = jnp.quantile(kl, 0.95, axis=0)                              # P[KL < eps] >= .95
    return jnp.sum(q[None, :] < jnp.asarray(EPS)[:, None], axis=1)  # (len(EPS),)
  out = np.asarray(jax.lax.map(per_cell, res.params))
  assert out.shape == (len(cells), len(EPS))
  return out


def run(size, train, test):
  model = lv.make_model("mlp_cvae", data_dim=588, cond_dim=196, latent_dim=D, hidden=(H,),
                        activation="relu", encoder_var="data_dependent",
                        iw_samples=size["iw"], iw_chunk=min(size["iw"], 10))
  import optax
  pairs = configs(size)
  grid = (G.zipped(beta=[b / 2 for b, _ in pairs], eta_dec=[e for _, e in pairs])
          * G.seeds(size["seeds"]) * G.constant(eta_enc=1.0, init_scale=1.0, lr=size["lr"]))
  opt = lambda lr: optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(lr))
  res = lv.train_grid(model, None, grid, objective="sampled", data=train, eval_data=test,
                      batch_size=BATCH, epochs=size["epochs"], keep_params=True,
                      progress=os.environ.get("LINVAE_PROGRESS", "") not in ("", "0"),
                      optimizer=opt, optimizer_id=f"clip{CLIP:g}+adam")
  if not (res.table.status == "done").all():
    raise RuntimeError(f"cells did not finish:\n{res.table.status.value_counts()}")
  return model, res, pairs


def sweep_points(t, by, theta, fixed):
  """Measured first/complete collapse along one sweep and the theory's thresholds.

  ``by`` is ``"beta_d"`` (eta_dec = ``fixed``) or ``"eta_dec"`` (beta_D = ``fixed``)."""
  cp = N.collapse_points(t, D, by=by)
  if by == "beta_d":    # active iff theta_i > (beta_D / 2) eta^2
    th_first, th_comp = 2 * theta[D - 1] / fixed ** 2, 2 * theta[0] / fixed ** 2
  else:                 # active iff eta < sqrt(theta_i / beta)
    th_first, th_comp = np.sqrt(theta[D - 1] / (fixed / 2)), np.sqrt(theta[0] / (fixed / 2))
  out = {"collapse": cp, "theory_first": float(th_first), "theory_complete": float(th_comp)}
  for k, th in (("first", th_first), ("complete", th_comp)):
    out[f"ratio_{k}"] = N.nanstat(np.nanmean, cp[k]) / th
    out[f"bracket_{k}"] = (N.nanstat(np.nanmin, cp[f"{k}_lo"]) / th,
                           N.nanstat(np.nanmax, cp[k]) / th)
  return out


def main(argv=None, small=False):
  a, key = C.parse_sized(argv, small, __doc__)
  size = SIZES[key]
  train, test = quadrants(size["n_train"], size["n_test"])
  t0 = time.perf_counter()
  model, res, pairs = run(size, train, test)
  wall = float(res.info.get("wall_s", time.perf_counter() - t0))  # training + evaluation
  load = os.getloadavg()  # the shared machine's load when training ended
  t = res.table.copy()
  t["beta_d"] = 2 * t.beta
  t["au_pct"] = 100.0 * t.au / D
  t["dang_au_pct"] = 100.0 * t.dang_au
  curves = collapse_curves(model, res, test, t)
  th, theta = theory(train, pairs)
  cols = ["iw_ll", "kl", "au", "au_pct", "dang_au_pct", "elbo", "n_collapsed"]
  idx = {(round(b, 9), round(e, 9)): i for i, (b, e) in enumerate(pairs)}
  t["cfg"] = [idx[(round(b, 9), round(e, 9))] for b, e in zip(t.beta_d, t.eta_dec)]
  t["beta_d"] = [pairs[i][0] for i in t.cfg]  # exact grid values (2 * beta rounds)
  s = N.seed_stats(t, "cfg", cols)
  s["beta_d"] = [pairs[i][0] for i in s.cfg]
  s["eta_dec"] = [pairs[i][1] for i in s.cfg]
  s["beta"] = s.beta_d / 2
  s = s.drop(columns="cfg").merge(th, on=["beta_d", "eta_dec"])
  s["theory_active_pct"] = 100.0 * s.theory_active / D
  mach = N.machine()

  # ---- Table 3: the paper's rows beside ours
  rows = []
  for sweep, fixed, paper in (("beta", TABLE3_ETA, PAPER_BETA),
                              ("eta_dec", TABLE3_BETA_D, PAPER_ETA)):
    for v, (pll, pkl, pau) in paper.items():
      bd, eta = (v, fixed) if sweep == "beta" else (fixed, v)
      r = s[(s.beta_d == bd) & (s.eta_dec == eta)]
      if r.empty:
        continue
      r = r.iloc[0].to_dict()
      r.update(sweep=sweep, paper_iw_ll=pll, paper_kl=pkl, paper_au_pct=pau)
      rows.append(r)
  t3 = pd.DataFrame(rows)

  # ---- Fig 2(b) sweeps and their collapse points
  sb = s[s.eta_dec == FIG_ETA].sort_values("beta_d")
  se = s[s.beta_d == FIG_BETA_D].sort_values("eta_dec")
  cb = t[t.eta_dec == FIG_ETA]
  ce = t[t.beta_d == FIG_BETA_D]
  pts = {"beta_d": sweep_points(cb, "beta_d", theta, FIG_ETA),
         "eta_dec": sweep_points(ce, "eta_dec", theta, FIG_BETA_D)}
  mean_curve = lambda mask: curves[np.asarray(mask)].mean(axis=0)

  fig, ax = plt.subplots(2, 3, figsize=(14, 7.4))
  for row, (sw, df, cl, xname) in enumerate((
      (sb, "beta_d", cb, "beta_D = 2 beta (Dang's code; ours: beta_D / 2)"),
      (se, "eta_dec", ce, "eta_dec"))):
    v = sw[df].to_numpy()
    p = pts[df]
    for k, (_, ts) in enumerate(cl.sort_values(df).groupby("seed")):
      ax[row, 0].plot(ts[df] * (1 + 0.025 * (k % 3 - 1)), ts.au, ".", color="C0", alpha=.35,
                      ms=5, label="Burda AU, per seed" if k == 0 else None)
    ax[row, 0].errorbar(v, sw.au, yerr=sw.au_se, fmt="o-", color="C0", capsize=3,
                        label=f"ReLU CVAE Burda AU, mean ± s.e. ({size['seeds']} seeds)")
    ax[row, 0].errorbar(v, D * sw.dang_au_pct / 100, yerr=D * sw.dang_au_pct_se / 100, fmt="^--",
                        color="C9", capsize=3, ms=4, label="Dang's code AU × 16")
    vv = np.geomspace(v.min(), v.max(), 400)
    if df == "beta_d":
      pred = [(theta > b / 2 * FIG_ETA ** 2).sum() for b in vv]
      fixed_txt = f"eta_dec = {FIG_ETA:g}"
    else:
      pred = [(theta > FIG_BETA_D / 2 * e ** 2).sum() for e in vv]
      fixed_txt = f"beta_D = {FIG_BETA_D:g} (ours {FIG_BETA_D / 2:g})"
    ax[row, 0].plot(vv, np.minimum(pred, D), "-", color="k", lw=1.2,
                    label="linear CVAE theory: active modes")
    for q in ("theory_first", "theory_complete"):
      for axx in ax[row, :2]:
        axx.axvline(p[q], color="grey", ls=":", lw=.8)
    ax[row, 0].set(xlabel=xname, ylabel=f"active units (of {D})", ylim=(-0.5, D + 1),
                   title=f"AU vs {df} at {fixed_txt}")
    ax[row, 0].legend(fontsize=6.5, loc="lower left")
    ax[row, 1].errorbar(v, sw.kl, yerr=sw.kl_se, fmt="o-", color="C1", capsize=3,
                        label="ReLU CVAE KL (held-out), mean ± s.e.")
    ax[row, 1].plot(v, sw.theory_kl, "s--", color="k", ms=4, lw=1,
                    label="linear CVAE theory KL (same data)")
    if df == "eta_dec":  # Table 3's eta_dec rows share this sweep's beta_D = 1
      ax[row, 1].plot(list(PAPER_ETA), [r[1] for r in PAPER_ETA.values()], "r*", ms=9,
                      label="Dang Table 3 (1 run)")
    ax[row, 1].set_yscale("symlog", linthresh=0.1)
    ax[row, 1].set_ylim(bottom=0)
    ax[row, 1].set(xlabel=xname, ylabel="KL (nats)",
                   title=f"KL vs {df} (dotted: theory's first / complete)")
    ax[row, 1].legend(fontsize=6.5)
    for axx in ax[row, :2]:
      N.beta_axis(axx, v)
    cmap = plt.get_cmap("viridis")
    for i, val in enumerate(v):
      mask = (t[df] == val) & (t.eta_dec == FIG_ETA if df == "beta_d" else t.beta_d == FIG_BETA_D)
      ax[row, 2].plot(EPS, mean_curve(mask), "-", color=cmap(i / max(1, len(v) - 1)),
                      label=f"{df} = {val:g}")
    ax[row, 2].set_xscale("log")
    ax[row, 2].set(xlabel="eps", ylabel="(eps, 0.05)-collapsed units (seed mean)",
                   ylim=(-0.5, D + 0.5), title="Fig 2(b): (eps, 0.05)-collapse")
    ax[row, 2].legend(fontsize=6.5, loc="upper left", title=fixed_txt, title_fontsize=6.5)
  fig.suptitle(f"Dang Fig 2(b), ReLU CVAE on MNIST quadrants. {key} size: n={size['n_train']}, "
               f"h={H}, d={D}, {size['epochs']} epochs, batch {BATCH}, clip {CLIP:g} + Adam "
               f"{size['lr']:g}, IW K={size['iw']} on {size['n_test']} test images; {mach}",
               fontsize=8)

  fig3, ax3 = plt.subplots(1, 3, figsize=(16, 4.2))
  labels = [f"{r.beta_d:g}\n{r.eta_dec:g}" for r in t3.itertuples()]
  n_beta_rows = int((t3.sweep == "beta").sum())
  pos = np.arange(len(t3))
  w = 0.2
  ours = f"ours ({size['seeds']} seeds, ± s.e.)"
  for j, (bars, yl) in enumerate(((
      (("iw_ll", ours, "C0"), ("paper_iw_ll", "Dang Table 3 (1 run)", "C3")),
      "IW log p(y|x) (nats)"),
      ((("kl", ours, "C0"), ("paper_kl", "Dang Table 3", "C3"),
        ("theory_kl", "linear theory, same data", "grey")), "KL (nats)"),
      ((("dang_au_pct", "ours: Dang's code AU", "C9"), ("au_pct", "ours: Burda AU", "C0"),
        ("paper_au_pct", "Dang Table 3", "C3"),
        ("theory_active_pct", "linear theory (active modes)", "grey")), "AU (%)"))):
    off = (np.arange(len(bars)) - (len(bars) - 1) / 2) * w
    for o, (col, lab, c) in zip(off, bars):
      se = t3.get(f"{col}_se")
      ax3[j].bar(pos + o, t3[col], w, yerr=se, capsize=2, color=c, label=lab)
    ax3[j].set_xticks(pos, labels, fontsize=7)
    ax3[j].set(ylabel=yl, xlabel="beta_D / eta_dec (left: beta rows | right: eta_dec rows)")
    ax3[j].axvline(n_beta_rows - 0.5, color="grey", lw=.8, ls="--")
    ax3[j].axhline(0, color="k", lw=.5)
    if j:
      ax3[j].set_ylim(0, 1.45 * max(t3[c].max() for c, _, _ in bars))
    ax3[j].legend(fontsize=6.5, loc="upper right" if j else "lower left", ncol=2 if j else 1)
  ax3[0].set_title("Dang Table 3: IW log-likelihood")
  ax3[1].set_title("KL")
  ax3[2].set_title("active units")
  fig3.suptitle(f"Dang Table 3 (beta rows at eta_dec = {TABLE3_ETA:g}, eta_dec rows at beta_D = "
                f"{TABLE3_BETA_D:g}); {key} size, {mach}", fontsize=8)

  rnd = lambda x: np.round(np.asarray(x, float), 3).tolist()
  pb, pe = pts["beta_d"], pts["eta_dec"]
  note_pts = (
      f"Theory (linear CVAE, centred moments of the same {size['n_train']} training pairs): "
      f"theta_i = eig_i(B - C^T A^+ C) = {rnd(theta)} (the 60k set, centred: 2.438 ... 0.434; "
      f"Dang's uncentred: 3.33 ... 0.435). Unit i is active iff theta_i > beta eta_dec^2.\n\n"
      f"beta sweep at eta_dec = {FIG_ETA:g}: first collapse (Burda AU < {D}) per seed at "
      f"beta_D = {rnd(pb['collapse']['first'])} (previous grid value "
      f"{rnd(pb['collapse']['first_lo'])}); theory beta_D,16 = {pb['theory_first']:.3f}; ratio "
      f"{pb['ratio_first']:.2f} (bracket {pb['bracket_first'][0]:.2f}-"
      f"{pb['bracket_first'][1]:.2f}). Complete collapse (AU = 0) at beta_D = "
      f"{rnd(pb['collapse']['complete'])} (previous {rnd(pb['collapse']['complete_lo'])}); "
      f"theory beta_D,1 = {pb['theory_complete']:.3f}; ratio {pb['ratio_complete']:.2f} "
      f"(bracket {pb['bracket_complete'][0]:.2f}-{pb['bracket_complete'][1]:.2f}).\n\n"
      f"eta_dec sweep at beta_D = {FIG_BETA_D:g}: first collapse at eta_dec = "
      f"{rnd(pe['collapse']['first'])} (previous {rnd(pe['collapse']['first_lo'])}); theory "
      f"eta_16 = {pe['theory_first']:.3f}; ratio {pe['ratio_first']:.2f} (bracket "
      f"{pe['bracket_first'][0]:.2f}-{pe['bracket_first'][1]:.2f}). Complete collapse at "
      f"eta_dec = {rnd(pe['collapse']['complete'])} (previous "
      f"{rnd(pe['collapse']['complete_lo'])}); theory eta_1 = {pe['theory_complete']:.3f}; "
      f"ratio {pe['ratio_complete']:.2f} (bracket {pe['bracket_complete'][0]:.2f}-"
      f"{pe['bracket_complete'][1]:.2f}). NaN: not reached on the grid.")
  note = (
      f"Machine: {mach}; load average (1/5/15 min) when training ended "
      f"{'/'.join(f'{v:.1f}' for v in load)}; {len(t)} cells trained and evaluated "
      f"in {wall:.0f} s. {key} size: n_train={size['n_train']} pairs, n_test={size['n_test']}, "
      f"h={H}, d={D}, {size['epochs']} epochs, batch {BATCH}, clip_grad_norm {CLIP:g} + Adam lr "
      f"{size['lr']:g}, IW K={size['iw']} (Dang: 60k, two 16-wide MLPs added, 100 epochs, "
      f"K=1000 on 10k).\n\n"
      "beta_d = 2 beta is Dang's code convention (no 1/2 on the reconstruction); beta is ours. "
      "iw_ll: held-out IW log p(y|x) with the decoder's normalising constant (Dang's "
      "'log-likelihood'); au_pct: Burda's units with Var mu > 0.01; dang_au_pct: Dang's code's "
      "fraction of (example, unit) pairs with KL >= 0.01 (most likely Table 3's 'AU'); "
      "n_collapsed: (0.01, 0.05)-collapsed units; theory_*: the linear CVAE closed form on the "
      "centred moments of the training pairs.\n\n" + note_pts)
  name = "dang_cvae_relu" + {"small": "_small", "default": "", "full": "_gpu"}[key]
  cells_out = t.drop(columns=[c for c in t.columns if t[c].dtype == object and c != "status"])
  cells_out.to_csv(a.out / f"{name}_cells.csv", index=False, float_format="%.6g")
  cdf = pd.DataFrame(curves, columns=[f"eps_{e:.3g}" for e in EPS])
  pd.concat([t[["beta_d", "eta_dec", "seed"]].reset_index(drop=True), cdf], axis=1).to_csv(
      a.out / f"{name}_collapse_curves.csv", index=False)
  keep3 = ["sweep", "beta_d", "beta", "eta_dec", "iw_ll", "iw_ll_se", "paper_iw_ll", "kl", "kl_se",
           "paper_kl", "theory_kl", "dang_au_pct", "dang_au_pct_se", "au_pct", "au_pct_se",
           "paper_au_pct", "theory_active_pct"]
  files3 = C.save(fig3, t3[keep3], a.out, name + "_table3", note)
  keep = ["beta_d", "beta", "eta_dec", "theory_active", "au", "au_se", "dang_au_pct",
          "dang_au_pct_se", "n_collapsed", "kl", "kl_se", "theory_kl", "iw_ll", "iw_ll_se"]
  files = C.save(fig, s.sort_values(["eta_dec", "beta_d"])[keep], a.out, name + "_fig2b", note)
  return {"table": s, "table3": t3, "cells": t, "curves": curves, "eps": EPS, "theta": theta,
          "points": pts, "files": files, "files_table3": files3, "note": note, "wall_s": wall,
          "machine": mach, "size": key}


if __name__ == "__main__":
  r = main(sys.argv[1:])
  print(r["note"])
  print(r["table3"].to_string())
  print(r["table"].to_string())
