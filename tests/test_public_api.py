"""The public facade: names resolve, the registry is complete, doctests run."""
import doctest

import linvae_jax as lv
from linvae_jax import grid as grid_facade


def test_registry_lists_every_model():
  assert sorted(lv.model_registry()) == ["cnn_cvae", "cnn_mhvae", "cnn_vae", "cvae", "mhvae",
                                        "mlp_cvae", "mlp_mhvae", "mlp_vae", "vae", "vae_ldv"]
  assert isinstance(lv.make_model("vae", latent_dim=2), lv.LinearVAE)


def test_facade_doctests():
  failed, attempted = doctest.testmod(grid_facade, verbose=False)[:2]
  assert attempted > 0 and failed == 0


def test_facade_modules_export_only_public_callables():
  for mod in (lv.metrics, lv.theory, lv.grid, lv.data):
    public = [n for n in dir(mod) if not n.startswith("_")]
    assert public, mod.__name__
