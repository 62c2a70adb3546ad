"""``linvae grid --model mlp_vae``: the nonlinear report against the linear theory.

Default suite (no network training; compiling one nonlinear grid costs ~50 s on a
2-core CPU): bad options give one ``linvae: error:`` line; the linear overlay
matches an independent eigenvalue formula (float64); the report's files,
columns, collapse points and figures (no overlapping tick labels at 4 (two curve groups)
and 50 cells, diverged cells marked, legends complete); the CLI wiring with the
trainer replaced by a stub; ``linvae report`` regenerates. The real end-to-end
run (a tiny MLP on synthetic data) is ``slow``.
"""
import json
import types

import numpy as np
import pandas as pd
import pytest

from linvae_jax import cli
from linvae_jax._src import linear_overlay, nonlinear_figures, nonlinear_grid
from linvae_jax._src import nonlinear_report as R
from linvae_jax._src.figures import FAIL_COLOR

D_LAT = 4


@pytest.fixture(autouse=True)
def _no_compile_cache_in_process(monkeypatch):
  monkeypatch.setattr(cli, "enable_compile_cache", lambda path=None: path)


def _main(argv, capsys):
  rc = cli.main(argv)
  out = capsys.readouterr()
  return rc, out.out, out.err


# ------------------------------------------------------------ bad options --

@pytest.mark.parametrize("argv,match", [
    (["--objective", "analytic"], "has no analytic loss"),
    (["--optimizer", "lbfgs"], "needs --objective analytic"),
    (["--tol-dma", "0.1"], "--tol-dma does not apply to mlp_vae"),
    (["--steps", "10", "--epochs", "2"], "not both"),
    (["--hidden", "8,x"], "--hidden"),
    (["--hidden", "0"], "whole numbers >= 1"),
    (["--activation", "sigmoid"], "invalid choice"),
    (["--beta2", "1"], "not a hyperparameter"),
    (["--digit", "3"], "digit applies to MNIST data only"),
    (["--batch-size", "100000", "--n-train", "64"], "larger than the 64 training samples"),
    (["--no-cache"], "--no-cache does not apply"),
    (["--beta", "-1"], "--beta must be > 0"),
])
def test_bad_nonlinear_options_give_one_line(argv, match, capsys, tmp_path):
  rc, out, err = _main(["grid", "--model", "mlp_vae", "--out", str(tmp_path / "o"), *argv],
                       capsys)
  assert rc == 2 and err.startswith("linvae: error:") and match in err, err
  assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,match", [
    (["grid", "--model", "vae", "--hidden", "8"], "--hidden applies to the nonlinear models"),
    (["grid", "--model", "vae", "--iw-samples", "8"], "--iw-samples applies"),
    (["grid", "--model", "vae", "--n-train", "8"], "--n-train applies"),
    (["grid", "--model", "mlp_cvae", "--data", "synthetic:vae-learnable"], "needs paired data"),
    (["theory", "--model", "mlp_vae"], "has no closed form"),
    (["grid", "--model", "mlp_mhvae"], "for mlp_mhvae use lv.train_grid"),
    (["grid", "--model", "cnn_vae"], "for cnn_vae use lv.train_grid"),
])
def test_options_that_do_not_apply(argv, match, capsys, tmp_path):
  rc, _, err = _main(argv + (["--out", str(tmp_path / "o")] if argv[0] == "grid" else []),
                     capsys)
  assert rc == 2 and err.startswith("linvae: error:") and match in err, err


# ------------------------------------------------------------ the overlay --

def _train_x(n=2048, seed=0):
  rng = np.random.default_rng(seed)
  scale = np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.2])
  return rng.normal(size=(n, 6)) * scale + np.arange(6.0)  # a mean the biases absorb


def test_linear_overlay_matches_the_eigenvalue_formula():
  """Learnable Sigma, eta_enc = 1 (W&Z Thm 2): mode i is active iff zeta_i^2 > beta eta^2,
  with zeta_i^2 the eigenvalues of the (divisor n) covariance, and the data-mean KL is
  1/2 sum_active log(zeta_i^2 / (beta eta^2)). float64, rtol 1e-8."""
  import linvae_jax as lv
  x = _train_x()
  zeta2 = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1][:D_LAT]
  net = lv.make_model("mlp_vae", data_dim=6, latent_dim=D_LAT)
  betas = np.array([0.1, 0.5, 1.5, 3.0, 12.0])
  etas = np.array([1.0, 0.7, 1.0, 1.2, 1.0])
  th = linear_overlay.theory_per_cell(net, (x,), {"beta": betas, "eta_enc": np.ones(5),
                                                  "eta_dec": etas})
  c = betas[:, None] * etas[:, None] ** 2
  act = zeta2[None, :] > c
  np.testing.assert_array_equal(th["active"], act.sum(1))
  kl = 0.5 * np.sum(np.where(act, np.log(np.maximum(zeta2[None, :], 1e-300) / c), 0.0), axis=1)
  np.testing.assert_allclose(th["kl"], kl, rtol=1e-8, atol=1e-12)
  np.testing.assert_allclose(th["beta_thresholds"], zeta2[None, :] / etas[:, None] ** 2,
                             rtol=1e-8)
  assert th["model"] == "vae[learnable]"
  # mlp_cvae: the CVAE's theta_i = eig(E), E = Cov(y) - Cov(y, x) Cov(x)^-1 Cov(x, y) (Dang
  # Thm 2, not rooted): mode i active iff theta_i > beta eta^2
  rng = np.random.default_rng(1)
  y = x[:, :3] @ rng.normal(size=(3, 3)) + rng.normal(size=(x.shape[0], 3)) * [2.0, 1.0, 0.3]
  c = np.cov(np.hstack([x, y]).T, bias=True)
  e = c[6:, 6:] - c[6:, :6] @ np.linalg.solve(c[:6, :6], c[:6, 6:])
  theta = np.sort(np.linalg.eigvalsh(e))[::-1]
  cnet = lv.make_model("mlp_cvae", data_dim=3, cond_dim=6, latent_dim=3)
  b = np.array([0.05, 0.5, 2.0, 8.0])
  thc = linear_overlay.theory_per_cell(cnet, (x, y), {"beta": b, "eta_enc": np.ones(4),
                                                      "eta_dec": np.ones(4)})
  assert thc["model"] == "cvae[learnable]"
  np.testing.assert_array_equal(thc["active"], (theta[None, :] > b[:, None]).sum(1))
  np.testing.assert_allclose(thc["beta_thresholds"], np.broadcast_to(theta, (4, 3)), rtol=1e-8)
  # a learnable (isotropic) decoder variance: W&Z's vae_ldv, whose learned s absorbs eta_dec
  import jax.numpy as jnp
  ldv_net = lv.make_model("mlp_vae", data_dim=6, latent_dim=4, decoder_var="learnable")
  lin, why = linear_overlay.counterpart(ldv_net)
  assert lin.name == "vae_ldv" and lin.latent_dim == 4 and why == ""
  bl = np.array([0.05, 0.3, 1.0, 3.0, 5.5])
  m = linear_overlay.centred_moments((x,))
  direct = [lin.optimum(m, {"beta": jnp.asarray(b), "eta_enc": jnp.asarray(1.0)}) for b in bl]
  for eta_dec in (0.5, 2.0):
    thl = linear_overlay.theory_per_cell(ldv_net, (x,), {
        "beta": bl, "eta_enc": np.ones(5), "eta_dec": np.full(5, eta_dec)})
    assert thl["model"] == lin.label()
    np.testing.assert_array_equal(thl["active"], [int(np.sum(o.active["z"])) for o in direct])
    np.testing.assert_allclose(thl["beta_thresholds"][0],
                               -np.sort(-np.asarray(direct[0].thresholds["beta"])), rtol=1e-12)
  assert len(set(thl["active"])) >= 3  # the betas span several active counts
  for net in (lv.make_model("mlp_vae", data_dim=6, latent_dim=2, decoder_var="learnable",
                            encoder_var="fixed"),
              lv.make_model("mlp_cvae", data_dim=3, cond_dim=6, latent_dim=2,
                            decoder_var="learnable")):
    lin, why = linear_overlay.counterpart(net)
    assert lin is None and "decoder variance" in why


# ----------------------------------------------------- a report, no training --

def _fake_result(model, cells, theory, n_diverged=0, seed=0):
  """Engine-like output: AU, KL around the theory's, a few diverged cells."""
  rng = np.random.default_rng(seed)
  g = len(cells["beta"])
  au = np.clip(theory["active"] + rng.integers(-1, 2, g), 0, D_LAT)
  table = pd.DataFrame({k: np.asarray(v) for k, v in cells.items()})
  status = np.array(["done"] * g, dtype=object)
  status[np.linspace(0, g - 1, n_diverged).astype(int) if n_diverged else []] = "diverged"
  table = table.assign(au=au, kl=theory["kl"] * rng.uniform(0.8, 1.5, g) + 0.01,
                       iw_ll=-8.0 - rng.uniform(0, 1, g), iw_ll_se=0.05, n_collapsed=D_LAT - au,
                       dang_au=0.5, mi=1.0, cov_rank=au, elbo=-9.0, loss=9.0, status=status,
                       steps=100)
  return types.SimpleNamespace(table=table, arrays={"kl_per_dim": rng.uniform(0, 1, (g, D_LAT))})


def _fake_report(betas, seeds=2, eta_decs=(1.0,), n_diverged=0):
  import linvae_jax as lv
  x = _train_x()
  model = lv.make_model("mlp_vae", data_dim=6, latent_dim=D_LAT, hidden=(8,))
  b, e, s = np.meshgrid(betas, eta_decs, np.arange(seeds), indexing="ij")
  cells = {"beta": b.ravel(), "eta_dec": e.ravel(), "seed": s.ravel(),
           "eta_enc": np.ones(b.size), "lr": np.full(b.size, 1e-3)}
  hyper = {k: cells[k] for k in model.hyper_names}
  m = linear_overlay.centred_moments((x,))
  th = linear_overlay.theory_per_cell(model, (x,), hyper, moments=m)
  eps = nonlinear_grid.EPS_GRID
  curves = 1.0 / (1.0 + np.exp(-(np.log(eps)[None, :] + 2.0 - cells["beta"][:, None])))
  rep = R.build(_fake_result(model, cells, th, n_diverged), model, cells, theory=th,
                no_theory_reason="", eps=eps, eps_curves=curves, name=model.label(),
                data="gaussian test data", n_train=x.shape[0], n_eval=500, steps=100,
                batch_size=64)
  lin, _ = linear_overlay.counterpart(model)
  rep.arrays.update(R.dense_theory(lin, m, rep))
  return rep


SIZES = {4: dict(betas=[0.5, 4.0], seeds=1, eta_decs=(0.5, 1.0)),  # two curve groups
         50: dict(betas=np.geomspace(0.1, 20, 25))}


@pytest.mark.parametrize("cells", sorted(SIZES))
def test_figures_readable_diverged_marked_legends_complete(cells):
  rep = _fake_report(n_diverged=2, **SIZES[cells])
  assert len(rep.table) == cells
  plt = nonlinear_figures._plt()  # noqa: SLF001
  figs = nonlinear_figures.make_figures(rep, plt)
  try:
    assert set(figs) == set(R.FIGURES)
    for name, fig in figs.items():
      fig.canvas.draw()
      r = fig.canvas.get_renderer()
      for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
          labels = [t for t in axis.get_ticklabels() + axis.get_ticklabels(minor=True)
                    if t.get_visible() and t.get_text()]
          boxes = [t.get_window_extent(r) for t in labels]
          for i, a in enumerate(boxes):
            for j in range(i + 1, len(boxes)):
              assert not a.overlaps(boxes[j]), (cells, name, labels[i].get_text(),
                                                labels[j].get_text())
      legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
      assert any("diverged" in t for t in legend), (name, legend)
      assert any("linear theory" in t for t in legend), (name, legend)
      colors = {str(ln.get_color()) for ax in fig.axes for ln in ax.lines}
      if name == "au_kl_vs_beta":
        assert FAIL_COLOR in colors
        assert fig.axes[0].get_xscale() == "log" if cells > 4 else True
        if cells == 4:  # one legend entry per eta_dec curve
          assert {"eta_dec=0.5", "eta_dec=1"} <= set(legend), legend
      if name == "eps_delta":
        assert fig.axes[0].get_xscale() == "log"
        if cells == 4:
          assert {"beta=0.5", "beta=4"} <= set(legend), legend
  finally:
    for fig in figs.values():
      plt.close(fig)


def test_report_files_columns_collapse_points_and_regenerate(tmp_path, capsys):
  rep = _fake_report(betas=[0.1, 0.5, 1.5, 4.0, 12.0, 40.0], seeds=2, n_diverged=1)
  out = tmp_path / "rep"
  paths = R.write(rep, out, figures=False)  # the figures come from `linvae report` below
  for f in ("results.csv", "summary.json", "summary.md", "arrays.npz"):
    assert (out / f).is_file(), f
  assert not (out / "eps_delta.png").exists()
  t = pd.read_csv(out / "results.csv")
  for c in ("cell", "beta", "seed", "eta_dec", "au", "kl", "iw_ll", "collapse_pct",
            "pred_active", "theory_kl", "status", "diverged"):
    assert c in t.columns, c
  assert t["diverged"].sum() == 1 and (t.loc[t.diverged, "status"] == "diverged").all()
  np.testing.assert_allclose(t.collapse_pct, 100.0 * t.n_collapsed / D_LAT, rtol=1e-12)
  s = json.loads((out / "summary.json").read_text())
  assert s["kind"] == "nonlinear" and s["x_name"] == "beta" and s["group_axes"] == []
  # collapse points recomputed by hand from the table (non-diverged cells, per seed)
  ok = t[~t.diverged].sort_values("beta")
  for key, hit in (("first", lambda a: a < D_LAT), ("complete", lambda a: a == 0)):
    per = []
    for _, ts in ok.groupby("seed"):
      h = hit(ts.au.to_numpy())
      per.append(ts.beta.to_numpy()[np.argmax(h)] if h.any() else np.nan)
    np.testing.assert_allclose(s["collapse"][0][key]["per_seed"], per, rtol=1e-12)
  thr = rep.arrays["beta_thresholds"][0]
  assert s["collapse"][0]["first"]["theory"] == pytest.approx(thr[D_LAT - 1], rel=1e-12)
  assert s["collapse"][0]["complete"]["theory"] == pytest.approx(thr[0], rel=1e-12)
  md = (out / "summary.md").read_text()
  assert "first collapse" in md and "## Figures" not in md
  assert "| 0.1 | 1 | 1 |" in md  # beta 0.1: seed 0 diverged, seed 1 kept
  rc, stdout, err = _main(["report", str(out)], capsys)
  assert rc == 0 and err == "", err
  assert (out / "au_kl_vs_beta.png").is_file() and (out / "eps_delta.png").is_file()
  md2 = (out / "summary.md").read_text()
  assert md2.startswith(md.rstrip("\n")) and "![au_kl_vs_beta](au_kl_vs_beta.png)" in md2
  assert "eps_delta.png" in stdout
  assert set(paths) >= {"results", "summary_json", "summary_md"}


# -------------------------------------------- the CLI wiring, trainer stubbed --

def test_cli_grid_wiring_with_a_stub_trainer(monkeypatch, tmp_path, capsys):
  """What ``linvae grid --model mlp_vae`` hands the engine, and what it prints and
  returns, with ``train_grid`` replaced by untrained parameters and made-up metrics."""
  import jax

  from linvae_jax._src import engine
  from linvae_jax._src import grid as G
  from linvae_jax._src.engine.result import GridResult
  seen = {}

  def stub(model, moments, grid, **kw):
    seen.update(kw, model=model, moments=moments)
    _, cells, _ = grid.resolve(model)
    g = len(cells["beta"])
    seen["cells"] = cells
    params = jax.tree.map(lambda *a: np.stack(a),  # eager: no vmapped flax init to compile
                          *[model.init(jax.random.key(i), None, 1.0) for i in range(g)])
    au = np.where(cells["beta"] > 2.0, 0, D_LAT)
    t = G.coords_frame(cells).assign(au=au, kl=np.where(au > 0, 2.0, 0.01), iw_ll=-8.0,
                                     iw_ll_se=0.1, n_collapsed=D_LAT - au, loss=1.0,
                                     status=np.where(cells["lr"] > 1.0, "diverged", "done"),
                                     steps=kw["steps"])
    return GridResult(table=t, history={}, params=params, info={"complete": True}, arrays={})
  monkeypatch.setattr(engine, "train_grid", stub)
  out = tmp_path / "g"
  base = ["grid", "--model", "mlp_vae", "--data", "synthetic:vae-learnable", "--latent-dim",
          str(D_LAT), "--hidden", "8,4", "--activation", "tanh", "--iw-samples", "20",
          "--n-train", "256", "--n-eval", "64", "--batch-size", "32", "--epochs", "3",
          "--beta", "0.5,1,4", "--seed", "0,1", "--out", str(out), "--no-figures"]
  rc, stdout, err = _main(base, capsys)
  assert rc == 0, err
  m = seen["model"]
  assert (m.name, m.hidden, m.activation, m.latent_dim, m.data_dim) == ("mlp_vae", (8, 4), "tanh",
                                                                       D_LAT, 5)
  assert (m.iw_samples, m.iw_chunk) == (20, 10)
  assert seen["moments"] is None and seen["objective"] == "sampled" and seen["keep_params"]
  assert seen["data"].shape == (256, 5) and seen["eval_data"].shape == (64, 5)
  assert seen["batch_size"] == 32 and seen["steps"] == 3 * (256 // 32)
  assert seen["out_dir"] == str(out / "train")
  np.testing.assert_array_equal(seen["cells"]["lr"], 1e-3)
  np.testing.assert_array_equal(seen["cells"]["init_scale"], 1.0)
  assert stdout.startswith("DONE: mlp_vae[tanh,learnable,dec=fixed] on synthetic:vae-learnable: "
                           "6 cells, 0 diverged")
  assert "beta of first collapse (AU < 4): measured 4 (per seed 4, 4), theory" in stdout
  assert "beta of complete collapse (AU = 0): measured 4" in stdout
  t = pd.read_csv(out / "results.csv")
  assert len(t) == 6 and (t.pred_active >= 0).all() and not t.diverged.any()
  # the theory column is the closed form on the centred moments of the training samples
  x = nonlinear_grid.load_arrays("synthetic:vae-learnable", n_train=256, n_eval=64)[0][0]
  zeta2 = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1][:D_LAT]
  np.testing.assert_array_equal(t.pred_active, (zeta2[None, :] > t.beta.to_numpy()[:, None])
                                .sum(1))
  # a diverging learning rate: exit 1, the cell named
  rc, stdout, err = _main(base[:-3] + ["--lr", "1e-3,1e9", "--out", str(tmp_path / "d"),
                                       "--no-figures"], capsys)
  assert rc == 1 and stdout.startswith("FAIL:") and "12 cells, 6 diverged" in stdout, stdout
  assert "DIVERGED cell 2: beta=0.5, lr=1e+09, seed=0" in stdout, stdout
  assert "lr=0.001: beta of first collapse (AU < 4): measured 4" in stdout
  assert "lr=1e+09: every cell diverged" in stdout
  t = pd.read_csv(tmp_path / "d" / "results.csv")
  assert t.diverged.sum() == 6 and (t[t.diverged].lr == 1e9).all()


# ------------------------------------------------------- the real thing, slow --

@pytest.mark.slow
def test_cli_grid_mlp_vae_end_to_end(tmp_path, capsys):
  """A tiny ReLU MLP VAE trained on synthetic data (4 cells, 400 Adam steps, float64):
  files, columns, a sane theory overlay, figures, the rerun continues, ``linvae report``.
  About a minute on 2 CPU cores, almost all of it compiling the grid program."""
  out = tmp_path / "nl"
  argv = ["grid", "--model", "mlp_vae", "--data", "synthetic:vae-learnable", "--latent-dim",
          str(D_LAT), "--hidden", "16", "--beta", "0.25,12", "--seed", "0,1", "--steps", "600",
          "--lr", "1e-2", "--iw-samples", "10", "--n-eval", "400", "--out", str(out),
          "--no-progress"]
  rc, stdout, err = _main(argv, capsys)
  assert rc == 0, err
  assert stdout.startswith("DONE: mlp_vae[relu,learnable,dec=fixed] on synthetic:vae-learnable: "
                           "4 cells, 0 diverged (4096 training / 400 held-out samples, 600 steps")
  for f in ("results.csv", "summary.json", "summary.md", "arrays.npz", "au_kl_vs_beta.png",
            "eps_delta.png"):
    assert (out / f).is_file(), f
  t = pd.read_csv(out / "results.csv")
  assert len(t) == 4 and (t.status == "done").all() and not t.diverged.any()
  for c in ("au", "kl", "iw_ll", "collapse_pct", "pred_active", "theory_kl"):
    assert np.all(np.isfinite(t[c])), c
  # the theory on this problem: every mode active at beta 0.25, none at 12 (thresholds
  # 0.7 .. 5.7); a trained network follows it at these two extremes
  lo, hi = t[t.beta == 0.25], t[t.beta == 12]
  assert (lo.pred_active == D_LAT).all() and (hi.pred_active == 0).all()
  assert (hi.theory_kl == 0).all() and (lo.theory_kl > 1).all()
  assert (lo.au >= D_LAT - 1).all() and (hi.au == 0).all(), t[["beta", "seed", "au"]]
  assert (hi.kl < 0.05).all() and (lo.kl > 1).all()  # nats, held-out
  assert lo.iw_ll.min() > hi.iw_ll.max()  # the collapsed cells fit worse
  assert "beta of complete collapse (AU = 0): measured 12 (per seed 12, 12)" in stdout
  # the rerun continues from the saved chunks (nothing retrained) and prints the same
  rc2, stdout2, _ = _main(argv, capsys)
  assert rc2 == 0 and stdout2 == stdout
  rc3, stdout3, _ = _main(["report", str(out)], capsys)
  assert rc3 == 0 and "au_kl_vs_beta" in stdout3
