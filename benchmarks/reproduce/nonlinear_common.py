"""Shared helpers for the nonlinear reproductions (``wz_fig2``, ``dang_table2_relu``,
``dang_table4_relu``): MNIST arrays, the linear closed form's predicted active count
and KL on the same data, seed statistics and the measured collapse points.

The networks (``mlp_vae``, ``mlp_cvae``) train through ``lv.train_grid`` with
``objective="sampled"`` (Adam at a constant lr, one vmapped program for every
(beta, seed) cell) and are evaluated by ``model.evaluate`` on held-out data.
The theory overlay is the *linear* closed form (``make_model("vae",
encoder_var="learnable").optimum``) on the **centred** moments of the same
training arrays, since the networks have biases (W&Z App. B).
"""
from __future__ import annotations

import os

import common as C
from common import np, pd

from linvae_jax._src.data import load_mnist


def mnist_arrays(n_train: int, n_test: int, seed: int = 0):
  """(x_train (n_train, 784), x_test (n_test, 784)) float64 pixels/255: a seeded
  subset of the 60k training set and the first ``n_test`` test images."""
  x, _ = C.mnist_images(n_train, seed=seed)
  te = load_mnist(path=C._mnist_path(), split="test", scale=255.0, dtype=np.float64).images
  return x.astype(np.float64) / 255.0, np.asarray(te[:n_test], np.float64)


def linear_theory(x, betas, latent_dim: int, eta_dec: float = 1.0, eta_enc: float = 1.0,
                  encoder_var: str = "learnable", sigma: float | None = None):
  """The linear VAE closed form (learnable Sigma, or fixed std ``sigma``) on the
  centred moments of ``x`` (the library's overlay, ``linear_overlay.theory_per_cell``).

  Returns a DataFrame with ``beta``, ``theory_active`` (active modes of the
  optimum) and ``theory_kl`` (its data-mean KL, nats), and the thresholds
  beta_i (descending) at which mode i collapses.
  """
  from linvae_jax._src import linear_overlay
  betas = [float(b) for b in betas]
  n = len(betas)
  cells = {"beta": betas, "eta_enc": [eta_enc] * n, "eta_dec": [eta_dec] * n}
  if sigma is not None:
    cells["sigma"] = [float(sigma)] * n
  lin = C.model("vae", latent_dim=latent_dim, encoder_var=encoder_var)
  th = linear_overlay.theory_per_cell(lin, (np.asarray(x, np.float64),), cells)
  df = pd.DataFrame({"beta": betas, "theory_active": th["active"].astype(int),
                     "theory_kl": th["kl"]})
  return df, th["beta_thresholds"][-1]


def seed_stats(table: pd.DataFrame, by: str, cols) -> pd.DataFrame:
  """Mean and standard error over seeds of ``cols`` per value of ``by``."""
  g = table.groupby(by)
  out = {by: np.asarray(sorted(table[by].unique()))}
  for c in cols:
    mean = g[c].mean().reindex(out[by]).to_numpy()
    sd = g[c].std(ddof=1).reindex(out[by]).to_numpy()
    n = g[c].count().reindex(out[by]).to_numpy()
    out[c] = mean
    out[f"{c}_se"] = sd / np.sqrt(n)
  return pd.DataFrame(out)


def collapse_points(table: pd.DataFrame, d: int, by: str = "beta", au: str = "au"):
  """Per seed, the first grid value of ``by`` where AU < d (first collapse) and
  where AU == 0 (complete collapse); NaN where it does not happen on the grid.

  Returns (first, complete) arrays over seeds, and the grid values just below
  each (the bracket's lower end), as a dict.
  """
  first, comp, first_lo, comp_lo = [], [], [], []
  for _, t in table.sort_values(by).groupby("seed"):
    b, a = t[by].to_numpy(), t[au].to_numpy()
    for hit, out, lo in ((a < d, first, first_lo), (a == 0, comp, comp_lo)):
      i = int(np.argmax(hit)) if hit.any() else -1
      out.append(b[i] if i >= 0 else np.nan)
      lo.append(b[i - 1] if i > 0 else np.nan)
  return {"first": np.asarray(first), "complete": np.asarray(comp),
              "first_lo": np.asarray(first_lo), "complete_lo": np.asarray(comp_lo)}


def machine() -> str:
  """The machine named in every committed result."""
  import jax
  dev = jax.devices()[0]
  return f"{dev.platform}: {C.cpu_model()}, {os.cpu_count()} cores (shared)"


def fmt_pm(mean, se, digits: int = 3) -> str:
  return f"{mean:.{digits}g} ± {se:.2g}"


def beta_axis(ax, values, log: bool = True, max_labels: int = 9) -> None:
  """Ticks at the grid values (thinned to ``max_labels``), plain number labels."""
  from matplotlib import ticker
  v = np.asarray(sorted({float(u) for u in values}))
  if log:
    ax.set_xscale("log")
  step = int(np.ceil(len(v) / max_labels))
  ax.xaxis.set_major_locator(ticker.FixedLocator(v[::step]))
  ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.tick_params(axis="x", labelsize=7)


def nanstat(fn, a) -> float:
  """``fn`` (np.nanmin, np.nanmean, ...) of ``a``; NaN (no warning) when all are NaN."""
  a = np.asarray(a, float)
  return float(fn(a)) if np.isfinite(a).any() else float("nan")
