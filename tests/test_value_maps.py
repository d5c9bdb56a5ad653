"""Value maps (``params`` rules written in YAML) as the provider receives them (issue 12, item 4)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genrouter.backends._mapping import apply_rules, nearest_ratio, transform
from genrouter.catalog import CatalogEntry, ParamRule, build_deployment

RATIOS = ["16:9", "9:16", "1:1"]


def rule(**fields: Any) -> ParamRule:
    return ParamRule.model_validate(fields)


def deployment(params: dict[str, Any]) -> Any:
    entry = CatalogEntry.model_validate({"endpoint": "e", "params": {"prompt": "prompt", **params}})
    return build_deployment(provider="p", provider_type="p", model="m", entry=entry, spec=None)


def test_wrap_sends_a_one_element_list() -> None:
    """image: {to: image_urls, wrap: list} sends [url]."""
    payload = {"image_urls": "https://x/a.png"}
    assert apply_rules(payload, deployment({"image": {"to": "image_urls", "wrap": "list"}}), "p") == []
    assert payload == {"image_urls": ["https://x/a.png"]}


def test_values_rename_a_value_without_a_warning() -> None:
    """output_format: {values: {jpeg: jpg}} sends jpg for jpeg, silently."""
    payload = {"output_format": "jpeg"}
    dep = deployment({"output_format": {"to": "output_format", "values": {"jpeg": "jpg"}}})
    assert apply_rules(payload, dep, "p") == []
    assert payload == {"output_format": "jpg"}


def test_an_aspect_ratio_outside_the_allowed_list_snaps_with_a_warning() -> None:
    """aspect_ratio 21:9 on a 16:9 | 9:16 | 1:1 endpoint becomes 16:9 and says so."""
    payload = {"aspect_ratio": "21:9"}
    warnings = apply_rules(
        payload, deployment({"aspect_ratio": {"to": "aspect_ratio", "allowed": RATIOS}}), "p"
    )
    assert payload == {"aspect_ratio": "16:9"}
    assert warnings == ["p aspect_ratio takes 16:9, 9:16, 1:1; 21:9 became 16:9"]


def test_numbers_snap_to_the_nearest_allowed_and_convert() -> None:
    """duration_s: {allowed: [5, 10], as: string}: 7 becomes "5" (ties go to the smaller), 8 becomes "10"."""
    duration = rule(to="duration", allowed=[5, 10], **{"as": "string"})
    assert transform(duration, 7)[0] == "5"
    assert transform(duration, 8)[0] == "10"
    assert transform(duration, 7.5)[0] == "5"
    assert transform(duration, 10) == ("10", None)


def test_invert_flips_a_boolean() -> None:
    """safety_checker: {to: disable_safety_checker, invert: true}: true is sent as false."""
    assert transform(rule(to="disable_safety_checker", invert=True), True) == (False, None)


def test_a_value_not_allowed_and_not_snappable_is_dropped_with_a_warning() -> None:
    """output_format webp on a jpeg | png endpoint is dropped, with a warning."""
    payload = {"output_format": "webp"}
    dep = deployment({"output_format": {"to": "output_format", "allowed": ["jpeg", "png"]}})
    warnings = apply_rules(payload, dep, "p")
    assert payload == {}
    assert warnings == ["p output_format takes jpeg, png; webp was dropped"]


def test_as_integer_and_number_convert() -> None:
    """as: integer rounds half up; as: number keeps whole numbers integral."""
    assert transform(rule(to="x", **{"as": "integer"}), "4.5")[0] == 5
    assert transform(rule(to="x", **{"as": "number"}), "6")[0] == 6
    assert transform(rule(to="x", **{"as": "number"}), "6.5")[0] == 6.5


def test_a_rule_for_an_absent_input_does_nothing() -> None:
    """A rule whose input was not sent leaves the payload alone."""
    payload = {"prompt": "x"}
    assert apply_rules(payload, deployment({"image": {"to": "image_urls", "wrap": "list"}}), "p") == []
    assert payload == {"prompt": "x"}


def test_an_aspect_ratio_rule_ignores_a_size_under_the_same_name() -> None:
    """image_size carrying a preset (not a W:H ratio) is not touched by an aspect_ratio rule."""
    payload = {"image_size": "landscape_4_3"}
    assert (
        apply_rules(payload, deployment({"aspect_ratio": {"to": "image_size", "allowed": RATIOS}}), "p") == []
    )
    assert payload == {"image_size": "landscape_4_3"}


@given(st.integers(1, 4000), st.integers(1, 4000))
def test_nearest_ratio_is_never_farther_than_another_allowed(width: int, height: int) -> None:
    """The chosen ratio is the closest of the allowed ones by log(width/height)."""
    chosen = nearest_ratio(width, height, RATIOS)
    target = math.log(width / height)

    def distance(r: str) -> float:
        w, h = (int(x) for x in r.split(":"))
        return abs(math.log(w / h) - target)

    assert all(distance(chosen) <= distance(r) + 1e-12 for r in RATIOS)


@given(st.floats(0.5, 60, allow_nan=False))
def test_snapped_numbers_are_always_allowed(seconds: float) -> None:
    """Whatever the requested number, the value sent is one of the allowed ones."""
    sent, _ = transform(rule(to="duration", allowed=[5, 10], **{"as": "string"}), seconds)
    assert sent in ("5", "10")


@pytest.mark.parametrize("value", ["16:9", "9:16", "1:1"])
def test_an_allowed_ratio_passes_unchanged(value: str) -> None:
    """A ratio in the list is sent as given, without a warning."""
    assert transform(rule(to="aspect_ratio", allowed=RATIOS), value) == (value, None)
