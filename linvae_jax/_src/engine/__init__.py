"""The grid engine: one compiled program trains a whole hyperparameter grid.

One job per module:

* :mod:`.train` -- :func:`train_grid`: argument checks, the run's identity,
  the chunk loop; :func:`load_result` reads a finished store back;
* :mod:`.program` -- the compiled chunk program (init, while/scan loop,
  freeze masks, records) and its layers (closed form or plain);
* :mod:`.optimizers` -- :class:`AdamDecay`, :class:`LBFGS` and each
  optimiser's identity;
* :mod:`.store` -- the on-disk store: manifest, self-describing chunks,
  resume, integrity;
* :mod:`.devices` -- mesh, sharding, placement and the multi-host gather;
* :mod:`.result` -- :class:`GridResult`, its tables and files.
"""
from linvae_jax._src.engine.optimizers import AdamDecay as AdamDecay
from linvae_jax._src.engine.optimizers import LBFGS as LBFGS
from linvae_jax._src.engine.program import trace_count as trace_count
from linvae_jax._src.engine.result import CONVERGED as CONVERGED
from linvae_jax._src.engine.result import DIVERGED as DIVERGED
from linvae_jax._src.engine.result import PADDING as PADDING
from linvae_jax._src.engine.result import RUNNING as RUNNING
from linvae_jax._src.engine.result import STALLED as STALLED
from linvae_jax._src.engine.result import VERIFIED as VERIFIED
from linvae_jax._src.engine.result import GridResult as GridResult
from linvae_jax._src.engine.store import StoreWarning as StoreWarning
from linvae_jax._src.engine.train import EXIT_ENV as EXIT_ENV
from linvae_jax._src.engine.train import estimate_chunk_size as estimate_chunk_size
from linvae_jax._src.engine.train import load_result as load_result
from linvae_jax._src.engine.train import train_grid as train_grid
