"""``linvae``: verify the closed-form theory, train grids, print predictions, rebuild reports.

Subcommands (``linvae <cmd> --help`` for each):

* ``linvae verify``  -- every model and setting against its closed form on
  built-in synthetic problems; writes a report, exits 1 if any check fails.
* ``linvae grid``    -- train a hyperparameter grid on any data and compare.
* ``linvae theory``  -- predicted spectra, active modes and critical values,
  no training.
* ``linvae report DIR`` -- regenerate figures and summaries from saved results.

User errors (bad arguments, missing files, a resume with a different spec)
print one line on stderr and exit with status 2; failed checks exit with 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

EXIT_FAIL, EXIT_USAGE = 1, 2
HYPER_AXES = ("beta", "beta1", "beta2", "eta_enc", "eta_dec", "sigma", "sigma1", "sigma2")
DEFAULT_HYPER = {"beta": 1.0, "beta1": 1.0, "beta2": 1.0, "eta_enc": 1.0, "eta_dec": 1.0,
                 "sigma": 1.0, "sigma1": 1.0, "sigma2": 1.0}


class UsageError(ValueError):
  """A user mistake: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
  """argparse with a one-line error (no usage dump) and exit status 2."""

  def error(self, message):
    raise UsageError(f"{self.prog}: {message}")


# ------------------------------------------------------------ axis specs --

def parse_axis(text: str, name: str = "axis") -> list:
  """Parse an axis spec into a list of values.

  Forms: ``a:b:n`` (n values linearly spaced from a to b), ``log:a:b:n``
  (geometrically spaced), ``a,b,c`` (a list), ``a`` (one value), and
  ``[a,b,...]`` (one *vector* value, e.g. a diagonal ``sigma``).

  >>> parse_axis("0:1:3")
  [0.0, 0.5, 1.0]
  >>> parse_axis("log:1e-2:1:3")
  [0.01, 0.1, 1.0]
  >>> parse_axis("0.5,1,2")
  [0.5, 1.0, 2.0]
  >>> parse_axis("[1,0.5]")
  [[1.0, 0.5]]
  """
  import numpy as np
  s = text.strip()

  def num(v):
    try:
      x = float(v)
    except ValueError:
      raise UsageError(f"--{name.replace('_', '-')}: {v!r} in {text!r} is not a number") from None
    if not np.isfinite(x):
      raise UsageError(f"--{name.replace('_', '-')}: {text!r} has a non-finite value")
    return x

  bad = UsageError(f"--{name.replace('_', '-')}: malformed axis spec {text!r}; use start:stop:num, "
                   "log:start:stop:num, a,b,c, a single value or [a,b,...]")
  if not s:
    raise bad
  if s.startswith("[") and s.endswith("]"):
    vals = [num(v) for v in s[1:-1].split(",") if v.strip()]
    if not vals:
      raise bad
    return [vals]
  if ":" in s:
    parts = s.split(":")
    log = parts[0] == "log"
    if log:
      parts = parts[1:]
    if len(parts) != 3:
      raise bad
    a, b = num(parts[0]), num(parts[1])
    try:
      n = int(parts[2])
    except ValueError:
      raise bad from None
    if n < 1:
      raise UsageError(f"--{name.replace('_', '-')}: the number of values in {text!r} must be >= 1")
    if log:
      if a <= 0 or b <= 0:
        raise UsageError(f"--{name.replace('_', '-')}: log spacing needs positive ends, got {text!r}")
      return [float(v) for v in np.geomspace(a, b, n)]
    return [float(v) for v in np.linspace(a, b, n)]
  return [num(v) for v in s.split(",")]


# -------------------------------------------------------------- parsers --

def _add_model_args(p, required=True):
  p.add_argument("--model", required=required,
                 help="model name: vae, cvae, mhvae, vae_ldv (the registry)")
  p.add_argument("--latent-dim", type=int, default=4, help="d1 (default 4)")
  p.add_argument("--latent-dim2", type=int, default=None, help="MHVAE d2 (default: d1)")
  p.add_argument("--encoder-var", default=None,
                 help="VAE/CVAE encoder covariance: learnable, learnable_full, fixed")
  p.add_argument("--sigma2-var", default=None,
                 help="MHVAE Sigma2: learnable (Thm 3), learnable_full, fixed (Thm 5)")


def _add_data_args(p, default="synthetic:vae-learnable"):
  p.add_argument("--data", default=default,
                 help="synthetic:<problem>, mnist:full, mnist:quadrant, or a .npz with x[, y] "
                      f"(default {default})")
  p.add_argument("--digit", type=int, default=None, help="MNIST digit subset (0-9)")
  p.add_argument("--dtype", choices=("float32", "float64"), default="float64")


def _add_axes(p, help_suffix):
  for a in HYPER_AXES:
    p.add_argument(f"--{a.replace('_', '-')}", dest=a, default=None, help=f"{a} {help_suffix}")


def build_parser() -> argparse.ArgumentParser:
  top = _Parser(prog="linvae", description=__doc__.split("\n\n")[0])
  sub = top.add_subparsers(dest="cmd", metavar="{verify,grid,theory,report}", parser_class=_Parser)

  v = sub.add_parser("verify", help="check every model's closed form against training",
                     description="Train every model and variance setting on built-in synthetic "
                                 "problems whose spectra straddle the collapse thresholds, compare "
                                 "with the closed forms, write a report, exit 1 on any failure.")
  v.add_argument("--problem", action="append", default=None,
                 help="problem name (repeatable or comma-separated; default: all). "
                      "`linvae verify --list` shows them")
  v.add_argument("--list", action="store_true", help="list the built-in problems and exit")
  v.add_argument("--quick", action="store_true", help="small grids (2 cells per problem)")
  v.add_argument("--out", default="linvae_report", help="report directory (default ./linvae_report)")
  v.add_argument("--dtype", choices=("float32", "float64"), default="float64")
  v.add_argument("--objective", choices=("analytic", "sampled"), default="analytic")
  v.add_argument("--steps", type=int, default=None, help="training steps per cell")
  v.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam",
                 help="adam (decaying lr, default) or lbfgs (line search; analytic objective)")
  v.add_argument("--tol-dma", type=float, default=None, help="override the D_MA tolerance")
  v.add_argument("--tol-gap", type=float, default=None, help="override the relative loss-gap tolerance")
  v.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

  g = sub.add_parser("grid", help="train a hyperparameter grid and compare with theory",
                     description="Train a grid of hyperparameters (Cartesian product of the "
                                 "given axes) and compare every cell with the closed form. Axis "
                                 "specs: start:stop:num (linspace), log:start:stop:num, a,b,c, "
                                 "a single value, or [a,b,...] for one vector value.")
  _add_model_args(g)
  _add_data_args(g)
  _add_axes(g, "axis (default 1 where the model needs it)")
  g.add_argument("--lr", default=None, help="learning-rate axis (default 3e-2)")
  g.add_argument("--seed", default=None, help="seed axis, e.g. 0,1,2")
  g.add_argument("--steps", type=int, default=10000, help="steps per cell (default 10000)")
  g.add_argument("--objective", choices=("analytic", "sampled"), default="analytic")
  g.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam",
                 help="adam (decaying lr, default) or lbfgs (line search; analytic objective)")
  g.add_argument("--batch-size", type=int, default=None, help="minibatch size (sampled)")
  g.add_argument("--out", default="linvae_grid", help="output directory (default ./linvae_grid)")
  g.add_argument("--resume", action="store_true",
                 help="reuse finished chunks in --out (refused if the spec differs)")
  g.add_argument("--devices", type=int, default=None, help="number of devices to shard cells over")
  g.add_argument("--strict", action="store_true", help="exit 1 if any cell fails its check")
  g.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

  t = sub.add_parser("theory", help="predicted spectra and critical values, no training",
                     description="Print the closed-form optimum for one setting: spectra, active "
                                 "modes, and per mode the critical beta-like hyperparameters and "
                                 "eta_dec at which it collapses (others held fixed).")
  _add_model_args(t)
  _add_data_args(t)
  _add_axes(t, "value (default 1)")
  t.add_argument("--modes", type=int, default=16, help="rows to print per latent (default 16)")
  t.add_argument("--root-finding", action="store_true",
                 help="also find critical values the model does not state in closed form "
                      "(slow on MNIST)")

  r = sub.add_parser("report", help="regenerate figures and summaries of a report directory",
                     description="Rebuild the PNG figures and summary.md of a directory written "
                                 "by `linvae verify` or `linvae grid`, from its saved files.")
  r.add_argument("dir", help="report directory")
  return top


# ------------------------------------------------------------- helpers --

def _model_from_args(args):
  import dataclasses
  from linvae_jax._src.models import registry
  reg = registry()
  if args.model not in reg:
    raise UsageError(f"unknown model {args.model!r}; known models: {sorted(reg)}")
  cls = reg[args.model]
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
  try:
    return cls(**cfg)
  except (TypeError, ValueError) as e:
    raise UsageError(f"model {args.model!r}: {e}") from None


def _dtype(name):
  import jax.numpy as jnp
  return jnp.float64 if name == "float64" else jnp.float32


def _load(args):
  from linvae_jax._src import verify as verify_lib
  return verify_lib.load_data(args.data, dtype=_dtype(args.dtype), digit=args.digit)


def _format_table(df, cols) -> str:
  import numpy as np
  df = df[[c for c in cols if c in df.columns]].copy()
  for c in df.columns:
    if df[c].dtype.kind == "f":
      df[c] = df[c].map(lambda v: f"{v:.4g}" if np.isfinite(v) else str(v))
  return df.to_string(index=False)


# ----------------------------------------------------------- subcommands --

def _optimizer(args):
  """None (the verifier's decaying-lr Adam) or L-BFGS."""
  if args.optimizer == "adam":
    return None
  if args.objective != "analytic":
    raise UsageError("--optimizer lbfgs needs --objective analytic (a line search on "
                     "minibatches is not a descent method)")
  from linvae_jax._src.engine import LBFGS
  return LBFGS()


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
      if n not in problems_lib.PROBLEMS:
        raise UsageError(f"unknown problem {n!r}; known problems: {problems_lib.names()}")
  if args.steps is not None and args.steps < 1:
    raise UsageError(f"--steps must be >= 1, got {args.steps}")
  tol = {k: v for k, v in (("dma", args.tol_dma), ("rel_gap", args.tol_gap)) if v is not None}
  print(f"{'problem':20s} {'model':26s} {'cells':>5s} {'passed':>6s} {'max D_MA':>9s} "
        f"{'max gap':>9s}  verdict", flush=True)

  def show(name, rep):
    s = rep.summary
    print(f"{name:20s} {s['model']:26s} {s['cells']:5d} {s['passed']:6d} {s['max_dma']:9.2g} "
          f"{s['max_rel_gap']:9.2g}  {'ok' if rep.passed else 'FAIL'}", flush=True)
    for i, r in rep.failures().head(3).iterrows():
      print(f"    cell {i}: {r['reason']}", flush=True)

  reps = verify_lib.verify_problems(
      names, quick=args.quick, out_dir=args.out, dtype=_dtype(args.dtype),
      objective=args.objective, tolerances=tol or None, steps=args.steps,
      optimizer=_optimizer(args), figures=not args.no_figures, callback=show)
  ok = all(r.passed for r in reps.values())
  n_fail = sum(r.summary["failed"] for r in reps.values())
  print(f"{'PASS' if ok else 'FAIL'}: {len(reps)} problems, "
        f"{sum(r.summary['cells'] for r in reps.values())} cells, {n_fail} failed; "
        f"report in {os.path.join(args.out, 'summary.md')}")
  return 0 if ok else EXIT_FAIL


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
    if len(vals) == 1:
      consts[a] = vals[0]
    else:
      axes[a] = vals
  for name in ("lr", "seed"):
    spec = getattr(args, name)
    if spec is not None:
      vals = parse_axis(spec, name)
      if name == "seed":
        vals = [int(v) for v in vals]
      (axes if len(vals) > 1 else consts)[name] = vals if len(vals) > 1 else vals[0]
  consts.setdefault("lr", 3e-2)
  pconst = problem.constants if problem is not None and problem.model() == model else {}
  for k in model.hyper_names:
    if k not in axes and k not in consts:
      consts[k] = pconst.get(k, DEFAULT_HYPER[k])
  g = grid_lib.product(**axes) if axes else grid_lib.Grid(())
  return g * grid_lib.constant(**consts)


def cmd_grid(args) -> int:
  from linvae_jax._src import verify as verify_lib
  model = _model_from_args(args)
  ds = _load(args)
  grid = _grid_from_args(args, model, ds.problem)
  devices = None
  if args.devices is not None:
    import jax
    avail = jax.local_devices()
    if not 1 <= args.devices <= len(avail):
      raise UsageError(f"--devices {args.devices}: {len(avail)} device(s) available")
    devices = avail[:args.devices]
  if args.steps < 1:
    raise UsageError(f"--steps must be >= 1, got {args.steps}")
  if args.resume and not os.path.exists(os.path.join(args.out, "train", "manifest.json")):
    print(f"note: nothing to resume in {args.out}; starting afresh", file=sys.stderr)
  rep = verify_lib.verify(model, ds.moments if ds.arrays is None or args.objective == "analytic"
                          else ds.arrays, grid, steps=args.steps, objective=args.objective,
                          batch_size=args.batch_size, out_dir=args.out, resume=args.resume,
                          optimizer=_optimizer(args),
                          devices=devices, dtype=_dtype(args.dtype),
                          name=f"{model.label()} on {ds.label}", figures=not args.no_figures)
  t = rep.table
  cols = list(rep.summary["axes"]) + [c for c in t.columns if c.startswith(
      ("dma_", "pred_active_", "learned_active_"))]
  print(_format_table(t, cols + ["rel_gap", "status", "passed"]))
  print(str(rep).splitlines()[0])
  print(f"report in {os.path.join(args.out, 'summary.md')}")
  return EXIT_FAIL if (args.strict and not rep.passed) else 0


def cmd_theory(args) -> int:
  import numpy as np
  from linvae_jax._src import sensitivity
  model = _model_from_args(args)
  ds = _load(args)
  pconst = ds.problem.constants if ds.problem is not None and ds.problem.model() == model else {}
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
        hyper[a] = vals[0]
  hyper = {k: np.asarray(v, np.float64) for k, v in hyper.items()}
  opt = model.optimum(ds.moments, {k: v for k, v in hyper.items()})
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
  for c in table.columns:
    if table[c].dtype.kind == "f":
      table[c] = table[c].map(lambda v: f"{v:.5g}")
  print(f"{model.label()} on {ds.label}: " + ", ".join(f"{k}={float(v):.6g}"
                                                       for k, v in hyper.items()))
  print(f"L* = {float(opt.loss):.10g} nats per sample")
  for lat in model.latents:
    act = np.asarray(opt.active[lat])
    print(f"latent {lat}: {int(act.sum())} of {act.size} modes active")
  for lat in model.latents:
    sub = table[table["latent"] == lat]
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
  from linvae_jax._src import report as report_lib
  paths = report_lib.regenerate(args.dir)
  for k, p in sorted(paths.items()):
    print(f"{k}: {p}")
  return 0


# ------------------------------------------------------------------ main --

def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of the ``linvae`` script; returns the exit status."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
    if args.cmd is None:
      parser.print_help()
      return EXIT_USAGE
    if getattr(args, "devices", None):
      # host-platform devices must be requested before JAX starts
      flags = os.environ.get("XLA_FLAGS", "")
      if "xla_force_host_platform_device_count" not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count="
                                   f"{args.devices}").strip()
    import jax
    jax.config.update("jax_enable_x64", True)  # float32 runs pass dtype explicitly
    return {"verify": cmd_verify, "grid": cmd_grid, "theory": cmd_theory,
            "report": cmd_report}[args.cmd](args)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    msg = " ".join(str(e).split())
    print(f"linvae: error: {msg}", file=sys.stderr)
    return EXIT_USAGE
  except KeyboardInterrupt:
    print("linvae: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
