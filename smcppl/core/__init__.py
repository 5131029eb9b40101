"""Core of smcppl: weights, resampling (incl. entropic), resampling policy, schedules and the FK engine."""
from smcppl.core.engine import (
    Ancestry,
    FeynmanKac,
    SMCError,
    SMCOutput,
    SMCState,
    StepInfo,
    build_step,
    init,
    raise_if_failed,
    run_adaptive,
    run_fixed,
)
from smcppl.core.entropic import Entropic, rule_temperature, target_temperature, temperature
from smcppl.core.policy import Resampling, resample
from smcppl.core.resampling import RESAMPLERS, get_resampler, multinomial, permute, residual, stratified, systematic
from smcppl.core.weights import (
    conditional_ess_ratio,
    ess,
    ess_ratio,
    log_mean_exp,
    log_normalize,
    normalize,
    normalized_entropy,
)
from smcppl.core.watchdog import SMCTimeoutError, call_with_timeout
