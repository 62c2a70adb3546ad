"""Model registry, filled by discovery: each module here exports ``MODELS``.

Adding a model means adding one module with a ``MODELS = {name: class}``
dict; nothing else in the tree needs editing.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.lru_cache(maxsize=None)
def registry() -> dict:
  out = {}
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if info.name.startswith("_"):
      continue
    mod = importlib.import_module(f"{__name__}.{info.name}")
    for name, cls in getattr(mod, "MODELS", {}).items():
      if name in out:
        raise RuntimeError(f"model name {name!r} is registered twice.")
      out[name] = cls
  return out


def make(name: str, **config):
  """Instantiate a registered model by name, e.g. ``make("vae", latent_dim=4)``."""
  reg = registry()
  if name not in reg:
    raise ValueError(f"unknown model {name!r}; known models: {sorted(reg)}.")
  return reg[name](**config)
