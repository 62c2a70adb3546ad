"""Run every paper reproduction; figures and tables land in a fresh runs/reproduce/<time>/
(``--update-committed``: in benchmarks/results/reproduce/, the committed results).

Run: ``python benchmarks/reproduce/run_all.py [--small] [--no-mnist] [--only NAME ...]
[--out DIR | --update-committed]``

Without MNIST (``$LINVAE_MNIST`` unset) the MNIST-based scripts are skipped
with a message and the synthetic parts still run.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

# (module, needs MNIST for all of it, has a synthetic-only mode)
SCRIPTS = [("dang_dma", False, True), ("dang_table4", False, False), ("wz_fig4", False, True),
           ("dang_fig2a", True, False), ("dang_fig6", True, False), ("dang_digits", True, False),
           ("lucas_fig2_fig3", True, False),
           # nonlinear networks against the linear closed form (docs/reproductions_nonlinear.md)
           ("wz_fig2", True, False), ("dang_table2_relu", True, False),
           ("dang_table4_relu", False, False), ("dang_cvae_relu", True, False),
           ("dang_mhvae_nonlinear", True, False),
           ("wz_fig1_fig5", False, False), ("lucas_table2", True, False),
           ("dang_digits_relu", True, False)]


def main(argv=None, small=False):
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--small", action="store_true")
  ap.add_argument("--no-mnist", action="store_true")
  ap.add_argument("--only", nargs="*", default=None)
  C.out_args(ap)
  a = ap.parse_args([] if argv is None else argv)
  a.out = str(C.resolve_out(a))
  print(f"[run_all] writing to {a.out}")
  have = not a.no_mnist
  try:
    C._mnist_path()
  except C.MnistMissing as e:
    print(f"[run_all] {e} MNIST parts are skipped.")
    have = False
  done = {}
  for name, mnist_only, split in SCRIPTS:
    if a.only and name not in a.only:
      continue
    if mnist_only and not have:
      print(f"[run_all] {name}: skipped (needs MNIST)")
      continue
    args = ["--out", a.out] + (["--small"] if a.small or small else [])
    t = time.perf_counter()
    mod = importlib.import_module(name)
    kw = {"mnist": have} if split else {}
    done[name] = mod.main(args, small=a.small or small, **kw)
    print(f"[run_all] {name}: {time.perf_counter() - t:.1f} s")
  return done


if __name__ == "__main__":
  main(sys.argv[1:])
