"""YAML configuration: loading, ``${VAR}`` interpolation, validation, discovery, JSON Schema.

Every problem is a :class:`~genrouter.errors.ConfigError` whose message names the key
path (``routing.default.retry.max_attempts``), what was wrong and, for a misspelt
key, the nearest valid one. Discovery, when no config is given: ``GENROUTER_CONFIG``
→ ``./genrouter.yaml`` → one provider for each credential set in the environment
(``FAL_KEY``, ``REPLICATE_API_TOKEN``, ``MODAL_TOKEN_ID``+``MODAL_TOKEN_SECRET``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from genrouter._secrets import register_secret
from genrouter.backends.base import known_types
from genrouter.backends.settings import (
    CustomSettings,
    FalSettings,
    ImportPathSettings,
    ModalSettings,
    ProviderSettings,
    ReplicateSettings,
    SimulatedSettings,
)
from genrouter.errors import ConfigError
from genrouter.types import Strategy

__all__ = [
    "CONFIG_ENV",
    "CircuitBreakerPolicy",
    "FallbackPolicy",
    "HedgePolicy",
    "RetryPolicy",
    "RoutePolicy",
    "RouterConfig",
    "RoutingConfig",
    "StateConfig",
    "TimeoutPolicy",
    "config_json_schema",
    "discover_config",
    "format_validation_errors",
    "interpolate",
    "load_config",
]

CONFIG_ENV = "GENROUTER_CONFIG"
DEFAULT_CONFIG_FILE = "genrouter.yaml"

_STRICT = ConfigDict(extra="forbid", frozen=True)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_SECRET_KEYS = re.compile(r"(key|token|secret|password)", re.IGNORECASE)


def _seconds(value: Any) -> Any:
    """``5``, ``5.0``, ``"5s"``, ``"500ms"``, ``"2m"`` → float seconds; other values unchanged."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            return value
        number, unit = float(match.group(1)), match.group(2) or "s"
        return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    return value


class RetryPolicy(BaseModel):
    """Retries on one deployment. ``max_attempts`` counts the first attempt.

    Wait between attempts: the provider's Retry-After when it sent one, else
    ``min(max_backoff_s, initial_backoff_s * 2**n)`` ± ``jitter`` (a fraction).
    """

    model_config = _STRICT

    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    initial_backoff_s: Annotated[float, Field(ge=0, le=600)] = 0.5
    max_backoff_s: Annotated[float, Field(ge=0, le=3600)] = 8.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2


class FallbackPolicy(BaseModel):
    """Whether to move on to the next deployment after one fails, and over how many."""

    model_config = _STRICT

    enabled: bool = True
    max_providers: Annotated[int, Field(ge=1, le=50)] = 3


class HedgePolicy(BaseModel):
    """Start the next deployment in parallel after ``delay`` (``p95`` or seconds).

    ``max_extra_fraction`` caps hedge submissions per primary submission (token bucket).
    """

    model_config = _STRICT

    enabled: bool = False
    delay: Literal["p95"] | Annotated[float, Field(gt=0)] = "p95"
    max_extra_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05

    @field_validator("delay", mode="before")
    @classmethod
    def _parse_delay(cls, value: Any) -> Any:
        return value if value == "p95" else _seconds(value)


class TimeoutPolicy(BaseModel):
    """``attempt_s`` bounds one accepted job; ``deadline_s`` bounds the whole request."""

    model_config = _STRICT

    attempt_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    deadline_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0

    @field_validator("attempt_s", "deadline_s", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _seconds(value)


class CircuitBreakerPolicy(BaseModel):
    """Open a deployment's circuit after ``failure_threshold`` consecutive failures.

    It stays open for ``cooldown_s``, then admits one probe (half-open).
    """

    model_config = _STRICT

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    cooldown_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0


class RoutePolicy(BaseModel):
    """How to route: strategy, filters, retries, fallback, hedging, timeouts, breaker."""

    model_config = _STRICT

    strategy: Strategy = "balanced"
    order: list[str] | None = None
    weights: dict[str, Annotated[float, Field(gt=0)]] | None = None
    max_cost_usd: Annotated[Decimal | None, Field(ge=0)] = None
    latency_slo_s: Annotated[float | None, Field(gt=0)] = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    fallback: FallbackPolicy = Field(default_factory=FallbackPolicy)
    hedge: HedgePolicy = Field(default_factory=HedgePolicy)
    timeouts: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    circuit_breaker: CircuitBreakerPolicy = Field(default_factory=CircuitBreakerPolicy)

    @field_validator("max_cost_usd", mode="before")
    @classmethod
    def _exact_money(cls, value: Any) -> Any:
        return Decimal(repr(value)) if isinstance(value, float) else value


class RoutingConfig(BaseModel):
    """``default`` policy, and per-model overrides merged over it key by key."""

    model_config = _STRICT

    default: RoutePolicy = Field(default_factory=RoutePolicy)
    models: dict[str, RoutePolicy] = Field(default_factory=dict)

    @classmethod
    def _merge_overrides(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        default = raw.get("default") or {}
        models = raw.get("models")
        if not isinstance(default, Mapping) or not isinstance(models, Mapping):
            return raw
        merged = {
            name: _deep_merge(default, override) if isinstance(override, Mapping) else override
            for name, override in models.items()
        }
        return {**raw, "models": merged}

    def policy_for(self, model: str) -> RoutePolicy:
        """The policy for ``model``: its override if any, else the default."""
        return self.models.get(model, self.default)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class StateConfig(BaseModel):
    """Where health, circuit and budget state lives: ``memory`` or a ``redis://`` URL."""

    model_config = _STRICT

    store: str = "memory"

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value != "memory" and not re.match(r"^rediss?://", value):
            raise ValueError(f"store {value!r} is neither 'memory' nor a redis:// URL")
        return value


_SECTION_TYPES: dict[str, type[ProviderSettings]] = {
    "fal": FalSettings,
    "replicate": ReplicateSettings,
    "modal": ModalSettings,
    "simulated": SimulatedSettings,
    "custom": CustomSettings,
    "import": ImportPathSettings,
}


def _section_tag(value: Any) -> str | None:
    provider_type = (
        value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    )
    if not isinstance(provider_type, str):
        return None
    if provider_type in _SECTION_TYPES:
        return provider_type
    spec = known_types().get(provider_type)
    if spec is not None or ":" in provider_type:
        return "import"
    return None


ProviderSection = Annotated[
    Union[  # noqa: UP007 - tagged union members need Annotated[..., Tag]
        Annotated[FalSettings, Tag("fal")],
        Annotated[ReplicateSettings, Tag("replicate")],
        Annotated[ModalSettings, Tag("modal")],
        Annotated[SimulatedSettings, Tag("simulated")],
        Annotated[CustomSettings, Tag("custom")],
        Annotated[ImportPathSettings, Tag("import")],
    ],
    Discriminator(
        _section_tag,
        custom_error_type="unknown_provider_type",
        custom_error_message=(
            "unknown or missing provider type; set type: to one of "
            "fal, replicate, modal, simulated, custom, or 'pkg.module:Class'"
        ),
    ),
]


class RouterConfig(BaseModel):
    """A whole genrouter config (version 1)."""

    model_config = _STRICT

    version: Literal[1] = 1
    providers: dict[str, ProviderSection] = Field(min_length=1)
    catalogs: list[str] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    base_dir: Path | None = Field(default=None, exclude=True)
    """Folder relative paths (``catalogs``) resolve against: the config file's folder."""

    def catalog_paths(self) -> list[Path]:
        """``catalogs`` entries as paths, relative ones resolved against the config's folder."""
        base = self.base_dir or Path.cwd()
        return [p if (p := Path(c)).is_absolute() else base / p for c in self.catalogs]


# ---------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------


def interpolate(
    raw: Any, env: Mapping[str, str] | None = None, *, _path: tuple[str | int, ...] = ()
) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree.

    ``$$`` is a literal ``$``. An unset ``${VAR}`` (no default) is a :class:`ConfigError`
    naming the variable and the key path. Values interpolated into keys that look
    secret (``*key``, ``*token``, ``*secret``) are registered for redaction.
    """
    env = os.environ if env is None else env
    if isinstance(raw, Mapping):
        return {k: interpolate(v, env, _path=(*_path, str(k))) for k, v in raw.items()}
    if isinstance(raw, list):
        return [interpolate(v, env, _path=(*_path, i)) for i, v in enumerate(raw)]
    if not isinstance(raw, str) or "$" not in raw:
        return raw

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"{render_path(_path)}: environment variable {name} is not set; "
                    f"export it, or write ${{{name}:-}} to make it optional",
                    key_path=render_path(_path),
                )
            value = default
        return value

    result = _VAR.sub(substitute, raw)
    if _path and _SECRET_KEYS.search(str(_path[-1])):
        register_secret(result)
    return result


# ---------------------------------------------------------------------------
# Validation errors → key paths and suggestions
# ---------------------------------------------------------------------------


def render_path(loc: Sequence[str | int]) -> str:
    """``("routing", "default", "retry")`` → ``routing.default.retry``; ints as ``[i]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_at(
    root: type[BaseModel], loc: Sequence[str | int]
) -> tuple[type[BaseModel] | None, list[str | int]]:
    """Walk ``loc`` from ``root``; return the model class at its end and the cleaned path."""
    current: Any = root
    clean: list[str | int] = []
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        candidates = _unwrap(current)
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if isinstance(part, str) and _is_union_label(part, candidates):
            i += 1
            continue
        if model is not None:
            field = model.model_fields.get(str(part))
            if field is None:
                return None, clean + [str(p) for p in parts[i:]]
            clean.append(part)
            current = field.annotation
            i += 1
            continue
        container = next((c for c in candidates if typing.get_origin(c) in (dict, list)), None)
        if container is not None:
            args = typing.get_args(container)
            clean.append(part)
            current = args[-1]
            i += 1
            # A tagged union member: the tag follows the key in pydantic's loc.
            members = _unwrap(current)
            if len(members) > 1 and i < len(parts) and str(parts[i]) in _SECTION_TYPES:
                current = _SECTION_TYPES[str(parts[i])]
                i += 1
            continue
        return None, clean + list(parts[i:])
    candidates = _unwrap(current)
    model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model, clean


def _is_union_label(part: str, candidates: list[Any]) -> bool:
    """Pydantic puts union branch labels (``function-after[...]``, ``int``) into ``loc``."""
    names = {c.__name__ for c in candidates if isinstance(c, type)}
    return "[" in part or (part in names and len(candidates) > 1)


def _field_names(model: type[BaseModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if not f.exclude]


def format_validation_errors(
    exc: ValidationError, *, root: type[BaseModel] = RouterConfig, prefix: Sequence[str | int] = ()
) -> list[str]:
    """One line per pydantic error: ``key.path: problem (got value); did you mean 'x'?``."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            parent_model, parent_path = _model_at(root, loc[:-1])
            unknown = str(loc[-1])
            path = render_path((*prefix, *parent_path, unknown))
            message = f"{path}: unknown key {unknown!r}"
            if parent_model is not None:
                names = _field_names(parent_model)
                close = difflib.get_close_matches(unknown, names, n=1, cutoff=0.6)
                if close:
                    message += f"; did you mean {close[0]!r}?"
                else:
                    message += f"; valid keys are {', '.join(names)}"
            problems.append(message)
            continue
        _, clean = _model_at(root, loc)
        path = render_path((*prefix, *clean))
        message = error["msg"]
        if kind == "unknown_provider_type":
            given = error["input"].get("type") if isinstance(error["input"], Mapping) else None
            message = (
                (f"provider type {given!r} is unknown" if given is not None else "no type: given")
                + "; set type: to one of "
                + ", ".join(sorted(known_types()))
                + " or 'pkg.module:Class'"
            )
            problems.append(f"{path}: {message}")
            continue
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if (
            kind not in ("missing",)
            and "input" in error
            and not isinstance(error["input"], Mapping | list)
        ):
            shown = error["input"]
            if _SECRET_KEYS.search(path):
                shown = "***"
            message += f" (got {shown!r})"
        if kind == "literal_error":
            expected = re.findall(r"'([^']+)'", str(error.get("ctx", {}).get("expected", "")))
            close = difflib.get_close_matches(str(error.get("input")), expected, n=1, cutoff=0.5)
            if close:
                message += f"; did you mean {close[0]!r}?"
        problems.append(f"{path}: {message}")
    return problems


# ---------------------------------------------------------------------------
# Loading and discovery
# ---------------------------------------------------------------------------


def _inject_default_types(raw: Any) -> Any:
    """A provider section without ``type`` takes its key as the type (``fal: {...}``)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("providers"), Mapping):
        return raw
    providers = {}
    for key, section in raw["providers"].items():
        if section is None:
            section = {}
        if isinstance(section, Mapping) and "type" not in section:
            section = {**section, "type": str(key)}
        providers[key] = section
    return {**raw, "providers": providers}


def _semantic_problems(config: RouterConfig) -> list[str]:
    """Cross-field problems pydantic cannot see: names that must refer to configured things."""
    problems: list[str] = []
    providers = list(config.providers)
    policies = [("routing.default", config.routing.default)] + [
        (f"routing.models.{name}", policy) for name, policy in config.routing.models.items()
    ]
    for path, policy in policies:
        for i, name in enumerate(policy.order or ()):
            if name not in config.providers:
                problems.append(_unknown_provider(f"{path}.order[{i}]", name, providers))
        for name in policy.weights or {}:
            if name not in config.providers:
                problems.append(_unknown_provider(f"{path}.weights.{name}", name, providers))
        if policy.timeouts.attempt_s > policy.timeouts.deadline_s:
            problems.append(
                f"{path}.timeouts.attempt_s: {policy.timeouts.attempt_s} is longer than "
                f"deadline_s {policy.timeouts.deadline_s}; an attempt can never use it all"
            )
        if policy.retry.initial_backoff_s > policy.retry.max_backoff_s:
            problems.append(
                f"{path}.retry.initial_backoff_s: {policy.retry.initial_backoff_s} exceeds "
                f"max_backoff_s {policy.retry.max_backoff_s}"
            )
    for key, section in config.providers.items():
        if isinstance(section, SimulatedSettings):
            for i, incident in enumerate(section.incidents):
                if (
                    incident.failure_rate is None
                    and incident.latency_multiplier == 1.0
                    and incident.hang_rate is None
                ):
                    problems.append(
                        f"providers.{key}.incidents[{i}]: changes nothing; set "
                        "latency_multiplier, failure_rate or hang_rate"
                    )
    return problems


def _unknown_provider(path: str, name: str, providers: list[str]) -> str:
    close = difflib.get_close_matches(name, providers, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; configured: {', '.join(providers)}"
    return f"{path}: unknown provider {name!r}{hint}"


def parse_config(
    raw: Any, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> RouterConfig:
    """Validate a parsed YAML tree (after interpolation) into a :class:`RouterConfig`."""
    if raw is None:
        raise ConfigError("config is empty; it needs at least version: 1 and providers:")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config must be a mapping of keys, got {type(raw).__name__}")
    raw = interpolate(raw, env)
    raw = _inject_default_types(raw)
    if isinstance(raw.get("routing"), Mapping):
        raw = {**raw, "routing": RoutingConfig._merge_overrides(raw["routing"])}
    try:
        config = RouterConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        problems = format_validation_errors(exc)
        raise ConfigError(
            "; ".join(problems), key_path=_first_path(problems), problems=problems
        ) from exc
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError("; ".join(problems), key_path=_first_path(problems), problems=problems)
    for section in config.providers.values():
        for secret in section.secret_values():
            register_secret(secret)
    return config


def _first_path(problems: Sequence[str]) -> str | None:
    return problems[0].split(":", 1)[0] if problems else None


def load_config_file(path: str | Path, *, env: Mapping[str, str] | None = None) -> RouterConfig:
    """Read, interpolate and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
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
    """A config with one provider per credential set in the environment; None if none is set."""
    env = os.environ if env is None else env
    providers: dict[str, Any] = {}
    if env.get("FAL_KEY") or (env.get("FAL_KEY_ID") and env.get("FAL_KEY_SECRET")):
        providers["fal"] = {"type": "fal"}
    if env.get("REPLICATE_API_TOKEN"):
        providers["replicate"] = {"type": "replicate"}
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        providers["modal"] = {"type": "modal"}
    if not providers:
        return None
    return parse_config({"version": 1, "providers": providers}, env=env)


_HOW_TO_CONFIGURE = (
    "no genrouter config found: pass one explicitly, set GENROUTER_CONFIG=path/to/genrouter.yaml, "
    "create ./genrouter.yaml, or export FAL_KEY / REPLICATE_API_TOKEN / "
    "MODAL_TOKEN_ID+MODAL_TOKEN_SECRET; to try genrouter offline use examples/offline.yaml"
)


def discover_config(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> RouterConfig:
    """Find a config: ``GENROUTER_CONFIG`` → ``./genrouter.yaml`` → environment credentials.

    Never falls back to simulated providers: with nothing configured it raises
    :class:`ConfigError` saying how to configure.
    """
    env = os.environ if env is None else env
    explicit = env.get(CONFIG_ENV)
    if explicit:
        return load_config_file(explicit, env=env)
    local = (cwd or Path.cwd()) / DEFAULT_CONFIG_FILE
    if local.is_file():
        return load_config_file(local, env=env)
    from_env = environment_config(env)
    if from_env is None:
        raise ConfigError(_HOW_TO_CONFIGURE)
    return from_env


def load_config(
    source: str | Path | Mapping[str, Any] | RouterConfig | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> RouterConfig:
    """A :class:`RouterConfig` from a path, a dict, a config, or (None) discovery."""
    if source is None:
        return discover_config(env)
    if isinstance(source, RouterConfig):
        return source
    if isinstance(source, Mapping):
        return parse_config(source, env=env)
    return load_config_file(source, env=env)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, for editors (yaml-language-server) and validators."""
    schema = RouterConfig.model_json_schema(mode="validation")
    schema["properties"].pop("base_dir", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "genrouter config"
    return schema


def dump_schema() -> str:
    """The config JSON Schema as indented JSON text."""
    return json.dumps(config_json_schema(), indent=2, default=str)
