"""``genrouter loadtest``: fire routed requests at a concurrency or a rate and report on them.

Python: ``state = await run_loadtest(router, "flux-dev", requests=200, concurrency=20)``;
``state.summary()`` is the ``--json`` object; ``write_report(state, "out/")`` writes the
self-contained ``out/index.html``.
"""

from genrouter.loadtest._run import LoadTest, Sample, run_loadtest
from genrouter.loadtest.report import render_report, write_report

__all__ = ["LoadTest", "Sample", "render_report", "run_loadtest", "write_report"]
