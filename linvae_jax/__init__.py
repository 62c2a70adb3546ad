"""linvae_jax: closed-form posterior-collapse theory of linear VAEs, checked
against vmapped gradient training.

Public API (everything else lives in private ``_src`` modules)::

    import linvae_jax as lv
    m = lv.moments_from_arrays(x)                      # data second moments
    model = lv.make_model("vae", latent_dim=4)         # learnable diagonal Sigma
    hyper = {"beta": 1.0, "eta_enc": 1.0, "eta_dec": 1.0}
    opt = model.optimum(m, hyper)                      # closed-form optimum
    model.loss(opt.params, m, hyper)                   # == opt.loss
    rep = lv.verify(model, m, lv.grid.product(beta=[0.5, 4.0], eta_enc=[1.0], eta_dec=[1.0]))

Submodules: ``lv.grid``, ``lv.metrics``, ``lv.theory``, ``lv.data``, and
``linvae_jax.testing`` (pytest assertion helpers).
"""
from linvae_jax import data as data
from linvae_jax._src import distributed as distributed
from linvae_jax import grid as grid
from linvae_jax import metrics as metrics
from linvae_jax import theory as theory
from linvae_jax._src.compare import compare as compare
from linvae_jax._src.engine import AdamDecay as AdamDecay
from linvae_jax._src.engine import LBFGS as LBFGS
from linvae_jax._src.engine import GridResult as GridResult
from linvae_jax._src.engine import train_grid as train_grid
from linvae_jax._src.engine import load_result as load_result
from linvae_jax._src.engine import StoreWarning as StoreWarning
from linvae_jax._src.model import LinearModel as LinearModel
from linvae_jax._src.model import Optimum as Optimum
from linvae_jax._src.model import Posterior as Posterior
from linvae_jax._src.model import as_hyper as as_hyper
from linvae_jax._src.models import make as make_model
from linvae_jax._src.models.cvae import LinearCVAE as LinearCVAE
from linvae_jax._src.models.mhvae import LinearMHVAE as LinearMHVAE
from linvae_jax._src.models.vae import LinearVAE as LinearVAE
from linvae_jax._src.models.vae_ldv import LinearVAELDV as LinearVAELDV
from linvae_jax._src.models import registry as model_registry
from linvae_jax._src.moments import Moments as Moments
from linvae_jax._src.moments import MomentAccumulator as MomentAccumulator
from linvae_jax._src.moments import from_arrays as moments_from_arrays
from linvae_jax._src.moments import from_batches as moments_from_batches
from linvae_jax._src.moments import from_second_moments as moments_from_second_moments
from linvae_jax._src.sensitivity import critical_values as critical_values
from linvae_jax._src.sensitivity import jacobians as jacobians
from linvae_jax._src.spectra import dma as dma
from linvae_jax._src.spectra import svdvals as svdvals
from linvae_jax._src.verify import Tolerances as Tolerances
from linvae_jax._src.verify import VerifyReport as VerifyReport
from linvae_jax._src.verify import default_tolerances as default_tolerances
from linvae_jax._src.verify import verify as verify

from linvae_jax._src.version import __version__ as __version__
