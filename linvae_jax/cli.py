"""linvae: verify the closed-form theory, train grids, print predictions, rebuild reports.

Subcommands (linvae <cmd> --help for each):

  linvae verify        every model and setting against its closed form on the
                       built-in synthetic problems; writes a report; exit 1 if
                       any check fails
  linvae grid          train a hyperparameter grid on any data, compare every
                       cell with the closed form; exit 1 if any cell fails
  linvae theory        predicted spectra, active modes and critical values of
                       one setting, no training
  linvae report DIR    regenerate the figures and summaries of a report
                       directory from its saved files

Output directories (verify and grid --out): a rerun with the same settings
continues from the finished chunks saved there; a run with different settings
is refused with a one-line error; --overwrite deletes the old results and
starts afresh. Bad input prints one line "linvae: error: ..." and exits 2;
failed checks exit 1. Progress bars go to stderr (on by default on a terminal).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional, Sequence

EXIT_FAIL, EXIT_USAGE = 1, 2
HYPER_AXES = ("beta", "beta1", "beta2", "eta_enc", "eta_dec", "sigma", "sigma1", "sigma2")
DEFAULT_HYPER = {"beta": 1.0, "beta1": 1.0, "beta2": 1.0, "eta_enc": 1.0, "eta_dec": 1.0,
                 "sigma": 1.0, "sigma1": 1.0, "sigma2": 1.0}
HYPER_HELP = {
    "beta": "KL weight beta",
    "beta1": "MHVAE KL weight of z1",
    "beta2": "MHVAE KL weight of z2",
    "eta_enc": "prior standard deviation eta_enc",
    "eta_dec": "decoder noise standard deviation eta_dec",
    "sigma": "fixed encoder standard deviation (not a variance; --encoder-var fixed); a "
             "vector [s1,...] for a diagonal",
    "sigma1": "MHVAE fixed z1 encoder standard deviation (not a variance)",
    "sigma2": "MHVAE fixed z2 encoder standard deviation (not a variance; --sigma2-var fixed)",
}
_WRITES = ("Output directory: a rerun with the same settings continues from the finished "
           "chunks saved there; different settings are refused with a one-line error; "
           "--overwrite deletes them and starts afresh.")


class UsageError(ValueError):
  """A user mistake: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
  """argparse with a one-line error (no usage dump) and exit status 2."""

  def __init__(self, *a, **kw):
    kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    super().__init__(*a, **kw)

  def error(self, message):
    sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
    raise UsageError(f"{sub}: {message}" if sub else message)


# ------------------------------------------------------------ axis specs --

def parse_axis(text: str, name: str = "axis", *, integer: bool = False) -> list:
  """Parse an axis spec into a list of values.

  Forms: ``a:b:n`` (n values linearly spaced from a to b), ``log:a:b:n``
  (geometrically spaced), ``a,b,c`` (a list), ``a`` (one value), and
  ``[a,b,...]`` (one *vector* value, e.g. a diagonal ``sigma``). With
  ``integer`` every value must be a whole number (seeds).

  >>> parse_axis("0:1:3")
  [0.0, 0.5, 1.0]
  >>> parse_axis("log:1e-2:1:3")
  [0.01, 0.1, 1.0]
  >>> parse_axis("0.5,1,2")
  [0.5, 1.0, 2.0]
  >>> parse_axis("[1,0.5]")
  [[1.0, 0.5]]
  >>> parse_axis("0,1,2", "seed", integer=True)
  [0, 1, 2]
  """
  import numpy as np
  s = text.strip()
  opt = f"--{name.replace('_', '-')}"

  def num(v):
    try:
      x = float(v)
    except ValueError:
      raise UsageError(f"{opt}: {v.strip()!r} in {text!r} is not a number") from None
    if not np.isfinite(x):
      raise UsageError(f"{opt}: {text!r} has a non-finite value")
    return x

  bad = UsageError(f"{opt}: malformed axis spec {text!r}; use start:stop:num, "
                   "log:start:stop:num, a,b,c, a single value or [a,b,...]")
  if not s:
    raise bad
  if s.startswith("[") and s.endswith("]"):
    if integer:
      raise UsageError(f"{opt}: takes whole numbers, not a vector {text!r}")
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
      raise UsageError(f"{opt}: the number of values in {text!r} must be >= 1")
    if log:
      if a <= 0 or b <= 0:
        raise UsageError(f"{opt}: log spacing needs positive ends, got {text!r}")
      vals = [float(v) for v in np.geomspace(a, b, n)]
    else:
      vals = [float(v) for v in np.linspace(a, b, n)]
  else:
    vals = [num(v) for v in s.split(",")]
  if integer:
    if any(v != int(v) for v in vals):
      raise UsageError(f"{opt}: takes whole numbers, got {text!r}")
    vals = [int(v) for v in vals]
  return vals


def _positive_int(opt):
  def conv(text):
    try:
      v = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v.is_integer() or v < 1:
      raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(v)
  conv.__name__ = opt
  return conv


def _nonneg_float(text):
  import math
  try:
    v = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
  if not (math.isfinite(v) and v >= 0):
    raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
  return v


def _digit(text):
  try:
    v = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a digit 0-9, got {text!r}") from None
  if not 0 <= v <= 9:
    raise argparse.ArgumentTypeError(f"must be a digit 0-9, got {text!r}")
  return v


# -------------------------------------------------------------- parsers --

def _add_model_args(p):
  p.add_argument("--model", required=True, help="model: vae, cvae, mhvae or vae_ldv (required)")
  p.add_argument("--latent-dim", type=_positive_int("--latent-dim"), default=4,
                 help="latent dimension d1 (default 4)")
  p.add_argument("--latent-dim2", type=_positive_int("--latent-dim2"), default=None,
                 help="MHVAE second latent dimension d2 (default: d1)")
  p.add_argument("--encoder-var", default=None,
                 help="vae/cvae encoder covariance: learnable (diagonal, default), "
                      "learnable_full or fixed (set its std with --sigma)")
  p.add_argument("--sigma2-var", default=None,
                 help="mhvae Sigma2: learnable (Thm 3, default), learnable_full or fixed (Thm 5)")


def _add_data_args(p, default="synthetic:vae-learnable"):
  p.add_argument("--data", default=default,
                 help="synthetic:<problem> (linvae verify --list), mnist:full, mnist:quadrant, "
                      f"or an .npz file with an array x (and y) (default {default})")
  p.add_argument("--digit", type=_digit, default=None,
                 help="MNIST only: restrict to one digit 0-9 (default: all digits)")
  p.add_argument("--no-cache", action="store_true",
                 help="MNIST only: recompute the moments instead of reading (and writing) the "
                      "cache in the user cache directory ($LINVAE_CACHE_DIR overrides it)")
  _add_dtype(p)


def _add_dtype(p):
  p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                 help="dtype of the moments and of training (default float64)")


def _add_train_args(p, *, steps_default):
  p.add_argument("--objective", choices=("analytic", "sampled"), default="analytic",
                 help="analytic: the exact loss on the data moments, full batch (default); "
                      "sampled: the Monte-Carlo ELBO on minibatches of the samples")
  p.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam",
                 help="adam with the learning rate decayed 1000x over the run (default) or "
                      "lbfgs (line search; analytic objective only)")
  p.add_argument("--steps", type=_positive_int("--steps"), default=None,
                 help=f"training steps per cell (default {steps_default})")
  p.add_argument("--tol-dma", type=_nonneg_float, default=None,
                 help="largest allowed D_MA of any spectrum (default 1e-5 float64, 2e-3 float32, "
                      "2e-2 sampled)")
  p.add_argument("--tol-gap", type=_nonneg_float, default=None,
                 help="largest allowed relative loss gap |L - L*|/max(1, |L*|) (default 1e-8 "
                      "float64, 1e-5 float32, 1e-2 sampled)")


def _add_out_args(p, default):
  p.add_argument("--out", default=default,
                 help=f"output directory (default ./{default}); see 'Output directory' above")
  p.add_argument("--overwrite", action="store_true",
                 help="delete earlier results in --out and start afresh")
  p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
  p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                 help="progress bars on stderr (default: on when stderr is a terminal)")
  p.add_argument("--no-compile-cache", action="store_true",
                 help="do not use JAX's persistent compilation cache (default: on, in the user "
                      "cache directory)")


def _add_axes(p, help_suffix):
  for a in HYPER_AXES:
    p.add_argument(f"--{a.replace('_', '-')}", dest=a, default=None, metavar="SPEC",
                   help=f"{HYPER_HELP[a]} {help_suffix}")


_AXIS_HELP = ("Axis specs: start:stop:num (linear), log:start:stop:num (geometric), a,b,c, "
              "a single value, or [a,b,...] for one vector value; negative numbers are "
              "accepted (and refused where the value must be positive).")


def build_parser() -> argparse.ArgumentParser:
  top = _Parser(prog="linvae", description=__doc__)
  sub = top.add_subparsers(dest="cmd", metavar="{verify,grid,theory,report}", parser_class=_Parser)

  v = sub.add_parser("verify", help="check every model's closed form against training",
                     description="Train every model and variance setting on built-in synthetic "
                                 "problems whose spectra straddle the collapse thresholds, compare "
                                 "with the closed forms, write a report (one subdirectory per "
                                 "problem), print one line per problem and the failed cells by "
                                 "their hyperparameter values; exit 1 on any failure.\n\n"
                                 + _WRITES)
  v.add_argument("--problem", action="append", default=None,
                 help="problem name (repeatable or comma-separated; default: all; "
                      "--list shows them)")
  v.add_argument("--list", action="store_true", help="list the built-in problems and exit")
  v.add_argument("--quick", action="store_true", help="small grids (2 cells per problem)")
  _add_dtype(v)
  _add_train_args(v, steps_default="the problem's, 10000 or 20000; sampled: 20000, "
                                   "8000 with --quick")
  _add_out_args(v, "linvae_report")

  g = sub.add_parser("grid", help="train a hyperparameter grid and compare with theory",
                     description="Train the Cartesian product of the given hyperparameter axes "
                                 "(vmapped) and compare every cell with the closed form. Prints "
                                 "the pass count and the worst cells by their hyperparameter "
                                 "values; the full table goes to OUT/results.csv and "
                                 "OUT/summary.md. Exit 1 if any cell fails.\n\n" + _AXIS_HELP
                                 + "\n\n" + _WRITES)
  _add_model_args(g)
  _add_data_args(g)
  _add_axes(g, "axis (default: the synthetic problem's value, else 1)")
  g.add_argument("--lr", default=None, metavar="SPEC",
                 help="initial learning-rate axis (default 3e-2, or the synthetic problem's)")
  g.add_argument("--seed", default=None, metavar="SPEC",
                 help="initialisation seed axis of whole numbers, e.g. 0,1,2 (default 0)")
  _add_train_args(g, steps_default="10000, or the synthetic problem's for its own model; "
                                   "sampled: 20000")
  g.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None,
                 help="minibatch size, --objective sampled only (default 256)")
  g.add_argument("--devices", type=_positive_int("--devices"), default=None,
                 help="shard the cells over this many devices (on CPU: host devices, set "
                      "up before JAX starts) (default 1)")
  _add_out_args(g, "linvae_grid")

  t = sub.add_parser("theory", help="predicted spectra and critical values, no training",
                     description="Print the closed-form optimum of one setting: the loss, the "
                                 "spectra, the active modes, and per mode the critical beta-like "
                                 "hyperparameters and eta_dec at which it collapses (the others "
                                 "held fixed). Writes nothing.")
  _add_model_args(t)
  _add_data_args(t)
  _add_axes(t, "(one value; default: the synthetic problem's value, else 1)")
  t.add_argument("--modes", type=_positive_int("--modes"), default=16,
                 help="rows to print per latent (default 16)")
  t.add_argument("--no-compile-cache", action="store_true",
                 help="do not use JAX's persistent compilation cache (default: on)")
  t.add_argument("--root-finding", action="store_true",
                 help="also find the critical values the model does not state in closed form "
                      "(slow on MNIST)")

  r = sub.add_parser("report", help="regenerate figures and summaries of a report directory",
                     description="Rebuild the PNG figures and summary.md of a directory written "
                                 "by linvae verify or linvae grid, from its saved files "
                                 "(overwrites those figures and summaries, nothing else).")
  r.add_argument("dir", help="report directory")
  r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                 help=argparse.SUPPRESS)
  return top


_NEG = re.compile(r"^-(\d|\.\d|\[)")


def _join_negative_values(parser, argv):
  """``--beta -1,1`` -> ``--beta=-1,1``: argparse takes ``-1,1`` for an option."""
  takes_value = set()
  for act in parser._actions:  # noqa: SLF001 - argparse has no public listing
    if isinstance(act, argparse._SubParsersAction):  # noqa: SLF001
      for sp in act.choices.values():
        takes_value |= {o for a in sp._actions for o in a.option_strings  # noqa: SLF001
                        if a.nargs is None and a.option_strings and not a.const}
  out, i = [], 0
  while i < len(argv):
    tok = argv[i]
    if tok in takes_value and i + 1 < len(argv) and _NEG.match(argv[i + 1]):
      out.append(f"{tok}={argv[i + 1]}")
      i += 2
      continue
    out.append(tok)
    i += 1
  return out


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


def cmd_grid(args) -> int:
  from linvae_jax._src import verify as verify_lib
  model = _model_from_args(args)
  if args.batch_size is not None and args.objective != "sampled":
    raise UsageError("--batch-size applies to --objective sampled only")
  _check_out(args)
  optimizer = _optimizer(args)
  ds = _load(args, model)
  grid = _grid_from_args(args, model, ds.problem)
  devices = None
  if args.devices is not None:
    import jax
    avail = jax.local_devices()
    if args.devices > len(avail):
      raise UsageError(f"--devices {args.devices}: {len(avail)} device(s) available")
    devices = avail[:args.devices]
  if args.objective == "sampled" and ds.arrays is None:
    raise UsageError(f"--objective sampled needs samples; {ds.label} gives only moments")
  rep = verify_lib.verify(model, ds, grid, steps=args.steps, objective=args.objective,
                          batch_size=args.batch_size, out_dir=args.out,
                          overwrite=args.overwrite, optimizer=optimizer,
                          tolerances=_tolerances(args), devices=devices,
                          progress=_progress(args),
                          name=f"{model.label()} on {ds.label}", figures=not args.no_figures)
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
  from linvae_jax._src import report as report_lib
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
            "report": cmd_report}[args.cmd](args)
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
