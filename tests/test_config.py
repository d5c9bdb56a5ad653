"""The config layer: YAML loading, interpolation, validation messages, discovery, JSON Schema."""

from __future__ import annotations

import copy
import json
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from genrouter.backends.settings import (
    CustomSettings,
    FalSettings,
    ImportPathSettings,
    ModalSettings,
    ReplicateSettings,
    SimulatedSettings,
)
from genrouter.config import (
    CONFIG_ENV,
    RetryPolicy,
    RoutePolicy,
    RouterConfig,
    config_json_schema,
    discover_config,
    dump_schema,
    environment_config,
    format_validation_errors,
    interpolate,
    load_config,
    load_config_file,
    parse_config,
    render_path,
)
from genrouter.errors import ConfigError
from genrouter.util._secrets import scrub

SIM: dict[str, Any] = {"type": "simulated", "latency": {"median_s": 1, "p99_s": 2}}


def cfg(**top: Any) -> dict[str, Any]:
    """A config with one simulated provider ``sim`` and a ``fal`` provider, updated by ``top``."""
    raw: dict[str, Any] = {"version": 1, "providers": {"sim": copy.deepcopy(SIM), "fal": {}}}
    raw.update(top)
    return raw


def sim(**settings: Any) -> dict[str, Any]:
    """A config whose only provider is ``sim``, a simulated provider with ``settings``."""
    return {"version": 1, "providers": {"sim": {"type": "simulated", **settings}}}


def default(**policy: Any) -> dict[str, Any]:
    """A config with ``routing.default`` set to ``policy``."""
    return cfg(routing={"default": policy})


def inline_model(**entry: Any) -> dict[str, Any]:
    """A config whose ``sim`` provider declares ``flux-dev`` inline as ``entry``."""
    return sim(models={"flux-dev": entry})


CONTRACT_EXAMPLE = """\
version: 1
providers:
  fal:       {api_key: "${FAL_KEY}"}
  replicate: {api_token: "${REPLICATE_API_TOKEN}"}
  modal:     {app: genrouter-diffusion, cls: Diffusion, gpu: H100}
  local-sim: {type: simulated, latency: {median_s: 1.5, p99_s: 5}, failure_rate: 0.02,
              price: {per_image: "0.01"}}
catalogs: [./my-models.yaml]
routing:
  default:
    strategy: balanced
    order: [fal, replicate, modal]
    weights: {fal: 3, replicate: 1}
    max_cost_usd: 0.05
    latency_slo_s: 10
    retry: {max_attempts: 3, initial_backoff_s: 0.5, max_backoff_s: 8, jitter: 0.2}
    fallback: {enabled: true, max_providers: 3}
    hedge: {enabled: false, delay: p95, max_extra_fraction: 0.05}
    timeouts: {attempt_s: 120, deadline_s: 300}
    circuit_breaker: {failure_threshold: 5, cooldown_s: 30}
  models:
    flux-dev: {strategy: latency}
state: {store: memory}
"""

CONTRACT_ENV = {"FAL_KEY": "fal-test-key-0001", "REPLICATE_API_TOKEN": "r8-test-token-0001"}

# (config, env, key path the problem line starts with, further text the message must hold)
BAD_CONFIGS = [
    pytest.param(cfg(versoin=1), {}, "versoin", ["did you mean 'version'?"], id="typo-top-level"),
    pytest.param(
        sim(failure_rat=0.1),
        {},
        "providers.sim.failure_rat",
        ["did you mean 'failure_rate'?"],
        id="typo-simulated-provider",
    ),
    pytest.param(
        cfg(providers={"fal": {"api_ky": "x"}}),
        {},
        "providers.fal.api_ky",
        ["did you mean 'api_key'?"],
        id="typo-fal-provider",
    ),
    pytest.param(
        default(stratgy="cost"),
        {},
        "routing.default.stratgy",
        ["did you mean 'strategy'?"],
        id="typo-routing-default",
    ),
    pytest.param(
        default(retry={"max_attempt": 2}),
        {},
        "routing.default.retry.max_attempt",
        ["did you mean 'max_attempts'?"],
        id="typo-retry",
    ),
    pytest.param(
        default(hedge={"dely": 2}),
        {},
        "routing.default.hedge.dely",
        ["did you mean 'delay'?"],
        id="typo-hedge",
    ),
    pytest.param(
        default(timeouts={"attempt": 2}),
        {},
        "routing.default.timeouts.attempt",
        ["did you mean 'attempt_s'?"],
        id="typo-timeouts",
    ),
    pytest.param(
        default(circuit_breaker={"cooldown": 2}),
        {},
        "routing.default.circuit_breaker.cooldown",
        ["did you mean 'cooldown_s'?"],
        id="typo-circuit-breaker",
    ),
    pytest.param(
        cfg(routing={"models": {"flux-dev": {"retry": {"max_atempts": 1}}}}),
        {},
        "routing.models.flux-dev.retry.max_atempts",
        ["did you mean 'max_attempts'?"],
        id="typo-model-override-retry",
    ),
    pytest.param(cfg(state={"stor": "memory"}), {}, "state.stor", ["did you mean 'store'?"], id="typo-state"),
    pytest.param(
        inline_model(endpont="flux-dev"),
        {},
        "providers.sim.models.flux-dev.endpont",
        ["did you mean 'endpoint'?"],
        id="typo-inline-model-entry",
    ),
    pytest.param(
        inline_model(endpoint="flux-dev", price={"per_imag": "0.01"}),
        {},
        "providers.sim.models.flux-dev.price.per_imag",
        ["did you mean 'per_image'?"],
        id="typo-inline-price",
    ),
    pytest.param(
        default(zzzzzz=1),
        {},
        "routing.default.zzzzzz",
        ["valid keys are strategy, order, weights"],
        id="unknown-key-lists-valid-keys",
    ),
    pytest.param(
        default(retry={"max_attempts": "many"}),
        {},
        "routing.default.retry.max_attempts",
        ["expected a whole number", "'many'"],
        id="wrong-type-string-for-int",
    ),
    pytest.param(
        sim(failure_rate=True),
        {},
        "providers.sim.failure_rate",
        ["not true/false"],
        id="wrong-type-bool-for-number",
    ),
    pytest.param(cfg(routing="fast"), {}, "routing", ["expected a mapping"], id="wrong-type-routing-string"),
    pytest.param(cfg(catalogs=[3]), {}, "catalogs[0]", ["expected a string"], id="wrong-type-catalog-entry"),
    pytest.param(
        cfg(providers={"sim": "fal"}),
        {},
        "providers.sim",
        ["expected a mapping of provider settings"],
        id="wrong-type-provider-section",
    ),
    pytest.param(
        default(retry={"max_attempts": 0}),
        {},
        "routing.default.retry.max_attempts",
        ["greater than or equal to 1", "(got 0)"],
        id="max-attempts-zero",
    ),
    pytest.param(
        sim(failure_rate=1.5),
        {},
        "providers.sim.failure_rate",
        ["less than or equal to 1"],
        id="failure-rate-above-one",
    ),
    pytest.param(
        sim(rate_limit_rate=-0.1),
        {},
        "providers.sim.rate_limit_rate",
        ["greater than or equal to 0"],
        id="rate-limit-rate-negative",
    ),
    pytest.param(
        sim(hang_rate=float("nan")),
        {},
        "providers.sim.hang_rate",
        ["finite"],
        id="hang-rate-nan",
    ),
    pytest.param(
        default(strategy="latncy"),
        {},
        "routing.default.strategy",
        ["did you mean 'latency'?"],
        id="strategy-literal-suggestion",
    ),
    pytest.param(
        cfg(providers={"x": {"type": "falx"}}),
        {},
        "providers.x.type",
        ["'falx'", "did you mean 'fal'?"],
        id="unknown-provider-type",
    ),
    pytest.param(
        cfg(providers={"my-sim": {"failure_rate": 0.1}}),
        {},
        "providers.my-sim.type",
        ["no type: given", "'pkg.module:Class'"],
        id="missing-type-for-non-type-key",
    ),
    pytest.param(
        cfg(providers={"x": {"type": "pkg mod:Cls"}}),
        {},
        "providers.x.type",
        ["import path"],
        id="malformed-import-path-type",
    ),
    pytest.param(
        default(order=["sim", "fall"]),
        {},
        "routing.default.order[1]",
        ["unknown provider 'fall'", "did you mean 'fal'?"],
        id="order-unknown-provider",
    ),
    pytest.param(
        default(weights={"simm": 1}),
        {},
        "routing.default.weights.simm",
        ["unknown provider 'simm'", "did you mean 'sim'?"],
        id="weights-unknown-provider",
    ),
    pytest.param(
        cfg(routing={"models": {"flux-dev": {"order": ["zzz"]}}}),
        {},
        "routing.models.flux-dev.order[0]",
        ["unknown provider 'zzz'", "configured: sim, fal"],
        id="model-override-order-unknown-provider",
    ),
    pytest.param(
        default(order=["sim", "sim"]),
        {},
        "routing.default.order[1]",
        ["listed twice"],
        id="order-lists-provider-twice",
    ),
    pytest.param(
        default(weights={"sim": -1}),
        {},
        "routing.default.weights.sim",
        ["greater than 0"],
        id="weights-negative",
    ),
    pytest.param(
        default(max_cost_usd=-1),
        {},
        "routing.default.max_cost_usd",
        ["greater than or equal to 0"],
        id="max-cost-negative",
    ),
    pytest.param(
        sim(latency={"median_s": 3, "p99_s": 2}),
        {},
        "providers.sim.latency.p99_s",
        ["at least median_s 3"],
        id="p99-below-median",
    ),
    pytest.param(
        sim(latency={"median_s": 3}),
        {},
        "providers.sim.latency.p99_s",
        ["required key is missing"],
        id="latency-without-p99",
    ),
    pytest.param(
        sim(latency=2),
        {},
        "providers.sim.latency",
        ["expected 0 (instant) or a mapping"],
        id="latency-bare-number",
    ),
    pytest.param(
        default(hedge={"delay": "soon"}),
        {},
        "routing.default.hedge.delay",
        ["expected 'p95' or seconds", "'soon'"],
        id="hedge-delay-bad-string",
    ),
    pytest.param(
        default(hedge={"delay": -1}),
        {},
        "routing.default.hedge.delay",
        ["greater than 0"],
        id="hedge-delay-negative",
    ),
    pytest.param(
        default(timeouts={"deadline_s": "forever"}),
        {},
        "routing.default.timeouts.deadline_s",
        ["'5s', '500ms'"],
        id="duration-bad-string",
    ),
    pytest.param(
        default(retry={"initial_backoff_s": 10, "max_backoff_s": 2}),
        {},
        "routing.default.retry.initial_backoff_s",
        ["exceeds max_backoff_s 2"],
        id="initial-backoff-above-max",
    ),
    pytest.param(
        cfg(state={"store": "postgres://db"}),
        {},
        "state.store",
        ["redis://", "'postgres://db'"],
        id="store-not-memory-or-redis",
    ),
    pytest.param(cfg(version=2), {}, "version", ["only version 1"], id="version-2"),
    pytest.param(cfg(providers={}), {}, "providers", ["at least one provider"], id="no-providers"),
    pytest.param({"version": 1}, {}, "providers", ["required key is missing"], id="providers-missing"),
    pytest.param(
        sim(price={"per_image": "0.01", "per_video": "0.02"}),
        {},
        "providers.sim.price",
        ["exactly one unit", "per_image, per_video"],
        id="price-two-units",
    ),
    pytest.param(
        sim(price={"source": "docs"}),
        {},
        "providers.sim.price",
        ["exactly one unit", "got none"],
        id="price-no-unit",
    ),
    pytest.param(
        sim(price={"per_image": "-0.01"}),
        {},
        "providers.sim.price.per_image",
        ["greater than or equal to 0"],
        id="price-negative",
    ),
    pytest.param(
        cfg(providers={"fal": {"api_key": "${GENROUTER_TEST_UNSET_KEY}"}}),
        {},
        "providers.fal.api_key",
        ["GENROUTER_TEST_UNSET_KEY is not set", "${GENROUTER_TEST_UNSET_KEY:-}"],
        id="unset-env-var",
    ),
    pytest.param(
        cfg(catalogs=["${not-a-name}"]),
        {},
        "catalogs[0]",
        ["malformed ${...}"],
        id="malformed-interpolation",
    ),
    pytest.param(
        cfg(providers={"fal": {"base_url": "ftp://example.com"}}),
        {},
        "providers.fal.base_url",
        ["http:// or https://"],
        id="base-url-not-http",
    ),
    pytest.param(
        sim(incidents=[{"start_s": 10, "end_s": 5, "failure_rate": 1}]),
        {},
        "providers.sim.incidents[0].end_s",
        ["after start_s 10"],
        id="incident-ends-before-start",
    ),
    pytest.param(
        sim(incidents=[{"start_s": 1, "end_s": 5}]),
        {},
        "providers.sim.incidents[0]",
        ["changes nothing"],
        id="incident-changes-nothing",
    ),
    pytest.param(
        inline_model(endpoint="x", capabilities=["text-to-imag"]),
        {},
        "providers.sim.models.flux-dev.capabilities[0]",
        ["did you mean 'text-to-image'?"],
        id="capability-suggestion",
    ),
    pytest.param(
        cfg(providers={"replicate": {"prefer_wait_s": 100}}),
        {},
        "providers.replicate.prefer_wait_s",
        ["less than or equal to 60"],
        id="prefer-wait-out-of-range",
    ),
    pytest.param(cfg(providers={1: SIM}), {}, "providers[1]", ["not a string"], id="non-string-provider-key"),
    pytest.param(
        cfg(base_dir="/elsewhere"),
        {},
        "base_dir",
        ["unknown key 'base_dir'"],
        id="base-dir-is-not-a-config-key",
    ),
]

PYDANTIC_INTERNALS = re.compile(
    r"function-|literal\[|constrained-|tagged-union|\[key\]|Settings|Policy\b|"
    r"RouterConfig|RoutingConfig|LatencySpec|Input should be a valid dictionary|errors\.pydantic"
)


def _config_error(raw: Any, env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env=env)
    return caught.value


@pytest.mark.parametrize(("raw", "env", "path", "expected"), BAD_CONFIGS)
def test_bad_config_error_names_key_path_and_fix(
    raw: Any, env: dict[str, str], path: str, expected: list[str]
) -> None:
    """Each bad config raises ConfigError whose problem line starts with the key path."""
    error = _config_error(raw, env)
    assert any(p.startswith(f"{path}: ") for p in error.problems), error.problems
    for text in expected:
        assert text in str(error)


@pytest.mark.parametrize(("raw", "env", "path", "expected"), BAD_CONFIGS)
def test_bad_config_error_has_no_pydantic_internals_or_duplicates(
    raw: Any, env: dict[str, str], path: str, expected: list[str]
) -> None:
    """Problem lines show the user's keys only, never pydantic's labels, and never repeat."""
    error = _config_error(raw, env)
    assert not PYDANTIC_INTERNALS.search(str(error)), str(error)
    assert len(set(error.problems)) == len(error.problems)


def test_bad_config_table_is_large_and_ids_unique() -> None:
    """The bad-config table covers at least 25 distinct cases."""
    ids = [case.id for case in BAD_CONFIGS]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


def test_key_path_attribute_is_first_problem_path() -> None:
    """ConfigError.key_path names the first problem's key path."""
    error = _config_error(default(retry={"max_attempts": 0}), {})
    assert error.key_path == "routing.default.retry.max_attempts"


def test_several_problems_are_joined_and_listed() -> None:
    """Every problem is reported at once: joined with '; ' and listed in .problems."""
    raw = cfg(versoin=1, state={"store": "nowhere"})
    error = _config_error(raw, {})
    assert len(error.problems) == 2
    assert str(error) == "; ".join(error.problems)


def test_every_unset_variable_is_reported() -> None:
    """Two unset ${VAR}s give two problems, each naming its variable and key path."""
    raw = cfg(catalogs=["${GENROUTER_TEST_A}", "${GENROUTER_TEST_B}"])
    error = _config_error(raw, {})
    assert error.problems[0].startswith("catalogs[0]: environment variable GENROUTER_TEST_A")
    assert error.problems[1].startswith("catalogs[1]: environment variable GENROUTER_TEST_B")


@pytest.mark.parametrize(
    ("bad_default", "path"),
    [
        ({"retry": {"max_attempts": 0}}, "routing.default.retry.max_attempts"),
        ({"retry": {"max_atempts": 1}}, "routing.default.retry.max_atempts"),
        ({"order": ["nope"]}, "routing.default.order[0]"),
        ({"timeouts": {"attempt_s": 0}}, "routing.default.timeouts.attempt_s"),
    ],
)
def test_problem_in_default_is_reported_once_not_per_model(bad_default: dict[str, Any], path: str) -> None:
    """A bad default merged into model overrides is reported under routing.default only."""
    raw = cfg(
        routing={
            "default": bad_default,
            "models": {"flux-dev": {"retry": {"jitter": 0.1}}, "sdxl": {"strategy": "cost"}},
        }
    )
    error = _config_error(raw, {})
    assert [p.split(": ")[0] for p in error.problems] == [path]


def test_format_validation_errors_works_for_any_model() -> None:
    """format_validation_errors gives key paths and suggestions for any root model."""
    with pytest.raises(ValidationError) as caught:
        RetryPolicy.model_validate({"max_attemps": 2})
    problems = format_validation_errors(caught.value, root=RetryPolicy, prefix=("retry",))
    assert problems == ["retry.max_attemps: unknown key 'max_attemps'; did you mean 'max_attempts'?"]


@pytest.mark.parametrize(
    ("loc", "rendered"),
    [
        (("routing", "default", "retry"), "routing.default.retry"),
        (("catalogs", 0), "catalogs[0]"),
        (("providers", "sim", "incidents", 2, "end_s"), "providers.sim.incidents[2].end_s"),
        ((), "(top level)"),
    ],
)
def test_render_path(loc: tuple[Any, ...], rendered: str) -> None:
    """Key paths render with dots, and list indexes in brackets."""
    assert render_path(loc) == rendered


# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------


def _unique_secret() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


def test_wrong_typed_secret_is_masked_in_error() -> None:
    """A non-string api_key value is shown as *** in the error, never as itself."""
    error = _config_error(cfg(providers={"fal": {"api_key": 98765432123456789}}), {})
    assert "***" in str(error)
    assert "98765432123456789" not in str(error)


def test_interpolated_secret_never_appears_in_config_error() -> None:
    """A secret interpolated from the environment is redacted even where it lands in a bad value."""
    secret = _unique_secret()
    raw = cfg(providers={"fal": {"api_key": "${FAL_KEY}", "timeout_s": "${FAL_KEY}"}})
    error = _config_error(raw, {"FAL_KEY": secret})
    assert "providers.fal.timeout_s" in str(error)
    assert secret not in str(error)
    assert all(secret not in p for p in error.problems)


def test_interpolated_secret_is_registered_for_redaction() -> None:
    """A value interpolated into a secret-looking key is scrubbed from any later text."""
    secret = _unique_secret()
    parse_config(cfg(providers={"fal": {"api_key": "${FAL_KEY}"}}), env={"FAL_KEY": secret})
    assert secret not in scrub(f"provider said: bad key {secret}")


def test_literal_secret_is_registered_for_redaction() -> None:
    """A secret written literally in the config is scrubbed once the config is loaded."""
    secret = _unique_secret()
    parse_config(cfg(providers={"replicate": {"api_token": secret}}), env={})
    assert secret not in scrub(f"echo {secret}")


def test_import_path_extra_secret_is_registered_for_redaction() -> None:
    """Secret-looking extra keys of an import-path provider are redacted too."""
    secret = _unique_secret()
    parse_config(cfg(providers={"x": {"type": "pkg.mod:Backend", "api_key": secret}}), env={})
    assert secret not in scrub(secret)


def test_secrets_are_secretstr_hidden_from_repr_str_and_json() -> None:
    """Secrets load as SecretStr and never show in repr, str or model_dump_json."""
    secret = _unique_secret()
    config = parse_config(cfg(providers={"fal": {"api_key": secret}}), env={})
    fal = config.providers["fal"]
    assert isinstance(fal, FalSettings)
    assert isinstance(fal.api_key, SecretStr)
    assert fal.api_key.get_secret_value() == secret
    for text in (repr(config), str(config), config.model_dump_json()):
        assert secret not in text


# ---------------------------------------------------------------------------
# Good configs
# ---------------------------------------------------------------------------


def test_contract_example_parses() -> None:
    """The example config of the architecture contract loads as written."""
    import yaml

    config = parse_config(yaml.safe_load(CONTRACT_EXAMPLE), env=CONTRACT_ENV)
    assert list(config.providers) == ["fal", "replicate", "modal", "local-sim"]
    assert config.routing.default.weights == {"fal": 3.0, "replicate": 1.0}
    assert config.routing.default.max_cost_usd == Decimal("0.05")
    assert config.routing.policy_for("flux-dev").strategy == "latency"


def test_minimal_config_gets_documented_defaults() -> None:
    """Only providers given: every routing and state default is the documented one."""
    config = parse_config({"providers": {"sim": {"type": "simulated"}}}, env={})
    policy = config.routing.default
    assert config.version == 1
    assert policy.strategy == "balanced"
    assert (policy.order, policy.weights, policy.max_cost_usd) == (None, None, None)
    assert policy.retry == RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=8, jitter=0.2)
    assert (policy.fallback.enabled, policy.fallback.max_providers) == (True, 3)
    assert (policy.hedge.enabled, policy.hedge.delay, policy.hedge.max_extra_fraction) == (
        False,
        "p95",
        0.05,
    )
    assert (policy.timeouts.attempt_s, policy.timeouts.deadline_s) == (120.0, 300.0)
    assert (policy.circuit_breaker.failure_threshold, policy.circuit_breaker.cooldown_s) == (5, 30)
    assert config.state.store == "memory"
    assert config.catalogs == []


@pytest.mark.parametrize(
    ("key", "settings_class"),
    [
        ("fal", FalSettings),
        ("replicate", ReplicateSettings),
        ("modal", ModalSettings),
        ("simulated", SimulatedSettings),
        ("custom", CustomSettings),
    ],
)
def test_provider_type_defaults_to_its_key(key: str, settings_class: type) -> None:
    """A section keyed by a provider type needs no type: of its own."""
    config = parse_config({"providers": {key: None}}, env={})
    assert type(config.providers[key]) is settings_class
    assert config.providers[key].type == key


def test_any_key_can_name_a_provider_of_any_type() -> None:
    """fal-eu: {type: fal} and fal: {type: replicate} are both valid."""
    config = parse_config(
        {"providers": {"fal-eu": {"type": "fal", "base_url": "https://eu.example/"}, "fal": {}}},
        env={},
    )
    assert isinstance(config.providers["fal-eu"], FalSettings)
    assert config.providers["fal-eu"].base_url == "https://eu.example"


def test_import_path_type_allows_extra_keys() -> None:
    """An import-path provider keeps its extra settings for the backend class."""
    config = parse_config(
        {"providers": {"mine": {"type": "my_pkg.backends:MyBackend", "region": "eu", "n": 2}}},
        env={},
    )
    section = config.providers["mine"]
    assert isinstance(section, ImportPathSettings)
    assert section.model_dump()["region"] == "eu"


def test_router_config_accepts_sections_without_type_directly() -> None:
    """RouterConfig.model_validate applies the key-as-type default too."""
    config = RouterConfig.model_validate({"providers": {"fal": {}}})
    assert isinstance(config.providers["fal"], FalSettings)


def test_model_override_deep_merges_over_default() -> None:
    """routing.models.<m> changes only the keys it sets; the rest comes from the default."""
    config = parse_config(
        cfg(
            routing={
                "default": {"strategy": "cost", "retry": {"max_attempts": 5, "jitter": 0.3}},
                "models": {"flux-dev": {"retry": {"max_attempts": 1}}},
            }
        ),
        env={},
    )
    policy = config.routing.policy_for("flux-dev")
    assert policy.strategy == "cost"
    assert (policy.retry.max_attempts, policy.retry.jitter) == (1, 0.3)
    assert config.routing.default.retry.max_attempts == 5


def test_model_override_replaces_order_and_weights_whole() -> None:
    """order and weights in an override replace the default's instead of merging into them."""
    config = parse_config(
        cfg(
            routing={
                "default": {"weights": {"sim": 3, "fal": 1}, "order": ["sim", "fal"]},
                "models": {"flux-dev": {"weights": {"fal": 1}, "order": ["fal"]}},
            }
        ),
        env={},
    )
    policy = config.routing.policy_for("flux-dev")
    assert policy.weights == {"fal": 1.0}
    assert policy.order == ["fal"]


def test_empty_model_override_is_the_default() -> None:
    """routing.models.<m>: null (an empty YAML entry) means the default policy."""
    config = parse_config(cfg(routing={"models": {"flux-dev": None}}), env={})
    assert config.routing.policy_for("flux-dev") == config.routing.default


def test_policy_for_unlisted_model_is_default() -> None:
    """A model without an override routes by the default policy."""
    config = parse_config(cfg(), env={})
    assert config.routing.policy_for("sdxl") is config.routing.default


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(2, 2.0), (0.25, 0.25), ("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("7", 7.0)],
)
def test_hedge_delay_takes_seconds_or_durations(written: Any, seconds: float) -> None:
    """hedge.delay accepts a number of seconds or a duration string."""
    config = parse_config(default(hedge={"delay": written}), env={})
    assert config.routing.default.hedge.delay == seconds


def test_hedge_delay_takes_p95() -> None:
    """hedge.delay: p95 stays the string p95."""
    config = parse_config(default(hedge={"delay": "p95"}), env={})
    assert config.routing.default.hedge.delay == "p95"


def test_seconds_fields_take_duration_strings() -> None:
    """Every *_s field accepts '500ms', '5s', '2m' as well as numbers."""
    config = parse_config(
        cfg(
            routing={"default": {"timeouts": {"attempt_s": "90s", "deadline_s": "5m"}}},
            providers={"sim": {"type": "simulated", "latency": {"median_s": "500ms", "p99_s": 2}}},
        ),
        env={},
    )
    assert config.routing.default.timeouts.attempt_s == 90.0
    assert config.routing.default.timeouts.deadline_s == 300.0
    latency = config.providers["sim"].latency  # type: ignore[union-attr]
    assert latency is not None
    assert latency.median_s == 0.5


@pytest.mark.parametrize("instant", [0, 0.0, "0", "0s", None])
def test_simulated_latency_zero_means_instant(instant: Any) -> None:
    """latency: 0 (or omitted) makes a simulated provider instant."""
    config = parse_config(sim(latency=instant), env={})
    assert config.providers["sim"].latency is None  # type: ignore[union-attr]


def test_simulated_bare_price_is_per_image() -> None:
    """price: "0.01" on a simulated provider is a per-image price."""
    config = parse_config(sim(price="0.01"), env={})
    price = config.providers["sim"].price  # type: ignore[union-attr]
    assert price is not None
    assert price.per_image == Decimal("0.01")


@pytest.mark.parametrize("store", ["memory", "redis://127.0.0.1:6379/0", "rediss://cache:6380"])
def test_state_store_takes_memory_or_redis_url(store: str) -> None:
    """state.store is memory or a redis:// (or rediss://) URL."""
    assert parse_config(cfg(state={"store": store}), env={}).state.store == store


def test_inline_models_are_catalog_entries() -> None:
    """providers.<x>.models entries parse in the catalog format with exact prices."""
    config = parse_config(inline_model(endpoint="fal-ai/flux/dev", price={"per_megapixel": 0.025}), env={})
    entry = config.providers["sim"].models["flux-dev"]
    assert entry.endpoint == "fal-ai/flux/dev"
    assert entry.price is not None
    assert entry.price.per_megapixel == Decimal("0.025")


def test_route_policy_keeps_money_exact() -> None:
    """max_cost_usd written as a YAML float is the exact decimal written."""
    policy = RoutePolicy.model_validate({"max_cost_usd": 0.1})
    assert policy.max_cost_usd == Decimal("0.1")


# ---------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------


def test_interpolation_uses_default_when_variable_unset() -> None:
    """${VAR:-default} gives the default when VAR is unset."""
    assert interpolate({"a": "${GENROUTER_TEST_X:-fallback}"}, env={}) == {"a": "fallback"}


def test_interpolation_uses_default_when_variable_empty() -> None:
    """${VAR:-default} gives the default when VAR is set but empty."""
    assert interpolate("${X:-d}", env={"X": ""}) == "d"


def test_interpolation_prefers_set_variable() -> None:
    """${VAR:-default} gives VAR's value when it is set."""
    assert interpolate("${X:-d}/path", env={"X": "value"}) == "value/path"


def test_optional_variable_is_empty_string() -> None:
    """${VAR:-} makes a variable optional: unset gives ''."""
    assert interpolate("${GENROUTER_TEST_UNSET:-}", env={}) == ""


def test_double_dollar_is_literal_dollar() -> None:
    """$$ is a literal $, and $${X} is the literal text ${X}."""
    assert interpolate("cost $$5 and $${X}", env={"X": "no"}) == "cost $5 and ${X}"


def test_lone_dollar_is_kept() -> None:
    """A $ not followed by { or $ is plain text."""
    assert interpolate("price: 5$ or $PATH", env={"PATH": "x"}) == "price: 5$ or $PATH"


def test_interpolation_applies_to_values_not_yaml_text() -> None:
    """A variable's value is never parsed as YAML, and keys are not interpolated."""
    env = {"V": "a: [1, 2]\n- b"}
    assert interpolate({"${V}": ["${V}", 3, None, True]}, env=env) == {
        "${V}": ["a: [1, 2]\n- b", 3, None, True]
    }


def test_interpolated_values_are_not_interpolated_again() -> None:
    """A value containing ${...} is substituted verbatim, not expanded a second time."""
    assert interpolate("${A}", env={"A": "${B}", "B": "no"}) == "${B}"


def test_interpolated_number_string_validates_as_number() -> None:
    """${VAR:-3} in a number field validates as the number 3."""
    config = parse_config(default(retry={"max_attempts": "${GENROUTER_TEST_N:-4}"}), env={})
    assert config.routing.default.retry.max_attempts == 4


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    """Invalid YAML raises ConfigError naming the file, line and column."""
    path = _write(tmp_path / "bad.yaml", "version: 1\nproviders:\n  sim: [type: simulated\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML at line 4, column 1"):
        load_config_file(path)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    """A key given twice in one mapping is an error naming its line."""
    text = "providers:\n  sim: {type: simulated}\n  sim: {type: simulated, seed: 2}\n"
    path = _write(tmp_path / "dup.yaml", text)
    with pytest.raises(ConfigError, match=r"line 3, column 3: found duplicate key 'sim'"):
        load_config_file(path)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    """Python object tags are rejected: the file is loaded with the safe loader."""
    text = "providers: !!python/object/apply:os.getcwd []\n"
    path = _write(tmp_path / "unsafe.yaml", text)
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config_file(path)


def test_yaml_alias_expansion_bomb_is_an_error(tmp_path: Path) -> None:
    """Aliases that expand to millions of values stop with a ConfigError, not a hang."""
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, prev in zip("bcdefg", "abcdef", strict=True):
        rows.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    path = _write(tmp_path / "bomb.yaml", "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load_config_file(path)


def test_deeply_nested_yaml_is_an_error(tmp_path: Path) -> None:
    """Absurdly deep nesting is a ConfigError, never a RecursionError."""
    path = _write(tmp_path / "deep.yaml", "x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config_file(path)


def test_yaml_merge_keys_and_x_anchors_work(tmp_path: Path) -> None:
    """Top-level x- keys hold anchors, and << merges may override merged keys."""
    text = (
        "x-sim: &sim {type: simulated, seed: 1, failure_rate: 0.1}\n"
        "providers:\n  a: *sim\n  b: {<<: *sim, seed: 2}\n"
    )
    config = load_config_file(_write(tmp_path / "anchors.yaml", text))
    assert config.providers["b"].seed == 2  # type: ignore[union-attr]
    assert config.providers["a"].seed == 1  # type: ignore[union-attr]


def test_missing_file_error_names_path(tmp_path: Path) -> None:
    """A config path that does not exist raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file does not exist"):
        load_config_file(tmp_path / "nope.yaml")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    """An empty config file says what it needs."""
    with pytest.raises(ConfigError, match="config is empty"):
        load_config_file(_write(tmp_path / "empty.yaml", "# nothing\n"))


def test_file_problems_start_with_file_name(tmp_path: Path) -> None:
    """Problems from a file start with its path, and key_path still names the key."""
    path = _write(tmp_path / "g.yaml", "providers: {sim: {type: simulated, seed: x}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert str(caught.value).startswith(f"{path}: providers.sim.seed: ")
    assert caught.value.problems[0].startswith(f"{path}: providers.sim.seed: ")
    assert caught.value.key_path == "providers.sim.seed"


def test_catalog_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    """Relative catalogs resolve against the config file's folder; absolute ones stay."""
    absolute = tmp_path / "abs.yaml"
    text = f"providers: {{sim: {{type: simulated}}}}\ncatalogs: [./my.yaml, {absolute}]\n"
    config = load_config_file(_write(tmp_path / "conf" / "genrouter.yaml", text))
    assert config.catalog_paths() == [(tmp_path / "conf" / "my.yaml").resolve(), absolute]


def test_catalog_paths_of_a_dict_config_resolve_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config given as a dict has no folder: relative catalogs resolve against the cwd."""
    monkeypatch.chdir(tmp_path)
    config = parse_config(cfg(catalogs=["my.yaml"]), env={})
    assert config.catalog_paths() == [tmp_path / "my.yaml"]


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------

SIM_YAML = "providers: {{{name}: {{type: simulated}}}}\n"


def _config_file(folder: Path, provider: str, name: str = "genrouter.yaml") -> Path:
    return _write(folder / name, SIM_YAML.format(name=provider))


def test_discovery_prefers_explicit_path(tmp_path: Path) -> None:
    """An explicit path wins over GENROUTER_CONFIG and ./genrouter.yaml."""
    _config_file(tmp_path, "from-cwd")
    named = _config_file(tmp_path, "from-env", "env.yaml")
    explicit = _config_file(tmp_path, "explicit", "explicit.yaml")
    config = load_config(explicit, env={CONFIG_ENV: str(named)}, cwd=tmp_path)
    assert list(config.providers) == ["explicit"]


def test_discovery_uses_env_var_before_cwd_file(tmp_path: Path) -> None:
    """GENROUTER_CONFIG wins over ./genrouter.yaml and credentials."""
    _config_file(tmp_path, "from-cwd")
    named = _config_file(tmp_path, "from-env", "env.yaml")
    config = discover_config(env={CONFIG_ENV: str(named), "FAL_KEY": "k"}, cwd=tmp_path)
    assert list(config.providers) == ["from-env"]


def test_discovery_env_var_relative_path_uses_cwd(tmp_path: Path) -> None:
    """A relative GENROUTER_CONFIG resolves against the (injected) working folder."""
    _config_file(tmp_path / "conf", "relative", "r.yaml")
    config = discover_config(env={CONFIG_ENV: "conf/r.yaml"}, cwd=tmp_path)
    assert list(config.providers) == ["relative"]


def test_discovery_env_var_pointing_nowhere_is_an_error(tmp_path: Path) -> None:
    """GENROUTER_CONFIG naming a missing file is an error, not a silent fallback."""
    _config_file(tmp_path, "from-cwd")
    with pytest.raises(ConfigError, match=r"GENROUTER_CONFIG=missing\.yaml: no such config file"):
        discover_config(env={CONFIG_ENV: "missing.yaml"}, cwd=tmp_path)


def test_discovery_uses_cwd_file_before_credentials(tmp_path: Path) -> None:
    """./genrouter.yaml wins over credentials in the environment."""
    _config_file(tmp_path, "from-cwd")
    config = discover_config(env={"FAL_KEY": "k"}, cwd=tmp_path)
    assert list(config.providers) == ["from-cwd"]


@pytest.mark.parametrize(
    ("env", "providers"),
    [
        ({"FAL_KEY": "fk-1"}, ["fal"]),
        ({"FAL_KEY_ID": "id", "FAL_KEY_SECRET": "sec"}, ["fal"]),
        ({"REPLICATE_API_TOKEN": "r8"}, ["replicate"]),
        ({"MODAL_TOKEN_ID": "ak", "MODAL_TOKEN_SECRET": "as"}, ["modal"]),
        (
            {"FAL_KEY": "a", "REPLICATE_API_TOKEN": "b", "MODAL_TOKEN_ID": "c", "MODAL_TOKEN_SECRET": "d"},
            ["fal", "replicate", "modal"],
        ),
    ],
)
def test_discovery_falls_back_to_credentials(
    tmp_path: Path, env: dict[str, str], providers: list[str]
) -> None:
    """With no config file, each provider whose credential is set is enabled."""
    config = discover_config(env=env, cwd=tmp_path)
    assert list(config.providers) == providers


def test_environment_config_carries_credentials() -> None:
    """The environment default passes each credential into its section as a secret."""
    config = environment_config(
        {"FAL_KEY_ID": "id", "FAL_KEY_SECRET": "sec", "MODAL_TOKEN_ID": "mi", "MODAL_TOKEN_SECRET": "ms"}
    )
    assert config is not None
    fal, modal = config.providers["fal"], config.providers["modal"]
    assert isinstance(fal, FalSettings)
    assert isinstance(modal, ModalSettings)
    assert fal.api_key is not None
    assert fal.api_key.get_secret_value() == "id:sec"
    assert modal.token_secret is not None
    assert modal.token_secret.get_secret_value() == "ms"


@pytest.mark.parametrize(
    "env",
    [{}, {"MODAL_TOKEN_ID": "only-id"}, {"FAL_KEY_ID": "only-id"}, {"FAL_KEY": ""}],
)
def test_incomplete_credentials_enable_nothing(env: dict[str, str]) -> None:
    """Half a credential pair, or an empty one, enables no provider."""
    assert environment_config(env) is None


def test_nothing_configured_says_how_to_configure(tmp_path: Path) -> None:
    """With no config and no credentials, ConfigError explains every way to configure."""
    with pytest.raises(ConfigError) as caught:
        discover_config(env={}, cwd=tmp_path)
    message = str(caught.value)
    for hint in (
        "GENROUTER_CONFIG",
        "genrouter.yaml",
        "FAL_KEY",
        "REPLICATE_API_TOKEN",
        "MODAL_TOKEN_ID",
        "examples/offline.yaml",
    ):
        assert hint in message


def test_load_config_without_source_discovers(tmp_path: Path) -> None:
    """load_config(None) runs discovery with the injected env and cwd."""
    _config_file(tmp_path, "found")
    assert list(load_config(None, env={}, cwd=tmp_path).providers) == ["found"]


def test_discovery_reads_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without injected env and cwd, discovery reads os.environ and the process cwd."""
    _config_file(tmp_path, "from-process-env", "p.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, "p.yaml")
    assert list(discover_config().providers) == ["from-process-env"]


def test_load_config_accepts_mapping_and_config() -> None:
    """load_config takes a dict (validated) or a RouterConfig (returned as is)."""
    config = load_config(cfg(), env={})
    assert load_config(config) is config


# ---------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------


def test_schema_is_json_serialisable_draft_2020_12() -> None:
    """config_json_schema() is plain JSON and declares draft 2020-12."""
    schema = config_json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(dump_schema()) == schema


def test_schema_describes_providers() -> None:
    """The schema describes every provider type and lets type-named keys omit type."""
    schema = config_json_schema()
    providers = schema["properties"]["providers"]
    assert providers["minProperties"] == 1
    assert set(providers["properties"]) == {"fal", "replicate", "modal", "simulated", "custom"}
    refs = {branch["$ref"] for branch in providers["additionalProperties"]["oneOf"]}
    assert {ref.rsplit("/", 1)[1] for ref in refs} == {
        "FalSettings",
        "ReplicateSettings",
        "ModalSettings",
        "SimulatedSettings",
        "CustomSettings",
        "ImportPathSettings",
    }
    assert "base_dir" not in schema["properties"]


def test_schema_seconds_fields_accept_duration_strings() -> None:
    """Schema properties ending in _s accept a number or a duration string."""
    timeouts = config_json_schema()["$defs"]["TimeoutPolicy"]["properties"]["attempt_s"]
    kinds = {branch.get("type") for branch in timeouts["anyOf"]}
    assert kinds == {"number", "string"}


def test_schema_validates_good_config_and_rejects_bad() -> None:
    """With jsonschema installed, the contract example validates and a typo does not."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(CONTRACT_EXAMPLE))) == []
    assert list(validator.iter_errors({"providers": {"fal": {"api_ky": "x"}}}))
