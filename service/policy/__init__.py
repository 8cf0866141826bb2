"""Routing policy: thresholds, calibration (and, with the service, rules and fallbacks)."""

from service.policy.calibration import (
    check_strong_fraction,
    threshold_for_fraction,
    threshold_from_scores,
)

__all__ = ["check_strong_fraction", "threshold_for_fraction", "threshold_from_scores"]
