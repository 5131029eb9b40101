"""Feynman–Kac correctors: weighted SDE samplers for annealed, product and guided targets from score
functions, and FK steering with reward potentials (:mod:`.corrector`)."""
from smcppl.inference.correctors.corrector import (FeynmanKacCorrector, annealed, fk_steering, guided,
                                                   product_of_experts)

__all__ = ["FeynmanKacCorrector", "annealed", "fk_steering", "guided", "product_of_experts"]
