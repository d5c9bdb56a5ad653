"""The ``genrouter`` command line: generate, models, route --explain, batch, loadtest, config check/schema.

Every command takes ``-c/--config`` (else ``GENROUTER_CONFIG``, ``./genrouter.yaml``,
or credentials in the environment). An error prints exactly one line on stderr
(``-v`` adds the traceback) and exits 2 for configuration or usage errors, 1 for
generation failures.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from genrouter.catalog import Catalog
from genrouter.catalog._workflows import parse_cli_input
from genrouter.cli._models_listing import catalog_rows, check_kind, filter_rows, render_table, router_rows
from genrouter.config import RouterConfig, config_notes, config_present, dump_schema, load_config
from genrouter.errors import ConfigError, GenRouterError, InvalidRequestError
from genrouter.router import AsyncRouter
from genrouter.types import GenerationResult

if TYPE_CHECKING:
    from genrouter.batch import BatchReport

__all__ = ["app", "main"]

app = typer.Typer(
    name="genrouter",
    help="One generate() for image and video generation, routed across providers.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Check a config file or print its JSON Schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option("-c", "--config", help="Config file (default: GENROUTER_CONFIG, ./genrouter.yaml)."),
]
VerboseOption = Annotated[bool, typer.Option("-v", "--verbose", help="Show tracebacks and details.")]

USAGE_EXIT = 2
FAILURE_EXIT = 1
DEFAULT_OUTDIR = Path("genrouter-output")


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _status_console() -> Console:
    """Where ``generate``'s live line goes: stderr (shown only when it is a terminal)."""
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int) -> NoReturn:
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"genrouter: error: {one_line}\n")
    raise SystemExit(code)


@contextmanager
def _errors(verbose: bool) -> Iterator[None]:
    """Turn genrouter errors into one line on stderr and the contract's exit codes."""
    try:
        yield
    except (ConfigError, InvalidRequestError) as exc:
        if verbose:
            traceback.print_exc()
        _fail(str(exc), USAGE_EXIT)
    except GenRouterError as exc:
        if verbose:
            traceback.print_exc()
            for attempt in getattr(exc, "attempts", []):
                sys.stderr.write(f"  attempt {attempt.provider}: {attempt.outcome} {attempt.error or ''}\n")
        _fail(f"{type(exc).__name__}: {exc}", FAILURE_EXIT)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _parse_size(size: str | None) -> dict[str, int]:
    if size is None:
        return {}
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise InvalidRequestError(f"--size {size!r} is not WIDTHxHEIGHT, e.g. 1024x768", field="size")
    return {"width": int(parts[0]), "height": int(parts[1])}


def _image_option(value: str) -> str | Path:
    """``--image``: a URL stays a URL; anything else is a file that must exist."""
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise InvalidRequestError(
            f"--image {value!r}: no such file; pass an image file or an http(s) or data: URL",
            field="image",
        )
    return path


def _config(path: Path | None) -> RouterConfig:
    return load_config(path)


def _run(factory: Callable[[], Any]) -> Any:
    return asyncio.run(factory())


def _summary(result: GenerationResult, saved: list[Path]) -> list[str]:
    cost = result.cost.amount_usd
    cost_text = "unknown" if cost is None else f"${cost}"
    total = result.timings.total_s
    lines = [f"saved {path}" for path in saved]
    lines.append(
        f"provider {result.provider} ({result.endpoint}) · cost {cost_text} · "
        f"latency {total:.2f}s · {len(result.attempts)} attempt(s)"
        if total is not None
        else f"provider {result.provider} · cost {cost_text}"
    )
    if len(result.attempts) > 1:
        for attempt in result.attempts:
            detail = f": {attempt.error}" if attempt.error else ""
            lines.append(
                f"  attempt {attempt.provider} {attempt.outcome.value} {attempt.duration_s:.2f}s{detail}"
            )
    lines.extend(f"warning: {w}" for w in result.warnings)
    return lines


@app.command()
def generate(
    model: Annotated[str, typer.Option("-m", "--model", help="Model alias, e.g. flux-dev.")],
    prompt: Annotated[
        str | None, typer.Argument(help="What to generate (not needed for upscale or remove-background).")
    ] = None,
    config: ConfigOption = None,
    image: Annotated[
        str | None, typer.Option("--image", help="An input image: a file, or an http(s) or data: URL.")
    ] = None,
    outdir: Annotated[Path, typer.Option("-o", "--outdir", help="Where outputs are saved.")] = DEFAULT_OUTDIR,
    size: Annotated[str | None, typer.Option("--size", help="WIDTHxHEIGHT, e.g. 1024x768.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for reproducible outputs.")] = None,
    num: Annotated[int, typer.Option("-n", "--num", help="How many outputs.")] = 1,
    provider: Annotated[
        list[str] | None, typer.Option("-p", "--provider", help="Allow only this provider (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the GenerationResult as JSON.")] = False,
    inputs: Annotated[
        list[str] | None,
        typer.Option("-i", "--input", help="A workflow input NAME=VALUE (JSON, or @file for an image)."),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Generate and save outputs; print paths, provider, cost and latency."""
    with _errors(verbose):
        fields: dict[str, Any] = {"model": model, "num_outputs": num, **_parse_size(size)}
        if prompt is not None:
            fields["prompt"] = prompt
        if image is not None:
            fields["image"] = _image_option(image)
        if inputs:
            fields["inputs"] = dict(parse_cli_input(text) for text in inputs)
        if seed is not None:
            fields["seed"] = seed
        if provider:
            fields["providers"] = provider
        cfg = _config(config)

        from genrouter.cli._live import LiveLine

        live = LiveLine(_status_console(), model, enabled=not as_json)

        async def run() -> tuple[GenerationResult, list[Path]]:
            async with AsyncRouter.from_config(cfg) as router:
                with live:
                    result = await router.generate(
                        on_progress=live.update if live.enabled else None, **fields
                    )
            outdir.mkdir(parents=True, exist_ok=True)
            saved = []
            for i, artifact in enumerate(result.outputs):
                data = await artifact.aread()
                # A passthrough model (fal:fal-ai/flux/dev) is no file name: keep it flat and portable.
                stem = re.sub(r"[^A-Za-z0-9._-]+", "_", result.model).strip("._-") or "output"
                path = outdir / f"{stem}-{result.id[:8]}-{i}.{artifact.extension}"
                path.write_bytes(data)
                saved.append(path)
            return result, saved

        result, saved = _run(run)
        if as_json:
            sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        else:
            for line in _summary(result, saved):
                _out().print(line, markup=False)


@app.command()
def models(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of models.")] = False,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind (image, video, ...).")] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", help="Only this provider type or key.")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """List models: the shipped catalogs without a config; with one, its deployments and health."""
    with _errors(verbose):
        try:
            check_kind(kind)
        except ValueError as exc:
            raise ConfigError(str(exc), key_path="--kind") from exc
        router = None if config is None and not config_present() else AsyncRouter.from_config(_config(config))
        if router is None:
            catalog = Catalog.load()
            rows = catalog_rows(catalog, catalog.shipped_types())
        else:
            rows = router_rows(router)
        try:
            rows = filter_rows(rows, kind, provider)
        except ValueError as exc:
            raise ConfigError(str(exc), key_path="--provider") from exc
        if as_json:
            _out().print(json.dumps(rows, indent=2), markup=False, soft_wrap=True)
        else:
            render_table(rows, Console(highlight=False), health=router is not None)


@app.command()
def route(
    model: Annotated[str, typer.Option("-m", "--model", help="Model alias.")],
    prompt: Annotated[str | None, typer.Argument(help="The prompt to plan for.")] = None,
    config: ConfigOption = None,
    image: Annotated[
        str | None, typer.Option("--image", help="An input image: a file, or an http(s) or data: URL.")
    ] = None,
    size: Annotated[str | None, typer.Option("--size", help="WIDTHxHEIGHT.")] = None,
    num: Annotated[int, typer.Option("-n", "--num", help="How many outputs.")] = 1,
    explain: Annotated[bool, typer.Option("--explain", help="Show excluded candidates and why.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the RoutePlan as JSON.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Show how a request would be routed now, without sending it."""
    with _errors(verbose):
        router = AsyncRouter.from_config(_config(config))
        fields: dict[str, Any] = {"model": model, "num_outputs": num, **_parse_size(size)}
        if prompt is not None:
            fields["prompt"] = prompt
        if image is not None:
            fields["image"] = _image_option(image)
        plan = router.explain(**fields)
        if as_json:
            sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
            return
        table = Table("#", "provider", "endpoint", "est. cost", "est. p95", "score", "health", "excluded")
        shown = plan.candidates if explain else plan.viable
        for i, c in enumerate(shown, 1):
            table.add_row(
                str(i) if c.excluded is None else "-",
                c.provider,
                c.endpoint,
                "unknown" if c.estimated_cost_usd is None else f"${c.estimated_cost_usd}",
                "-" if c.estimated_p95_s is None else f"{c.estimated_p95_s:.2f}s",
                "-" if c.score is None else f"{c.score:.3g}",
                c.health,
                c.excluded or "",
            )
        console = _out()
        console.print(f"model {plan.model} · strategy {plan.strategy}", markup=False)
        console.print(table)
        for note in plan.notes:
            console.print(f"note: {note}", markup=False)


def _parse_budget(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        budget = Decimal(value.strip().lstrip("$"))
    except InvalidOperation:
        budget = None
    if budget is None or not budget.is_finite() or budget < 0:
        raise InvalidRequestError(
            f"--budget-usd {value!r} is not an amount of dollars, e.g. 25.00", field="budget"
        )
    return budget


def _money(amount: Decimal) -> str:
    return f"${amount:f}"


def _print_batch_summary(report: BatchReport) -> None:
    console = _out()
    counts = report.counts
    table = Table(title="batch summary", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("items", str(len(report.items))),
        ("succeeded", str(counts["succeeded"])),
        ("failed", str(counts["failed"])),
        ("in flight (re-attach next run)", str(counts["submitted"] + counts["submitting"])),
        ("not submitted", str(counts["pending"])),
        ("invalid lines", str(counts["invalid"])),
        ("already done before this run", str(report.skipped)),
        ("re-attached to earlier jobs", str(report.reattached)),
        ("submitted this run", str(report.submissions)),
        ("spend this run", _money(report.run_spend_usd)),
        ("spend, all runs", _money(report.spend_usd)),
        ("wall time", f"{report.wall_s:.1f}s"),
    ]
    if report.stopped:
        rows.append(("stopped early", report.stopped))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    by_provider: dict[str, list[Any]] = {}
    for item in report.items:
        if item.status == "succeeded" and item.provider:
            by_provider.setdefault(item.provider, []).append(item)
    if by_provider:
        providers = Table("provider", "items", "spend", "mean latency")
        for name, done in sorted(by_provider.items()):
            spend = sum((i.cost_usd for i in done if i.cost_usd is not None), Decimal(0))
            latencies = [i.latency_s for i in done if i.latency_s is not None]
            mean = f"{sum(latencies) / len(latencies):.2f}s" if latencies else "-"
            providers.add_row(name, str(len(done)), _money(spend), mean)
        console.print(providers)
    shown = [i for i in report.items if i.status not in ("succeeded", "pending")]
    for item in shown[:10]:
        console.print(
            f"{item.status} {item.id} (line {item.line}): {item.error or ''}".rstrip(": "), markup=False
        )
    if len(shown) > 10:
        console.print(f"... and {len(shown) - 10} more; see {report.results_path}", markup=False)
    console.print(f"results: {report.results_path}", markup=False)


@app.command()
def batch(
    input: Annotated[Path, typer.Argument(help="JSONL file: one request per line.")],
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Directory for outputs, manifest.sqlite and results.jsonl.")
    ],
    model: Annotated[str | None, typer.Option("-m", "--model", help="Model for lines without one.")] = None,
    config: ConfigOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Items in flight at once.")] = 4,
    budget_usd: Annotated[
        str | None, typer.Option("--budget-usd", help="Stop submitting once spend (all runs) reaches this.")
    ] = None,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, help="Submissions per item per run when jobs fail.")
    ] = 3,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds to wait for one job (default: deadline_s).")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Generate every line of a JSONL file into a directory; re-run the same command to resume."""
    from genrouter.batch import BatchRunner, read_items

    with _errors(verbose):
        budget = _parse_budget(budget_usd)
        cfg = _config(config)
        items, errors = read_items(input, model=model)
        if not items and not errors:
            raise ConfigError(f"{input} has no items (expected one JSON object per line)")
        for error in errors:
            sys.stderr.write(f"genrouter: warning: {error}\n")
        console = Console(stderr=True, highlight=False, soft_wrap=True)

        async def run() -> BatchReport:
            async with AsyncRouter.from_config(cfg) as router:
                runner = BatchRunner(
                    router,
                    items,
                    out,
                    errors=errors,
                    concurrency=concurrency,
                    budget_usd=budget,
                    max_attempts=max_attempts,
                    timeout_s=timeout,
                    progress=progress,
                    console=console,
                    handle_signals=True,
                )
                return await runner.run()

        report: BatchReport = _run(run)
        for warning in report.warnings:
            sys.stderr.write(f"genrouter: warning: {warning}\n")
        _print_batch_summary(report)
    if report.ok:
        return
    raise typer.Exit(130 if report.stopped == "interrupted" else FAILURE_EXIT)


@config_app.command("check")
def config_check(
    file: Annotated[Path | None, typer.Argument(help="Config file (default: discovery).")] = None,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Validate a config: YAML, keys, values, providers and the models it routes."""
    with _errors(verbose):
        cfg = _config(file or config)
        router = AsyncRouter.from_config(cfg)
        models = sorted({d.model for d in router.deployments()})
        _out().print(
            f"ok: {len(cfg.providers)} provider(s) ({', '.join(cfg.providers)}), {len(models)} model(s)",
            markup=False,
        )
        for note in config_notes(cfg):
            _out().print(f"note: {note}", markup=False)


@config_app.command("schema")
def config_schema() -> None:
    """Print the config file's JSON Schema (for editors via yaml-language-server)."""
    sys.stdout.write(dump_schema() + "\n")


from genrouter.loadtest.command import register as _register_loadtest  # noqa: E402 - needs the helpers above

_register_loadtest(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``genrouter`` script."""
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        # Usage errors come from click (or typer's vendored copy, depending on the
        # typer version): recognise them by shape rather than by import path.
        if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == USAGE_EXIT:
            _fail(exc.format_message(), USAGE_EXIT)
        raise
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
