"""Running the ``genrouter`` CLI in-process, as the tests of its commands do."""

from __future__ import annotations

import pytest

from genrouter.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``genrouter <argv>``: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err
