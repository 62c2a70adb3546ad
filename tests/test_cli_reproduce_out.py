"""Reproduction scripts never overwrite the committed results unless asked to."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _common():
  sys.path.insert(0, str(ROOT / "benchmarks" / "reproduce"))
  spec = importlib.util.spec_from_file_location("common", ROOT / "benchmarks/reproduce/common.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_default_is_a_fresh_directory_and_update_committed_is_explicit(tmp_path, monkeypatch):
  C = _common()
  monkeypatch.setattr(C, "ROOT", tmp_path)  # fresh dirs land under tmp, not the checkout
  a, b = C.parse([], False, ""), C.parse([], False, "")
  assert a.out != b.out and a.out.parent == tmp_path / "runs" / "reproduce"
  assert C.RESULTS not in (a.out, b.out)
  assert C.parse(["--out", str(tmp_path / "x")], False, "").out == tmp_path / "x"
  assert C.parse(["--update-committed"], False, "").out == C.RESULTS
  with pytest.raises(SystemExit):
    C.parse(["--update-committed", "--out", "y"], False, "")
