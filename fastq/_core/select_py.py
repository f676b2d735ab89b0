"""Pure-Python twin of ``select.pyx``: weighted fair choice between the 5 priority levels.

Smooth weighted round robin (as in nginx's upstream balancer) with ageing: a level's weight grows
with the age of its oldest ready message, so no level starves however much critical work arrives.
The Cython module must return identical lists and leave identical ``credits`` for the same input.
"""
from __future__ import annotations

import operator

LEVELS = 5
DEFAULT_WEIGHTS = (16.0, 8.0, 4.0, 2.0, 1.0)


def plan_levels(available, head_age_ms, credits, weights, ageing_ms: float, n: int) -> list[int]:
    """Return the levels to take the next ``n`` messages from, in order.

    ``available[i]`` ready messages at level i; ``head_age_ms[i]`` age of the oldest of them;
    ``credits`` (5 floats) is the round-robin state, updated in place and kept between calls;
    effective weight = ``weights[i] * (1 + head_age_ms[i] / ageing_ms)`` (no ageing if
    ``ageing_ms <= 0``). Levels with nothing ready have their credit reset to 0 (no banking).
    Ties go to the more urgent (lower) level.
    """
    ageing_ms = float(ageing_ms)  # converted once, like the C double of the Cython twin
    n = operator.index(n)
    avail = [int(a) for a in available[:LEVELS]]
    eff = [0.0] * LEVELS
    for i in range(LEVELS):
        if avail[i] > 0:
            w = float(weights[i])
            if ageing_ms > 0:
                w = w * (1.0 + float(head_age_ms[i]) / ageing_ms)
            eff[i] = w
        else:
            credits[i] = 0.0
    out: list[int] = []
    while len(out) < n:
        total = 0.0
        best = -1
        for i in range(LEVELS):
            if avail[i] > 0:
                total += eff[i]
                credits[i] += eff[i]
                if best < 0 or credits[i] > credits[best]:
                    best = i
        if best < 0:
            break
        credits[best] -= total
        avail[best] -= 1
        out.append(best)
        if avail[best] == 0:
            credits[best] = 0.0
    return out
