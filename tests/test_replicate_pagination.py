"""Reconciling a lost Replicate create on a busy account: the listing is followed page by page
back past the create's time, and a create that cannot be matched is never sent to Replicate
again. Through AsyncRouter against the loopback fake Replicate API (100 predictions a page)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from tests.fakes.replicate import TOKEN, FakeReplicate
from tests.fakes.server import LoopbackServer, serve

from genrouter import AsyncRouter
from genrouter.testing import FakeBackend, FakeClock

BACKUP = {"flux-dev": {"endpoint": "backup/flux-dev", "price": {"per_image": "0.01"}}}
Build = Callable[..., AsyncRouter]


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate()) as running:
        yield running


@pytest.fixture
def fake(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> FakeReplicate:
    monkeypatch.setattr("genrouter.backends.replicate._backend.RECONCILE_PAUSE_S", 0.0)
    handler = FakeReplicate()
    server.handler = handler
    return handler


@pytest.fixture
def backup() -> FakeBackend:
    return FakeBackend(name="backup")


@pytest.fixture
async def make(server: LoopbackServer, backup: FakeBackend) -> AsyncIterator[Build]:
    made: list[AsyncRouter] = []

    def build(**policy: Any) -> AsyncRouter:
        source = {
            "version": 1,
            "providers": {
                "replicate": {"api_token": TOKEN, "base_url": server.url},
                "backup": {"type": "custom", "models": BACKUP},
            },
            "routing": {
                "default": {
                    "strategy": "priority",
                    "order": ["replicate", "backup"],
                    "retry": {"max_attempts": 3},
                }
            },
        }
        router = AsyncRouter.from_config(source, backends={"backup": backup}, clock=FakeClock())
        made.append(router)
        return router

    yield build
    for router in made:
        await router.aclose()


def outcomes(result: Any) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome.value) for a in result.attempts]


async def test_a_lost_create_behind_four_pages_of_other_predictions_is_found(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """450 newer predictions of other keys push it to page 5: it is found there, never created twice."""
    fake.add_other_predictions(450)
    fake.create_faults = ["drop_after_create"]
    result = await make().generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "succeeded")]
    assert fake.create_count == 1
    assert fake.creations["a fox"] == 1
    assert fake.lists == 5
    assert backup.submit_count == 0


async def test_an_unmatched_create_on_a_busy_account_is_never_sent_again(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """No match in every page, twice: the outcome stays unknown and the request fails over."""
    fake.add_other_predictions(250)
    fake.create_faults = ["drop"]
    result = await make().generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert str(result.attempts[0].error).startswith("SubmitOutcomeUnknownError")
    assert fake.create_count == 1
    assert fake.lists == 6  # two complete looks of three pages


async def test_a_create_with_a_data_url_input_is_not_listed_for_and_not_resent(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """Replicate does not store data: inputs, so such a create can never match: unknown at once."""
    fake.create_faults = ["drop_after_create"]
    result = await make().generate("a fox", model="flux-dev", image=b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert fake.lists == 0
    assert fake.create_count == 1


async def test_a_failing_page_leaves_the_outcome_unknown(
    fake: FakeReplicate, make: Build, backup: FakeBackend
) -> None:
    """A listing that cannot be read to its end never turns into a second create."""
    fake.add_other_predictions(150)
    fake.create_faults = ["drop"]
    fake.list_faults = [503] * 10
    result = await make().generate("a fox", model="flux-dev")
    assert outcomes(result) == [("replicate", "failed"), ("backup", "succeeded")]
    assert fake.create_count == 1
