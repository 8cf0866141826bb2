"""Policy rules: labels that force a decision (e.g. tier: vip -> strong), first match wins."""

from __future__ import annotations

from collections.abc import Mapping

from service.config import PolicyRule


def match_rule(rules: list[PolicyRule], labels: Mapping[str, str]) -> PolicyRule | None:
    for rule in rules:
        if all(labels.get(key) == value for key, value in rule.match.items()):
            return rule
    return None
