r"""Devices: the 1-D cell mesh, placing inputs, gathering outputs across hosts.

A chunk's cell axis is sharded over ``devices`` with a 1-D ``Mesh`` and
``NamedSharding``; moments and data are replicated. Inputs are built with
``jax.make_array_from_callback``, so under JAX's multi-controller runtime
(``jax.distributed.initialize``) each process fills only its own shards, and
outputs are gathered with ``multihost_utils.process_allgather``. Seeds travel
as ``uint32`` arrays (typed PRNG-key arrays cannot be placed on a
process-spanning sharding) and the mesh axis is ``AxisType.Auto`` where the
installed JAX has axis types (``Explicit`` breaks vmap + scan).
"""
from __future__ import annotations

import numpy as np
import jax


def default_devices() -> list:
  """All local accelerators; a single device on CPU.

  Forced host devices (``--xla_force_host_platform_device_count``) share the
  same cores, so sharding over them buys no speed, and the cross-cell
  ``any(running)`` reduction in the training loop then becomes a collective
  that stalled a 2-core test run indefinitely. Pass ``devices`` explicitly
  to shard on CPU (the sharding tests do).
  """
  devs = jax.local_devices()
  return devs[:1] if devs[0].platform == "cpu" else devs


def resolve(devices) -> list:
  devices = list(default_devices() if devices is None else devices)
  if not devices:
    raise ValueError("devices is empty.")
  return devices


def mesh(devices):
  """(cell sharding, replicated sharding) over a 1-D ``cells`` mesh."""
  kw = {}
  axis_type = getattr(jax.sharding, "AxisType", None)
  if axis_type is not None:
    kw["axis_types"] = (axis_type.Auto,)
  try:
    m = jax.sharding.Mesh(np.asarray(devices), ("cells",), **kw)
  except TypeError:  # a JAX without axis_types
    m = jax.sharding.Mesh(np.asarray(devices), ("cells",))
  P = jax.sharding.PartitionSpec
  return jax.sharding.NamedSharding(m, P("cells")), jax.sharding.NamedSharding(m, P())


def put(x, sharding):
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def fetch(tree):
  """Device arrays -> numpy, gathering process-spanning arrays first."""
  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)
  return jax.tree.map(get, tree)


def is_writer() -> bool:
  """Only process 0 writes files."""
  return jax.process_index() == 0


def agree(flags) -> list:
  """Process 0's list of booleans, on every process (one broadcast under
  multi-host JAX; the identity in a single process)."""
  flags = [bool(f) for f in flags]
  if jax.process_count() == 1 or not flags:
    return flags
  from jax.experimental import multihost_utils
  got = multihost_utils.broadcast_one_to_all(np.asarray(flags, np.int32))
  return [bool(f) for f in np.asarray(got)]


def agree_int(value: int) -> int:
  """Process 0's integer on every process (e.g. a chunk size estimated from
  local memory, which must be the same everywhere)."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils
  return int(np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(int(value), np.int32))))


def barrier(name: str) -> None:
  """Wait until every process reaches this point (a no-op in one process).

  Needed wherever a process reads what process 0 writes: after the chunk
  loop, before the others read the store back (else a process can open a
  chunk file process 0 is still writing: ``FileNotFoundError``).
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
