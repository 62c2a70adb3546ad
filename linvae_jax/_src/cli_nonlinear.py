"""``linvae grid`` for a model without a closed form (``mlp_vae``, ``mlp_cvae``).

Maps the grid options onto :func:`nonlinear_grid.run`: the sampled ELBO with
Adam at a constant learning rate (default 1e-3, ``init_scale`` 1: the
standard initialisation), 20 epochs unless ``--steps``/``--epochs`` say
otherwise, batch 128, held-out evaluation, the linear theory on the centred
moments of the training samples. Options that judge cells against a closed
form (``--tol-dma``, ``--tol-gap``, ``--optimizer lbfgs``, ``--objective
analytic``) are refused with one line. Exit 1 if any cell diverged.
"""
from __future__ import annotations

import os

import numpy as np

from linvae_jax._src.cli_parser import EXIT_FAIL, UsageError

DEFAULT_LR, DEFAULT_EPOCHS, DEFAULT_BATCH = 1e-3, 20, 128


def _refuse(args) -> None:
  from linvae_jax._src.linear_overlay import COUNTERPARTS
  m = args.model
  if m not in COUNTERPARTS:
    raise UsageError(f"linvae grid trains the nonlinear models {sorted(COUNTERPARTS)}; for {m} "
                     "use lv.train_grid in Python")
  if args.objective == "analytic":
    raise UsageError(f"--objective analytic: {m} has no analytic loss; the nonlinear models "
                     "train on the sampled ELBO (--objective sampled, the default for them)")
  if args.optimizer == "lbfgs":
    raise UsageError(f"--optimizer lbfgs needs --objective analytic, which {m} does not have")
  for opt, field in (("--tol-dma", "tol_dma"), ("--tol-gap", "tol_gap")):
    if getattr(args, field) is not None:
      raise UsageError(f"{opt} does not apply to {m}: its cells are evaluated, not judged "
                       "against a closed form")
  if args.steps is not None and args.epochs is not None:
    raise UsageError("give --steps or --epochs, not both")
  if args.no_cache:
    raise UsageError(f"--no-cache does not apply to {m}: it trains on the images, not on "
                     "cached moments")


def cmd_grid(args) -> int:
  import jax

  from linvae_jax import cli
  from linvae_jax._src import grid as grid_lib
  from linvae_jax._src import nonlinear_grid
  _refuse(args)
  cli._check_out(args)  # noqa: SLF001 - the CLI's own helpers
  dtype = np.float64 if args.dtype == "float64" else np.float32
  train, held = nonlinear_grid.load_arrays(args.data, n_train=args.n_train, n_eval=args.n_eval,
                                           digit=args.digit, dtype=dtype)
  model = cli._model_from_args(args, train)  # noqa: SLF001
  if args.lr is None:
    args.lr = str(DEFAULT_LR)
  grid = cli._grid_from_args(args, model) * grid_lib.constant(init_scale=1.0)  # noqa: SLF001
  n = int(train[0].shape[0])
  batch = args.batch_size or min(DEFAULT_BATCH, n)
  if batch > n:
    raise UsageError(f"--batch-size {batch} is larger than the {n} training samples")
  steps = args.steps or (args.epochs or DEFAULT_EPOCHS) * (n // batch)
  label = args.data + (f" (digit {args.digit})" if args.digit is not None else "")
  rep = nonlinear_grid.run(
      model, train, held, grid, steps=steps, batch_size=batch, out_dir=args.out,
      name=f"{model.label()}", data_label=label, overwrite=args.overwrite,
      progress=cli._progress(args), chunk_size=args.chunk_size, shard=args.shard,  # noqa: SLF001
      devices=cli._devices(args), figures=not args.no_figures)  # noqa: SLF001
  if rep is None:
    i, k = args.shard
    print(f"shard {i}/{k}: its chunks are saved in {os.path.join(args.out, 'train')}; the "
          "shard that completes the store writes the report (or rerun the same command "
          "without --shard)")
    return 0
  if jax.process_index() != 0:
    return EXIT_FAIL if rep.n_diverged else 0
  print_summary(rep, args.out)
  return EXIT_FAIL if rep.n_diverged else 0


def print_summary(rep, out) -> None:
  """The compact stdout summary: counts, collapse measured vs theory, diverged cells."""
  from linvae_jax._src import nonlinear_report
  s = rep.summary
  verdict = "FAIL" if rep.n_diverged else "DONE"
  print(f"{verdict}: {s['name']} on {s['data']}: {s['cells']} cells, {s['diverged']} diverged "
        f"({s['n_train']} training / {s['n_eval']} held-out samples, {s['steps']} steps, "
        f"batch {s['batch_size']})")
  theory = (f"linear theory: {s['theory_model']} on centred moments" if s.get("theory_model")
            else f"no linear theory ({s.get('no_theory_reason', '')})")
  print(f"  {theory}")
  for ln in nonlinear_report.collapse_lines(rep):
    print(f"  {ln}")
  bad = rep.table[rep.table["diverged"]]
  axes = list(dict.fromkeys(s["axes"] + ["lr"]))
  for i, r in list(bad.iterrows())[:5]:
    where = ", ".join(f"{a}={nonlinear_report._fmt(r[a])}" for a in axes if a in r)  # noqa: SLF001
    print(f"  DIVERGED cell {i}: {where}")
  if len(bad) > 5:
    print(f"  ... and {len(bad) - 5} more diverged cells (see summary.md)")
  print(f"table in {os.path.join(out, 'results.csv')}, report in "
        f"{os.path.join(out, 'summary.md')}")
