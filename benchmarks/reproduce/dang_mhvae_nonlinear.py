"""Dang et al. (2024) Table 5 and Fig 2(c): a ReLU (and Tanh) two-latent MHVAE on MNIST,
swept over beta1, beta2 and eta_dec, against the linear MHVAE closed form.

The network (``mlp_mhvae``): q(z1|x) = N(mu1(x), sigma1^2 I) with mu1 an MLP
784-h-16 and sigma1 = 0.5 fixed; q(z2|z1) = N(mu2(z1), Sigma2(z1)) from an
MLP 16-h2-16 with a log-variance head (Dang's "Sigma2 = MLP(z1)"); decoders
p(z1|z2) = N(g(z2), eta_dec^2 I) (16-h2-16) and p(x|z1) = N(f(z1), eta_dec^2 I)
(16-h-784); prior p(z2) = N(0, eta_enc^2 I), eta_enc = 0.5; biases; hidden
activation ReLU or Tanh. Adam after clipping each cell's gradient to global
norm 0.1 (Dang's code), at Dang's lr 1e-3 for ``--full`` and 3e-3 at the
reduced sizes (their few hundred steps otherwise leave the z2 log-variance
head, initialised at Sigma2 = I against the prior's 0.5^2, far from its
optimum, and KL(z2) is then mostly that mismatch), batch 128, every (beta1, beta2, eta_dec,
seed) cell of one activation in one vmapped program (``lv.train_grid``,
``objective="sampled"``). Held-out metrics on MNIST test images (``evaluate``):
IW log-likelihood (K samples, joint proposal q(z1|x) q(z2|z1), nats with the
decoder's normalising constant), KL(z2) = E_x E_{z1|x} KL(q(z2|z1) || p(z2)),
Burda's AU of z2 (Var mu2 > 0.01) and Dang's code's pair "AU" of z2
(fraction of (example, unit) pairs with KL >= 0.01), z1 AU.

**What differs from Dang's code** (``MNIST_HVAE_Relu.py``): it puts a tanh on
every output head (mu1, mu2, the z2 *std*, g and f); ``mlp_mhvae`` has linear
heads and a log-variance for Sigma2 (the library has no output activation), so
mu1 is unbounded here while theirs lives in (-1, 1) under noise of std 0.5.
Their z1 term is a one-sample Monte-Carlo KL and both KL terms are clamped at
>= 0 per batch; ours is the same Monte-Carlo estimator without the clamp (the
analytic z2 KL is never negative). Their script writes no LL or AU (only the
per-dimension z2 KL of the last training epoch, times beta_D2, and images), so
Table 5 cannot be produced from their code: we compute the held-out IW
log-likelihood, KL(z2) and both AU definitions for z2 and print the paper's
numbers beside them.

**beta convention.** Dang's code minimises ||x - f||^2 / eta^2 + beta_D1 KL1 +
beta_D2 KL2 (the KLs with their 1/2, the reconstruction without), i.e. twice our
negative ELBO with **beta = beta_D / 2**. Every table prints both; the sweeps
use Dang's values (base beta_D1 = beta_D2 = 1, eta_dec = 0.5).

Theory overlay: ``lv.make_model("mhvae", latent_dim1=16, latent_dim2=16)``
(Sigma1 = 0.5^2 I fixed, Sigma2 learnable: Thm 3, corrected) on the **centred**
moments of the same training images: the predicted number of active z2 modes
(omega_i > 0), the KL(z2) of the optimum in the network's definition, and its
thresholds: z2 mode i collapses once beta2 >= sqrt(beta1) sigma1
max(sqrt(beta1) sigma1, theta_i) / eta_dec^2 (theta_i = sqrt(eig_i Cov x)),
i.e. eta_dec^2 >= that / beta2 and beta1 below the inverse. We report the
measured beta2 (and eta_dec) of first collapse (z2 AU < 16) and complete
collapse (z2 AU = 0) per seed and their ratio to the theory's.

Sizes (``--small``: CI, 73 s wall at load 4-5 on the shared 2-core machine
(7.7 min at load 18); default: this CPU, 10 min of CPU (31 min wall at load 10-19);
``--full``: a GPU, Dang's setting, not run here):

========  =======  ===  ==  ======  =====  =============================  ==========
size      n_train  h    h2  epochs  seeds  sweeps (Dang's beta_D)         IW K / n_test
========  =======  ===  ==  ======  =====  =============================  ==========
small     1000     32   32  8       3      beta_D2 {0.25, 1, 3, 9}, ReLU  10 / 300
default   4000     48   48  16      3      beta_D2 10, beta_D1 6, eta 5   50 / 1000
full      60000    256  256 100     5      as default                     1000 / 10000
========  =======  ===  ==  ======  =====  =============================  ==========

The default and full sweeps: beta_D2 in {0.1, 0.25, 0.5, 1, 2, 3, 4.5, 6, 9, 13}
(Fig 2(c)'s {0.1, 0.5, 1, 2}, Table 5's {0.25, ..., 3}, and past the
theory's complete collapse at ~6.4), beta_D1 in {0.1, 0.25, 0.5, 1, 2, 3},
eta_dec in {0.25, 0.5, 0.75, 1, 2}; both activations (19 configurations x
seeds each).

Run: ``python benchmarks/reproduce/dang_mhvae_nonlinear.py [--small | --full] [--out DIR]``
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

D1 = D2 = 16
SIGMA1, ETA_ENC, BASE = 0.5, 0.5, {"beta_d1": 1.0, "beta_d2": 1.0, "eta_dec": 0.5}
BATCH, LR, CLIP = 128, 1e-3, 0.1  # Dang's batch, lr and gradient clip
# Table 5 (A.2.3), ReLU MHVAE, test LL / KL / AU %; keys in Dang's beta_D
PAPER = {
    "beta_d1": {0.25: (-229.88, 1.09, 34), 0.5: (-225.89, 4.59, 89), 1.0: (-225.82, 8.77, 100),
                2.0: (-226.64, 13.00, 100), 3.0: (-227.49, 16.19, 100)},
    "beta_d2": {0.25: (-228.66, 18.07, 100), 0.5: (-226.72, 13.04, 100),
                1.0: (-225.82, 8.77, 100), 2.0: (-226.05, 4.24, 82), 3.0: (-227.41, 1.98, 40)},
    "eta_dec": {0.25: (211.79, 18.07, 100), 0.5: (-225.82, 8.77, 100), 0.75: (-522.61, 3.45, 68),
                1.0: (-740.24, 0.49, 18), 2.0: (-1278.18, 0.00, 0)},
}
SWEEPS_FULL = {"beta_d2": [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 9.0, 13.0],
               "beta_d1": [0.1, 0.25, 0.5, 1.0, 2.0, 3.0],
               "eta_dec": [0.25, 0.5, 0.75, 1.0, 2.0]}
SIZES = {
    "small": {"n_train": 1000, "n_test": 300, "hidden": 32, "epochs": 8, "seeds": 3, "iw": 10,
              "sweeps": {"beta_d2": [0.25, 1.0, 3.0, 9.0]}, "activations": ("relu",),
              "lr": 3e-3},
    "default": {"n_train": 4000, "n_test": 1000, "hidden": 48, "epochs": 16, "seeds": 3,
                "iw": 50, "sweeps": SWEEPS_FULL, "lr": 3e-3},
    "full": {"n_train": 60000, "n_test": 10000, "hidden": 256, "epochs": 100, "seeds": 5,
             "iw": 1000, "sweeps": SWEEPS_FULL, "lr": LR},
}
ACTIVATIONS = ("relu", "tanh")
LABEL = {"beta_d2": "beta_D2 (Dang; ours beta2 = beta_D2 / 2)",
         "beta_d1": "beta_D1 (Dang; ours beta1 = beta_D1 / 2)", "eta_dec": "eta_dec"}


def configs(sweeps):
  """Unique (beta_d1, beta_d2, eta_dec) points of the sweeps (the base point is shared)."""
  pts = []
  for var, vals in sweeps.items():
    for v in vals:
      p = dict(BASE, **{var: float(v)})
      if p not in pts:
        pts.append(p)
  return pd.DataFrame(pts)


def clipped_adam(lr):
  import optax
  return optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(lr))


def theta_of(x):
  m = lv.moments_from_arrays(np.asarray(x, np.float64), centred=True)
  ev = np.clip(np.linalg.eigvalsh(np.asarray(m.xx))[::-1], 0.0, None)
  return m, np.sqrt(ev)


def theory_active(theta, b1, b2, eta):
  """Active z2 modes of the closed form (ours beta): omega_i > 0 iff beta2 eta_dec^2 <
  sqrt(beta1) sigma1 max(sqrt(beta1) sigma1, theta_i), i <= min(d1, d2)."""
  p = np.sqrt(b1) * SIGMA1
  crit = p * np.maximum(p, theta[:min(D1, D2)])
  return int(np.sum(b2 * eta ** 2 < crit))


def linear_theory(m, theta, cfg):
  """The linear MHVAE optimum per configuration: active z2 / z1 modes, KL(z2) in the
  network's definition (E_x E_{z1|x} KL(q(z2|z1) || p(z2))) and the -ELBO."""
  mod = C.model("mhvae", latent_dim1=D1, latent_dim2=D2)
  rows = []
  for r in cfg.itertuples():
    b1, b2 = r.beta_d1 / 2, r.beta_d2 / 2
    h = C.hyper(beta1=b1, beta2=b2, eta_enc=ETA_ENC, eta_dec=r.eta_dec, sigma1=SIGMA1)
    o = mod.optimum(m, h)
    p = o.params
    w1, w2 = np.asarray(p.W1), np.asarray(p.W2)
    s1 = w1 @ np.asarray(m.xx) @ w1.T + SIGMA1 ** 2 * np.eye(D1)
    var2 = np.asarray(mod.sigma2_cov(p, h))
    ev = ETA_ENC ** 2
    kl = 0.5 * ((var2 + np.einsum("ij,jk,ik->i", w2, s1, w2)) / ev - 1 - np.log(var2 / ev))
    act = int(np.sum(o.active["z2"]))
    if act != theory_active(theta, b1, b2, r.eta_dec):
      raise RuntimeError(f"closed-form count {act} != threshold rule at {r}")
    rows.append({"beta_d1": r.beta_d1, "beta_d2": r.beta_d2, "eta_dec": r.eta_dec,
                 "theory_active_z2": act, "theory_active_z1": int(np.sum(o.active["z1"])),
                 "theory_kl_z2": float(np.sum(kl)), "theory_elbo": -float(o.loss)})
  return pd.DataFrame(rows)


def run(size, x, xt, cfg, activation):
  h = size["hidden"]
  model = lv.make_model("mlp_mhvae", data_dim=784, latent_dim1=D1, latent_dim2=D2,
                        hidden=(h,), hidden2=(h,), activation=activation,
                        sigma2_var="data_dependent", iw_samples=size["iw"],
                        iw_chunk=min(size["iw"], 10))
  grid = (G.zipped(beta1=cfg.beta_d1.to_numpy() / 2, beta2=cfg.beta_d2.to_numpy() / 2,
                   eta_dec=cfg.eta_dec.to_numpy()) * G.seeds(size["seeds"])
          * G.constant(eta_enc=ETA_ENC, sigma1=SIGMA1, init_scale=1.0, lr=size["lr"]))
  res = lv.train_grid(model, None, grid, objective="sampled", data=x, eval_data=xt,
                      batch_size=BATCH, epochs=size["epochs"], optimizer=clipped_adam,
                      progress=False)
  if not (res.table.status == "done").all():
    raise RuntimeError(f"{activation}: cells did not finish:\n{res.table.status}")
  t = res.table.copy()
  t["beta_d1"], t["beta_d2"] = 2 * t.beta1, 2 * t.beta2
  t["activation"] = activation
  return t


def sweep_rows(cells, var):
  """The cells of one sweep (the other two at their base values)."""
  keep = np.ones(len(cells), bool)
  for k, v in BASE.items():
    if k != var:
      keep &= np.isclose(cells[k], v)
  return cells[keep]


def fine_theory(theta, var, lo, hi):
  """The predicted active z2 count on a fine grid of ``var`` (others at base)."""
  v = np.geomspace(lo, hi, 400)
  p = {k: np.full_like(v, b) for k, b in BASE.items()}
  p[var] = v
  return v, np.array([theory_active(theta, a / 2, b / 2, e)
                      for a, b, e in zip(p["beta_d1"], p["beta_d2"], p["eta_dec"])])


def thresholds(theta, var):
  """Per z2 mode (descending theta), the value of ``var`` (others at base) where it
  collapses: beta_D2 above, eta_dec above, beta_D1 below."""
  b1, b2, e = BASE["beta_d1"] / 2, BASE["beta_d2"] / 2, BASE["eta_dec"]
  th = theta[:min(D1, D2)]
  if var == "beta_d2":
    p = np.sqrt(b1) * SIGMA1
    return 2 * p * np.maximum(p, th) / e ** 2
  if var == "eta_dec":
    p = np.sqrt(b1) * SIGMA1
    return np.sqrt(p * np.maximum(p, th) / b2)
  # beta1: active iff b2 e^2 < sqrt(b1) s1 max(sqrt(b1) s1, th): solve for b1 per mode
  c = b2 * e ** 2
  # max(p^2, p theta) = c at p = c / theta if that is <= theta, else at p = sqrt(c)
  b1_star = np.where(th >= np.sqrt(c), (c / (SIGMA1 * np.maximum(th, 1e-300))) ** 2,
                     c / SIGMA1 ** 2)
  return 2 * b1_star


def collapse(cells, var, col="z2_au"):
  """First / complete collapse per seed along a sweep; beta_D1 collapses downwards."""
  t = cells.copy()
  if var == "beta_d1":  # collapse happens as beta1 decreases: walk the grid downwards
    t["_v"] = -t[var]
    cp = N.collapse_points(t, D2, by="_v", au=col)
    return {k: -v for k, v in cp.items()}
  return N.collapse_points(t, D2, by=var, au=col)


def main(argv=None, small=False):
  argv = list(argv or [])
  full = "--full" in argv
  if full:
    argv.remove("--full")
  from_cells = None
  if "--from-cells" in argv:  # redo the tables and figure from a run's _cells.csv
    i = argv.index("--from-cells")
    from_cells = argv[i + 1]
    del argv[i:i + 2]
  a = C.parse(argv, small, __doc__)
  key = "small" if a.small else ("full" if full else "default")
  size = SIZES[key]
  acts = size.get("activations", ACTIVATIONS)
  name = "dang_mhvae_nonlinear" + {"small": "_small", "default": "", "full": "_gpu"}[key]
  x, xt = N.mnist_arrays(size["n_train"], size["n_test"])
  m, theta = theta_of(x)
  cfg = configs(size["sweeps"])
  theory = linear_theory(m, theta, cfg)
  t0 = time.perf_counter()
  cells, walls = [], {}
  if from_cells is not None:
    cells = pd.read_csv(from_cells)
    walls = {k: float("nan") for k in acts}
  else:
    for act in acts:
      ta = time.perf_counter()
      cells.append(run(size, x, xt, cfg, act))
      walls[act] = time.perf_counter() - ta
      print(f"[dang_mhvae_nonlinear] {act}: {len(cfg) * size['seeds']} cells in "
            f"{walls[act]:.0f} s", flush=True)
    cells = pd.concat(cells, ignore_index=True)
    # written before the figure: a plotting error does not lose the training
    cells.drop(columns=[c for c in cells.columns if cells[c].dtype == object
                        and c not in ("status", "activation")]).to_csv(
        a.out / f"{name}_cells.csv", index=False, float_format="%.6g")
  wall = time.perf_counter() - t0
  cells["z2_au_pct"] = 100.0 * cells.z2_au / D2
  cells["z2_dang_au_pct"] = 100.0 * cells.z2_dang_au
  mach = N.machine()

  cols = ["iw_ll", "z2_kl", "z2_au", "z2_au_pct", "z2_dang_au_pct", "z1_au", "elbo_iw"]
  rows, collapse_out = [], {}
  for var in size["sweeps"]:
    for act in acts:
      sc = sweep_rows(cells[cells.activation == act], var)
      s = N.seed_stats(sc, var, cols)
      s.insert(0, "sweep", var)
      s.insert(1, "activation", act)
      s = s.merge(sweep_rows(theory, var)[[var, "theory_active_z2", "theory_active_z1",
                                           "theory_kl_z2", "theory_elbo"]], on=var)
      s["theory_active_z2_pct"] = 100.0 * s.theory_active_z2 / D2
      pap = PAPER.get(var, {})
      s["paper_iw_ll"] = [pap.get(v, (np.nan,) * 3)[0] for v in s[var]]
      s["paper_kl"] = [pap.get(v, (np.nan,) * 3)[1] for v in s[var]]
      s["paper_au_pct"] = [pap.get(v, (np.nan,) * 3)[2] for v in s[var]]
      s["value"] = s[var]
      rows.append(s)
      thr = thresholds(theta, var)
      cp = collapse(sc, var)
      th_first = float(thr.min() if var != "beta_d1" else thr.max())
      th_comp = float(thr.max() if var != "beta_d1" else thr.min())
      collapse_out[(var, act)] = {
          "first": cp["first"], "complete": cp["complete"], "first_lo": cp["first_lo"],
          "complete_lo": cp["complete_lo"], "theory_first": th_first, "theory_complete": th_comp,
          "ratio_first": N.nanstat(np.nanmean, cp["first"]) / th_first,
          "ratio_complete": N.nanstat(np.nanmean, cp["complete"]) / th_comp}
  df = pd.concat(rows, ignore_index=True)

  # ---------------------------------------------------------------- figure --
  sweeps = list(size["sweeps"])
  fig, ax = plt.subplots(2, len(sweeps), figsize=(max(7.0, 4.8 * len(sweeps)), 7.6),
                         squeeze=False)
  mk = {"relu": ("o", "C0"), "tanh": ("s", "C1")}
  for j, var in enumerate(sweeps):
    vals = np.asarray(size["sweeps"][var], float)
    vv, pred = fine_theory(theta, var, vals.min() / 1.3, vals.max() * 1.3)
    ax[0, j].plot(vv, pred, "-", color="k", lw=1.2, label="linear theory: active z2 modes")
    for act in acts:
      s = df[(df.sweep == var) & (df.activation == act)]
      sc = sweep_rows(cells[cells.activation == act], var)
      f, c = mk[act]
      jit = 1.02 if act == "tanh" else 0.98
      ax[0, j].plot(sc[var] * jit, sc.z2_au, f, color=c, alpha=.3, ms=4)
      ax[0, j].errorbar(s[var] * jit, s.z2_au, yerr=s.z2_au_se, fmt=f + "-", color=c,
                        capsize=3, label=f"{act} MHVAE: Burda AU of z2 ({size['seeds']} seeds)")
      ax[0, j].plot(s[var] * jit, D2 * s.z2_dang_au_pct / 100, f + ":", color=c, mfc="none",
                    label=f"{act}: Dang's code AU x 16")
      ax[1, j].errorbar(s[var], s.z2_kl, yerr=s.z2_kl_se, fmt=f + "-", color=c, capsize=3,
                        label=f"{act} MHVAE KL(z2), held-out")
    s0 = df[(df.sweep == var) & (df.activation == "relu")]
    pap = s0.dropna(subset=["paper_kl"])
    if len(pap):
      ax[0, j].plot(pap[var], D2 * pap.paper_au_pct / 100, "r*", ms=10,
                    label="Dang Table 5 AU x 16 (ReLU, 1 run)")
      ax[1, j].plot(pap[var], pap.paper_kl, "r*", ms=10, label="Dang Table 5 KL (ReLU)")
    ax[1, j].plot(s0[var], s0.theory_kl_z2, "k--", marker="x", lw=1,
                  label="linear theory KL(z2), same data")
    for v in thresholds(theta, var):
      ax[0, j].axvline(v, color="grey", ls=":", lw=.5)
    ax[0, j].set(ylabel=f"active z2 units (of {D2})", ylim=(-0.5, D2 + 1.5),
                 title=f"Fig 2(c): z2 AU vs {var}\n(dotted: theory's mode thresholds)")
    ax[1, j].set(xlabel=LABEL[var], ylabel="KL(z2) (nats)", title=f"KL(z2) vs {var}")
    ax[1, j].set_yscale("symlog", linthresh=0.1)
    ax[1, j].set_ylim(bottom=0)
    for i in range(2):
      N.beta_axis(ax[i, j], vals)
      ax[i, j].legend(fontsize=6)
  base = ", ".join(f"{k}={v:g}" for k, v in BASE.items())
  fig.suptitle(f"Dang MHVAE, {key} size: n={size['n_train']}, h={size['hidden']}, d1=d2=16, "
               f"{size['epochs']} epochs, batch {BATCH}, Adam {size['lr']:g} (clip {CLIP:g}), "
               f"sigma1 = eta_enc = 0.5,\nbase {base}; IW K={size['iw']} on "
               f"{size['n_test']} test images; {mach}", fontsize=8)

  rnd = lambda v: np.round(np.asarray(v, float), 3).tolist()
  cl = []
  for (var, act), c in collapse_out.items():
    cl.append(
        f"- {var}, {act}: first collapse (z2 AU < 16) per seed at {rnd(c['first'])} (previous "
        f"grid value {rnd(c['first_lo'])}), theory {c['theory_first']:.3g}, ratio "
        f"{c['ratio_first']:.2f}; complete collapse (AU = 0) at {rnd(c['complete'])} (previous "
        f"{rnd(c['complete_lo'])}; NaN: not on the grid), theory {c['theory_complete']:.3g}, "
        f"ratio {c['ratio_complete']:.2f}.")
  try:
    load = "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
  except OSError:
    load = "load average unknown"
  note = (
      f"Machine: {mach}, {load} at the end of the run; {len(cells)} cells in {wall:.0f} s "
      f"({', '.join(f'{k} {v:.0f} s' for k, v in walls.items())}). {key} size: n_train="
      f"{size['n_train']}, n_test={size['n_test']}, h = h2 = {size['hidden']}, d1 = d2 = 16, "
      f"{size['epochs']} epochs, batch {BATCH}, Adam lr {size['lr']:g} after global-norm clip "
      f"{CLIP:g}, IW K={size['iw']} (Dang: 60k, h = 256, 100 epochs, lr 1e-3; K not stated).\n\n"
      f"beta_d* are Dang's (their code's loss is twice ours: beta = beta_D / 2). z2_au: "
      f"Burda's Var mu2 > 0.01; z2_dang_au_pct: Dang's code's pair fraction with KL >= 0.01; "
      f"paper_*: Table 5 (ReLU, one run; Dang's 'AU' definition is not stated, their HVAE "
      f"script has no LL or AU code). theory_*: the linear MHVAE closed form (Sigma1 = 0.5^2 I, "
      f"Sigma2 learnable) on the centred moments of the training images; theory_kl_z2 uses "
      f"the network's KL(z2) definition. theta_1..4 (centred) = {rnd(theta[:4])}.\n\n"
      f"Theory thresholds (others at base): beta_D2 of z2 collapse "
      f"{rnd(thresholds(theta, 'beta_d2')[[0, 1, 2, -1]])} (modes 1, 2, 3, 16); eta_dec "
      f"{rnd(thresholds(theta, 'eta_dec')[[0, -1]])} (modes 1, 16); beta_D1 (collapse below) "
      f"{rnd(thresholds(theta, 'beta_d1')[[0, -1]])}.\n\n" + "\n".join(cl))
  keep = ["sweep", "activation", "value", "iw_ll", "iw_ll_se", "paper_iw_ll", "theory_elbo",
          "z2_kl", "z2_kl_se", "paper_kl", "theory_kl_z2", "z2_au_pct", "z2_au_pct_se",
          "z2_dang_au_pct", "z2_dang_au_pct_se", "paper_au_pct", "theory_active_z2_pct", "z1_au",
          "theory_active_z1"]
  files = C.save(fig, df[keep], a.out, name, note)
  return {"table": df, "cells": cells, "theory": theory, "theta": theta, "collapse": collapse_out,
          "files": files, "note": note, "wall_s": wall, "machine": mach, "size": key}


if __name__ == "__main__":
  r = main(sys.argv[1:])
  print(r["note"])
  print(r["table"].to_string())
