r"""The on-disk store of a grid run: a manifest, self-describing chunks, resume.

Layout of ``out_dir``::

   manifest.json        the run's spec, its hash, the chunking, a digest of these
   chunk_00000.npz      one finished chunk: its arrays and a ``__meta__`` record
   chunk_00001.npz      (spec hash, index, cell range, SHA-256 of every array)

Rules (each has a test in ``tests/test_store.py``):

* **Resume is the default.** A run whose spec hash equals the manifest's
  continues: a finished chunk is verified and loaded, never rewritten.
* **A different spec is refused**, in one line naming the directory and the
  two ways out (``overwrite=True`` / CLI ``--overwrite``, or another
  directory). Only ``overwrite`` deletes anything, and then only the store's
  own files (the manifest, chunks and temporary files).
* **A chunk is trusted only if it describes itself correctly**: same spec
  hash as the manifest, its own index and cell range, and a checksum that
  matches its arrays. A chunk that fails (swapped in from another position or
  run, edited, NaN-filled, truncated, empty, unreadable) is recomputed with a
  :class:`StoreWarning` naming it (``on_corrupt="recompute"``, the default) or
  refused with ``ValueError`` (``on_corrupt="raise"``).
* **Chunks without a manifest are never reused**: the directory is refused
  unless ``overwrite`` is given.
* **A broken manifest** (not JSON, not an object, missing or mistyped keys,
  a digest that does not match its chunking, e.g. an edited ``chunk_size``)
  is refused with an error naming the file.
* **Writes are atomic**: a temporary file in the same directory, fsync, then
  ``os.replace``. A temporary file left by a killed writer (name
  ``*.tmp-<host>-<pid>``) is removed at the next start once its process is
  gone.

Why ``.npz`` and not orbax/zarr/parquet: a chunk is a handful of small
arrays written once and read once, the store needs exactly atomic
whole-file writes and a checksum, both a few lines over numpy, and numpy is
already a dependency (``docs/design.md``).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from typing import Optional

import numpy as np

MANIFEST = "manifest.json"
FORMAT = 2
_META = "__meta__"
_MANIFEST_KEYS = {"format": int, "spec_hash": str, "chunk_size": int, "n_chunks": int,
                  "cells": int, "digest": str, "spec": dict}
_STALE_FOREIGN_S = 24 * 3600  # temp files of another host: removed after a day


class StoreWarning(UserWarning):
  """A chunk on disk failed verification and is being recomputed."""


def temp_name(path) -> str:
  return f"{path}.tmp-{socket.gethostname()}-{os.getpid()}"


def _is_temp(fn: str) -> bool:
  return ".tmp-" in fn and (fn.startswith("chunk_") or fn.startswith(MANIFEST))


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_temps(out_dir) -> list:
  """Remove temporary files whose writer is gone; returns their names."""
  removed = []
  host = socket.gethostname()
  for fn in sorted(os.listdir(out_dir)):
    if not _is_temp(fn):
      continue
    path = os.path.join(out_dir, fn)
    tail = fn.rsplit(".tmp-", 1)[1]
    who, _, pid = tail.rpartition("-")
    if who == host and pid.isdigit():
      stale = int(pid) != os.getpid() and not _pid_alive(int(pid))
    else:
      stale = time.time() - os.path.getmtime(path) > _STALE_FOREIGN_S
    if stale:
      try:
        os.remove(path)
        removed.append(fn)
      except FileNotFoundError:
        pass
  return removed


def _atomic_write(path, write, mode: str) -> None:
  """``write(f)`` into a temporary file beside ``path``, fsync, then rename onto it."""
  tmp = temp_name(path)
  try:
    with open(tmp, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_npz(path, arrays: dict) -> None:
  """Write an ``.npz`` whole or not at all."""
  _atomic_write(path, lambda f: np.savez(f, **arrays), "wb")


def atomic_json(path, obj) -> None:
  _atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=str), "w")


def checksum(arrays: dict) -> str:
  """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
  h = hashlib.sha256()
  for k in sorted(arrays):
    a = np.ascontiguousarray(np.asarray(arrays[k]))
    h.update(json.dumps([k, a.dtype.str, list(a.shape)]).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _manifest_digest(m: dict) -> str:
  core = {k: m[k] for k in ("format", "spec_hash", "chunk_size", "n_chunks", "cells")}
  return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def _chunk_files(out_dir) -> list:
  return sorted(fn for fn in os.listdir(out_dir)
                if fn.startswith("chunk_") and fn.endswith(".npz") and not _is_temp(fn))


def _ways_out(out_dir) -> str:
  return (f"pass overwrite=True (CLI: --overwrite) to delete them and start afresh, "
          f"or use another output directory than {out_dir!r}")


class Store:
  """The chunk store of one run in ``out_dir`` (see the module docstring).

  Args:
    out_dir: the directory (created if missing).
    spec: the run's canonical description (JSON-able).
    spec_hash: its digest.
    chunk_size, n_chunks, cells: the chunking this run would use; an
      existing manifest of the same spec keeps its own chunk size.
    overwrite: delete an existing store of another spec (or a broken one).
    on_corrupt: ``"recompute"`` or ``"raise"`` for a chunk that fails
      verification.
    extra: more manifest fields (not part of the identity).
    writer: whether this process writes (process 0 under multi-host JAX).
  """

  def __init__(self, out_dir, spec: dict, spec_hash: str, *, overwrite: bool = False,
               on_corrupt: str = "recompute", writer: bool = True):
    if on_corrupt not in ("recompute", "raise"):
      raise ValueError(f"on_corrupt must be 'recompute' or 'raise', got {on_corrupt!r}.")
    self.out_dir = os.fspath(out_dir)
    self.spec, self.spec_hash = spec, spec_hash
    self.on_corrupt = on_corrupt
    self.writer = writer
    self.manifest: Optional[dict] = None
    self.removed_temps: list = []
    if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
      raise ValueError(f"output directory {self.out_dir!r} exists and is not a directory.")
    try:
      os.makedirs(self.out_dir, exist_ok=True)
    except OSError as e:
      raise ValueError(f"cannot create output directory {self.out_dir!r}: "
                       f"{e.strerror or e}.") from None
    self.removed_temps = remove_stale_temps(self.out_dir)
    self._open(overwrite)

  # ---- opening ------------------------------------------------------------
  def _read_manifest(self, path) -> dict:
    try:
      with open(path) as f:
        m = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"manifest {path!r} is unreadable ({type(e).__name__}: {e}); "
                       f"{_ways_out(self.out_dir)}.") from None
    if not isinstance(m, dict):
      raise ValueError(f"manifest {path!r} is not a JSON object; {_ways_out(self.out_dir)}.")
    bad = [k for k, t in _MANIFEST_KEYS.items()
           if not isinstance(m.get(k), t) or (t is int and isinstance(m.get(k), bool))]
    if bad:
      raise ValueError(f"manifest {path!r} lacks or mistypes {bad}; {_ways_out(self.out_dir)}.")
    if m["digest"] != _manifest_digest(m):
      raise ValueError(f"manifest {path!r} was edited (its chunking no longer matches its "
                       f"digest); {_ways_out(self.out_dir)}.")
    return m

  def _open(self, overwrite: bool) -> None:
    path = os.path.join(self.out_dir, MANIFEST)
    if os.path.exists(path):
      try:
        m = self._read_manifest(path)
      except ValueError:
        if not overwrite:
          raise
        m = None
      if (not overwrite and m is not None and m["spec_hash"] == self.spec_hash
          and m["format"] == FORMAT):
        self.manifest = m
        return
      if not overwrite:
        old = m["spec_hash"] if m else "?"
        raise ValueError(f"{self.out_dir!r} holds chunks of a different grid spec (hash {old}, "
                         f"this run {self.spec_hash}); {_ways_out(self.out_dir)}.")
      self.wipe()
    elif _chunk_files(self.out_dir):
      if not overwrite:
        raise ValueError(f"{self.out_dir!r} holds chunk files but no {MANIFEST}; chunks that "
                         f"cannot be tied to a spec are never reused; {_ways_out(self.out_dir)}.")
      self.wipe()

  def wipe(self) -> None:
    """Delete the store's own files (only on ``overwrite``)."""
    if not self.writer:
      return
    for fn in os.listdir(self.out_dir):
      if fn == MANIFEST or _is_temp(fn) or (fn.startswith("chunk_") and fn.endswith(".npz")):
        os.remove(os.path.join(self.out_dir, fn))

  def create(self, chunk_size: int, n_chunks: int, cells: int, extra: Optional[dict] = None):
    """Write the manifest of a new run (no-op when resuming)."""
    if self.manifest is not None:
      return
    m = dict(format=FORMAT, spec_hash=self.spec_hash, chunk_size=int(chunk_size),
             n_chunks=int(n_chunks), cells=int(cells), spec=self.spec, **(extra or {}))
    m["digest"] = _manifest_digest(m)
    if self.writer:
      atomic_json(os.path.join(self.out_dir, MANIFEST), m)
    self.manifest = m

  @property
  def chunk_size(self) -> Optional[int]:
    return None if self.manifest is None else self.manifest["chunk_size"]

  # ---- chunks -------------------------------------------------------------
  def path(self, c: int) -> str:
    return os.path.join(self.out_dir, f"chunk_{c:05d}.npz")

  def _range(self, c: int) -> tuple:
    m = self.manifest
    return c * m["chunk_size"], min(m["cells"], (c + 1) * m["chunk_size"])

  def save(self, c: int, arrays: dict) -> None:
    lo, hi = self._range(c)
    meta = dict(spec_hash=self.spec_hash, index=c, lo=lo, hi=hi, checksum=checksum(arrays))
    if self.writer:
      atomic_npz(self.path(c), {**arrays, _META: np.asarray(json.dumps(meta))})

  def exists(self, c: int) -> bool:
    return os.path.exists(self.path(c))

  def verify(self, c: int, keys=None) -> Optional[dict]:
    """Open chunk ``c`` and check it; an ``np.load`` handle's arrays as a dict
    (only ``keys`` if given, else every array), or None if absent or bad."""
    path = self.path(c)
    if not os.path.exists(path):
      return None
    try:
      # our own handle: np.load leaks its file when the zip is unreadable
      with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
        meta = json.loads(str(z[_META][()]))
        arrays = {k: z[k] for k in z.files if k != _META}
      lo, hi = self._range(c)
      why = None
      if meta.get("spec_hash") != self.spec_hash:
        why = f"it belongs to another spec (hash {meta.get('spec_hash')})"
      elif meta.get("index") != c or meta.get("lo") != lo or meta.get("hi") != hi:
        why = (f"it holds chunk {meta.get('index')} (cells {meta.get('lo')}:{meta.get('hi')}), "
               f"not chunk {c} (cells {lo}:{hi})")
      elif meta.get("checksum") != checksum(arrays):
        why = "its arrays do not match their checksum (edited or damaged)"
      elif any(np.shape(a)[:1] != (hi - lo,) for a in arrays.values()):
        why = "its arrays do not have one row per cell"
    except Exception as e:  # noqa: BLE001 - any unreadable file is a bad chunk
      why = f"it cannot be read ({type(e).__name__}: {e})"
    if why is None:
      return arrays if keys is None else {k: arrays[k] for k in keys}
    msg = f"chunk {path!r} failed verification: {why}"
    if self.on_corrupt == "raise":
      raise ValueError(msg + "; delete it to recompute it, or pass on_corrupt='recompute'.")
    warnings.warn(msg + "; recomputing it.", StoreWarning, stacklevel=3)
    return None

  def load_keys(self, c: int, keys) -> dict:
    """Arrays ``keys`` of an already verified chunk."""
    with open(self.path(c), "rb") as fh, np.load(fh, allow_pickle=False) as z:
      return {k: z[k] for k in keys}
