"""ComfyUI workflows as models: declared inputs, request checks and per-deployment values.

A catalog entry of ``kind: workflow`` declares the workflow's named inputs with a type::

    inputs:
      prompt: string                                   # shorthand: just the type
      seed: integer
      image: image                                     # http(s)/data: URL, bytes or a Path
      strength: {type: number, minimum: 0, maximum: 1, required: false}

Types: ``string``, ``integer``, ``number``, ``boolean``, ``image`` and ``json`` (any
JSON value). A request carries values in ``inputs`` (``inputs={"strength": 0.4}``); an
input that shares its name with a request field (``prompt``, ``seed``, ``image``...)
is also filled from that field when ``inputs`` does not give it.

:func:`check_inputs` rejects, before anything is submitted, an unknown input name, a
value of the wrong type or out of range, and a missing required input, with an
:class:`~genrouter.errors.InvalidRequestError` whose ``field`` is ``inputs.<name>``.

Each deployment's ``params`` maps request fields and input names to its own inputs
(fal: the endpoint's input names; the self-hosted class: ``<node id>.inputs.<name>``
paths into the API-format workflow JSON). :func:`workflow_values` resolves them.
This module knows no provider.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genrouter.errors import ConfigError, InvalidRequestError

if TYPE_CHECKING:
    from genrouter.catalog import Deployment
    from genrouter.types import GenerationRequest

__all__ = [
    "InputSpec",
    "InputType",
    "WorkflowValue",
    "check_inputs",
    "check_workflow_deployments",
    "parse_cli_input",
    "parse_inputs",
    "share_workflow_inputs",
    "workflow_inputs",
    "workflow_schema",
    "workflow_values",
]

InputType = Literal["string", "integer", "number", "boolean", "image", "json"]
"""What a workflow input takes."""

_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_MEDIA_SCHEMES = ("http://", "https://", "data:")
_GENERATIVE_FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "strength",
    "width",
    "height",
    "image",
    "mask",
    "fps",
    "duration_s",
)
"""Request fields a workflow may map; set but unmapped ones are reported as ignored."""


class InputSpec(BaseModel):
    """One declared workflow input: its type, whether it is required, and numeric bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: InputType
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bounds(self) -> InputSpec:
        bounded = self.minimum is not None or self.maximum is not None
        if bounded and self.type not in ("integer", "number"):
            raise ValueError(f"minimum/maximum apply to integer and number inputs, not {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum:g} > maximum {self.maximum:g}")
        return self


def parse_inputs(value: Mapping[str, Any] | None) -> dict[str, InputSpec] | None:
    """Validate an entry's ``inputs:`` mapping (names and specs); None stays None."""
    if value is None:
        return None
    specs: dict[str, InputSpec] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _INPUT_NAME.match(name):
            raise ValueError(f"input name {name!r} must be a letter or _ then letters, digits, _ or -")
        specs[name] = raw if isinstance(raw, InputSpec) else InputSpec.model_validate(raw)
    return specs


# -- the model's schema, checked once at router construction -----------------------------------


def workflow_schema(deployments: Sequence[Deployment]) -> dict[str, InputSpec]:
    """The inputs declared by a workflow model's deployments, merged (they must agree)."""
    schema: dict[str, InputSpec] = {}
    owner: dict[str, str] = {}
    for deployment in deployments:
        for name, spec in deployment.inputs.items():
            known = schema.get(name)
            if known is not None and known.type != spec.type:
                raise ConfigError(
                    f"model {deployment.model!r}: input {name!r} is {spec.type} on {deployment.provider} "
                    f"but {known.type} on {owner[name]}; declare one type",
                    key_path=f"providers.{deployment.provider}.models.{deployment.model}.inputs.{name}",
                )
            if known is None:
                schema[name], owner[name] = spec, deployment.provider
    return schema


def check_workflow_deployments(deployments: Iterable[Deployment]) -> dict[str, dict[str, InputSpec]]:
    """Every workflow model's schema; a ``params`` key that is neither a request field nor a
    declared input is a :class:`ConfigError` naming it (a typo would silently send nothing)."""
    from genrouter.types import GenerationRequest

    by_model: dict[str, list[Deployment]] = {}
    for deployment in deployments:
        if deployment.kind == "workflow":
            by_model.setdefault(deployment.model, []).append(deployment)
    schemas: dict[str, dict[str, InputSpec]] = {}
    fields = GenerationRequest.model_fields
    for model, group in by_model.items():
        schema = schemas[model] = workflow_schema(group)
        for deployment in group:
            for key in deployment.params:
                if key in schema or key in fields:
                    continue
                close = difflib.get_close_matches(key, [*schema, *fields], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"providers.{deployment.provider}.models.{model}.params: {key!r} is neither a "
                    f"request field nor a declared input of {model!r} "
                    f"(inputs: {', '.join(schema) or 'none'}){hint}",
                    key_path=f"providers.{deployment.provider}.models.{model}.params.{key}",
                )
    return schemas


def share_workflow_inputs(
    deployments: dict[str, list[Deployment]], schemas: Mapping[str, Mapping[str, InputSpec]]
) -> None:
    """Give every deployment of a workflow model the model's whole schema (in place), so a
    backend knows an input's type (an image goes through its media path) wherever it was declared."""
    for model, schema in schemas.items():
        deployments[model] = [dataclasses.replace(d, inputs=dict(schema)) for d in deployments[model]]


# -- request checks, before anything is submitted --------------------------------------------


def check_inputs(
    request: GenerationRequest, *, model: str, kind: str, schema: Mapping[str, InputSpec] | None
) -> None:
    """Raise :class:`InvalidRequestError` naming ``inputs.<name>`` for a bad workflow input.

    A model that is not a workflow takes no ``inputs``. A workflow's inputs must be
    declared, of their declared type and within ``minimum``/``maximum``; a required one
    must be given (in ``inputs`` or as the request field of the same name).
    """
    given = request.inputs
    if kind != "workflow":
        if given:
            raise InvalidRequestError(
                f"inputs: model {model!r} is a {kind} model; inputs are for workflow models "
                "(pass its fields, such as prompt or seed, directly)",
                field="inputs",
            )
        return
    spec_of = schema or {}
    for name, value in given.items():
        spec = spec_of.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(spec_of), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidRequestError(
                f"inputs.{name}: workflow {model!r} has no input {name!r}; "
                f"its inputs are {', '.join(spec_of) or 'none'}{hint}",
                field=f"inputs.{name}",
            )
        problem = _type_problem(spec, value)
        if problem is not None:
            raise InvalidRequestError(f"inputs.{name}: {_shown(value)} {problem}", field=f"inputs.{name}")
    for name, spec in spec_of.items():
        if spec.required and name not in given and _field_value(request, name) is None:
            # An input named like a request field (prompt, seed...) is filled from it.
            fix = f"{name}=... or " if name in type(request).model_fields else ""
            raise InvalidRequestError(
                f"inputs.{name}: workflow {model!r} requires input {name!r} ({spec.type}); "
                f"pass {fix}inputs={{{name!r}: ...}}",
                field=f"inputs.{name}",
            )


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_problem(spec: InputSpec, value: Any) -> str | None:
    kind = spec.type
    if kind == "string":
        return None if isinstance(value, str) else f"is {type(value).__name__}, not a string"
    if kind == "boolean":
        return None if isinstance(value, bool) else f"is {type(value).__name__}, not true or false"
    if kind in ("integer", "number"):
        integral = isinstance(value, int) and not isinstance(value, bool)
        numeric = integral or (isinstance(value, float) and math.isfinite(value))
        if kind == "integer" and not integral:
            return f"is {type(value).__name__}, not an integer"
        if not numeric:
            return f"is {type(value).__name__}, not a finite number"
        if spec.minimum is not None and value < spec.minimum:
            return f"is below the minimum {spec.minimum:g}"
        if spec.maximum is not None and value > spec.maximum:
            return f"is above the maximum {spec.maximum:g}"
        return None
    if kind == "image":
        if isinstance(value, bytes | Path):
            return None if len(value if isinstance(value, bytes) else str(value)) else "is empty"
        if isinstance(value, str) and value.lower().startswith(_MEDIA_SCHEMES):
            return None
        return "is not an image: pass an http(s) or data: URL, bytes or a pathlib.Path"
    return _json_problem(value)


def _json_problem(value: Any, depth: int = 0) -> str | None:
    if depth > 32:
        return "nests too deeply"
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "is not a finite number"
    if isinstance(value, list | tuple):
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a non-string key {key!r}"
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"is {type(value).__name__}, not a JSON value"


def _field_value(request: GenerationRequest, name: str) -> Any:
    if name not in type(request).model_fields or name == "inputs":
        return None
    value = getattr(request, name)
    return None if value in (None, [], {}) else value


# -- what one deployment is sent ---------------------------------------------------------------


class WorkflowValue(BaseModel):
    """One value for a deployment: its target (the provider's input name or a node path)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    """The request field or input name it came from."""
    target: str
    value: Any
    media: bool = Field(default=False, description="An image: send it through the media path.")


def workflow_values(
    request: GenerationRequest,
    deployment: Deployment,
    *,
    where: str,
    media_fields: Iterable[str] = ("image", "mask"),
) -> tuple[list[WorkflowValue], list[str]]:
    """The values ``deployment`` is sent for ``request``, and warnings for what it ignores.

    For each ``params`` key: the ``inputs`` value of that name, else the request field
    of that name. A key mapped to null, or an input or field the deployment does not
    map, is ignored with a warning. ``media`` marks image-typed inputs and the request's
    media fields, which the backend sends through its media path.
    """
    values: list[WorkflowValue] = []
    warnings: list[str] = []
    mapped = deployment.params
    media_names = {n for n, s in deployment.inputs.items() if s.type == "image"} | set(media_fields)
    for name, target in mapped.items():
        value = request.inputs[name] if name in request.inputs else _field_value(request, name)
        if value is None:
            continue
        if not target:
            warnings.append(f"{where} has no input for {name}; {name}={_shown(value)} was ignored")
            continue
        values.append(WorkflowValue(name=name, target=target, value=value, media=name in media_names))
    for name, value in request.inputs.items():
        if name not in mapped:
            warnings.append(f"{where} has no input for inputs.{name}; {_shown(value)} was ignored")
    for name in _GENERATIVE_FIELDS:
        value = _field_value(request, name)
        if value is not None and name not in mapped and name not in request.inputs:
            warnings.append(f"{where} has no input for {name}; {name}={_shown(value)} was ignored")
    return values, warnings


async def workflow_inputs(
    request: GenerationRequest,
    deployment: Deployment,
    *,
    where: str,
    media: Callable[[Any, str], Awaitable[Any]],
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(the deployment's input, warnings, target → request field or ``inputs.<name>``).

    :func:`workflow_values` with every media value passed through ``await media(value,
    field)``: the backend's media path (inline, uploaded or passed through).
    """
    values, warnings = workflow_values(request, deployment, where=where)
    payload: dict[str, Any] = {}
    names: dict[str, str] = {}
    for item in values:
        field = f"inputs.{item.name}" if item.name in request.inputs else item.name
        payload[item.target] = await media(item.value, field) if item.media else item.value
        names[item.target] = field
    return payload, warnings, names


def parse_cli_input(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from ``genrouter generate -i``: VALUE as JSON when it parses (``7``,
    ``0.5``, ``true``, ``{"a": 1}``), ``@path`` as a file (an image input), else the text."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise InvalidRequestError(
            f"--input {text[:80]!r} is not NAME=VALUE (e.g. -i strength=0.5 or -i image=@fox.png)",
            field="inputs",
        )
    if raw.startswith("@"):
        return name.strip(), Path(raw[1:])
    try:
        return name.strip(), json.loads(raw)
    except ValueError:
        return name.strip(), raw
