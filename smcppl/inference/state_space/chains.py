"""What the parameter samplers (PMMH, particle Gibbs) share: independent MCMC chains over the static
parameters, read back as NumPyro's ``MCMC`` does (``get_samples``) with ArviZ's split R-hat."""
from __future__ import annotations

import numpy as np

__all__ = ["ParameterChains"]


class ParameterChains:
    """Draws ``_samples`` (name -> ``[num_chains, num_samples, ...]``) of ``num_chains`` chains, of which the
    ``static_sites`` are the model's static parameters."""

    _samples: dict = None
    static_sites: tuple = ()

    def _check(self) -> None:
        if self._samples is None:
            raise RuntimeError("Call .run(rng_key, ...) before asking for results.")

    def get_samples(self, group_by_chain: bool = False) -> dict:
        """The draws, ``(num_chains * num_samples, ...)`` or ``(num_chains, num_samples, ...)`` per site."""
        self._check()
        if group_by_chain:
            return dict(self._samples)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self._samples.items()}

    def rhat(self) -> dict:
        """Split R-hat (ArviZ) of each static parameter, the largest over its elements."""
        import arviz as az

        self._check()
        return {k: float(np.max(np.asarray(az.rhat(self._samples[k])))) for k in self.static_sites}
