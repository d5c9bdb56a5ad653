"""The ``genrouter loadtest`` command: the live display and the final summary.

``register(app)`` adds the command to the CLI's typer app (called from ``cli.py``).
No ``from __future__ import annotations`` here: typer reads the command's annotations
at run time, and the CLI's option types are imported inside :func:`register`.
"""

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from genrouter.loadtest._run import LoadTest, run_loadtest
from genrouter.loadtest.report import write_report

__all__ = ["live_line", "register", "summary_tables"]


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}s"


def live_line(state: LoadTest) -> Text:
    """The live display: done, in flight, errors, p50/p95 so far, spend."""
    planned = f"/{state.planned}" if state.planned is not None else ""
    rate = f" · {state.done / state.elapsed_s:.1f} req/s" if state.elapsed_s > 0 else ""
    return Text(
        f"loadtest {state.model}: done {state.done}{planned} · in flight {state.in_flight} · "
        f"errors {state.errors} · p50 {_s(state.latency(0.5))} · p95 {_s(state.latency(0.95))} · "
        f"spend ${state.spend_usd}{rate}"
    )


def summary_tables(summary: dict[str, Any]) -> RenderableType:
    """The final summary: latency, throughput, queue vs run, errors, and per provider."""
    lat = summary["latency_s"]
    overall = Table(title=f"loadtest {summary['model']}", show_header=False, title_justify="left")
    overall.add_column(style="bold")
    overall.add_column()
    throughput = summary["throughput_rps"]
    overall.add_row(
        "requests", f"{summary['requests']} ({summary['succeeded']} ok, {summary['failed']} failed)"
    )
    overall.add_row("latency p50 / p95 / p99", f"{_s(lat['p50'])} / {_s(lat['p95'])} / {_s(lat['p99'])}")
    overall.add_row("throughput", "–" if throughput is None else f"{throughput:.2f} req/s")
    overall.add_row("duration", _s(summary["duration_s"]))
    overall.add_row(
        "queue vs run (mean)",
        f"queued {_s(summary['queue_s']['mean'])} · running {_s(summary['run_s']['mean'])}",
    )
    overall.add_row("total cost", f"${summary['cost_usd_total']}")
    errors = summary["errors_by_type"]
    overall.add_row(
        "errors", ", ".join(f"{k} × {v}" for k, v in sorted(errors.items())) if errors else "none"
    )
    providers = Table(title="per provider", title_justify="left")
    for column in ("provider", "requests", "share", "ok", "p50", "p95", "cost"):
        providers.add_column(column, justify="left" if column == "provider" else "right")
    for name, p in summary["providers"].items():
        providers.add_row(
            name,
            str(p["requests"]),
            f"{100 * p['share']:.1f}%",
            str(p["succeeded"]),
            _s(p["p50_s"]),
            _s(p["p95_s"]),
            f"${Decimal(p['cost_usd'])}",
        )
    return Group(overall, providers)


def register(app: typer.Typer) -> None:
    """Add ``loadtest`` to ``app``."""
    from genrouter.cli import FAILURE_EXIT, ConfigOption, VerboseOption, _config, _errors, _parse_size, _run
    from genrouter.errors import InvalidRequestError
    from genrouter.router import AsyncRouter

    @app.command()
    def loadtest(
        model: Annotated[str, typer.Option("-m", "--model", help="Model to request.")],
        config: ConfigOption = None,
        requests: Annotated[
            int | None, typer.Option("--requests", "-n", min=1, help="Requests to send (default 100).")
        ] = None,
        concurrency: Annotated[
            int | None,
            typer.Option("--concurrency", min=1, help="Requests in flight (closed loop; default 10)."),
        ] = None,
        rate: Annotated[
            float | None, typer.Option("--rate", help="Requests started per second (open loop).")
        ] = None,
        duration: Annotated[
            float | None, typer.Option("--duration", help="Stop starting requests after this many seconds.")
        ] = None,
        prompt: Annotated[
            str, typer.Option("--prompt", help="Prompt of every request.")
        ] = "a red fox in snow",
        size: Annotated[str | None, typer.Option("--size", help="WIDTHxHEIGHT of every request.")] = None,
        report: Annotated[
            Path | None, typer.Option("--report", help="Write a self-contained DIR/index.html report.")
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the summary as one JSON object.")
        ] = False,
        progress: Annotated[
            bool | None,
            typer.Option("--progress/--no-progress", help="Live display (default: on a terminal)."),
        ] = None,
        verbose: VerboseOption = False,
    ) -> None:
        """Fire routed requests at a concurrency or a rate; print p50/p95/p99, cost and errors."""
        from rich.live import Live

        with _errors(verbose):
            if concurrency is not None and rate is not None:
                raise InvalidRequestError("give --concurrency or --rate, not both", field="rate")
            if rate is not None and not rate > 0:
                raise InvalidRequestError(f"--rate must be above 0 requests/s, got {rate:g}", field="rate")
            if duration is not None and not duration > 0:
                raise InvalidRequestError(f"--duration must be above 0 s, got {duration:g}", field="duration")
            cfg = _config(config)
            fields: dict[str, Any] = {"prompt": prompt, **_parse_size(size)}
            err = Console(stderr=True, highlight=False, soft_wrap=True)
            show = err.is_terminal if progress is None else progress

            async def go() -> LoadTest:
                async with AsyncRouter.from_config(cfg) as router:
                    if not show:
                        return await run_loadtest(
                            router, model, requests=requests, concurrency=concurrency, rate=rate,
                            duration_s=duration, fields=fields,
                        )  # fmt: skip
                    with Live(Text(f"loadtest {model}: starting"), console=err, refresh_per_second=4) as live:
                        return await run_loadtest(
                            router, model, requests=requests, concurrency=concurrency, rate=rate,
                            duration_s=duration, fields=fields,
                            on_sample=lambda state: live.update(live_line(state)),
                        )  # fmt: skip

            state: LoadTest = _run(go)
            summary = state.summary()
            if report is not None:
                path = write_report(state, report, summary)
                summary["report"] = str(path)
            if as_json:
                sys.stdout.write(json.dumps(summary) + "\n")
            else:
                out = Console(highlight=False, soft_wrap=True)
                out.print(summary_tables(summary))
                if report is not None:
                    out.print(f"report: {summary['report']}", markup=False)
        if summary["requests"] and not summary["succeeded"]:
            raise typer.Exit(FAILURE_EXIT)
