"""The learning rate of each step of a stage: constant, or a linear warmup then a cosine decay to 0
(Loshchilov & Hutter 2017, SGDR eq. 5 without restarts), as `training.schedule` and
`training.warmup_fraction` set it. A pure function of the step, so a resumed run needs no state."""

from __future__ import annotations

import math


def rate_factor(step: int, total: int, schedule: str, warmup_fraction: float) -> float:
    """The factor on a stage's base learning rate at `step` (0-based) of `total` steps."""
    warmup = round(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / warmup  # linear warmup, never 0
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # SGDR eq. 5, eta_min = 0


def set_rate(optimizer, base_rates: list[float], factor: float) -> float:
    """Set every parameter group's rate to its base times `factor`; the first group's rate."""
    for group, base in zip(optimizer.param_groups, base_rates):
        group["lr"] = base * factor
    return optimizer.param_groups[0]["lr"]
