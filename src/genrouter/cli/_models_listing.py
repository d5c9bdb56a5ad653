"""``genrouter models``: the rows it lists, as JSON or as a table that reads at 80 columns.

Without a config the rows are the shipped catalogs of every provider type (``provider``
is the type); with one they are the router's deployments (``provider`` is the config
key) with their health. Each row: ``model``, ``kind``, ``provider``, ``provider_type``,
``endpoint``, ``capabilities``, ``price`` (``{"<unit>": "<decimal>"}`` or None),
``price_source``, ``price_date``, ``aliases`` and, with a config, ``health``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from genrouter.catalog import KINDS, Catalog, CatalogEntry, Pricing, build_deployment

if TYPE_CHECKING:
    from genrouter.catalog import Deployment
    from genrouter.router import AsyncRouter

__all__ = ["catalog_rows", "filter_rows", "render_table", "router_rows"]

_UNIT_TEXT = {
    "per_image": "/image",
    "per_video": "/video",
    "per_megapixel": "/MP",
    "per_video_second": "/video-s",
    "per_gpu_second": "/GPU-s",
}
_SHORT_CAPS = {
    "text-to-image": "t2i",
    "image-to-image": "i2i",
    "inpainting": "inp",
    "lora": "lora",
    "text-to-video": "t2v",
    "image-to-video": "i2v",
    "upscale": "upscale",
    "remove-background": "rm-bg",
}


def _price(pricing: Pricing | None) -> dict[str, str] | None:
    return None if pricing is None else {pricing.unit.value: str(pricing.amount)}


def _row(deployment: Deployment, aliases: Sequence[str]) -> dict[str, Any]:
    pricing = deployment.pricing
    return {
        "model": deployment.model,
        "kind": deployment.kind,
        "provider": deployment.provider,
        "provider_type": deployment.provider_type,
        "endpoint": deployment.endpoint,
        "capabilities": sorted(c.value for c in deployment.capabilities),
        "price": _price(pricing),
        "price_source": pricing.source if pricing else None,
        "price_date": pricing.date if pricing else None,
        "aliases": list(aliases),
    }


def catalog_rows(catalog: Catalog, provider_types: Iterable[str]) -> list[dict[str, Any]]:
    """One row per shipped deployment (variants included) of each provider type."""
    rows = []
    for ptype in provider_types:
        for model, entry in catalog.entries_for(ptype).items():
            spec = catalog.models.get(model)
            aliases = spec.aliases if spec else ()
            for each in entry.expanded():
                rows.append(_row(_deployment(ptype, model, each, catalog), aliases))
    return sorted(rows, key=lambda r: (r["model"], r["provider"], r["endpoint"]))


def _deployment(ptype: str, model: str, entry: CatalogEntry, catalog: Catalog) -> Deployment:
    return build_deployment(
        provider=ptype, provider_type=ptype, model=model, entry=entry, spec=catalog.models.get(model)
    )


def router_rows(router: AsyncRouter) -> list[dict[str, Any]]:
    """One row per configured deployment, with its health now."""
    now = router.clock.now()
    rows = []
    for deployment in sorted(router.deployments(), key=lambda d: (d.model, d.provider, d.endpoint)):
        spec = router.catalog.models.get(deployment.model)
        row = _row(deployment, spec.aliases if spec else ())
        row["health"] = router.state.health(deployment.key).describe(now)
        rows.append(row)
    return rows


def filter_rows(rows: list[dict[str, Any]], kind: str | None, provider: str | None) -> list[dict[str, Any]]:
    """Rows of ``kind`` (one of :data:`~genrouter.catalog.KINDS`) and of a provider type or key.

    A ``provider`` that no row has is a ValueError naming the ones there are.
    """
    known = sorted({r["provider"] for r in rows} | {r["provider_type"] for r in rows})
    if kind is not None:
        rows = [r for r in rows if r["kind"] == kind]
    if provider is not None:
        if provider not in known:
            raise ValueError(
                f"--provider {provider!r} is no provider type or key here; use one of {', '.join(known)}"
            )
        rows = [r for r in rows if provider in (r["provider"], r["provider_type"])]
    return rows


def _price_text(row: dict[str, Any]) -> str:
    price = row["price"]
    if not price:
        return "unknown"
    ((unit, amount),) = price.items()
    return f"${amount}{_UNIT_TEXT.get(unit, ' ' + unit)}"


def _short_health(text: str) -> str:
    """``closed, 3 ok / 0 failed, p95 1.20s`` → ``closed 3/0 1.20s``."""
    parts = [p.strip() for p in text.split(",")]
    out = [parts[0]]
    for part in parts[1:]:
        if " ok / " in part:
            ok, _, failed = part.partition(" ok / ")
            out.append(f"{ok}/{failed.removesuffix(' failed')}")
        elif part.startswith("p95 "):
            out.append(part.removeprefix("p95 "))
    return " ".join(out)


def render_table(rows: list[dict[str, Any]], console: Console, *, health: bool) -> None:
    """Print ``rows`` as a table: one line per row at any width.

    Cells never wrap. From 120 columns cells are written out in full when every column,
    endpoints untruncated, then fits; otherwise (and below 120 columns) capabilities are abbreviated
    (t2i,i2i,...) and health shortened. The endpoint column takes the room that is left
    and is truncated with an ellipsis, and columns that still do not fit (health, then
    capabilities) are dropped (``--json`` has everything). So a wider terminal never
    shows fewer columns.
    """
    names = ["model", "kind", "provider", "endpoint", "price", "capabilities"] + (
        ["health"] if health else []
    )
    layout = _layout(rows, names, console.width, wide=False, health=health)
    if console.width >= 120:
        full = _layout(rows, names, console.width, wide=True, health=health)
        longest = max((len(cells[names.index("endpoint")]) for cells in full[0]), default=0)
        if len(full[1]) == len(names) and full[2] >= longest:
            layout = full
    body, shown, fit = layout
    endpoint = names.index("endpoint")
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    widths = [max([len(name)] + [len(cells[i]) for cells in body]) for i, name in enumerate(names)]
    for i in shown:
        width = fit if i == endpoint else widths[i]
        table.add_column(names[i], no_wrap=True, overflow="ellipsis", min_width=width, max_width=width)
    for cells in body:
        # The tail of an endpoint tells models apart (…forest-labs/flux-dev), so cut its head.
        text = cells[endpoint]
        cells[endpoint] = text if len(text) <= fit else "…" + text[-(fit - 1) :]
        table.add_row(*(cells[i] for i in shown))
    console.print(table)


def _layout(
    rows: list[dict[str, Any]], names: list[str], width: int, *, wide: bool, health: bool
) -> tuple[list[list[str]], list[int], int]:
    """(cells per row, indexes of the columns shown, endpoint width) for ``width`` columns."""
    body = [_cells(row, wide, health) for row in rows]
    widths = [max([len(name)] + [len(cells[i]) for cells in body]) for i, name in enumerate(names)]
    shown = list(range(len(names)))
    endpoint = names.index("endpoint")

    def room() -> int:
        others = sum(widths[i] for i in shown if i != endpoint)
        return width - others - 2 * (len(shown) - 1)

    for drop in ("health", "capabilities"):
        if room() >= min(widths[endpoint], _MIN_ENDPOINT) or drop not in names:
            continue
        shown.remove(names.index(drop))
    return body, shown, max(_MIN_ENDPOINT, min(widths[endpoint], room()))


_MIN_ENDPOINT = 12


def _cells(row: dict[str, Any], wide: bool, health: bool) -> list[str]:
    caps = row["capabilities"]
    cells = [
        row["model"],
        row["kind"] if wide or row["kind"] != "remove-background" else "rm-bg",
        row["provider"],
        row["endpoint"],
        _price_text(row),
        ", ".join(caps) if wide else ",".join(_SHORT_CAPS.get(c, c) for c in caps),
    ]
    if health:
        cells.append(row["health"] if wide else _short_health(row["health"]))
    return cells


def check_kind(kind: str | None) -> str | None:
    """``kind`` if it is a known kind, else a ValueError naming the kinds."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"--kind {kind!r} is not a kind; use one of {', '.join(KINDS)}")
    return kind
