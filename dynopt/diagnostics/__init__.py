"""Diagnostics: energy drift, temperatures, ACF / IAT / ESS / R-hat, Gibbs references, orders.

Plain numpy functions over arrays in the ``(chain, draw, ...)`` layout that ArviZ and BlackJAX
use; the ones about a run also accept a :class:`dynopt.Trajectory` directly.

* Conservation: :func:`energy_drift` (max/relative/RMS error, secular slope ± SE).
* Temperatures: :func:`kinetic_temperature`, :func:`configurational_temperature` (each an
  :class:`Estimate` with ``.value`` and ``.se``).
* Correlation: :func:`autocorrelation`, :func:`integrated_autocorrelation_time`,
  :func:`effective_sample_size` (mean, bulk, tail, quantile), :func:`rhat`, :func:`mcse`,
  :func:`barrier_crossings`.
* Errors of averages: :func:`batch_means_se`, :func:`estimate_mean`, :func:`estimate_ratio`
  (what every statistical test of the project uses).
* Gibbs references: :func:`gibbs_moment`, :func:`gibbs_mean_potential`, :func:`gibbs_marginal`,
  :func:`gibbs_distance`.
* Orders: :func:`reference_flow` (torchdiffeq), :func:`global_error`, :func:`empirical_order`.
* Curvature against stability: :func:`stability_limit` (from a scheme's own program),
  :func:`critical_step`, :func:`transfer_matrix`, :func:`model_top_eigenvalue`,
  :func:`potential_top_eigenvalue` (λ_max by Lanczos on Hessian-vector products),
  :func:`optimizer_stability_limit` (dynopt optimizers and ``torch.optim.SGD``).

Handing a run to ArviZ (an optional package, not a dependency of dynopt)::

    idata = traj.to_arviz()          # arviz.InferenceData: posterior q, p, extras; energy
    az.summary(idata), az.plot_trace(idata)

:func:`effective_sample_size`, :func:`rhat` and :func:`mcse` implement the definitions of
Vehtari et al. (2021) with ArviZ's conventions and equal ``az.ess``, ``az.rhat`` and
``az.mcse`` with the same ``method`` to rounding (tests/test_arviz_parity.py), without needing
ArviZ; the defaults here are the ESS of the mean and the classic split-R̂ (ArviZ's defaults are
``"bulk"`` and ``"rank"``). See docs/diagnostics.md for the formulas.
"""

from .autocorrelation import autocorrelation as autocorrelation
from .autocorrelation import autocovariance as autocovariance
from .autocorrelation import integrated_autocorrelation_time as integrated_autocorrelation_time
from .batch_means import batch_means_se as batch_means_se
from .batch_means import estimate_mean as estimate_mean
from .batch_means import estimate_ratio as estimate_ratio
from .crossings import barrier_crossings as barrier_crossings
from .curvature import TopEigenvalue as TopEigenvalue
from .curvature import hessian_top_eigenvalue as hessian_top_eigenvalue
from .curvature import model_top_eigenvalue as model_top_eigenvalue
from .curvature import potential_top_eigenvalue as potential_top_eigenvalue
from .energy import EnergyDrift as EnergyDrift
from .energy import energy_drift as energy_drift
from .ess import effective_sample_size as effective_sample_size
from .estimate import Estimate as Estimate
from .gibbs import GibbsMarginal as GibbsMarginal
from .gibbs import bin_probabilities as bin_probabilities
from .gibbs import gibbs_marginal as gibbs_marginal
from .gibbs import gibbs_mean_potential as gibbs_mean_potential
from .gibbs import gibbs_moment as gibbs_moment
from .gibbs import gibbs_support as gibbs_support
from .gibbs import is_separable as is_separable
from .gibbs import marginal_potential as marginal_potential
from .gibbs_distance import GibbsDistance as GibbsDistance
from .gibbs_distance import gibbs_distance as gibbs_distance
from .mcse import mcse as mcse
from .optimizer_limit import OptimizerLimit as OptimizerLimit
from .optimizer_limit import optimizer_stability_limit as optimizer_stability_limit
from .order import OrderFit as OrderFit
from .order import empirical_order as empirical_order
from .order import global_error as global_error
from .reference_flow import FlowSolution as FlowSolution
from .reference_flow import reference_flow as reference_flow
from .rhat import rhat as rhat
from .stability import StabilityLimit as StabilityLimit
from .stability import critical_step as critical_step
from .stability import spectral_radius as spectral_radius
from .stability import stability_limit as stability_limit
from .stability import transfer_matrix as transfer_matrix
from .temperature import configurational_temperature as configurational_temperature
from .temperature import kinetic_temperature as kinetic_temperature

__all__ = [
    "EnergyDrift",
    "Estimate",
    "FlowSolution",
    "GibbsDistance",
    "GibbsMarginal",
    "OptimizerLimit",
    "OrderFit",
    "StabilityLimit",
    "TopEigenvalue",
    "autocorrelation",
    "autocovariance",
    "barrier_crossings",
    "batch_means_se",
    "bin_probabilities",
    "configurational_temperature",
    "critical_step",
    "effective_sample_size",
    "empirical_order",
    "energy_drift",
    "estimate_mean",
    "estimate_ratio",
    "gibbs_distance",
    "gibbs_marginal",
    "gibbs_mean_potential",
    "gibbs_moment",
    "gibbs_support",
    "global_error",
    "hessian_top_eigenvalue",
    "integrated_autocorrelation_time",
    "is_separable",
    "kinetic_temperature",
    "marginal_potential",
    "mcse",
    "model_top_eigenvalue",
    "optimizer_stability_limit",
    "potential_top_eigenvalue",
    "reference_flow",
    "rhat",
    "spectral_radius",
    "stability_limit",
    "transfer_matrix",
]
