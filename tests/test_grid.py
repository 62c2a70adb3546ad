"""Grid construction, flattening, validation and the spec hash (pure Python, fast)."""
import numpy as np
import pandas as pd
import pytest

import linvae_jax as lv
from linvae_jax._src import grid as G


@pytest.fixture
def vae():
  return lv.make_model("vae", latent_dim=2)


def test_product_zip_seeds_flatten_row_major():
  g = G.product(beta=[0.5, 1.0, 2.0]) * G.zipped(eta_enc=[1.0, 2.0], eta_dec=[0.5, 1.0]) * G.seeds(2)
  assert len(g) == 12 and g.shape == (3, 2, 2)
  assert g.names == ("beta", "eta_enc", "eta_dec", "seed")
  cells, coords = g.flatten()
  assert isinstance(coords, pd.DataFrame) and len(coords) == 12
  # last group fastest; zipped axes move together
  np.testing.assert_array_equal(cells["seed"], np.tile([0, 1], 6))
  np.testing.assert_array_equal(cells["beta"], np.repeat([0.5, 1.0, 2.0], 4))
  np.testing.assert_array_equal(cells["eta_dec"], np.where(cells["eta_enc"] == 1.0, 0.5, 1.0))
  assert cells["seed"].dtype == np.int64
  # every (beta, eta pair, seed) combination appears exactly once
  assert len(coords.drop_duplicates()) == 12


def test_resolve_fills_engine_defaults_and_constants(vae):
  g = G.product(beta=[1.0, 2.0]) * G.constant(eta_enc=1.0, eta_dec=0.5)
  full, cells, coords = g.resolve(vae)
  assert set(cells) == {"beta", "eta_enc", "eta_dec", "lr", "init_scale", "seed"}
  np.testing.assert_array_equal(cells["lr"], [G.ENGINE_DEFAULTS["lr"]] * 2)
  assert list(coords.columns) == ["beta", "eta_enc", "eta_dec", "lr", "init_scale", "seed"]
  # model hyperparameters may come from defaults instead of the grid
  _, cells2, _ = G.product(beta=[1.0]).resolve(vae, defaults={"eta_enc": 1.0, "eta_dec": 2.0})
  assert cells2["eta_dec"][0] == 2.0


def test_vector_sigma_constant_keeps_trailing_shape():
  model = lv.make_model("vae", latent_dim=3, encoder_var="fixed")
  g = G.product(beta=[1.0, 2.0]) * G.constant(eta_enc=1.0, eta_dec=1.0, sigma=[0.3, 0.5, 0.7])
  _, cells, coords = g.resolve(model)
  assert cells["sigma"].shape == (2, 3)
  assert coords["sigma"][0] == (0.3, 0.5, 0.7)


def test_spec_hash_is_stable_and_value_sensitive():
  a = G.product(beta=[0.5, 1.0]) * G.seeds(3)
  b = G.product(beta=[0.5, 1.0]) * G.seeds(3)
  c = G.product(beta=[0.5, 1.0 + 1e-15]) * G.seeds(3)
  assert a.spec_hash() == b.spec_hash()
  assert a.spec_hash() != c.spec_hash()
  assert a.spec_hash() != (G.seeds(3) * G.product(beta=[0.5, 1.0])).spec_hash()
  assert len(a.spec_hash()) == 16


@pytest.mark.parametrize("build, match", [
    (lambda: G.product(beta=[]), "empty"),
    (lambda: G.zipped(beta=[1.0, 2.0], eta_dec=[1.0]), "equal lengths"),
    (lambda: G.product(gamma=[1.0]), "unknown grid axis 'gamma'"),
    (lambda: G.product(beta=[1.0]) * G.product(beta=[2.0]), "appear in both"),
    (lambda: G.product(beta=[1.0, np.nan]), "non-finite"),
    (lambda: G.seeds([0, 1.5]), "integers"),
    (lambda: G.seeds(0), "n >= 1"),
    (lambda: G.product(seed=[-1]), r"\[0, 2\*\*32\)"),
    (lambda: G.Grid().flatten(), "empty"),
])
def test_bad_grids_raise(build, match):
  with pytest.raises(ValueError, match=match):
    build()


@pytest.mark.parametrize("grid, match", [
    (G.product(beta1=[1.0]) * G.constant(eta_enc=1.0, eta_dec=1.0), r"unknown grid axes \['beta1'\]"),
    (G.product(beta=[1.0, 2.0]) * G.constant(eta_enc=1.0), r"\['eta_dec'\].*neither"),
    (G.product(beta=[1.0, -2.0]) * G.constant(eta_enc=1.0, eta_dec=1.0), "'beta' must be > 0"),
    (G.product(beta=[1.0]) * G.constant(eta_enc=0.0, eta_dec=1.0), "'eta_enc' must be > 0"),
    (G.product(beta=[1.0], lr=[0.0]) * G.constant(eta_enc=1.0, eta_dec=1.0), "'lr' must be > 0"),
    (G.product(beta=[1.0], init_scale=[-1.0]) * G.constant(eta_enc=1.0, eta_dec=1.0),
     "'init_scale' must be > 0"),
    (G.product(beta=[1.0], sigma=[1.0]) * G.constant(eta_enc=1.0, eta_dec=1.0),
     r"unknown grid axes \['sigma'\]"),  # learnable Sigma has no sigma hyperparameter
])
def test_resolve_rejects_bad_axes_for_model(vae, grid, match):
  with pytest.raises(ValueError, match=match):
    grid.resolve(vae)
