"""Feynman–Kac correctors: weighted SDE samplers for annealed, product and guided targets from score
functions, and FK steering with reward potentials.

Modules, one idea each: :mod:`.weights` (the FKC weight increments and their math), :mod:`.steering`
(the FK-steering reward potentials), :mod:`.model` (the Feynman–Kac model the engine runs),
:mod:`.inputs` (input checks) and :mod:`.corrector` (the front end :class:`FeynmanKacCorrector` and
its presets :func:`annealed`, :func:`product_of_experts`, :func:`guided`, :func:`fk_steering`).
"""
from smcppl.inference.correctors.corrector import (FeynmanKacCorrector, annealed, fk_steering, guided,
                                                   product_of_experts)

__all__ = ["FeynmanKacCorrector", "annealed", "fk_steering", "guided", "product_of_experts"]
