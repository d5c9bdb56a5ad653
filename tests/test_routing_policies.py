"""Routing policies: pure ranking of candidates by strategy (genrouter.routing.policies)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrouter.routing.policies import CandidateStats, SmoothWeightedRoundRobin, rank

STRATEGIES = ("priority", "cost", "latency", "balanced", "weighted")


def stat(
    key: str,
    *,
    cost: float | None = None,
    p95: float | None = None,
    priority: int = 0,
    weight: float = 1.0,
) -> CandidateStats[str]:
    return CandidateStats(item=key, key=key, cost=cost, p95=p95, priority=priority, weight=weight)


def keys(ordered: list[CandidateStats[str]]) -> list[str]:
    return [s.key for s in ordered]


# -- priority ----------------------------------------------------------------------


def test_priority_orders_by_rank_in_order() -> None:
    """priority puts the candidate ranked first in `order` first, whatever its cost or latency."""
    ordered = rank(
        "priority",
        [
            stat("c", priority=2, cost=0.001, p95=0.1),
            stat("a", priority=0, cost=1.0, p95=9.0),
            stat("b", priority=1),
        ],
    )
    assert keys(ordered) == ["a", "b", "c"]


def test_priority_score_is_the_rank() -> None:
    """Under priority each candidate's score is its rank."""
    ordered = rank("priority", [stat("b", priority=1), stat("a", priority=0)])
    assert [s.score for s in ordered] == [0.0, 1.0]


# -- cost ----------------------------------------------------------------------------


def test_cost_puts_the_cheapest_first() -> None:
    """cost ranks by estimated cost, cheapest first, and the score is the cost in USD."""
    ordered = rank(
        "cost",
        [stat("dear", cost=0.05, priority=0), stat("cheap", cost=0.01, priority=1)],
    )
    assert keys(ordered) == ["cheap", "dear"]
    assert ordered[0].score == pytest.approx(0.01)


def test_cost_ranks_unknown_cost_after_every_known_cost() -> None:
    """A candidate whose cost is unknown ranks after every candidate with a known cost."""
    ordered = rank(
        "cost",
        [stat("unknown", cost=None, priority=0), stat("dear", cost=5.0, priority=1)],
    )
    assert keys(ordered) == ["dear", "unknown"]


def test_cost_breaks_ties_by_priority() -> None:
    """Equal costs are ordered by priority rank."""
    ordered = rank("cost", [stat("b", cost=0.02, priority=1), stat("a", cost=0.02, priority=0)])
    assert keys(ordered) == ["a", "b"]


def test_cost_ranks_candidates_over_the_slo_after_those_within_it() -> None:
    """A cheaper candidate whose p95 exceeds the SLO ranks after a dearer one within it."""
    ordered = rank(
        "cost",
        [stat("cheap-slow", cost=0.01, p95=30.0), stat("dear-fast", cost=0.05, p95=2.0)],
        latency_slo_s=10.0,
    )
    assert keys(ordered) == ["dear-fast", "cheap-slow"]


# -- latency -------------------------------------------------------------------------


def test_latency_puts_the_lowest_p95_first() -> None:
    """latency ranks by estimated p95, fastest first; the score is the p95 in seconds."""
    ordered = rank("latency", [stat("slow", p95=4.0), stat("fast", p95=1.5, priority=1)])
    assert keys(ordered) == ["fast", "slow"]
    assert ordered[0].score == pytest.approx(1.5)


def test_latency_scores_an_unobserved_deployment_at_the_slo() -> None:
    """Without observations or hints a deployment is scored at the SLO when one is set."""
    ordered = rank(
        "latency",
        [stat("unseen", p95=None), stat("slow", p95=12.0, priority=1), stat("fast", p95=3.0)],
        latency_slo_s=10.0,
    )
    assert keys(ordered) == ["fast", "unseen", "slow"]
    assert ordered[1].score == pytest.approx(10.0)


def test_latency_scores_an_unobserved_deployment_at_the_median_without_slo() -> None:
    """Without an SLO an unobserved deployment is scored at the median of the observed p95s."""
    ordered = rank(
        "latency",
        [stat("a", p95=1.0), stat("b", p95=3.0), stat("c", p95=8.0), stat("unseen", p95=None)],
    )
    unseen = next(s for s in ordered if s.key == "unseen")
    assert unseen.score == pytest.approx(3.0)


def test_latency_spreads_load_between_equally_fast_deployments() -> None:
    """Of two deployments with the same p95, the one holding fewer requests in flight leads."""
    busy = CandidateStats(item="busy", key="busy", cost=None, p95=0.4, priority=0, inflight=10)
    idle = CandidateStats(item="idle", key="idle", cost=None, p95=0.4, priority=1, inflight=2)
    ordered = rank("latency", [busy, idle])
    assert keys(ordered) == ["idle", "busy"]
    assert busy.score == pytest.approx(0.4 * (1 + 0.5 * 10 / 12))


def test_latency_sends_no_load_to_a_deployment_over_half_as_slow_again() -> None:
    """However loaded the fast deployment, one 60 % slower still ranks after it."""
    fast = CandidateStats(item="fast", key="fast", cost=None, p95=1.0, priority=1, inflight=500)
    slow = CandidateStats(item="slow", key="slow", cost=None, p95=1.6, priority=0, inflight=0)
    assert keys(rank("latency", [slow, fast])) == ["fast", "slow"]


def test_latency_scores_a_queueing_deployment_by_its_requests_in_flight() -> None:
    """A deployment seen queueing counts as twice as slow with 8 requests in flight."""
    queued = CandidateStats(item="q", key="q", cost=None, p95=0.4, priority=0, inflight=8, queues=True)
    rank("latency", [queued])
    assert queued.score == pytest.approx(0.8)


def test_latency_with_no_observations_falls_back_to_priority() -> None:
    """When nothing has been observed every score is 0 and priority decides."""
    ordered = rank("latency", [stat("b", priority=1), stat("a", priority=0)])
    assert keys(ordered) == ["a", "b"]
    assert [s.score for s in ordered] == [0.0, 0.0]


# -- balanced ------------------------------------------------------------------------


def test_balanced_score_is_half_relative_cost_plus_half_relative_latency() -> None:
    """balanced scores 0.5·cost/cheapest + 0.5·p95/fastest (1.0 for the best on both)."""
    ordered = rank(
        "balanced",
        [stat("b", cost=0.02, p95=4.0), stat("a", cost=0.01, p95=1.0)],
    )
    scores = {s.key: s.score for s in ordered}
    assert scores["a"] == pytest.approx(1.0)
    assert scores["b"] == pytest.approx(0.5 * 2 + 0.5 * 4)
    assert keys(ordered) == ["a", "b"]


def test_balanced_trades_cost_against_latency() -> None:
    """A slightly dearer but much faster candidate beats a cheap slow one."""
    ordered = rank(
        "balanced",
        [stat("cheap-slow", cost=0.010, p95=10.0), stat("fast", cost=0.012, p95=1.0)],
    )
    assert keys(ordered) == ["fast", "cheap-slow"]


def test_balanced_adds_a_penalty_over_the_slo() -> None:
    """balanced adds 1.0 to the score of a candidate whose p95 exceeds the SLO."""
    ordered = rank(
        "balanced",
        [stat("a", cost=0.01, p95=1.0), stat("b", cost=0.01, p95=2.0)],
        latency_slo_s=1.5,
    )
    scores = {s.key: s.score for s in ordered}
    assert scores["b"] == pytest.approx(0.5 * 1 + 0.5 * 2 + 1.0)


def test_balanced_counts_unknown_cost_and_latency_as_the_worst_known() -> None:
    """Unknown cost counts as the dearest known cost; unknown latency as the slowest known."""
    ordered = rank(
        "balanced",
        [
            stat("a", cost=0.01, p95=1.0),
            stat("b", cost=0.03, p95=3.0),
            stat("unknown", cost=None, p95=None),
        ],
    )
    scores = {s.key: s.score for s in ordered}
    assert scores["unknown"] == pytest.approx(scores["b"])


def test_balanced_handles_free_and_instant_candidates() -> None:
    """A zero cost or zero latency best candidate gives finite scores (1.0 / 2.0 terms)."""
    ordered = rank(
        "balanced",
        [stat("free", cost=0.0, p95=0.0), stat("paid", cost=0.01, p95=1.0, priority=1)],
    )
    scores = {s.key: s.score for s in ordered}
    assert scores == {"free": pytest.approx(1.0), "paid": pytest.approx(2.0)}
    assert keys(ordered) == ["free", "paid"]


# -- weighted ------------------------------------------------------------------------


def test_smooth_weighted_round_robin_interleaves_three_to_one() -> None:
    """Weights 3:1 lead in the sequence A A B A A A B A (nginx's smooth round-robin)."""
    rr = SmoothWeightedRoundRobin()
    candidates = [stat("A", weight=3), stat("B", weight=1, priority=1)]
    leaders = [rr.pick(candidates).key for _ in range(8)]
    assert leaders == ["A", "A", "B", "A", "A", "A", "B", "A"]


def test_weighted_rank_leads_with_the_round_robin_pick_each_call() -> None:
    """rank('weighted') with a shared round-robin follows the 3:1 sequence across calls."""
    rr = SmoothWeightedRoundRobin()
    leaders = []
    for _ in range(8):
        ordered = rank("weighted", [stat("A", weight=3), stat("B", weight=1, priority=1)], round_robin=rr)
        leaders.append(ordered[0].key)
    assert leaders == ["A", "A", "B", "A", "A", "A", "B", "A"]


def test_weighted_shares_leadership_in_proportion_to_weight() -> None:
    """Over a window of the weights' sum, each candidate leads exactly its weight's times."""
    rr = SmoothWeightedRoundRobin()
    candidates = [stat("A", weight=5), stat("B", weight=2), stat("C", weight=1)]
    leaders = [rr.pick(candidates).key for _ in range(8 * 10)]
    assert {k: leaders.count(k) for k in "ABC"} == {"A": 50, "B": 20, "C": 10}


def test_weighted_orders_the_rest_by_weight_then_priority() -> None:
    """After the leader, candidates follow by descending weight, then priority."""
    rr = SmoothWeightedRoundRobin()
    ordered = rank(
        "weighted",
        [
            stat("light", weight=1, priority=0),
            stat("heavy", weight=5, priority=2),
            stat("mid", weight=2, priority=1),
            stat("mid2", weight=2, priority=0),
        ],
        round_robin=rr,
    )
    assert keys(ordered) == ["heavy", "mid2", "mid", "light"]
    assert [s.score for s in ordered] == [0.0, 1.0, 2.0, 3.0]


def test_weighted_with_equal_weights_alternates() -> None:
    """Equal weights take turns leading."""
    rr = SmoothWeightedRoundRobin()
    candidates = [stat("A"), stat("B")]
    assert [rr.pick(candidates).key for _ in range(4)] == ["A", "B", "A", "B"]


# -- general -------------------------------------------------------------------------


def test_rank_of_nothing_is_empty() -> None:
    """Ranking no candidates returns an empty list under every strategy."""
    for strategy in STRATEGIES:
        assert rank(strategy, []) == []


def test_unknown_strategy_is_a_value_error() -> None:
    """An unknown strategy name raises ValueError naming it."""
    with pytest.raises(ValueError, match="fastest"):
        rank("fastest", [stat("a")])


# -- properties ----------------------------------------------------------------------

_money = st.one_of(st.none(), st.integers(min_value=0, max_value=10**8).map(lambda n: n / 1e6))
_seconds = st.one_of(st.none(), st.floats(min_value=0.0, max_value=3600.0, allow_nan=False))


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[CandidateStats[str]]:
    n = draw(st.integers(min_value=1, max_value=8))
    return [
        CandidateStats(
            item=f"d{i}",
            key=f"d{i}",
            cost=draw(_money),
            p95=draw(_seconds),
            priority=draw(st.integers(min_value=0, max_value=10)),
            weight=draw(st.floats(min_value=0.1, max_value=100.0, allow_nan=False)),
        )
        for i in range(n)
    ]


@settings(max_examples=150, deadline=None)
@given(
    candidates=candidate_lists(),
    strategy=st.sampled_from(STRATEGIES),
    slo=st.one_of(st.none(), st.floats(min_value=0.1, max_value=600.0)),
)
def test_ranking_is_a_permutation_of_its_inputs(
    candidates: list[CandidateStats[str]], strategy: str, slo: float | None
) -> None:
    """Every strategy returns each input exactly once, and nothing else."""
    ordered = rank(strategy, list(candidates), latency_slo_s=slo)
    assert sorted(map(id, ordered)) == sorted(map(id, candidates))


@settings(max_examples=150, deadline=None)
@given(
    candidates=candidate_lists(),
    strategy=st.sampled_from(STRATEGIES),
    slo=st.one_of(st.none(), st.floats(min_value=0.1, max_value=600.0)),
)
def test_every_score_is_finite(
    candidates: list[CandidateStats[str]], strategy: str, slo: float | None
) -> None:
    """Scores are finite numbers under every strategy."""
    for s in rank(strategy, list(candidates), latency_slo_s=slo):
        assert math.isfinite(s.score)


@settings(max_examples=150, deadline=None)
@given(candidates=candidate_lists())
def test_cost_puts_the_cheapest_known_cost_first_when_all_within_slo(
    candidates: list[CandidateStats[str]],
) -> None:
    """With no candidate over the SLO, the first is one with the lowest known cost."""
    known = [s.cost for s in candidates if s.cost is not None]
    ordered = rank("cost", list(candidates), latency_slo_s=None)
    if known:
        assert ordered[0].cost == min(known)
    else:
        assert ordered[0].priority == min(s.priority for s in candidates)


@settings(max_examples=100, deadline=None)
@given(candidates=candidate_lists())
def test_latency_puts_the_fastest_observed_first_when_all_observed(
    candidates: list[CandidateStats[str]],
) -> None:
    """When every candidate has a p95, latency puts one with the lowest p95 first."""
    for s in candidates:
        if s.p95 is None:
            s.p95 = 1.0
    ordered = rank("latency", list(candidates))
    assert ordered[0].p95 == min(s.p95 for s in candidates if s.p95 is not None)


def test_latency_gives_no_load_share_to_a_deployment_that_just_got_slower() -> None:
    """A changed deployment scores as holding every request in flight, however idle it is."""
    changed = CandidateStats(item="c", key="c", cost=None, p95=0.5, priority=0, changed=True)
    busy = CandidateStats(item="b", key="b", cost=None, p95=0.4, priority=1, inflight=20)
    assert keys(rank("latency", [changed, busy])) == ["b", "c"]
    assert changed.score == pytest.approx(0.5 * 1.5)


@settings(max_examples=200, deadline=None)
@given(
    loads=st.lists(
        st.tuples(
            st.floats(min_value=0.01, max_value=100.0, allow_nan=False),
            st.integers(min_value=0, max_value=10_000),
            st.booleans(),
        ),
        min_size=2,
        max_size=6,
    )
)
def test_latency_never_ranks_a_deployment_half_as_slow_again_ahead_of_a_faster_one(
    loads: list[tuple[float, int, bool]],
) -> None:
    """Whatever the requests in flight, among deployments that do not queue, one whose p95
    is more than 1.5 times another's ranks after it: load sharing only reorders near-equals."""
    stats = [
        CandidateStats(item=str(i), key=str(i), cost=None, p95=p95, priority=i, inflight=n, changed=c)
        for i, (p95, n, c) in enumerate(loads)
    ]
    ordered = rank("latency", list(stats))
    position = {s.key: i for i, s in enumerate(ordered)}
    for (slow_p95, _, _), slow in zip(loads, stats, strict=True):
        for (fast_p95, _, _), fast in zip(loads, stats, strict=True):
            if slow_p95 > 1.5 * fast_p95 * (1 + 1e-9):
                assert position[fast.key] < position[slow.key]
