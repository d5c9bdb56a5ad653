"""deploy/modal/README.md's offline example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

README = Path(__file__).resolve().parents[1] / "deploy" / "modal" / "README.md"
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def test_the_offline_example_routes_a_request_to_the_in_process_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The "Try the route offline" block generates through the router and prints provider, cost and GPU."""
    section = README.read_text().split("### Try the route offline", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    exec(compile(block.group(1), str(README), "exec"), {"__name__": "readme"})
    provider, amount, gpu = capsys.readouterr().out.split()
    assert provider == "modal"
    assert float(amount) > 0
    assert gpu == "cpu"
