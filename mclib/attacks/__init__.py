"""Attacks, one file per idea.

* :mod:`mclib.attacks.evasion` -- FGSM, PGD (L-inf / L2), the input-space paper's targeted
  optimisation attack, and attacks that know a detector.
* :mod:`mclib.attacks.backdoor` -- triggers, data poisoning (single-target, all-to-all), attack success
  rate, and the error-injection attack of Zhao et al.

Everything works in pixel space [0, 1] and on whole batches.
"""
from mclib.attacks.backdoor import (  # noqa: F401
    Trigger,
    asr,
    inject_errors,
    injection_success,
    optimise_trigger,
    poison,
    triggered_set,
)
from mclib.attacks.evasion import adaptive_pgd, barrier_surrogate, fgsm, optimisation_attack, pgd  # noqa: F401
