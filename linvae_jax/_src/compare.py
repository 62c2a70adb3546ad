"""Learned parameters vs the closed-form optimum, generic over models.

:func:`compare` reads only the model protocol (``loss``, ``optimum``,
``spectrum``, ``posterior``, ``input_moments``) and :mod:`metrics`, returns a
flat dict of scalars and is jittable and vmappable: the grid engine vmaps it
over cells after training, the verifier calls it on single runs.

Keys (``<key>`` ranges over ``Optimum.spectra``, ``<lat>`` over latents):

* ``loss``, ``loss_star``, ``gap`` (= loss - L*, >= 0 up to round-off);
* ``dma_<key>``: D_MA(learned spectrum, optimal spectrum);
* rank view: ``pred_active_<lat>`` (sum of ``Optimum.active``) and
  ``active_<lat>``, the number of singular values of the encoder mean map
  in the data metric, M F with F F^T = E[u u^T], above
  ``rank_rtol * max(1, max)`` (:func:`metrics.rank_active`);
* per-coordinate views, learned and (``pred_`` prefix) at ``Optimum.params``:
  ``collapsed_<lat>`` ((eps, delta)-collapsed coordinates, Gaussian input),
  ``au_<lat>`` (active units) and ``kl_<lat>`` (sum over coordinates of the
  data-mean KL, nats). The predicted per-coordinate numbers depend on the
  rotation ``Optimum.params`` picks wherever the optimum is rotation-invariant.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from linvae_jax._src import lapack_threads, metrics, spectra, validation


def _coordinate_views(model, params, hyper, second, mean, factor, eps, delta, au_threshold,
                      rank_rtol, prefix):
  out = {}
  for lat, post in model.posterior(params, hyper).items():
    sv = spectra.svdvals(post.mean_map @ factor)
    if not prefix:
      out[f"active_{lat}"] = metrics.rank_active(sv, rank_rtol)
    out[f"{prefix}collapsed_{lat}"] = jnp.sum(
        metrics.eps_delta_collapsed(post, mean, second, eps, delta))
    out[f"{prefix}au_{lat}"] = jnp.sum(metrics.active_units(post, second, mean, au_threshold))
    out[f"{prefix}kl_{lat}"] = jnp.sum(metrics.kl_per_dim(post, second))
  return out


def compare(model, moments, hyper, params, optimum=None, *, rank_rtol=1e-3, eps=1e-2,
            delta=0.05, au_threshold=0.01) -> dict:
  """Compare learned ``params`` of one cell with ``model.optimum``.

  Args:
    model: a :class:`~linvae_jax.LinearModel`.
    moments: the data :class:`~linvae_jax.Moments`.
    hyper: the cell's hyperparameters (``model.hyper_names``; arrays).
    params: learned parameters.
    optimum: ``model.optimum(moments, hyper)`` if already computed.
    rank_rtol: relative cut-off of the rank view (:func:`metrics.rank_active`).
    eps, delta: (eps, delta)-collapse parameters (Lucas et al. 2019).
    au_threshold: active-unit variance threshold (Burda et al. 2015: 0.01).

  Returns:
    dict name -> scalar array (see the module docstring for the keys).

  >>> import jax, jax.numpy as jnp, numpy as np, linvae_jax as lv
  >>> m = lv.moments_from_second_moments(np.diag([4.0, 1.0, 0.25]))
  >>> model = lv.make_model("vae", latent_dim=2)
  >>> h = lv.as_hyper({"beta": 1.0, "eta_enc": 1.0, "eta_dec": 1.0})
  >>> p = model.init(jax.random.key(0), m)
  >>> sorted(compare(model, m, h, p))[:3]  # doctest: +SKIP
  ['active_z', 'au_z', 'collapsed_z']
  """
  opt = model.optimum(moments, hyper) if optimum is None else optimum
  second, mean = model.input_moments(moments)
  factor = model.input_factor(moments)
  loss = model.loss(params, moments, hyper)
  out = {"loss": loss, "loss_star": opt.loss, "gap": loss - opt.loss}
  learned = model.spectrum(params, moments, hyper)
  for key in sorted(opt.spectra):
    out[f"dma_{key}"] = spectra.dma(learned[key], opt.spectra[key])
  for lat in sorted(opt.active):
    out[f"pred_active_{lat}"] = jnp.sum(opt.active[lat])
  kw = dict(eps=eps, delta=delta, au_threshold=au_threshold, rank_rtol=rank_rtol)
  out.update(_coordinate_views(model, params, hyper, second, mean, factor, prefix="", **kw))
  out.update(_coordinate_views(model, opt.params, hyper, second, mean, factor, prefix="pred_",
                               **kw))
  return out


def history_metrics(model, moments, hyper, params, opt, factor, *, rank_rtol=1e-3) -> dict:
  """The cheap per-record subset: loss, D_MA per spectrum, rank-view active counts.

  ``factor`` is F with F F^T = E[u u^T] for the posterior input u
  (``model.input_factor(moments)``), computed once by the caller.
  """
  out = {"loss": model.loss(params, moments, hyper)}
  learned = model.spectrum(params, moments, hyper)
  for key in sorted(opt.spectra):
    out[f"dma_{key}"] = spectra.dma(learned[key], opt.spectra[key])
  for lat, post in model.posterior(params, hyper).items():
    out[f"active_{lat}"] = metrics.rank_active(spectra.svdvals(post.mean_map @ factor), rank_rtol)
  return out


def compare_batched(model, moments, hyper, params, **kw) -> dict:
  """:func:`compare` vmapped over a leading cell axis of ``hyper`` and ``params``.

  Eager calls block on the result, with OpenBLAS at one thread while it runs
  (:mod:`~linvae_jax._src.lapack_threads`).
  """
  run = lambda: jax.vmap(lambda h, p: compare(model, moments, h, p, **kw))(hyper, params)  # noqa
  if not validation.is_concrete((moments, hyper, params)):
    return run()
  with lapack_threads.limited():
    return jax.block_until_ready(run())
