"""RouteLLM-style model strings: `router-<router>-<threshold>`, and our `router-<router>-p<pct>`.

router-mf-0.11593  -> router "mf", threshold 0.11593
router-mf-p30      -> router "mf", the calibrated threshold for 30% strong calls
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from service.errors import LmrouteError

PREFIX = "router-"
_PATTERN = re.compile(r"^router-(?P<router>[A-Za-z0-9_.]+(?:-[A-Za-z][A-Za-z0-9_.]*)*)-(?P<value>[^-]+)$")


class RoutingError(LmrouteError):
    """A bad model string, an unknown router, or a threshold outside [0, 1]."""


@dataclass(frozen=True)
class RouterModel:
    router: str
    threshold: float | None = None
    strong_fraction: float | None = None


def is_router_model(model: str) -> bool:
    return model.startswith(PREFIX)


def parse_router_model(model: str, known_routers: list[str] | tuple[str, ...] | None = None) -> RouterModel:
    """Parse a router model string; RoutingError says what is wrong."""
    match = _PATTERN.match(model)
    if not match:
        raise RoutingError(
            f"invalid model {model!r}: expected 'router-<router>-<threshold>' (e.g. router-mf-0.116) "
            "or 'router-<router>-p<percent>' (e.g. router-mf-p30)"
        )
    router, value = match.group("router"), match.group("value")
    if known_routers is not None and router not in known_routers:
        raise RoutingError(
            f"unknown router {router!r} in {model!r}; available routers: {', '.join(sorted(known_routers))}"
        )
    if value.startswith("p"):
        try:
            percent = float(value[1:])
        except ValueError:
            raise RoutingError(f"invalid strong-call percentage in {model!r}: {value[1:]!r}") from None
        if math.isnan(percent) or not 0.0 < percent < 100.0:
            raise RoutingError(f"strong-call percentage in {model!r} must be in (0, 100), got {value[1:]}")
        return RouterModel(router, strong_fraction=percent / 100.0)
    try:
        threshold = float(value)
    except ValueError:
        raise RoutingError(f"invalid threshold in {model!r}: {value!r} is not a number") from None
    if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
        raise RoutingError(f"threshold in {model!r} must be in [0, 1], got {value}")
    return RouterModel(router, threshold=threshold)
