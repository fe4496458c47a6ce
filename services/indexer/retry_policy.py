"""How long an indexing task keeps retrying while the index database or the object store is unavailable.

A task that hits such a failure (TransientIndexError) is retried after a wait drawn between 0 and a ceiling that
doubles at each attempt (1, 2, 4 … at most BACKOFF_MAX_SECONDS; drawn, so that the tasks of one outage do not all
return at once) for TRANSIENT_RETRY_SECONDS after its first failure, whatever the number of attempts: an outage
shorter than that ends with every task tried again within BACKOFF_MAX_SECONDS of the dependency's return. A task
still failing then is dropped; the pending markers of its instances stay, and the sweeper hands them over again
(services/indexer/sweeper.py). The sweeper waits REPUBLISH_BACKOFF_SECONDS before it hands an instance over a second
time, longer than a task retries, so that a long outage keeps at most two waiting tasks per instance: its own, and
the one the sweeper made once its marker was older than ``sweep_grace_seconds``.

(The earlier count of 8 retries, with a ceiling of 30 s, could end a task's retries within the first 10–30 s of an
outage; its instances then waited up to the sweeper's 5 minutes after the database came back.)
"""

from __future__ import annotations

import random

TRANSIENT_RETRY_SECONDS = 240.0
BACKOFF_MAX_SECONDS = 20.0
REPUBLISH_BACKOFF_SECONDS = 300.0  # an instance handed over again by the sweeper is not handed over again before this


def next_retry_in(retries_so_far: int, failing_for_seconds: float, rng: random.Random | None = None) -> float | None:
    """Seconds to wait before the next attempt of a task that failed ``retries_so_far + 1`` times, the first
    ``failing_for_seconds`` ago; None once it has been failing for TRANSIENT_RETRY_SECONDS (drop it)."""
    if failing_for_seconds >= TRANSIENT_RETRY_SECONDS:
        return None
    ceiling = min(BACKOFF_MAX_SECONDS, 2.0 ** min(retries_so_far, 16))
    return ceiling * (rng or random).random()
