"""Declared workflow inputs: each type's values accepted or refused before submission (properties)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrouter import AsyncRouter, ConfigError, InvalidRequestError
from genrouter.testing import FakeBackend

INPUTS = {
    "flag": "boolean",
    "text": "string",
    "count": {"type": "integer", "minimum": 1, "maximum": 10},
    "scale": "number",
    "photo": "image",
    "extra": "json",
}


def router() -> tuple[AsyncRouter, FakeBackend]:
    backend = FakeBackend(name="gpu")
    entry = {
        "kind": "workflow",
        "endpoint": "wf",
        "inputs": INPUTS,
        "params": {name: f"1.inputs.{name}" for name in INPUTS},
        "price": {"per_run": "0.01"},
    }
    config = {"version": 1, "providers": {"gpu": {"type": "custom", "models": {"wf": entry}}}}
    return AsyncRouter.from_config(config, backends={"gpu": backend}), backend


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(deadline=None, max_examples=50)
@given(value=json_values)
def test_a_json_input_takes_any_json_value(value: Any) -> None:
    """A json input accepts any JSON value."""
    r, _ = router()
    plan = r.explain(model="wf", prompt="p", inputs={"extra": value})
    assert plan.viable


@settings(deadline=None, max_examples=50)
@given(value=st.integers(min_value=1, max_value=10))
def test_an_integer_within_bounds_is_accepted(value: int) -> None:
    """Integers between minimum and maximum pass."""
    r, _ = router()
    assert r.explain(model="wf", prompt="p", inputs={"count": value}).viable


@settings(deadline=None, max_examples=50)
@given(value=st.integers().filter(lambda v: not 1 <= v <= 10) | st.floats() | st.booleans() | st.text())
def test_anything_else_for_a_bounded_integer_is_refused(value: Any) -> None:
    """Out-of-range integers, floats, booleans and strings are refused for a bounded integer."""
    r, _ = router()
    with pytest.raises(InvalidRequestError) as caught:
        r.explain(model="wf", prompt="p", inputs={"count": value})
    assert caught.value.field == "inputs.count"


@settings(deadline=None, max_examples=50)
@given(value=st.floats() | st.integers())
def test_a_number_takes_finite_numbers_only(value: float) -> None:
    """Finite ints and floats are numbers; NaN and infinities are not."""
    r, _ = router()
    if isinstance(value, float) and not math.isfinite(value):
        with pytest.raises(InvalidRequestError, match=r"inputs\.scale"):
            r.explain(model="wf", prompt="p", inputs={"scale": value})
    else:
        assert r.explain(model="wf", prompt="p", inputs={"scale": value}).viable


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("flag", True, 1),
        ("text", "hello", ["hello"]),
        ("photo", Path("fox.png"), "fox.png"),
        ("photo", "https://example.invalid/fox.png", b""),
        ("extra", {"a": [1, 2.5, None]}, {1, 2}),
    ],
)
def test_each_type_accepts_its_values_and_refuses_others(name: str, good: Any, bad: Any) -> None:
    """boolean, string, image (URL, bytes or Path) and json inputs: the right value passes, another fails."""
    r, _ = router()
    assert r.explain(model="wf", prompt="p", inputs={name: good}).viable
    with pytest.raises(InvalidRequestError) as caught:
        r.explain(model="wf", prompt="p", inputs={name: bad})
    assert caught.value.field == f"inputs.{name}"


async def test_the_values_reach_the_backend_as_given() -> None:
    """A valid request reaches the backend with its inputs intact."""
    r, backend = router()
    async with r:
        await r.generate(model="wf", prompt="p", inputs={"flag": False, "count": 3, "extra": {"k": "v"}})
    assert backend.submissions[0].inputs == {"flag": False, "count": 3, "extra": {"k": "v"}}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"type": "text"}, "type"),
        ({"type": "string", "minimum": 1}, "minimum/maximum apply to integer and number"),
        ({"type": "number", "minimum": 2, "maximum": 1}, "minimum 2 > maximum 1"),
        ({"type": "string", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_input_declaration_is_a_config_error(spec: dict[str, Any], says: str) -> None:
    """Unknown types, bounds on non-numbers, inverted bounds and unknown keys are refused."""
    entry = {"kind": "workflow", "endpoint": "wf", "inputs": {"x": spec}}
    config = {"version": 1, "providers": {"gpu": {"type": "custom", "models": {"wf": entry}}}}
    with pytest.raises(ConfigError, match=says):
        AsyncRouter.from_config(config, backends={"gpu": FakeBackend(name="gpu")})


def test_an_input_name_must_be_an_identifier() -> None:
    """Input names are letters, digits, _ and -, starting with a letter or _."""
    entry = {"kind": "workflow", "endpoint": "wf", "inputs": {"6.inputs.text": "string"}}
    config = {"version": 1, "providers": {"gpu": {"type": "custom", "models": {"wf": entry}}}}
    with pytest.raises(ConfigError, match="input name"):
        AsyncRouter.from_config(config, backends={"gpu": FakeBackend(name="gpu")})
