"""``timeouts.attempt_s`` over ``deadline_s`` is valid; the deadline bounds the attempt (issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from genrouter import AsyncRouter, DeadlineExceededError
from genrouter.cli import main
from genrouter.testing import FakeBackend, FakeClock, Hang

SIM = {"type": "simulated", "latency": 0}


def test_a_per_model_deadline_under_the_default_attempt_timeout_loads() -> None:
    """routing.models.<m>.timeouts: {deadline_s: 10} loads although attempt_s stays 120."""
    config = {
        "version": 1,
        "providers": {"sim": SIM},
        "routing": {"models": {"flux-dev": {"timeouts": {"deadline_s": 10}}}},
    }
    router = AsyncRouter.from_config(config)
    timeouts = router.policy_for("flux-dev").timeouts
    assert (timeouts.attempt_s, timeouts.deadline_s) == (120.0, 10.0)


async def test_a_per_model_deadline_under_the_attempt_timeout_generates() -> None:
    """The same config serves a request."""
    config = {
        "version": 1,
        "providers": {"sim": SIM},
        "routing": {"models": {"flux-dev": {"timeouts": {"deadline_s": 10}}}},
    }
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate("a red fox", model="flux-dev", width=32, height=32)
    assert len(result.outputs) == 1


def test_a_default_attempt_timeout_over_the_deadline_loads() -> None:
    """routing.default.timeouts with attempt_s 500 > deadline_s 300 is accepted."""
    config: dict[str, Any] = {
        "version": 1,
        "providers": {"sim": SIM},
        "routing": {"default": {"timeouts": {"attempt_s": 500, "deadline_s": 300}}},
    }
    assert AsyncRouter.from_config(config).policy_for("flux-dev").timeouts.attempt_s == 500


async def test_the_deadline_ends_an_attempt_allowed_to_run_longer() -> None:
    """With attempt_s 120 and deadline_s 10, a hung job is cancelled at the deadline, not after 120 s."""
    clock = FakeClock()
    hung = FakeBackend(name="hung", script=[Hang()])
    config = {
        "version": 1,
        "providers": {"hung": {"type": "custom", "models": {"flux-dev": {"endpoint": "x"}}}},
        "routing": {"models": {"flux-dev": {"timeouts": {"deadline_s": 10}}}},
    }
    router = AsyncRouter.from_config(config, backends={"hung": hung}, clock=clock)
    start = clock.now()
    with pytest.raises(DeadlineExceededError) as caught:
        await router.generate("a red fox", model="flux-dev")
    assert caught.value.deadline_s == 10
    assert hung.cancelled == ["hung-1"]
    assert clock.now() - start < 12  # ended at the deadline, not after attempt_s


def test_config_check_notes_an_attempt_timeout_over_the_deadline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """config check passes and prints a note, not an error."""
    path = tmp_path / "genrouter.yaml"
    config = {
        "version": 1,
        "providers": {"sim": SIM},
        "routing": {"models": {"flux-dev": {"timeouts": {"deadline_s": 10}}}},
    }
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", str(path)])
    out, err = capsys.readouterr()
    assert exited.value.code in (0, None)
    assert "note: routing.models.flux-dev.timeouts: attempt_s 120 is longer than deadline_s 10" in out
    assert err == ""
