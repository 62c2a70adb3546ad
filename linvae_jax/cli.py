"""The ``linvae`` command line: the subcommands' implementations and ``main``.

The parser, the subcommand list and what each does to an output directory
are in :mod:`linvae_jax._src.cli_parser` (its ``DESCRIPTION`` is ``linvae
--help``).
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from linvae_jax._src.cli_parser import (DEFAULT_HYPER, EXIT_FAIL, EXIT_USAGE, HYPER_AXES,  # noqa: F401
                                        UsageError, _join_negative_values, build_parser,
                                        parse_axis)


# ------------------------------------------------------------- helpers --

_NET_OPTS = (("--hidden", "hidden"), ("--activation", "activation"),
             ("--iw-samples", "iw_samples"))


def _model_class(args):
  from linvae_jax._src.models import registry
  reg = registry()
  if args.model not in reg:
    raise UsageError(f"unknown model {args.model!r}; known models: {sorted(reg)}")
  return reg[args.model]


def _model_from_args(args, arrays=None):
  """The model of ``--model`` and its options; a nonlinear one takes its input
  dimensions from the training ``arrays`` ((x,) or (x, y))."""
  import dataclasses
  import math
  cls = _model_class(args)
  fields = {f.name for f in dataclasses.fields(cls)}
  cfg = {}
  for field, value in (("latent_dim", args.latent_dim), ("latent_dim1", args.latent_dim),
                       ("latent_dim2", args.latent_dim2 if args.latent_dim2 is not None
                        else args.latent_dim),
                       ("encoder_var", args.encoder_var), ("sigma2_var", args.sigma2_var)):
    if field in fields and value is not None:
      cfg[field] = value
  for opt, field in (("--encoder-var", "encoder_var"), ("--sigma2-var", "sigma2_var"),
                     ("--latent-dim2", "latent_dim2")):
    if getattr(args, field) is not None and field not in fields:
      raise UsageError(f"{opt} does not apply to model {args.model!r}")
  for opt, field in _NET_OPTS:
    value = getattr(args, field, None)
    if value is not None:
      if field not in fields:
        raise UsageError(f"{opt} applies to the nonlinear models (mlp_vae, mlp_cvae), not "
                         f"{args.model!r}")
      cfg[field] = value
  if "iw_samples" in cfg:
    cfg["iw_chunk"] = math.gcd(cfg["iw_samples"], 10)
  if arrays is not None:
    cfg.update(_data_dims(args, fields, arrays))
  try:
    return cls(**cfg)
  except (TypeError, ValueError) as e:
    raise UsageError(f"model {args.model!r}: {e}") from None


def _data_dims(args, fields, arrays) -> dict:
  x, y = arrays[0], (arrays[1] if len(arrays) > 1 else None)
  if "cond_dim" in fields:  # a CVAE: x the condition, y the output
    if y is None:
      raise UsageError(f"{args.model} needs paired data (x, y), e.g. mnist:quadrant or a cvae "
                       f"synthetic problem; {args.data!r} has x only")
    return {"cond_dim": int(x.shape[1]), "data_dim": int(y.shape[1])}
  out = {"data_dim": int(x.shape[1])}
  if y is not None and "target_dim" in fields:
    out["target_dim"] = int(y.shape[1])  # W&Z's regression VAE: reconstruct y from x
  return out


def _dtype(name):
  import jax.numpy as jnp
  return jnp.float64 if name == "float64" else jnp.float32


def _load(args, model=None):
  from linvae_jax._src.data import spec as spec_lib
  if args.digit is not None and not str(args.data).startswith("mnist:"):
    raise UsageError(f"--digit applies to MNIST data only, not {args.data!r}")
  ds = spec_lib.load(args.data, dtype=_dtype(args.dtype), digit=args.digit,
                     cache=not args.no_cache)
  if model is not None:
    try:
      model.check_moments(ds.moments)
    except ValueError as e:
      raise UsageError(f"{model.label()} on {ds.label}: {e}") from None
  return ds


def _check_out(args):
  out = args.out
  if os.path.exists(out) and not os.path.isdir(out):
    raise UsageError(f"--out {out!r} is a file, not a directory; choose another --out")
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise UsageError(f"--out {out!r}: its parent directory {parent!r} does not exist")
  if not os.access(parent if not os.path.exists(out) else out, os.W_OK):
    raise UsageError(f"--out {out!r} is not writable")


def _progress(args) -> bool:
  p = getattr(args, "progress", None)
  return sys.stderr.isatty() if p is None else bool(p)


def _tolerances(args):
  tol = {k: v for k, v in (("dma", args.tol_dma), ("rel_gap", args.tol_gap)) if v is not None}
  return tol or None


def _optimizer(args):
  """None (the verifier's decaying-lr Adam) or L-BFGS."""
  if args.optimizer == "adam":
    return None
  if args.objective != "analytic":
    raise UsageError("--optimizer lbfgs needs --objective analytic (a line search on "
                     "minibatches is not a descent method)")
  import linvae_jax as lv
  return lv.LBFGS()


def compile_cache_dir() -> str:
  """Where the CLI keeps JAX's persistent compilation cache."""
  from linvae_jax._src.data import spec as spec_lib
  return os.path.join(spec_lib.user_cache_dir(), "jax_compilation_cache")


def enable_compile_cache(path: Optional[str] = None) -> str:
  """Turn on JAX's persistent compilation cache (every program that takes > 0.5 s)."""
  import jax
  path = path or compile_cache_dir()
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


# ------------------------------------------------------------ summaries --

def worst_cells(rep, k: int = 5) -> list:
  """Up to ``k`` lines naming the failed (else the worst) cells by hyperparameter values."""
  import numpy as np
  from linvae_jax._src import results as results_lib
  t = rep.table
  dma_cols = [c for c in t.columns if c.startswith("dma_")]
  score = (np.nanmax(t[dma_cols].to_numpy(np.float64), axis=1) if dma_cols
           else np.zeros(len(t)))
  fails = ~t["passed"].to_numpy(bool)
  order = np.lexsort((-score, ~fails))  # failed first, then by worst D_MA
  lines = []
  for i in order[:k]:
    r = t.iloc[int(i)]
    where = results_lib.cell_label(r, rep.summary["axes"])
    if fails[i]:
      lines.append(f"  FAIL {where}: {r['reason']}")
  if fails.sum() > k:
    lines.append(f"  ... and {int(fails.sum()) - k} more failed cells (see summary.md)")
  if not fails.any() and len(t):
    i = int(np.argmax(score))
    lines.append(f"  worst cell {results_lib.cell_label(t.iloc[i], rep.summary['axes'])}: "
                 f"max D_MA {score[i]:.3g}")
  return lines


# ----------------------------------------------------------- subcommands --

def cmd_verify(args) -> int:
  from linvae_jax._src import problems as problems_lib
  from linvae_jax._src import verify as verify_lib
  if args.list:
    for n in problems_lib.names():
      p = problems_lib.get(n)
      print(f"{n:20s} {p.model().label():28s} {p.description}")
    return 0
  names = None
  if args.problem:
    names = [n.strip() for a in args.problem for n in a.split(",") if n.strip()]
    for n in names:
      if n not in problems_lib.names():
        raise UsageError(f"unknown problem {n!r}; known problems: {problems_lib.names()}")
  _check_out(args)
  args.objective = args.objective or "analytic"
  optimizer = _optimizer(args)
  progress = _progress(args)
  print(f"{'problem':20s} {'model':26s} {'cells':>5s} {'passed':>6s} {'max D_MA':>9s} "
        f"{'max gap':>9s}  verdict", flush=True)

  def show(name, rep):
    s = rep.summary
    line = (f"{name:20s} {s['model']:26s} {s['cells']:5d} {s['passed']:6d} {s['max_dma']:9.2g} "
            f"{s['max_rel_gap']:9.2g}  {'ok' if rep.passed else 'FAIL'}")
    lines = [line] + [ln for ln in worst_cells(rep, 3) if "FAIL" in ln or "more failed" in ln]
    _write_lines(lines, progress)

  reps = verify_lib.verify_problems(
      names, quick=args.quick, out_dir=args.out, dtype=_dtype(args.dtype),
      objective=args.objective, tolerances=_tolerances(args), steps=args.steps,
      optimizer=optimizer, figures=not args.no_figures, callback=show,
      progress=progress, overwrite=args.overwrite)
  ok = all(r.passed for r in reps.values())
  n_fail = sum(r.summary["failed"] for r in reps.values())
  print(f"{'PASS' if ok else 'FAIL'}: {len(reps)} problems, "
        f"{sum(r.summary['cells'] for r in reps.values())} cells, {n_fail} failed; "
        f"report in {os.path.join(args.out, 'summary.md')}")
  return 0 if ok else EXIT_FAIL


def _write_lines(lines, progress):
  if progress:
    from tqdm.auto import tqdm
    for ln in lines:
      tqdm.write(ln, file=sys.stdout)
  else:
    for ln in lines:
      print(ln, flush=True)


def _check_values(model, name, vals):
  import numpy as np
  if name in model.positive_hyper or name == "lr":
    for v in vals:
      if np.any(np.asarray(v, np.float64) <= 0):
        raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {v}")


def _grid_from_args(args, model, problem=None):
  from linvae_jax._src import grid as grid_lib
  axes, consts = {}, {}
  for a in HYPER_AXES:
    spec = getattr(args, a)
    if spec is None:
      continue
    if a not in model.hyper_names:
      raise UsageError(f"--{a.replace('_', '-')} is not a hyperparameter of {model.label()} "
                       f"(it has {list(model.hyper_names)})")
    vals = parse_axis(spec, a)
    _check_values(model, a, vals)
    (axes if len(vals) > 1 else consts)[a] = vals if len(vals) > 1 else vals[0]
  for name in ("lr", "seed"):
    spec = getattr(args, name)
    if spec is not None:
      vals = parse_axis(spec, name, integer=name == "seed")
      if name == "seed" and any(v < 0 for v in vals):
        raise UsageError(f"--seed takes whole numbers >= 0, got {spec!r}")
      _check_values(model, name, vals)
      (axes if len(vals) > 1 else consts)[name] = vals if len(vals) > 1 else vals[0]
  same = problem is not None and problem.model() == model
  if "lr" not in axes:
    consts.setdefault("lr", problem.lr if same else 3e-2)
  pconst = problem.constants if same else {}
  for k in model.hyper_names:
    if k not in axes and k not in consts:
      consts[k] = pconst.get(k, DEFAULT_HYPER[k])
  g = grid_lib.product(**axes) if axes else grid_lib.Grid(())
  return g * grid_lib.constant(**consts)


def _init_distributed(args):
  given = [getattr(args, k) is not None for k in ("coordinator", "num_processes", "process_id")]
  if not any(given):
    return
  if not all(given):
    raise UsageError("--coordinator, --num-processes and --process-id go together")
  from linvae_jax._src import distributed
  distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def cmd_merge(args) -> int:
  import linvae_jax as lv
  store = os.path.join(args.dir, "train")
  if not os.path.isdir(store):
    store = args.dir
  res = lv.load_result(store)
  path = os.path.join(args.dir, "merged.csv")
  res.table.to_csv(path, index=False)
  print(f"merged {res.info['n_chunks']} chunks, {len(res.table)} cells: {path}")
  return 0


def _devices(args):
  if args.devices is None:
    return None
  import jax
  avail = jax.local_devices()
  if args.devices > len(avail):
    raise UsageError(f"--devices {args.devices}: {len(avail)} device(s) available")
  return avail[:args.devices]


def cmd_grid(args) -> int:
  from linvae_jax._src import verify as verify_lib
  _init_distributed(args)
  if not hasattr(_model_class(args), "optimum"):  # no closed form: the nonlinear report
    from linvae_jax._src import cli_nonlinear
    return cli_nonlinear.cmd_grid(args)
  for opt, field in (("--n-train", "n_train"), ("--n-eval", "n_eval")):
    if getattr(args, field) is not None:
      raise UsageError(f"{opt} applies to the nonlinear models (mlp_vae, mlp_cvae) only")
  args.objective = args.objective or "analytic"
  model = _model_from_args(args)
  if args.batch_size is not None and args.objective != "sampled":
    raise UsageError("--batch-size applies to --objective sampled only")
  if args.epochs is not None and args.objective != "sampled":
    raise UsageError("--epochs applies to --objective sampled only")
  _check_out(args)
  optimizer = _optimizer(args)
  ds = _load(args, model)
  grid = _grid_from_args(args, model, ds.problem)
  devices = _devices(args)
  if args.objective == "sampled" and ds.arrays is None:
    raise UsageError(f"--objective sampled needs samples; {ds.label} gives only moments")
  rep = verify_lib.verify(model, ds, grid, steps=args.steps, objective=args.objective,
                          batch_size=args.batch_size, epochs=args.epochs, out_dir=args.out,
                          overwrite=args.overwrite, optimizer=optimizer,
                          tolerances=_tolerances(args), devices=devices,
                          progress=_progress(args), chunk_size=args.chunk_size,
                          shard=args.shard,
                          name=f"{model.label()} on {ds.label}", figures=not args.no_figures)
  if rep is None:  # a shard whose store is not complete yet
    i, n = args.shard
    print(f"shard {i}/{n}: its chunks are saved in {os.path.join(args.out, 'train')}; the "
          "shard that completes the store writes the report (or rerun the same command "
          "without --shard)")
    return 0
  import jax
  if jax.process_index() != 0:  # only process 0 reports
    return 0 if rep.passed else EXIT_FAIL
  s = rep.summary
  print(f"{'PASS' if rep.passed else 'FAIL'}: {s['name']}: {s['passed']}/{s['cells']} cells "
        f"passed (max D_MA {s['max_dma']:.2g}, max rel gap {s['max_rel_gap']:.2g})")
  for ln in worst_cells(rep):
    print(ln)
  print(f"table in {os.path.join(args.out, 'results.csv')}, report in "
        f"{os.path.join(args.out, 'summary.md')}")
  return 0 if rep.passed else EXIT_FAIL


def cmd_theory(args) -> int:
  import numpy as np
  from linvae_jax._src import sensitivity
  if not hasattr(_model_class(args), "optimum"):
    raise UsageError(f"{args.model} has no closed form; linvae theory takes vae, cvae, mhvae "
                     "or vae_ldv (linvae grid trains the nonlinear models)")
  model = _model_from_args(args)
  ds = _load(args, model)
  same = ds.problem is not None and ds.problem.model() == model
  pconst = ds.problem.constants if same else {}
  hyper = {}
  for a in HYPER_AXES:
    spec = getattr(args, a)
    if spec is not None and a not in model.hyper_names:
      raise UsageError(f"--{a.replace('_', '-')} is not a hyperparameter of {model.label()}")
    if a in model.hyper_names:
      if spec is None:
        hyper[a] = pconst.get(a, DEFAULT_HYPER[a])
      else:
        vals = parse_axis(spec, a)
        if len(vals) != 1:
          raise UsageError(f"--{a.replace('_', '-')}: theory takes one value, got {spec!r}")
        _check_values(model, a, vals)
        hyper[a] = vals[0]
  hyper = {k: np.asarray(v, np.float64) for k, v in hyper.items()}
  try:
    model.check(ds.moments, hyper)
  except ValueError as e:
    raise UsageError(f"{model.label()} on {ds.label}: {e}") from None
  opt = model.optimum(ds.moments, dict(hyper))
  bad = [k for k, v in opt.spectra.items() if not np.all(np.isfinite(np.asarray(v)))]
  if bad or not np.isfinite(float(opt.loss)):
    raise UsageError(f"{model.label()} on {ds.label}: the closed form is not finite "
                     f"({', '.join(bad) or 'loss'}); check the dimensions and hyperparameters")
  names = [n for n in ("beta", "beta1", "beta2", "eta_dec") if n in model.hyper_names]
  if not args.root_finding:
    names = [n for n in names
             if any(sensitivity.closed_form_key(model, n, lat, opt.thresholds)
                    for lat in model.latents)]
  method = "auto" if args.root_finding else "closed_form"
  crit = {}
  for n in names:
    crit[n] = {}
    for lat in model.latents:
      key = sensitivity.closed_form_key(model, n, lat, opt.thresholds)
      if key is None and not args.root_finding:
        continue
      crit[n][lat] = sensitivity.critical_values(model, ds.moments, hyper, n, latent=lat,
                                                 method=method)[lat]
  table = sensitivity.mode_table(model, opt, crit)
  print(f"{model.label()} on {ds.label}: " + ", ".join(f"{k}={float(v):.6g}"
                                                       for k, v in hyper.items()))
  print(f"L* = {float(opt.loss):.10g} nats per sample")
  for lat in model.latents:
    act = np.asarray(opt.active[lat])
    print(f"latent {lat}: {int(act.sum())} of {act.size} modes active")
  for lat in model.latents:
    sub = table[table["latent"] == lat].dropna(axis=1, how="all").copy()  # other latents' columns
    for c in sub.columns:
      if sub[c].dtype.kind == "f":
        sub[c] = sub[c].map(lambda v: f"{v:.5g}")
    print(sub.head(args.modes).to_string(index=False))
    if len(sub) > args.modes:
      print(f"  ... {len(sub) - args.modes} more modes (--modes N)")
  for n in crit:
    for lat, c in crit[n].items():
      v = np.asarray(c["values"])
      fin = v[np.isfinite(v) & (v > 0)]
      if c["direction"] == "collapse_above" and v.size:
        if np.isinf(v[0]):
          print(f"{lat} never collapses completely in {n} (mode 1 stays active)")
        elif fin.size:
          print(f"complete collapse of {lat} at {n} >= {float(v[0]):.4g} "
                f"(others fixed; mode 1 is the last to collapse)")
  return 0


def cmd_report(args) -> int:
  from linvae_jax._src import nonlinear_report
  from linvae_jax._src import report as report_lib
  if nonlinear_report.is_nonlinear_dir(args.dir):
    paths = nonlinear_report.regenerate(args.dir)
  else:
    paths = report_lib.regenerate(args.dir)
  for k, p in sorted(paths.items()):
    print(f"{k}: {p}")
  return 0


# ------------------------------------------------------------------ main --

def _request_host_devices(n: int) -> None:
  """Ask for ``n`` CPU devices; only possible before JAX's backends start."""
  import jax
  from jax._src import xla_bridge
  if (xla_bridge.backends_are_initialized()  # too late: the device-count check reports it
      or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")):
    return
  jax.config.update("jax_num_cpu_devices", max(n, int(jax.config.jax_num_cpu_devices)))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of the ``linvae`` script; returns the exit status."""
  parser = build_parser()
  try:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_join_negative_values(parser, argv))
    if args.cmd is None:
      parser.print_help()
      return EXIT_USAGE
    if getattr(args, "devices", None):
      _request_host_devices(args.devices)
    import jax
    jax.config.update("jax_enable_x64", True)  # float32 runs pass dtype explicitly
    if args.cmd in ("verify", "grid", "theory") and not args.no_compile_cache:
      enable_compile_cache()
    return {"verify": cmd_verify, "grid": cmd_grid, "theory": cmd_theory,
            "report": cmd_report, "merge": cmd_merge}[args.cmd](args)
  except (ValueError, OSError) as e:
    msg = " ".join(str(e).split()) if not isinstance(e, OSError) or not e.filename else (
        f"{e.filename}: {e.strerror or e}")
    print(f"linvae: error: {msg}", file=sys.stderr)
    return EXIT_USAGE
  except KeyboardInterrupt:
    print("linvae: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
