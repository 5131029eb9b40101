"""Tempered SMC on NumPyro models, one idea per module: the tempered target ``prior * L^beta`` and the
checks of its settings (:mod:`.tempering`), the model adapter (:mod:`.numpyro_model`), the tempered
Feynman–Kac model and its front-end algorithm (:mod:`.model`), the annealed-Langevin corrector on a fixed
ladder (:mod:`.annealed_langevin`) and BlackJAX's tempered-SMC interface (:mod:`.blackjax_api`)."""
from smcppl.inference.tempered.annealed_langevin import AnnealedLangevin
from smcppl.inference.tempered.model import TemperedSMC, tempered_feynman_kac
from smcppl.inference.tempered.numpyro_model import ModelError, NumPyroDensity, numpyro_density

__all__ = ["AnnealedLangevin", "TemperedSMC", "tempered_feynman_kac", "ModelError", "NumPyroDensity", "numpyro_density"]
