"""Data sets: seeded synthetic generators and MNIST (see the submodules)."""
from linvae_jax._src.data import mnist as mnist
from linvae_jax._src.data import synthetic as synthetic
from linvae_jax._src.data.mnist import MnistData as MnistData
from linvae_jax._src.data.mnist import digit_subset as digit_subset
from linvae_jax._src.data.mnist import load_mnist as load_mnist
from linvae_jax._src.data.mnist import mnist_moments as mnist_moments
from linvae_jax._src.data.mnist import mnist_view as mnist_view
from linvae_jax._src.data.synthetic import Sample as Sample
from linvae_jax._src.data.synthetic import cvae_gaussian as cvae_gaussian
from linvae_jax._src.data.synthetic import cvae_rho as cvae_rho
from linvae_jax._src.data.synthetic import exact_design as exact_design
from linvae_jax._src.data.synthetic import gaussian as gaussian
from linvae_jax._src.data.synthetic import gaussian_batches as gaussian_batches
from linvae_jax._src.data.synthetic import iterate_batches as iterate_batches
from linvae_jax._src.data.synthetic import random_orthogonal as random_orthogonal
from linvae_jax._src.data.synthetic import regression as regression
from linvae_jax._src.data.synthetic import straddling_spectrum as straddling_spectrum
from linvae_jax._src.data.synthetic import streaming_moments as streaming_moments
from linvae_jax._src.data import spec as spec
from linvae_jax._src.data.spec import Dataset as Dataset
from linvae_jax._src.data.spec import load as load
from linvae_jax._src.data.spec import user_cache_dir as user_cache_dir

__all__ = [
    "mnist",
    "synthetic",
    "MnistData",
    "digit_subset",
    "load_mnist",
    "mnist_moments",
    "mnist_view",
    "Sample",
    "cvae_gaussian",
    "cvae_rho",
    "exact_design",
    "gaussian",
    "gaussian_batches",
    "iterate_batches",
    "random_orthogonal",
    "regression",
    "straddling_spectrum",
    "streaming_moments",
    "Dataset",
    "load",
    "user_cache_dir",
]
