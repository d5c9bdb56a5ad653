"""Property tests of the config layer: interpolation, durations, and arbitrary near-valid trees."""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genrouter.backends.settings import parse_duration
from genrouter.config import RouterConfig, TimeoutPolicy, interpolate, load_config_file, parse_config
from genrouter.errors import ConfigError
from genrouter.util import _secrets


@pytest.fixture(autouse=True)
def _forget_fuzzed_secrets() -> Iterator[None]:
    """Fuzzed configs put junk ("memory", "simulated") in credential fields, and a config that
    validates registers them as secrets process-wide: later tests' messages would show "***" for
    those words. Each test here leaves the registry as it found it."""
    saved, pattern = set(_secrets._secrets), _secrets._pattern
    yield
    with _secrets._lock:
        _secrets._secrets.clear()
        _secrets._secrets.update(saved)
        _secrets._pattern = pattern


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Plain YAML-like scalars and trees without any "$".
no_dollar_text = st.text(alphabet=st.characters(exclude_characters="$"), max_size=30)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    no_dollar_text,
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)
var_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True).map(lambda n: f"GRT_{n}")


@PROPERTY_SETTINGS
@given(trees)
def test_interpolation_is_identity_without_dollar(tree: Any) -> None:
    """A tree whose strings hold no $ comes back unchanged."""
    assert interpolate(tree, env={}) == tree


@PROPERTY_SETTINGS
@given(var_names, st.text(alphabet=st.characters(exclude_characters="}$"), max_size=20))
def test_default_is_used_when_variable_unset(name: str, default: str) -> None:
    """${VAR:-d} with VAR unset yields d."""
    assert interpolate(f"${{{name}:-{default}}}", env={}) == default


@PROPERTY_SETTINGS
@given(var_names, st.text(max_size=30))
def test_set_variable_is_substituted_verbatim(name: str, value: str) -> None:
    """${VAR} yields VAR's value exactly, whatever it contains (no second expansion)."""
    assert interpolate(f"${{{name}}}", env={name: value}) == value


@PROPERTY_SETTINGS
@given(st.text(max_size=40))
def test_escaping_every_dollar_round_trips(text: str) -> None:
    """Any text with each $ written as $$ interpolates back to itself."""
    assert interpolate(text.replace("$", "$$"), env={}) == text


@PROPERTY_SETTINGS
@given(st.integers(0, 10**6))
def test_whole_second_and_millisecond_durations_round_trip(n: int) -> None:
    """'Ns' is N seconds and 'Nms' is N/1000 seconds."""
    assert parse_duration(f"{n}s") == n
    assert parse_duration(f"{n}ms") == n / 1000


@PROPERTY_SETTINGS
@given(st.floats(min_value=0.001, max_value=86_400, allow_nan=False).map(lambda x: round(x, 3)))
def test_fractional_durations_validate_to_seconds(seconds: float) -> None:
    """A '<x>s' string in a *_s field validates to x seconds."""
    policy = TimeoutPolicy.model_validate({"attempt_s": f"{seconds}s", "deadline_s": "86400s"})
    assert policy.attempt_s == seconds


# ---------------------------------------------------------------------------
# Arbitrary near-schema trees never crash the loader
# ---------------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "version": 1,
    "providers": {
        "fal": {"api_key": "${FAL_KEY}", "timeout_s": 30},
        "sim": {
            "type": "simulated",
            "latency": {"median_s": 1, "p99_s": "3s"},
            "failure_rate": 0.1,
            "incidents": [{"start_s": 1, "end_s": 2, "failure_rate": 0.5}],
            "price": {"per_image": "0.01"},
            "models": {"flux-dev": {"endpoint": "flux-dev", "price": {"per_image": "0.02"}}},
        },
        "mine": {"type": "pkg.mod:Backend", "extra": [1, 2]},
    },
    "catalogs": ["./extra.yaml"],
    "routing": {
        "default": {
            "strategy": "cost",
            "order": ["sim", "fal"],
            "weights": {"sim": 2, "fal": 1},
            "max_cost_usd": "0.05",
            "retry": {"max_attempts": 2, "initial_backoff_s": 0.1},
            "hedge": {"enabled": True, "delay": "500ms"},
            "timeouts": {"attempt_s": 10, "deadline_s": 20},
            "circuit_breaker": {"failure_threshold": 3, "cooldown_s": 5},
        },
        "models": {"flux-dev": {"strategy": "latency", "retry": {"max_attempts": 1}}},
    },
    "state": {"store": "memory"},
}
ENV = {"FAL_KEY": "fk"}  # shorter than any registered secret, so nothing is redacted globally

JUNK_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1,
    2.5,
    float("nan"),
    float("inf"),
    "",
    "x",
    "5s",
    "-2s",
    "p95",
    "memory",
    "redis://h",
    "${UNSET_GRT_VAR}",
    "${UNSET_GRT_VAR:-3}",
    "${bad-",
    "$$",
    "pkg.mod:Cls",
    "fal",
    "simulated",
    [],
    [1, "a"],
    {},
    {"a": 1},
    {"type": "simulated"},
    {"median_s": 2, "p99_s": 1},
]
# Copies: a mutation later in the same example must never change the shared samples.
JUNK = st.sampled_from(JUNK_VALUES).map(copy.deepcopy)
EXTRA_KEYS = st.sampled_from(["extra", "retyr", "typ", "x-anchor", "base_dir", 7, "models", "type"])


def _containers(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every mapping and list in ``tree`` (the root included)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(tree, dict):
        found.append(path)
        for key, value in tree.items():
            found += _containers(value, (*path, key))
    elif isinstance(tree, list):
        found.append(path)
        for i, value in enumerate(tree):
            found += _containers(value, (*path, i))
    return found


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


@st.composite
def near_schema_trees(draw: st.DrawFn) -> dict[str, Any]:
    """GOOD with a few random mutations: keys dropped, values replaced, keys added."""
    tree = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        container = _at(tree, draw(st.sampled_from(_containers(tree))))
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if isinstance(container, dict):
            keys = list(container)
            if action == "add" or not keys:
                container[draw(EXTRA_KEYS)] = draw(JUNK)
            elif action == "drop":
                del container[draw(st.sampled_from(keys))]
            else:
                container[draw(st.sampled_from(keys))] = draw(JUNK)
        elif container:
            index = draw(st.integers(0, len(container) - 1))
            if action == "drop":
                del container[index]
            else:
                container[index] = draw(JUNK)
        else:
            container.append(draw(JUNK))
    return tree


PROBLEM_PATH = re.compile(r"^(\(top level\)|[^\s:;]+): ")


def _top_keys(tree: dict[Any, Any]) -> set[str]:
    return {str(k) for k in tree} | {"providers"}


def _assert_problems_start_with_key_path(error: ConfigError, tree: dict[Any, Any]) -> None:
    for problem in error.problems:
        match = PROBLEM_PATH.match(problem)
        assert match is not None, problem
        first = re.split(r"[.\[]", match.group(1))[0]
        assert first in _top_keys(tree) or match.group(1).startswith("["), problem


def _outcome(load: Callable[[], RouterConfig]) -> RouterConfig | ConfigError:
    """What loading gives: the config, or the ConfigError (any other exception escapes)."""
    try:
        return load()
    except ConfigError as error:
        return error


@PROPERTY_SETTINGS
@given(near_schema_trees())
def test_near_schema_trees_give_config_or_config_error(tree: dict[str, Any]) -> None:
    """A mutated config yields a RouterConfig or a ConfigError whose lines start with a key path."""
    outcome = _outcome(lambda: parse_config(tree, env=ENV))
    if isinstance(outcome, ConfigError):
        assert outcome.problems
        _assert_problems_start_with_key_path(outcome, tree)
    else:
        assert isinstance(outcome, RouterConfig)


_FILES = Path(tempfile.mkdtemp(prefix="genrouter-config-props-"))


@PROPERTY_SETTINGS
@given(near_schema_trees())
def test_near_schema_files_give_config_or_file_named_error(tree: dict[str, Any]) -> None:
    """A mutated config file yields a RouterConfig or a ConfigError starting with the file name."""
    path = _FILES / "genrouter.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    outcome = _outcome(lambda: load_config_file(path, env=ENV))
    if isinstance(outcome, ConfigError):
        assert str(outcome).startswith(f"{path}: ")
        assert all(problem.startswith(f"{path}: ") for problem in outcome.problems)
    else:
        assert isinstance(outcome, RouterConfig)
