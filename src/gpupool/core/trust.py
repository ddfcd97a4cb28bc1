"""How outcomes move a node's trust score and latency estimate (SPEC §3.3 feedback).

The rule is asymmetric on purpose: a failure multiplies trust by 0.7 (a rejection by 0.9), while each
completed job closes only 2 % of the gap to 1 (an acceptance 0.5 %). From 0.5, one failure drops trust to
0.35 and it takes 13 completed jobs to climb back: a node that fails one job in ten settles well below a
node that never fails, and a burst of easy successes cannot wash out a recent failure. Trust stays in
[0.05, 1] so a node that failed once is never excluded forever. Latency is an exponentially weighted
average (alpha 0.2) of the observed times, each clamped to [1 ms, 10 min] so one absurd report cannot
dominate it. Who may report is the hub's business (coordinators only, once per job and node).
"""

from __future__ import annotations

from typing import Final

INITIAL_TRUST: Final = 0.5
INITIAL_LATENCY_MS: Final = 1000.0
MIN_TRUST: Final = 0.05
MAX_TRUST: Final = 1.0
LATENCY_ALPHA: Final = 0.2
MIN_LATENCY_MS: Final = 1.0
MAX_LATENCY_MS: Final = 600_000.0

# outcome → (multiplier applied to trust, fraction of the gap to 1 closed)
_RULES: Final[dict[str, tuple[float, float]]] = {
    "completed": (1.0, 0.02),
    "accepted": (1.0, 0.005),
    "rejected": (0.9, 0.0),
    "failed": (0.7, 0.0),
}
OUTCOMES: Final = frozenset(_RULES)


def update(
    trust: float, latency_ms: float, outcome: str, observed_latency_ms: float | None
) -> tuple[float, float]:
    """The node's new (trust, latency estimate) after one outcome."""
    if outcome not in _RULES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
    factor, recovery = _RULES[outcome]
    new_trust = trust * factor
    new_trust += (MAX_TRUST - new_trust) * recovery
    new_trust = min(MAX_TRUST, max(MIN_TRUST, new_trust))
    new_latency = latency_ms
    if observed_latency_ms is not None:
        observed = min(MAX_LATENCY_MS, max(MIN_LATENCY_MS, observed_latency_ms))
        new_latency = (1 - LATENCY_ALPHA) * latency_ms + LATENCY_ALPHA * observed
    return new_trust, new_latency
