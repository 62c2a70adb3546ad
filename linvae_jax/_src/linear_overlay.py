r"""The linear closed form as a reference for a nonlinear network trained on the same data.

A nonlinear model (``mlp_vae``, ``mlp_cvae``) has no closed form, but its
linear counterpart (``vae``, ``cvae``) has one. The overlay evaluates that
optimum on the **centred** moments of the training arrays (the networks have
biases, which absorb the means: W&Z App. B) at every cell's hyperparameters
and reports what it predicts: the number of active modes, the data-mean KL
(nats) and the per-mode critical beta.

* ``encoder_var`` ``"learnable"`` and ``"data_dependent"`` map to the linear
  model's learnable diagonal Sigma, ``"fixed"`` to its fixed Sigma (same
  ``sigma`` hyperparameter, a std);
* ``mlp_vae`` with a learnable decoder variance (one scalar, isotropic) maps
  to ``vae_ldv``, W&Z's linear VAE whose decoder variance s is a parameter
  (App. D, corrected Thm 4); it needs a learnable encoder variance, so with
  ``encoder_var="fixed"``, and for ``mlp_cvae``, a learnable decoder variance
  has no counterpart (``counterpart`` returns None with the reason). The
  learned s absorbs ``eta_dec``, so that optimum does not depend on it.

>>> import numpy as np, linvae_jax as lv  # doctest: +SKIP
>>> x = np.random.default_rng(0).normal(size=(500, 6)) * [3, 2, 1.5, 1, .5, .2]  # doctest: +SKIP
>>> net = lv.make_model("mlp_vae", data_dim=6, latent_dim=4)  # doctest: +SKIP
>>> th = theory_per_cell(net, (x,), {"beta": [1.0, 4.0], "eta_enc": [1.0, 1.0],
...                                  "eta_dec": [1.0, 1.0]})  # doctest: +SKIP
>>> th["active"], th["beta_thresholds"].shape  # doctest: +SKIP
(array([3, 1]), (2, 4))
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

COUNTERPARTS = {"mlp_vae": "vae", "mlp_cvae": "cvae"}


def counterpart(model) -> tuple:
  """``(linear model or None, reason)``: the closed-form model matching ``model``'s
  latent dimension and encoder covariance (module docstring)."""
  from linvae_jax._src.models import make
  name = COUNTERPARTS.get(getattr(model, "name", ""))
  if name is None:
    return None, f"no linear counterpart of {model.label()} (only {sorted(COUNTERPARTS)})"
  enc = "fixed" if model.encoder_var == "fixed" else "learnable"
  if getattr(model, "decoder_var", "fixed") != "fixed":
    if name == "vae" and enc == "learnable":
      return make("vae_ldv", latent_dim=model.latent_dim), ""
    return None, ("a learnable decoder variance has a linear closed form here only for "
                  "mlp_vae with a learnable encoder variance (vae_ldv)")
  return make(name, latent_dim=model.latent_dim, encoder_var=enc), ""


def centred_moments(arrays, dtype=np.float64):
  """Centred :class:`~linvae_jax.Moments` of ``(x,)`` or ``(x, y)`` (float64 accumulation)."""
  from linvae_jax._src import moments as moments_lib
  arrays = tuple(np.asarray(a, np.float64) for a in arrays)
  return moments_lib.from_arrays(*arrays, centred=True, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _theory_fn(lin):
  """One compiled, cell-vmapped closed form per linear model (models are hashable)."""
  import jax
  import jax.numpy as jnp

  from linvae_jax._src import metrics

  def one(m, h):
    o = lin.optimum(m, h)
    post = lin.posterior(o.params, h)["z"]
    second, _ = lin.input_moments(m)
    thr = o.thresholds.get("beta", jnp.full(o.active["z"].shape, jnp.nan))
    return (jnp.sum(o.active["z"]).astype(jnp.int32), jnp.sum(metrics.kl_per_dim(post, second)),
            thr)
  return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def theory_per_cell(model, arrays, hyper_cells: dict, *, moments=None) -> Optional[dict]:
  """The linear closed form at each cell's hyperparameters, on centred moments.

  Args:
    model: the nonlinear model (its counterpart is taken, :func:`counterpart`),
      or a linear model itself.
    arrays: the training arrays ``(x,)`` or ``(x, y)``.
    hyper_cells: name -> values per cell (G,); the model's hyperparameters.
    moments: precomputed centred moments (default: from ``arrays``).

  Returns:
    None if there is no counterpart, else a dict with ``active`` (G,) int
    (active modes of the optimum), ``kl`` (G,) (its data-mean KL, nats),
    ``beta_thresholds`` (G, d) (critical beta per mode, non-increasing; NaN
    where the model states none) and ``model`` (the linear model's label).
  """
  import jax.numpy as jnp
  lin = model if hasattr(model, "optimum") else counterpart(model)[0]
  if lin is None:
    return None
  m = centred_moments(arrays) if moments is None else moments
  g = len(np.asarray(hyper_cells[lin.hyper_names[0]]))
  pad = max(256, 1 << (g - 1).bit_length())  # few shapes: one compile serves many grids

  def padded(v):
    v = np.asarray(v, np.float64)
    return jnp.asarray(np.concatenate([v, np.repeat(v[-1:], pad - g, axis=0)]), m.dtype)
  act, kl, thr = _theory_fn(lin)(m, {k: padded(hyper_cells[k]) for k in lin.hyper_names})
  thr = -np.sort(-np.asarray(thr, np.float64)[:g], axis=-1)
  return {"active": np.asarray(act, np.int64)[:g], "kl": np.asarray(kl, np.float64)[:g],
          "beta_thresholds": thr, "model": lin.label()}
