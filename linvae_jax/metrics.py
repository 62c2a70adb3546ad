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
# Sample-based metrics of amortised (nonlinear) encoders: linvae_jax._src.nonlinear_metrics.
from linvae_jax._src.nonlinear_metrics import active_units as sample_active_units  # noqa: F401
from linvae_jax._src.nonlinear_metrics import collapse_fraction as collapse_fraction
from linvae_jax._src.nonlinear_metrics import dang_au as dang_au
from linvae_jax._src.nonlinear_metrics import eps_delta_collapsed as sample_eps_delta_collapsed  # noqa: F401
from linvae_jax._src.nonlinear_metrics import gaussian_kl as gaussian_kl
from linvae_jax._src.nonlinear_metrics import iw_estimate as iw_estimate
from linvae_jax._src.nonlinear_metrics import kl_per_dim as sample_kl_per_dim  # noqa: F401
from linvae_jax._src.nonlinear_metrics import kl_total as kl_total
from linvae_jax._src.nonlinear_metrics import latent_summary as latent_summary
from linvae_jax._src.nonlinear_metrics import mean_cov_eigvals as mean_cov_eigvals
from linvae_jax._src.nonlinear_metrics import mean_cov_rank as mean_cov_rank
from linvae_jax._src.nonlinear_metrics import mean_std as mean_std
from linvae_jax._src.nonlinear_metrics import mean_variance as sample_mean_variance  # noqa: F401
from linvae_jax._src.nonlinear_metrics import mutual_information as mutual_information
from linvae_jax._src.nonlinear_metrics import n_eps_delta_collapsed as n_eps_delta_collapsed
