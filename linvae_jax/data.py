"""Data sets: seeded synthetic generators, MNIST loaders, streamed moments, and
``load(spec)``, the data-spec parser behind the CLI's ``--data``."""
from linvae_jax._src.data import *  # noqa: F401,F403  (the curated list lives there)
from linvae_jax._src.data import mnist as mnist  # noqa: F401
from linvae_jax._src.data import synthetic as synthetic  # noqa: F401
