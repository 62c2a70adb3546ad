"""Closed forms outside the model objects: data spectra and paper-specific theory.

Data spectra (``moments``): ``theta`` = sqrt(eig A) (VAE/MHVAE), ``zeta``
(W&Z singular values of E[y x~^T]), ``linear_residual`` R, ``residual_moment``
E = B - C^T A^+ C and ``residual_eigvals`` = eig(E) (the CVAE theta).

Linear VAE helpers (Dang Thm 1/4, W&Z Thm 1/2, Prop 2 corrected), W&Z App. D
learnable decoder variance (corrected Thm 4 / Table 1) and Thm 3 Hessian at
the origin, and the Lucas et al. (2019) pPCA results.
"""
from linvae_jax._src.models.vae import critical_beta as critical_beta
from linvae_jax._src.models.vae import critical_eta_dec as critical_eta_dec
from linvae_jax._src.models.vae import kappa as kappa
from linvae_jax._src.models.vae import learnable_sigma_std as learnable_sigma_std
from linvae_jax._src.models.vae import mode_spectra as mode_spectra
from linvae_jax._src.models.vae import pair_sigma as pair_sigma
from linvae_jax._src.models.vae_ldv import ldv_beta_thresholds as ldv_beta_thresholds
from linvae_jax._src.models.vae_ldv import ldv_profile as ldv_profile
from linvae_jax._src.models.vae_ldv import ldv_profile_minimum as ldv_profile_minimum
from linvae_jax._src.models.vae_ldv import origin_hessian_eigvals as origin_hessian_eigvals
from linvae_jax._src.models.vae_ldv import origin_is_global_min as origin_is_global_min
from linvae_jax._src.moments import linear_residual as linear_residual
from linvae_jax._src.moments import positive_eigh as positive_eigh
from linvae_jax._src.moments import residual_eigvals as residual_eigvals
from linvae_jax._src.moments import residual_moment as residual_moment
from linvae_jax._src.moments import theta as theta
from linvae_jax._src.moments import whitening as whitening
from linvae_jax._src.moments import zeta as zeta
from linvae_jax._src.ppca import LinearVAESolution as LinearVAESolution
from linvae_jax._src.ppca import PPCASolution as PPCASolution
from linvae_jax._src.ppca import fig2_blue_line as fig2_blue_line
from linvae_jax._src.ppca import ltgn_elbo as ltgn_elbo
from linvae_jax._src.ppca import ltgn_elbo_gap as ltgn_elbo_gap
from linvae_jax._src.ppca import ltgn_optimal_encoder as ltgn_optimal_encoder
from linvae_jax._src.ppca import ltgn_profiled_elbo as ltgn_profiled_elbo
from linvae_jax._src.ppca import ltgn_vae_optimum as ltgn_vae_optimum
from linvae_jax._src.ppca import ppca_fixed_sigma2 as ppca_fixed_sigma2
from linvae_jax._src.ppca import ppca_loglik as ppca_loglik
from linvae_jax._src.ppca import ppca_ml as ppca_ml
from linvae_jax._src.ppca import stationary_points as stationary_points
