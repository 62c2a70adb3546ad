"""The ``linvae`` argument parser: subcommands, options, axis specs, one-line errors."""
from __future__ import annotations

import argparse
import re

DESCRIPTION = """linvae: verify the closed-form theory, train grids, print predictions, rebuild reports.

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
  linvae merge DIR     verify every chunk of a grid store (e.g. written by
                       --shard runs) and write the merged table

Output directories (verify and grid --out): a rerun with the same settings
continues from the finished chunks saved there; a run with different settings
is refused with a one-line error; --overwrite deletes the old results and
starts afresh. Bad input prints one line "linvae: error: ..." and exits 2;
failed checks exit 1. Progress bars go to stderr (on by default on a terminal).
"""

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


def _nonneg_int(text):
  try:
    v = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
  if v < 0:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
  return v


def _shard(text):
  m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
  if not m or not int(m.group(1)) < int(m.group(2)):
    raise argparse.ArgumentTypeError(f"takes I/N with 0 <= I < N, got {text!r}")
  return int(m.group(1)), int(m.group(2))


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
  p.add_argument("--model", required=True,
                 help="model: vae, cvae, mhvae or vae_ldv (closed forms); grid also takes the "
                      "nonlinear mlp_vae and mlp_cvae (required)")
  p.add_argument("--latent-dim", type=_positive_int("--latent-dim"), default=4,
                 help="latent dimension d1 (default 4)")
  p.add_argument("--latent-dim2", type=_positive_int("--latent-dim2"), default=None,
                 help="MHVAE second latent dimension d2 (default: d1)")
  p.add_argument("--encoder-var", default=None,
                 help="vae/cvae encoder covariance: learnable (diagonal, default), "
                      "learnable_full or fixed (set its std with --sigma); mlp_vae/mlp_cvae: "
                      "learnable, data_dependent or fixed")
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
  p.add_argument("--objective", choices=("analytic", "sampled"), default=None,
                 help="analytic: the exact loss on the data moments, full batch (default for "
                      "the closed-form models); sampled: the Monte-Carlo ELBO on minibatches of "
                      "the samples (the only one for mlp_vae/mlp_cvae)")
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


def _widths(text):
  """``--hidden 64,32`` -> (64, 32); ``none`` (or empty) -> () (no hidden layer)."""
  s = text.strip().lower()
  if s in ("", "none"):
    return ()
  out = []
  for part in s.split(","):
    try:
      v = float(part)
    except ValueError:
      raise argparse.ArgumentTypeError(f"takes widths like 64,32 or none, got {text!r}") from None
    if not v.is_integer() or v < 1:
      raise argparse.ArgumentTypeError(f"widths must be whole numbers >= 1, got {text!r}")
    out.append(int(v))
  return tuple(out)


def _add_net_args(g):
  n = g.add_argument_group("nonlinear models (mlp_vae, mlp_cvae): the network, the data split "
                           "and the evaluation; every cell is evaluated on held-out samples and "
                           "set beside the linear closed form on the centred moments of the "
                           "training samples")
  n.add_argument("--hidden", type=_widths, default=None, metavar="W[,W...]",
                 help="hidden layer widths of the encoder (the decoder mirrors them), e.g. "
                      "256 or 64,32; none: no hidden layer (default: the model's, 256 for "
                      "mlp_vae, 16 for mlp_cvae)")
  n.add_argument("--activation", choices=("relu", "tanh", "identity"), default=None,
                 help="hidden-layer activation (default relu)")
  n.add_argument("--iw-samples", type=_positive_int("--iw-samples"), default=None,
                 help="importance samples K of the held-out log-likelihood (default 100)")
  n.add_argument("--epochs", type=_positive_int("--epochs"), default=None,
                 help="passes over the training samples, instead of --steps (default 20 for "
                      "the nonlinear models; also for --objective sampled of the others)")
  n.add_argument("--n-train", type=_positive_int("--n-train"), default=None,
                 help="training samples: synthetic: rows of the exact-moment design (default "
                      "4096); MNIST: a seeded subset of the 60k training images (default all); "
                      ".npz: a seeded subset of the rows not held out")
  n.add_argument("--n-eval", type=_positive_int("--n-eval"), default=None,
                 help="held-out samples: synthetic: a second design, seed 1 (default 1000); "
                      "MNIST: the first test images (default 1000); .npz: its last rows "
                      "(default min(1000, n/5))")


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
  top = _Parser(prog="linvae", description=DESCRIPTION)
  sub = top.add_subparsers(dest="cmd", metavar="{verify,grid,theory,report,merge}", parser_class=_Parser)

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
                                 "OUT/summary.md. Exit 1 if any cell fails.\n\n"
                                 "A nonlinear model (mlp_vae, mlp_cvae) trains on the sampled "
                                 "ELBO, is evaluated on held-out samples (AU, KL, IW "
                                 "log-likelihood, (eps, delta)-collapse) and drawn against the "
                                 "linear closed form on the centred moments of the same data; "
                                 "it prints the beta of first and complete collapse, measured "
                                 "and predicted. Exit 1 if any cell diverged.\n\n" + _AXIS_HELP
                                 + "\n\n" + _WRITES)
  _add_model_args(g)
  _add_data_args(g)
  _add_axes(g, "axis (default: the synthetic problem's value, else 1)")
  g.add_argument("--lr", default=None, metavar="SPEC",
                 help="initial learning-rate axis (default 3e-2, or the synthetic problem's; "
                      "nonlinear models: 1e-3, constant)")
  g.add_argument("--seed", default=None, metavar="SPEC",
                 help="initialisation seed axis of whole numbers, e.g. 0,1,2 (default 0)")
  _add_train_args(g, steps_default="10000, or the synthetic problem's for its own model; "
                                   "sampled: 20000; nonlinear models: --epochs 20")
  g.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None,
                 help="minibatch size, --objective sampled only (default 256; nonlinear "
                      "models 128)")
  g.add_argument("--devices", type=_positive_int("--devices"), default=None,
                 help="shard the cells over this many devices (on CPU: host devices, set "
                      "up before JAX starts) (default 1)")
  _add_net_args(g)
  _add_out_args(g, "linvae_grid")
  g.add_argument("--chunk-size", type=_positive_int("--chunk-size"), default=None,
                 help="cells per compiled call and per saved chunk (default: estimated from "
                      "memory); an existing --out keeps its own")
  g.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                 help="run only chunk c with c %% N == I (job arrays, no collectives), into "
                      "the shared --out; the shard that completes the store writes the "
                      "report, or rerun the same command without --shard (it loads "
                      "everything); 'linvae merge OUT' writes the merged table")
  d = g.add_argument_group("multi-process (JAX distributed runtime; all three or none)")
  d.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="address of process 0's coordinator")
  d.add_argument("--num-processes", type=_positive_int("--num-processes"), default=None,
                 help="number of processes in the run")
  d.add_argument("--process-id", type=_nonneg_int, default=None,
                 help="this process's index, 0 .. N-1 (process 0 reports and writes)")

  m = sub.add_parser("merge", help="merge the chunks of a grid store into one table",
                     description="Verify every chunk of DIR/train (or DIR if it is the store "
                                 "itself) and write the merged table to DIR/merged.csv. Fails "
                                 "naming the missing chunks if the store is incomplete. Writes "
                                 "nothing else and deletes nothing.")
  m.add_argument("dir", help="the --out of linvae grid (or its train/ store)")
  m.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                 help=argparse.SUPPRESS)

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
