"""Hyperparameter grids: named axes combined by product and zip.

>>> from linvae_jax import grid
>>> g = grid.product(beta=[0.5, 1.0, 2.0]) * grid.seeds(2)
>>> len(g)
6
"""
from linvae_jax._src.grid import ENGINE_AXES as ENGINE_AXES
from linvae_jax._src.grid import ENGINE_DEFAULTS as ENGINE_DEFAULTS
from linvae_jax._src.grid import Grid as Grid
from linvae_jax._src.grid import constant as constant
from linvae_jax._src.grid import product as product
from linvae_jax._src.grid import seeds as seeds
from linvae_jax._src.grid import zipped as zipped
