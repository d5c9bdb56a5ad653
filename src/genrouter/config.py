"""YAML configuration: loading, ``${VAR}`` interpolation, validation, discovery, JSON Schema.

Every problem is a :class:`~genrouter.errors.ConfigError` whose message names the key
path (``routing.default.retry.max_attempts``), what was wrong and, for a misspelt
key or value, the nearest valid one. Several problems are reported together, joined
with ``"; "`` and listed one by one in ``ConfigError.problems``.

Discovery, when no config is given: ``GENROUTER_CONFIG`` → ``./genrouter.yaml`` → one
provider for each credential set in the environment (``FAL_KEY`` or
``FAL_KEY_ID``+``FAL_KEY_SECRET``, ``REPLICATE_API_TOKEN``,
``MODAL_TOKEN_ID``+``MODAL_TOKEN_SECRET``). With none of those it raises, saying how
to configure; it never falls back to simulated providers.

Conventions (from :class:`~genrouter.backends.settings.SettingsModel`): every field
ending in ``_s`` is seconds and also takes ``"500ms"``, ``"5s"``, ``"2m"``; numbers
never take ``true``/``false``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from genrouter.backends.base import builtin_types, known_types
from genrouter.backends.settings import (
    DURATION_PATTERN,
    SECRET_KEY_PATTERN,
    ImportPathSettings,
    ProviderSettings,
    SettingsModel,
    parse_duration,
    reject_bool,
)
from genrouter.errors import ConfigError
from genrouter.types import Strategy
from genrouter.util._secrets import register_secret
from genrouter.util._validation import describe_value as _describe
from genrouter.util._validation import field_names as _field_names
from genrouter.util._validation import format_errors, model_at, render_path
from genrouter.util._validation import is_secret_path as _is_secret_key
from genrouter.util._validation import suggest as _suggest

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "Budget",
    "CircuitBreakerPolicy",
    "ExplorePolicy",
    "FallbackPolicy",
    "HedgePolicy",
    "RetryBudgetPolicy",
    "RetryPolicy",
    "RoutePolicy",
    "RouterConfig",
    "RoutingConfig",
    "SpilloverPolicy",
    "StateConfig",
    "TimeoutPolicy",
    "config_json_schema",
    "discover_config",
    "dump_schema",
    "environment_config",
    "format_validation_errors",
    "interpolate",
    "load_config",
    "load_config_file",
    "parse_config",
    "render_path",
]

CONFIG_ENV = "GENROUTER_CONFIG"
DEFAULT_CONFIG_FILE = "genrouter.yaml"

_SECRET_KEYS = SECRET_KEY_PATTERN
_BUILTIN_TYPES = tuple(builtin_types())
_IMPORT_PATH_HINT = "an import path 'pkg.module:Class'"


# ---------------------------------------------------------------------------
# Routing policies
# ---------------------------------------------------------------------------


class RetryPolicy(SettingsModel):
    """Retries on one deployment. ``max_attempts`` counts the first attempt.

    Wait between attempts: the provider's Retry-After when it sent one, else
    ``min(max_backoff_s, initial_backoff_s * 2**n)`` ± ``jitter`` (a fraction).
    """

    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    initial_backoff_s: Annotated[float, Field(ge=0, le=600)] = 0.5
    max_backoff_s: Annotated[float, Field(ge=0, le=3600)] = 8.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2


class FallbackPolicy(SettingsModel):
    """Whether to move on to the next deployment after one fails, and over how many."""

    enabled: bool = True
    max_providers: Annotated[int, Field(ge=1, le=50)] = 3


def _hedge_delay(value: Any) -> Literal["p95"] | float:
    """``"p95"``, or seconds > 0 as a number or a duration string (``"5s"``, ``"500ms"``)."""
    if value == "p95" and isinstance(value, str):
        return "p95"
    shape = "expected 'p95' or seconds (a number, or a duration like '5s', '500ms')"
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(shape)
    try:
        seconds = float(parse_duration(value))
    except ValueError:
        raise ValueError(shape) from None
    if not 0 < seconds < float("inf"):
        raise ValueError("expected 'p95' or a number of seconds greater than 0")
    return seconds


class HedgePolicy(SettingsModel):
    """Start the next deployment in parallel after ``delay`` (``p95`` or seconds).

    ``max_extra_fraction`` caps hedge submissions per primary submission (token bucket).
    """

    enabled: bool = False
    delay: Annotated[
        Literal["p95"] | float,
        PlainValidator(_hedge_delay),
        WithJsonSchema(
            {
                "anyOf": [
                    {"const": "p95"},
                    {"type": "number", "exclusiveMinimum": 0},
                    {"type": "string", "pattern": DURATION_PATTERN},
                ]
            }
        ),
    ] = "p95"
    max_extra_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05


class TimeoutPolicy(SettingsModel):
    """``attempt_s`` bounds one accepted job; ``deadline_s`` bounds the whole request."""

    attempt_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    deadline_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0


class CircuitBreakerPolicy(SettingsModel):
    """When a deployment's circuit opens, and how it closes again.

    Opens after ``failure_threshold`` consecutive failures, or when the failure rate
    over the last ``window_s`` reaches ``failure_rate_threshold`` with at least
    ``minimum_requests`` outcomes. Stays open ``cooldown_s``, then half-open admits
    ``half_open_probes`` requests at a time: a success closes it, a failure re-opens it.
    """

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    cooldown_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    failure_rate_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    minimum_requests: Annotated[int, Field(ge=1, le=100_000)] = 20
    window_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    half_open_probes: Annotated[int, Field(ge=1, le=100)] = 1


class RetryBudgetPolicy(SettingsModel):
    """Router-wide retry budget per provider: retries are paid for by successes.

    Each provider's bucket starts full at ``max_tokens`` (default 5); a retry on that
    provider spends 1 token and is refused below 1; a successful attempt there earns
    ``token_ratio`` (default 1). Retries per provider stay at most
    ``max_tokens + token_ratio × successes``: a provider failing up to about a third of
    its attempts is nearly always retried, one in an outage gets ``max_tokens`` retries
    in all.
    An empty bucket also refuses hedges to that provider; first attempts and fallbacks
    always go.
    """

    enabled: bool = True
    max_tokens: Annotated[float, Field(gt=0, le=1000)] = 5.0
    token_ratio: Annotated[float, Field(gt=0, le=10)] = 1.0


class ExplorePolicy(SettingsModel):
    """Send an occasional request to a deployment with too little or too old latency data.

    With ``latency``, ``balanced`` and ``cost`` strategies, a viable deployment with
    fewer than ``min_samples`` recent observations, or one that no request has gone to
    for ``interval_s``, leads one request (at most one every ``interval_s``), so a new
    deployment gets measured and a benched one is noticed when it recovers.
    """

    enabled: bool = True
    min_samples: Annotated[int, Field(ge=1, le=1000)] = 3
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0


class SpilloverPolicy(SettingsModel):
    """With ``strategy: cost`` and ``latency_slo_s``: rank a deployment that reports its
    capacity (backlog, containers) by its predicted completion time, so the cheapest one
    keeps the traffic it can finish within the SLO and the rest spills to the next
    (:mod:`genrouter.routing.spillover`). On by default; it changes nothing without an
    SLO or a capacity-reporting deployment."""

    enabled: bool = True


Weight = Annotated[float, Field(gt=0), BeforeValidator(reject_bool)]


class RoutePolicy(SettingsModel):
    """How to route: strategy, filters, retries, fallback, hedging, timeouts, breaker."""

    strategy: Strategy = "balanced"
    order: list[str] | None = None
    weights: dict[str, Weight] | None = None
    max_cost_usd: Annotated[Decimal | None, Field(ge=0)] = None
    latency_slo_s: Annotated[float | None, Field(gt=0)] = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    fallback: FallbackPolicy = Field(default_factory=FallbackPolicy)
    hedge: HedgePolicy = Field(default_factory=HedgePolicy)
    timeouts: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    circuit_breaker: CircuitBreakerPolicy = Field(default_factory=CircuitBreakerPolicy)
    retry_budget: RetryBudgetPolicy = Field(default_factory=RetryBudgetPolicy)
    explore: ExplorePolicy = Field(default_factory=ExplorePolicy)
    spillover: SpilloverPolicy = Field(default_factory=SpilloverPolicy)

    @field_validator("max_cost_usd", mode="before")
    @classmethod
    def _exact_money(cls, value: Any) -> Any:
        return Decimal(repr(value)) if isinstance(value, float) else value


# Keys of a policy that an override replaces whole instead of merging into.
_LEAF_KEYS = frozenset({"order", "weights"})


def _deep_merge(
    base: Mapping[Any, Any], override: Mapping[Any, Any], *, leaves: frozenset[str] = frozenset()
) -> dict[Any, Any]:
    out = dict(base)
    for key, value in override.items():
        if key not in leaves and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class RoutingConfig(SettingsModel):
    """``default`` policy, and per-model overrides deep-merged over it key by key.

    ``routing.models.flux-dev: {retry: {max_attempts: 1}}`` keeps every other default,
    including the rest of ``retry``. ``order`` and ``weights`` are replaced whole.
    """

    default: RoutePolicy = Field(default_factory=RoutePolicy)
    models: dict[str, RoutePolicy] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_overrides(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        default = raw.get("default")
        models = raw.get("models")
        if default is None:
            default = {}
        if not isinstance(default, Mapping) or not isinstance(models, Mapping):
            return raw
        merged = {
            name: (
                _deep_merge(default, override or {}, leaves=_LEAF_KEYS)
                if isinstance(override, Mapping) or override is None
                else override
            )
            for name, override in models.items()
        }
        return {**raw, "models": merged}

    def policy_for(self, model: str) -> RoutePolicy:
        """The policy for ``model``: its override if any, else the default."""
        return self.models.get(model, self.default)


class StateConfig(SettingsModel):
    """Where health, circuit and budget state lives: ``memory`` or a ``redis://`` URL."""

    store: str = "memory"
    namespace: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")] = "genrouter"
    """Prefix of every Redis key: routers sharing a namespace share health, breakers and spend."""

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value != "memory" and not re.match(r"^rediss?://\S+$", value):
            raise ValueError("expected 'memory' or a redis:// URL (redis://127.0.0.1:6379/0)")
        return value


class Budget(SettingsModel):
    """A spend cap: ``limit_usd`` per ``period`` for one ``provider`` (or all, when omitted).

    When a provider's cap is reached its deployments are excluded from plans; when
    nothing is left, requests fail with ``BudgetExceededError``. Periods are calendar
    periods in UTC (``hour``, ``day``, ``week`` starting Monday, ``month``) or ``total``.
    """

    provider: str | None = None
    limit_usd: Annotated[Decimal, Field(ge=0)]
    period: Literal["hour", "day", "week", "month", "total"] = "day"

    @field_validator("limit_usd", mode="before")
    @classmethod
    def _exact_money(cls, value: Any) -> Any:
        return Decimal(repr(value)) if isinstance(value, float) else value


# ---------------------------------------------------------------------------
# Provider sections
# ---------------------------------------------------------------------------

_SECTION_TYPES: dict[str, type[ProviderSettings]] = {
    **{name: spec.settings for name, spec in builtin_types().items()},
    "import": ImportPathSettings,
}
"""The settings class of each provider ``type``, from the backend registry; ``import`` is the
generic one (``"pkg.module:Class"`` or an entry-point plugin)."""


def _section_tag(value: Any) -> str | None:
    """Which settings class validates a provider section (None: no valid type)."""
    if isinstance(value, ProviderSettings):
        if isinstance(value, ImportPathSettings):
            return "import"
        return value.type if value.type in _SECTION_TYPES else None
    if not isinstance(value, Mapping):
        return None
    provider_type = value.get("type")
    if not isinstance(provider_type, str):
        return None
    if provider_type in _SECTION_TYPES and provider_type != "import":
        return provider_type
    if ":" in provider_type or provider_type in known_types():
        return "import"
    return None


if TYPE_CHECKING:
    ProviderSection = ProviderSettings
else:
    # A union tagged by _section_tag, one member per registered type: built from the registry.
    ProviderSection = Annotated[
        Union[tuple(Annotated[model, Tag(tag)] for tag, model in _SECTION_TYPES.items())],  # noqa: UP007
        Discriminator(
            _section_tag,
            custom_error_type="unknown_provider_type",
            custom_error_message="unknown or missing provider type",
        ),
    ]


class RouterConfig(SettingsModel):
    """A whole genrouter config (version 1)."""

    version: Literal[1] = 1
    providers: dict[str, ProviderSection] = Field(min_length=1)
    catalogs: list[str] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    budgets: list[Budget] = Field(default_factory=list)
    base_dir: Path | None = Field(default=None, exclude=True)
    """Folder relative paths (``catalogs``) resolve against: the config file's folder."""

    @model_validator(mode="before")
    @classmethod
    def _default_types(cls, raw: Any) -> Any:
        """A section without ``type`` whose key is a provider type takes its key as type."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("providers"), Mapping):
            return raw
        types_ = known_types()
        providers: dict[Any, Any] = {}
        for key, section in raw["providers"].items():
            if section is None:
                section = {}
            if isinstance(section, Mapping) and "type" not in section and key in types_:
                section = {**section, "type": key}
            providers[key] = section
        return {**raw, "providers": providers}

    def catalog_paths(self) -> list[Path]:
        """``catalogs`` entries as paths, relative ones resolved against the config's folder."""
        base = self.base_dir or Path.cwd()
        paths = [Path(c).expanduser() for c in self.catalogs]
        return [p if p.is_absolute() else base / p for p in paths]


# ---------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------

# ``$$``; ``${NAME}``; ``${NAME:-default}``; and (last) any other ``${``, which is malformed.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_MAX_NODES = 100_000
_MAX_DEPTH = 64


def interpolate(raw: Any, env: Mapping[str, str] | None = None, *, _path: tuple[str | int, ...] = ()) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree.

    Only string values change (keys and other scalars are left alone), so a
    variable's value is never parsed as YAML. ``$$`` is a literal ``$``; a ``$``
    followed by anything else is kept as is. ``${VAR:-default}`` uses the default
    when ``VAR`` is unset or empty; ``${VAR:-}`` makes a variable optional. An unset
    ``${VAR}`` (no default) or a malformed ``${`` is a :class:`ConfigError` naming
    the variable and the key path; every such problem is reported at once. Values
    interpolated into keys that look secret (``*key*``, ``*token*``, ``*secret*``,
    ``*password*``) are registered for redaction.
    """
    env = os.environ if env is None else env
    walker = _Interpolator(env)
    result = walker.walk(raw, tuple(_path), frozenset())
    if walker.problems:
        problems = list(dict.fromkeys(walker.problems))
        raise ConfigError("; ".join(problems), key_path=_first_path(problems), problems=problems)
    return result


class _Interpolator:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.nodes = 0

    def walk(self, raw: Any, path: tuple[str | int, ...], ancestors: frozenset[int]) -> Any:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise ConfigError(
                f"{render_path(path)}: the config holds more than {_MAX_NODES} values; "
                "is a YAML alias (&anchor / *alias) expanding too far?",
                key_path=render_path(path),
            )
        if isinstance(raw, Mapping | list):
            if len(path) >= _MAX_DEPTH:
                message = f"{render_path(path)}: nested more than {_MAX_DEPTH} levels deep"
                raise ConfigError(message, key_path=render_path(path))
            if id(raw) in ancestors:
                message = f"{render_path(path)}: a YAML alias refers to itself (recursive structure)"
                raise ConfigError(message, key_path=render_path(path))
            inner = ancestors | {id(raw)}
            if isinstance(raw, Mapping):
                return {k: self.walk(v, (*path, _segment(k)), inner) for k, v in raw.items()}
            return [self.walk(v, (*path, i), inner) for i, v in enumerate(raw)]
        if not isinstance(raw, str) or "$" not in raw:
            return raw
        result = _VAR.sub(lambda m: self.substitute(m, path), raw)
        if "${" in raw and path and _is_secret_key(path):
            register_secret(result)
        return result

    def substitute(self, match: re.Match[str], path: tuple[str | int, ...]) -> str:
        matched = match.group(0)
        if matched == "$$":
            return "$"
        where = render_path(path)
        name, default = match.group(1), match.group(2)
        if name is None:
            self.problems.append(
                f"{where}: malformed ${{...}} reference; write ${{NAME}} or ${{NAME:-default}}, "
                "and $$ for a literal $"
            )
            return matched
        value = self.env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                self.problems.append(
                    f"{where}: environment variable {name} is not set; export it, "
                    f"or write ${{{name}:-}} to make it optional"
                )
                return matched
            value = default
        return value


def _segment(key: Any) -> str | int:
    return key if isinstance(key, str) else str(key)


# ---------------------------------------------------------------------------
# Validation errors → key paths and suggestions
# ---------------------------------------------------------------------------


def _provider_type_problem(path: Sequence[Any], section: Any) -> tuple[str, str]:
    """(key path, message) for a provider section whose type selects no settings class."""
    where = render_path(path)
    valid = sorted({*_BUILTIN_TYPES, *known_types()})
    listing = f"set type: to one of {', '.join(valid)}, or {_IMPORT_PATH_HINT}"
    if not isinstance(section, Mapping):
        return where, f"expected a mapping of provider settings (got {_describe(section)})"
    type_path = render_path((*path, "type"))
    given = section.get("type")
    if given is None:
        key = path[-1] if path else "?"
        hint = _suggest(key, valid)
        message = f"no type: given and {str(key)!r} is not a provider type; {listing}"
        if hint is not None:
            message += f" (did you mean type: {hint}?)"
        return type_path, message
    if not isinstance(given, str):
        return type_path, f"expected a provider type name (got {_describe(given)}); {listing}"
    hint = _suggest(given, valid)
    message = f"unknown provider type {given!r}"
    if hint is not None:
        message += f" (did you mean {hint!r}?)"
    return type_path, f"{message}; {listing}"


def _model_at(root: type[BaseModel], loc: Sequence[Any]) -> tuple[type[BaseModel] | None, list[Any]]:
    return model_at(root, loc, _SECTION_TYPES)


def _format_errors(
    errors: Sequence[ErrorDetails],
    *,
    root: type[BaseModel],
    prefix: Sequence[Any] = (),
    raw: Any = None,
) -> list[str]:
    """:func:`~genrouter.util._validation.format_errors` with the config's provider sections."""

    def keep(path: str, error: ErrorDetails) -> bool:
        return raw is None or not _inherited_from_default(path, error, root, raw)

    return format_errors(
        errors,
        root=root,
        prefix=prefix,
        tags=_SECTION_TYPES,
        custom={"unknown_provider_type": _provider_type_problem},
        keep=keep,
    )


def _inherited_from_default(path: str, error: ErrorDetails, root: type[BaseModel], raw: Any) -> bool:
    """Whether an error under ``routing.models.<m>`` comes from the merged-in default.

    Such an error is reported once, under ``routing.default``, not again per model.
    """
    if root is not RouterConfig or not path.startswith("routing.models."):
        return False
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        _, clean = _model_at(root, loc[:-1])
        clean = [*clean, loc[-1]]
    else:
        _, clean = _model_at(root, loc)
    if len(clean) < 4:
        return False
    routing = raw.get("routing") if isinstance(raw, Mapping) else None
    models = routing.get("models") if isinstance(routing, Mapping) else None
    current = models.get(clean[2]) if isinstance(models, Mapping) else None
    if current is None:
        return True
    for part in clean[3:]:
        if isinstance(current, Mapping):
            if part not in current:
                return True
            current = current[part]
        else:
            return False
    return False


def format_validation_errors(
    exc: ValidationError, *, root: type[BaseModel] = RouterConfig, prefix: Sequence[Any] = ()
) -> list[str]:
    """One line per problem: ``key.path: problem (got value); did you mean 'x'?``.

    Paths are the user's keys (pydantic's union and tag labels are dropped); an
    unknown key gets the nearest valid key, or the list of valid keys; a bad
    literal the nearest valid value; secret values show as ``***``. Duplicate
    lines are removed.
    """
    return _format_errors(exc.errors(include_url=False), root=root, prefix=prefix)


# ---------------------------------------------------------------------------
# Cross-field checks
# ---------------------------------------------------------------------------


def _semantic_problems(config: RouterConfig) -> list[str]:
    """Problems pydantic cannot see: names that must refer to configured things, and limits
    that contradict each other. Model overrides are checked only where they differ from
    the default, so a problem in the default is reported once."""
    problems: list[str] = []
    providers = list(config.providers)
    default = config.routing.default
    policies = [("routing.default", default, True)] + [
        (f"routing.models.{name}", policy, False) for name, policy in config.routing.models.items()
    ]
    for path, policy, is_default in policies:
        if is_default or policy.order != default.order:
            seen: set[str] = set()
            for i, name in enumerate(policy.order or ()):
                if name not in config.providers:
                    problems.append(_unknown_provider(f"{path}.order[{i}]", name, providers))
                elif name in seen:
                    problems.append(f"{path}.order[{i}]: provider {name!r} is listed twice")
                seen.add(name)
        if is_default or policy.weights != default.weights:
            for name in policy.weights or {}:
                if name not in config.providers:
                    problems.append(_unknown_provider(f"{path}.weights.{name}", name, providers))
        retry = policy.retry
        if (is_default or retry != default.retry) and retry.initial_backoff_s > retry.max_backoff_s:
            problems.append(
                f"{path}.retry.initial_backoff_s: {retry.initial_backoff_s:g} exceeds "
                f"max_backoff_s {retry.max_backoff_s:g}"
            )
    for i, budget in enumerate(config.budgets):
        if budget.provider is not None and budget.provider not in config.providers:
            problems.append(_unknown_provider(f"budgets[{i}].provider", budget.provider, providers))
    for key, section in config.providers.items():
        problems += section.problems(f"providers.{key}")
    return problems


def _unknown_provider(path: str, name: str, providers: list[str]) -> str:
    hint = _suggest(name, providers)
    tail = f"; did you mean {hint!r}?" if hint else f"; configured: {', '.join(providers)}"
    return f"{path}: unknown provider {name!r}{tail}"


# ---------------------------------------------------------------------------
# Loading and discovery
# ---------------------------------------------------------------------------


def parse_config(
    raw: Any, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> RouterConfig:
    """Interpolate and validate a parsed YAML tree into a :class:`RouterConfig`.

    Every problem is collected and raised as one :class:`ConfigError`. Top-level keys
    starting with ``x-`` are ignored: they are where YAML anchors go
    (``x-sim: &sim {type: simulated}`` … ``providers: {a: *sim}``).
    """
    if raw is None:
        raise ConfigError("config is empty; it needs at least `version: 1` and `providers:`")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config must be a mapping of keys, got {_describe(raw)}")
    if "base_dir" in raw:
        names = ", ".join(_field_names(RouterConfig))
        problem = f"base_dir: unknown key 'base_dir'; valid keys are {names}"
        raise ConfigError(problem, key_path="base_dir")
    # Top-level ``x-...`` keys hold YAML anchors (``x-base: &base {...}``); they are not config.
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    raw = interpolate(raw, env)
    invalid: list[str] | None = None
    try:
        config = RouterConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        invalid = _format_errors(exc.errors(include_url=False), root=RouterConfig, raw=raw)
    if invalid is not None:
        # Raised outside the except: the ValidationError quotes input values, secrets too,
        # and must not ride along as the ConfigError's context.
        raise ConfigError("; ".join(invalid), key_path=_first_path(invalid), problems=invalid)
    problems = list(dict.fromkeys(_semantic_problems(config)))
    if problems:
        raise ConfigError("; ".join(problems), key_path=_first_path(problems), problems=problems)
    for section in config.providers.values():
        for secret in section.secret_values():
            register_secret(secret)
    return config


def _first_path(problems: Sequence[str]) -> str | None:
    return problems[0].split(": ", 1)[0] if problems else None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable: the base constructor reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:map", _construct_unique_mapping)


def _load_yaml(text: str) -> Any:
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_config_file(path: str | Path, *, env: Mapping[str, str] | None = None) -> RouterConfig:
    """Read, interpolate and validate a YAML config file.

    Every error message starts with the file's path; a YAML syntax error names the
    line and column. Relative ``catalogs`` resolve against the file's folder.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: config file does not exist") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: config file is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        raw = _load_yaml(text)
    except RecursionError as exc:
        raise ConfigError(f"{p}: invalid YAML: nested too deeply") from exc
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from exc
    try:
        return parse_config(raw, env=env, base_dir=p.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(
            f"{p}: {exc.message}",
            key_path=exc.key_path,
            problems=[f"{p}: {x}" for x in exc.problems],
        ) from exc


def environment_config(env: Mapping[str, str] | None = None) -> RouterConfig | None:
    """A config with one provider per credential set in the environment; None if none is set.

    The credentials go into the sections (as secrets), so the config works with an
    injected ``env`` as well as with ``os.environ``.
    """
    env = os.environ if env is None else env
    providers: dict[str, Any] = {}
    for provider_type, spec in known_types().items():  # each type's settings know its variables
        section = spec.settings.section_from_env(env)
        if section is not None:
            providers[provider_type] = {"type": provider_type, **section}
    if not providers:
        return None
    # No interpolation: credential values are data, never templates.
    return parse_config({"version": 1, "providers": providers}, env={})


_HOW_TO_CONFIGURE = (
    "no genrouter config found: pass one explicitly (-c FILE, or from_config(path)), "
    f"set {CONFIG_ENV}=path/to/genrouter.yaml, create ./{DEFAULT_CONFIG_FILE}, or export "
    "provider credentials ("
    + ", ".join(s.settings.env_credentials for s in builtin_types().values() if s.settings.env_credentials)
    + "); to try genrouter offline with simulated providers use examples/offline.yaml"
)


def discover_config(
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    *,
    path: str | Path | None = None,
) -> RouterConfig:
    """Find a config: ``path`` → ``GENROUTER_CONFIG`` → ``./genrouter.yaml`` → credentials.

    ``env`` and ``cwd`` default to the process's; relative paths resolve against
    ``cwd``. Never falls back to simulated providers: with nothing configured it
    raises :class:`ConfigError` saying how to configure.
    """
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    if path is not None:
        return load_config_file(_under(base, path), env=env)
    named = env.get(CONFIG_ENV)
    if named:
        target = _under(base, named)
        if not target.is_file():
            raise ConfigError(
                f"{CONFIG_ENV}={named}: no such config file ({target}); fix the path or unset {CONFIG_ENV}",
                key_path=CONFIG_ENV,
            )
        return load_config_file(target, env=env)
    local = base / DEFAULT_CONFIG_FILE
    if local.is_file():
        return load_config_file(local, env=env)
    from_env = environment_config(env)
    if from_env is None:
        raise ConfigError(_HOW_TO_CONFIGURE)
    return from_env


def config_present(env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> bool:
    """Whether discovery would find a config (``GENROUTER_CONFIG``, ``./genrouter.yaml`` or
    credentials in the environment), without loading it."""
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    if env.get(CONFIG_ENV) or (base / DEFAULT_CONFIG_FILE).is_file():
        return True
    return environment_config(env) is not None


def _under(base: Path, path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def load_config(
    source: str | Path | Mapping[str, Any] | RouterConfig | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> RouterConfig:
    """A :class:`RouterConfig` from a path, a dict, a config, or (None) discovery."""
    if isinstance(source, RouterConfig):
        return source
    if isinstance(source, Mapping):
        return parse_config(source, env=env)
    return discover_config(env, cwd, path=source)


# ---------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal | Path):
        return str(value)
    return value


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config file, for editors and validators.

    A provider section keyed by a provider type (``fal:``) may leave out ``type``;
    any other key needs it. ``${VAR}`` references are checked after interpolation,
    so the schema describes interpolated values.
    """
    schema = RouterConfig.model_json_schema(mode="validation")
    schema["properties"].pop("base_dir", None)
    defs = schema["$defs"]
    plugins = sorted(set(known_types()) - set(_BUILTIN_TYPES))
    import_type: dict[str, Any] = {
        "type": "string",
        "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        "description": "an import path 'pkg.module:Class' (or a registered plugin type)",
    }
    if plugins:
        import_type = {"anyOf": [import_type, {"enum": plugins}]}
    defs["ImportPathSettings"]["properties"]["type"] = import_type
    refs = {t: f"#/$defs/{_SECTION_TYPES[t].__name__}" for t in _BUILTIN_TYPES}
    typed = {
        "oneOf": [{"$ref": ref, "required": ["type"]} for ref in refs.values()]
        + [{"$ref": "#/$defs/ImportPathSettings"}]
    }
    providers = schema["properties"]["providers"]
    providers["additionalProperties"] = typed
    providers["properties"] = {t: {"anyOf": [{"$ref": ref}, typed]} for t, ref in refs.items()}
    providers["description"] = (
        f"Provider sections by key. A key that is a provider type ({', '.join(_BUILTIN_TYPES)}) "
        "may omit type:; any other key needs type:."
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "genrouter config"
    schema["description"] = "genrouter configuration, version 1 (genrouter.yaml)"
    result: dict[str, Any] = _jsonable(schema)
    return result


def dump_schema() -> str:
    """The config JSON Schema as indented JSON text."""
    return json.dumps(config_json_schema(), indent=2)


def config_notes(config: RouterConfig) -> list[str]:
    """Harmless combinations worth a word (``genrouter config check`` prints them as notes).

    ``timeouts.attempt_s`` longer than ``deadline_s`` is valid: the deadline bounds every
    attempt, so such an attempt ends at the deadline.
    """
    notes: list[str] = []
    default = config.routing.default
    policies = [("routing.default", default)] + [
        (f"routing.models.{name}", policy) for name, policy in config.routing.models.items()
    ]
    for path, policy in policies:
        timeouts = policy.timeouts
        if timeouts.attempt_s > timeouts.deadline_s and (
            path == "routing.default" or timeouts != default.timeouts
        ):
            notes.append(
                f"{path}.timeouts: attempt_s {timeouts.attempt_s:g} is longer than deadline_s "
                f"{timeouts.deadline_s:g}; the deadline ends each attempt first"
            )
    return notes
