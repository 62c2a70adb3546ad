"""Join JAX's multi-controller runtime before a multi-process grid.

``lv.train_grid(..., devices=jax.devices())`` run by every process of a
``jax.distributed`` job shards each chunk's cells over all processes'
devices: each process computes its own cells, outputs are gathered
(``engine/devices.py``) and only process 0 writes ``out_dir``. This module
only starts the runtime; see ``docs/distributed.md`` for launch commands.

:func:`initialize` with no arguments lets JAX detect the cluster (Slurm,
Open MPI, K8s / JobSet, TPU pods; mpi4py with ``cluster_detection_method=
"mpi4py"``); with explicit arguments all three of coordinator, process
count and process id are needed. On CPU the collectives are gloo (JAX's default).
"""
from __future__ import annotations

from collections.abc import Sequence


def _check_address(coordinator: str) -> None:
  host, sep, port = str(coordinator).rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"coordinator must be 'host:port' with a port in 1..65535, got {coordinator!r}.")


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
    rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
    raise ValueError(f"{name} must be an integer {rng}, got {value!r}.")
  return value


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               timeout_s: int = 300, cluster_detection_method: str | None = None) -> dict:
  """Start ``jax.distributed`` (once per process, before any JAX computation).

  Args:
    coordinator: ``"host:port"`` of process 0's coordinator service (the
      same on every process). None: auto-detected.
    num_processes: total number of processes. None: auto-detected.
    process_id: this process's index in ``0..num_processes-1``. None:
      auto-detected.
    local_device_ids: restrict this process to these local devices (e.g.
      one GPU per process); None: all.
    timeout_s: how long to wait for every process to join.
    cluster_detection_method: passed to JAX (e.g. ``"mpi4py"``).

  Returns:
    ``{"process_index", "process_count", "local_devices", "devices"}``.
    Calling it again once initialised returns the same without restarting.

  Raises:
    ValueError: some but not all of coordinator / num_processes / process_id
      given, a malformed value, or nothing given and no cluster detected.
  """
  import jax

  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  if jax.distributed.is_initialized():
    return _info(jax)
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError(f"{', '.join(missing)} missing: give coordinator, num_processes and "
                       "process_id together, or none of them to auto-detect the cluster.")
    _check_address(coordinator)
    _check_int("num_processes", num_processes, 1)
    _check_int("process_id", process_id, 0, num_processes - 1)
  _check_int("timeout_s", timeout_s, 1)
  try:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids,
                               initialization_timeout=timeout_s,
                               cluster_detection_method=cluster_detection_method)
  except ValueError as e:
    if coordinator is None:
      raise ValueError("no cluster detected (Slurm, Open MPI, K8s, TPU): pass "
                       "coordinator='host:port', num_processes and process_id "
                       f"(JAX: {e})") from e
    raise
  return _info(jax)


def _info(jax) -> dict:
  return {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "local_devices": [str(d) for d in jax.local_devices()],
          "devices": [str(d) for d in jax.devices()]}


def shutdown() -> None:
  """Leave the runtime (a no-op when it was not started)."""
  import jax
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()
