"""How job outcomes move a node's trust score and latency estimate (SPEC §3.3 feedback).

The rule is asymmetric on purpose, so a node cannot wash out a recent failure with a burst of easy
successes:

    failed      trust * 0.7          (multiplicative: the higher the trust, the more a failure costs)
    rejected    trust * 0.9          (the node refused the job: costs less than failing it)
    completed   trust + 0.02 * (1 - trust)    (closes 2 % of the gap to 1)
    accepted    trust + 0.005 * (1 - trust)   (closes 0.5 %: accepting is a promise, not a result)

From ``INITIAL_TRUST`` 0.5 one failure drops trust to 0.35 and it takes 13 completed jobs to climb
back to 0.5 (``RECOVERY_AFTER_FAILURE``). A node that fails one job in ten swings between ~0.28 and
0.4; one that never fails approaches 1. Trust is clamped to [0.05, 1]: a node that failed is never
excluded forever, it only ranks lower.

Latency is an exponentially weighted average (alpha 0.2) of the observed round trips, each clamped to
[1 ms, 10 min] so one absurd report cannot dominate it; an outcome without an observation keeps it.
Who may report is the hub's business (``hub/matchmaking.py``: a coordinator, once per job and node).
"""

from __future__ import annotations

import math
from typing import Final

from gpupool.errors import InvalidInput

INITIAL_TRUST: Final = 0.5
INITIAL_LATENCY_MS: Final = 1000.0
MIN_TRUST: Final = 0.05
MAX_TRUST: Final = 1.0
LATENCY_ALPHA: Final = 0.2
MIN_LATENCY_MS: Final = 1.0
MAX_LATENCY_MS: Final = 600_000.0
RECOVERY_AFTER_FAILURE: Final = 13  # completed jobs to win back one failure from INITIAL_TRUST

# outcome -> (multiplier applied to trust, fraction of the remaining gap to 1 closed)
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
    """The node's new (trust, latency estimate in ms) after one outcome."""
    rule = _RULES.get(outcome)
    if rule is None:
        raise InvalidInput(
            f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}", field="outcome"
        )
    if not (math.isfinite(trust) and math.isfinite(latency_ms)):
        raise InvalidInput("trust and latency must be finite numbers", field="trust")
    if observed_latency_ms is not None and math.isnan(observed_latency_ms):
        raise InvalidInput("observed latency must be a number", field="latency_ms")
    factor, recovery = rule
    new_trust = trust * factor
    new_trust += (MAX_TRUST - new_trust) * recovery
    new_trust = min(MAX_TRUST, max(MIN_TRUST, new_trust))
    new_latency = latency_ms
    if observed_latency_ms is not None:
        observed = min(MAX_LATENCY_MS, max(MIN_LATENCY_MS, observed_latency_ms))
        new_latency = (1 - LATENCY_ALPHA) * latency_ms + LATENCY_ALPHA * observed
    return new_trust, new_latency
