"""The load test report: one self-contained ``index.html`` (data and charts inline).

The page needs no network: the samples are embedded as JSON, and a small script
written here draws three SVG charts when the page loads (a latency histogram, latency
over time coloured by provider with failures marked ✕, and cost per provider), beside
a summary table rendered in HTML. No CDN, no external fonts or scripts.

Drawn marks carry classes a test can count: ``rect.bar`` (histogram), ``circle.pt`` and
``path.err`` (timeline), ``rect.cost-bar`` (cost); ``body[data-drawn]`` is set when the
script finished.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from genrouter.loadtest._run import LoadTest

__all__ = ["render_report", "write_report"]

PALETTE = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"]


def _fmt_s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _rows(summary: dict[str, Any]) -> str:
    lat = summary["latency_s"]
    queue, run = summary["queue_s"], summary["run_s"]
    throughput = summary["throughput_rps"]
    items = [
        ("Requests", f"{summary['requests']} ({summary['succeeded']} ok, {summary['failed']} failed)"),
        ("Latency p50 / p95 / p99", f"{_fmt_s(lat['p50'])} / {_fmt_s(lat['p95'])} / {_fmt_s(lat['p99'])}"),
        ("Throughput", "–" if throughput is None else f"{throughput:.2f} req/s"),
        ("Duration", _fmt_s(summary["duration_s"])),
        ("Queue time (mean / p95)", f"{_fmt_s(queue['mean'])} / {_fmt_s(queue['p95'])}"),
        ("Run time (mean / p95)", f"{_fmt_s(run['mean'])} / {_fmt_s(run['p95'])}"),
        ("Total cost", f"${summary['cost_usd_total']}"),
    ]
    errors = summary["errors_by_type"]
    if errors:
        items.append(("Errors", ", ".join(f"{name} × {count}" for name, count in sorted(errors.items()))))
    return "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)


def _provider_rows(summary: dict[str, Any], colours: dict[str, str]) -> str:
    out = []
    for name, p in summary["providers"].items():
        swatch = f'<span class="sw" style="background:{colours.get(name, "#888")}"></span>'
        cells = [
            swatch + html.escape(name),
            str(p["requests"]),
            f"{100 * p['share']:.1f} %",
            str(p["succeeded"]),
            _fmt_s(p["p50_s"]),
            _fmt_s(p["p95_s"]),
            f"${p['cost_usd']}",
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out)


_SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById('data').textContent);
  const NS = 'http://www.w3.org/2000/svg';
  function el(name, attrs, parent, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function ticks(max, n) {
    if (!(max > 0)) return [0];
    const raw = max / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw);
    const out = [];
    for (let v = 0; v <= max + 1e-9; v += step) out.push(+v.toFixed(6));
    return out;
  }
  function frame(svg, W, H, m, xmax, ymax, xlabel, ylabel, xfmt, yfmt) {
    const x = v => m.l + (W - m.l - m.r) * (xmax > 0 ? v / xmax : 0);
    const y = v => H - m.b - (H - m.t - m.b) * (ymax > 0 ? v / ymax : 0);
    for (const t of ticks(ymax, 5)) {
      el('line', {x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), class: 'grid'}, svg);
      el('text', {x: m.l - 6, y: y(t) + 4, 'text-anchor': 'end', class: 'tick'}, svg, yfmt(t));
    }
    for (const t of ticks(xmax, 8)) {
      el('text', {x: x(t), y: H - m.b + 16, 'text-anchor': 'middle', class: 'tick'}, svg, xfmt(t));
    }
    el('line', {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: 'axis'}, svg);
    el('line', {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: 'axis'}, svg);
    el('text', {x: (m.l + W - m.r) / 2, y: H - 6, 'text-anchor': 'middle', class: 'label'}, svg, xlabel);
    el('text', {x: 14, y: (m.t + H - m.b) / 2, transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})`,
                'text-anchor': 'middle', class: 'label'}, svg, ylabel);
    return {x, y};
  }
  const secs = v => v + ' s';
  const ok = D.samples.filter(s => s.error === null);

  // Latency histogram
  (function () {
    const svg = document.getElementById('hist'), W = 560, H = 280, m = {l: 56, r: 16, t: 12, b: 44};
    const lat = ok.map(s => s.latency_s);
    const max = Math.max(0.001, ...lat);
    const bins = Math.max(5, Math.min(40, Math.ceil(Math.sqrt(lat.length)) + 4));
    const width = max / bins, counts = new Array(bins).fill(0);
    for (const v of lat) counts[Math.min(bins - 1, Math.floor(v / width))]++;
    const f = frame(svg, W, H, m, max, Math.max(1, ...counts), 'latency (s)', 'requests',
                    v => (+v.toFixed(2)) + '', v => v + '');
    counts.forEach((c, i) => {
      if (!c) return;
      const r = el('rect', {x: f.x(i * width) + 1, y: f.y(c), width: Math.max(1, f.x(width) - f.x(0) - 2),
                            height: f.y(0) - f.y(c), class: 'bar'}, svg);
      el('title', {}, r, `${(i * width).toFixed(2)}–${((i + 1) * width).toFixed(2)} s: ${c}`);
    });
    // Labels step down (p50, p95, p99) so close quantiles do not print over each other.
    [[D.summary.latency_s.p50, 'p50'], [D.summary.latency_s.p95, 'p95'],
     [D.summary.latency_s.p99, 'p99']].forEach(([q, name], i) => {
      if (q === null) return;
      el('line', {x1: f.x(q), x2: f.x(q), y1: m.t, y2: H - m.b, class: 'q'}, svg);
      el('text', {x: f.x(q) + 3, y: m.t + 10 + 12 * i, class: 'qlabel'}, svg, name);
    });
  })();

  // Latency over time, coloured by provider
  (function () {
    const svg = document.getElementById('timeline'), W = 560, H = 280, m = {l: 56, r: 16, t: 12, b: 44};
    const xmax = Math.max(0.001, ...D.samples.map(s => s.started_s));
    const ymax = Math.max(0.001, ...D.samples.map(s => s.latency_s));
    const f = frame(svg, W, H, m, xmax, ymax, 'request start (s into the run)', 'latency (s)',
                    v => (+v.toFixed(1)) + '', v => (+v.toFixed(2)) + '');
    for (const s of D.samples) {
      const cx = f.x(s.started_s), cy = f.y(s.latency_s);
      if (s.error === null) {
        const c = el('circle', {cx, cy, r: 3, class: 'pt', fill: D.colours[s.provider] || '#888',
                                'data-provider': s.provider}, svg);
        el('title', {}, c, `${s.provider}: ${s.latency_s.toFixed(2)} s`);
      } else {
        const d = `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx - 4},${cy + 4}L${cx + 4},${cy - 4}`;
        const p = el('path', {d, class: 'err'}, svg);
        el('title', {}, p, `${s.error} after ${s.latency_s.toFixed(2)} s`);
      }
    }
    const legend = document.getElementById('legend');
    for (const name of Object.keys(D.colours)) {
      const item = document.createElement('span');
      item.className = 'item';
      item.innerHTML = `<span class="sw" style="background:${D.colours[name]}"></span>`;
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    }
    if (D.samples.some(s => s.error !== null)) {
      const item = document.createElement('span');
      item.className = 'item';
      item.innerHTML = '<span class="x">✕</span>failed';
      legend.appendChild(item);
    }
  })();

  // Cost per provider
  (function () {
    const svg = document.getElementById('cost');
    const entries = Object.entries(D.summary.cost_usd_by_provider).map(([k, v]) => [k, parseFloat(v)]);
    const W = 560, row = 34, m = {l: 120, r: 90, t: 8, b: 8};
    const H = Math.max(60, m.t + m.b + row * entries.length);
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const max = Math.max(1e-9, ...entries.map(e => e[1]));
    if (!entries.length) el('text', {x: 10, y: 30, class: 'tick'}, svg, 'no known cost');
    entries.forEach(([name, v], i) => {
      const y = m.t + i * row, w = (W - m.l - m.r) * v / max;
      el('text', {x: m.l - 8, y: y + row / 2 + 4, 'text-anchor': 'end', class: 'tick'}, svg, name);
      const r = el('rect', {x: m.l, y: y + 6, width: Math.max(1, w), height: row - 12, class: 'cost-bar',
                            fill: D.colours[name] || '#888'}, svg);
      el('title', {}, r, `${name}: $${v}`);
      el('text', {x: m.l + Math.max(1, w) + 6, y: y + row / 2 + 4, class: 'tick'}, svg, '$' + v.toFixed(4));
    });
  })();
  document.body.setAttribute('data-drawn', 'true');
})();
"""

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #111827; margin: 24px;
       background: #f9fafb; }
h1 { font-size: 20px; margin: 0 0 4px; } .sub { color: #6b7280; margin-bottom: 16px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 16px; }
.card h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 4px 8px;
        border-bottom: 1px solid #f3f4f6; } th { color: #374151; font-weight: 600; white-space: nowrap; }
svg { width: 100%; height: auto; display: block; }
.grid { stroke: #f3f4f6; } .axis { stroke: #9ca3af; } .tick { fill: #4b5563; font-size: 11px; }
.label { fill: #374151; font-size: 12px; } .bar { fill: #2563eb; }
.q { stroke: #dc2626; stroke-dasharray: 4 3; }
.qlabel { fill: #dc2626; font-size: 11px; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.pt { fill-opacity: 0.75; } .err { stroke: #dc2626; stroke-width: 1.6; }
.sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
#legend .item { margin-right: 14px; } .x { color: #dc2626; margin-right: 4px; }
"""


def render_report(state: LoadTest, summary: dict[str, Any] | None = None) -> str:
    """The report page as one HTML string (see the module docstring)."""
    summary = summary or state.summary()
    names = sorted({s.provider for s in state.samples if s.provider is not None})
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    samples = [
        {
            "started_s": round(s.started_s, 4),
            "latency_s": round(s.latency_s, 4),
            "provider": s.provider,
            "error": s.error,
        }
        for s in state.samples
    ]
    data = json.dumps({"summary": summary, "samples": samples, "colours": colours})
    data = data.replace("</", "<\\/")  # keep the JSON from closing its script element
    mode = summary["mode"]
    how = f"concurrency {mode['concurrency']}" if "concurrency" in mode else f"{mode['rate_rps']:g} req/s"
    title = f"genrouter loadtest: {summary['model']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="sub">{summary["requests"]} requests, {html.escape(how)}, {summary["duration_s"]:.1f} s</div>
<div class="grid2">
<div class="card"><h2>Summary</h2><table>{_rows(summary)}</table></div>
<div class="card"><h2>Providers</h2><table>
<tr><th>provider</th><th>requests</th><th>share</th><th>ok</th><th>p50</th><th>p95</th><th>cost</th></tr>
{_provider_rows(summary, colours)}</table></div>
<div class="card"><h2>Latency histogram (successful requests)</h2>
<svg id="hist" viewBox="0 0 560 280" role="img" aria-label="latency histogram"></svg></div>
<div class="card"><h2>Latency over time</h2><div id="legend"></div>
<svg id="timeline" viewBox="0 0 560 280" role="img" aria-label="latency over time by provider"></svg></div>
<div class="card"><h2>Cost per provider</h2>
<svg id="cost" viewBox="0 0 560 60" role="img" aria-label="cost per provider"></svg></div>
</div>
<script id="data" type="application/json">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_report(state: LoadTest, directory: str | Path, summary: dict[str, Any] | None = None) -> Path:
    """Write ``directory/index.html`` (creating the directory) and return its path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(render_report(state, summary), encoding="utf-8")
    return path
