"""The one backoff iterator: capped exponential waits ± jitter; set_testing() zeroes backoff."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genrouter.engine._attempts import poll_cadence
from genrouter.engine._backoff import Backoff
from genrouter.testing import set_testing


@given(
    initial=st.floats(0.001, 10),
    maximum=st.floats(0.001, 60),
    growth=st.floats(1, 4),
    jitter=st.floats(0, 1),
    n=st.integers(1, 40),
)
def test_each_wait_is_the_capped_exponential_within_its_jitter(
    initial: float, maximum: float, growth: float, jitter: float, n: int
) -> None:
    """The n-th wait lies within min(maximum, initial·growth^(n-1)) · (1 ± jitter)."""
    waits = list(itertools.islice(Backoff(initial, maximum, growth=growth, jitter=jitter), n))
    for i, wait in enumerate(waits):
        base = min(maximum, initial * growth**i)
        assert base * (1 - jitter) - 1e-9 <= wait <= base * (1 + jitter) + 1e-9


def test_without_jitter_waits_double_up_to_the_cap() -> None:
    """0.1 doubling, capped at 0.5: 0.1, 0.2, 0.4, 0.5, 0.5."""
    assert list(itertools.islice(Backoff(0.1, 0.5), 5)) == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_set_testing_removes_backoff() -> None:
    """Under set_testing() a backoff waits nothing."""
    set_testing()
    assert list(itertools.islice(Backoff(1, 8, jitter=0.2), 3)) == [0.0, 0.0, 0.0]


def test_set_testing_keeps_the_poll_cadence() -> None:
    """Polling is a cadence, not a backoff: set_testing() leaves it so fake time advances."""
    set_testing()
    assert list(itertools.islice(poll_cadence(), 3)) == pytest.approx([0.05, 0.075, 0.1125])
