"""Spectral distances and collapse metrics (rank view and per-coordinate view)."""
from linvae_jax._src.metrics import active_units as active_units
from linvae_jax._src.metrics import collapse_fraction_empirical as collapse_fraction_empirical
from linvae_jax._src.metrics import collapse_prob_gaussian as collapse_prob_gaussian
from linvae_jax._src.metrics import eps_delta_collapsed as eps_delta_collapsed
from linvae_jax._src.metrics import eps_delta_collapsed_empirical as eps_delta_collapsed_empirical
from linvae_jax._src.metrics import kl_per_dim as kl_per_dim
from linvae_jax._src.metrics import kl_samples as kl_samples
from linvae_jax._src.metrics import mean_variance as mean_variance
from linvae_jax._src.metrics import rank_active as rank_active
from linvae_jax._src.spectra import dma as dma
from linvae_jax._src.spectra import safe_sqrt as safe_sqrt
from linvae_jax._src.spectra import svdvals as svdvals
