"""Router model strings, RouteLLM's format plus the calibrated-percentage extension."""

from __future__ import annotations

import pytest

from service.policy.model_string import RouterModel, RoutingError, is_router_model, parse_router_model

KNOWN = ["mf", "bert", "random", "mf-fast"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("router-mf-0.116", RouterModel("mf", threshold=0.116)),
        ("router-mf-0.11593", RouterModel("mf", threshold=0.11593)),
        ("router-bert-1", RouterModel("bert", threshold=1.0)),
        ("router-random-0", RouterModel("random", threshold=0.0)),
        ("router-mf-p30", RouterModel("mf", strong_fraction=0.3)),
        ("router-mf-fast-0.5", RouterModel("mf-fast", threshold=0.5)),
    ],
)
def test_valid_strings(model: str, expected: RouterModel) -> None:
    assert is_router_model(model)
    assert parse_router_model(model, KNOWN) == expected


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("router-mf", "expected 'router-<router>-<threshold>'"),
        ("router-mf-abc", "'abc' is not a number"),
        ("router-xx-0.5", "unknown router 'xx'"),
        ("router-mf-1.5", "must be in [0, 1]"),
        ("router-mf-nan", "must be in [0, 1]"),
        ("router-mf-p0", "must be in (0, 100)"),
        ("router-mf-p100", "must be in (0, 100)"),
        ("router-mf-pxx", "invalid strong-call percentage"),
    ],
)
def test_invalid_strings(model: str, message: str) -> None:
    with pytest.raises(RoutingError, match=None) as info:
        parse_router_model(model, KNOWN)
    assert message in str(info.value)


def test_plain_model_names_are_not_router_models() -> None:
    assert not is_router_model("gpt-4o") and not is_router_model("mixtral-8x7b")
