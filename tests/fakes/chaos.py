"""Fault injection for the loopback fakes (fal, Replicate): the chaos suite's weather.

:class:`Chaos` wraps a fake's handler (``FakeFal`` or ``FakeReplicate``) and, per
request and with a seeded RNG, answers instead of (or after) the fake:

- ``503`` (``error_rate``), ``429`` with ``Retry-After`` (``throttle_rate``),
- a connection reset (``reset_rate``: ``Response(drop=True)``),
- a hung request (``hang_rate``: answered after ``hang_s``, longer than the client's
  ``timeout_s``),
- a full outage: every request in ``[outage[0], outage[1])`` seconds after
  :meth:`Chaos.start` answers 503.

Faults hit every kind of request (submit, status, result, cancel). A reset or a hang is
injected *before* the fake sees the request (nothing happens there) or *after* it (the
fake acted, the answer is lost), half and half: a submit lost after the job was accepted
makes an **orphan** (the client cannot know its id; it is counted, not billed twice),
unless the client later asks about that job by id (Replicate's backend finds a lost
create by listing predictions): then it is ``found`` and billed like any other.

It keeps the books the chaos assertions need: submissions, the jobs accepted for each
prompt (prompts are unique per generation), which of them were cancelled at the fake,
orphans, and Retry-After violations: after a 429 promising ``Retry-After: r`` to one
generation (a prompt) at one provider, any later request of that generation to that
provider before ``t + r`` is a violation. Early requests from *other* generations to a
provider that has throttled are counted too (``early_other``), for information: the router
blocks new attempts on a throttled provider, but jobs already running keep being polled.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .fal import FakeFal
from .replicate import FakeReplicate
from .server import Request, Response

__all__ = ["Chaos", "ChaosRates", "JobRecord"]


@dataclass(frozen=True)
class ChaosRates:
    """Per-request fault probabilities (checked in this order on one uniform draw)."""

    error_rate: float = 0.20
    throttle_rate: float = 0.05
    reset_rate: float = 0.02
    hang_rate: float = 0.01
    retry_after_s: float = 0.2
    hang_s: float = 3.0
    outage: tuple[float, float] | None = None


@dataclass
class JobRecord:
    """One job the fake accepted."""

    provider: str
    job_id: str
    prompt: str
    orphan: bool = False
    found: bool = False
    """Its submit's answer was lost, but the client later asked about it by id."""


@dataclass
class _Kind:
    kind: str  # submit, status, result, cancel, file, other
    prompt: str | None
    job_id: str | None = None


@dataclass
class Chaos:
    """A fault-injecting handler around ``inner`` (a FakeFal or a FakeReplicate)."""

    inner: FakeFal | FakeReplicate
    provider: str
    rates: ChaosRates = field(default_factory=ChaosRates)
    seed: int = 0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.provider}:{self.seed}")
        self._lock = threading.Lock()
        self.t0 = self.clock()
        self.faults: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.submissions = 0
        self.submit_times: list[float] = []
        """Seconds after :meth:`start` at which each submit arrived."""
        self.jobs: list[JobRecord] = []
        self.violations: list[tuple[str, str, float]] = []  # (prompt, kind, seconds early)
        self.early_other = 0
        self._promised: dict[str, float] = {}  # prompt -> not before (monotonic)
        self._provider_promised = 0.0
        self._records: dict[str, JobRecord] = {}

    def start(self) -> Chaos:
        """Reset the outage clock."""
        self.t0 = self.clock()
        return self

    # -- the handler ------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        kind = self._classify(request)
        if kind.kind == "file":
            return self.inner(request)
        now = self.clock()
        with self._lock:
            self.requests[kind.kind] += 1
            record = self._records.get(kind.job_id or "")
            if record is not None and record.orphan:
                record.orphan = False  # the client found it after all (e.g. by listing)
                record.found = True
            if kind.kind == "submit":
                self.submissions += 1
                self.submit_times.append(now - self.t0)
            if kind.prompt is not None and now < self._promised.get(kind.prompt, 0.0):
                self.violations.append((kind.prompt, kind.kind, self._promised[kind.prompt] - now))
            elif now < self._provider_promised:
                self.early_other += 1
            fault = self._draw(now)
            after = self._rng.random() < 0.5
            if fault:
                self.faults[
                    f"{kind.kind}:{fault}{':after' if after and fault in ('reset', 'hang') else ''}"
                ] += 1
            if fault == "throttle":
                until = now + self.rates.retry_after_s
                if kind.prompt is not None:
                    self._promised[kind.prompt] = max(self._promised.get(kind.prompt, 0.0), until)
                self._provider_promised = max(self._provider_promised, until)
        if fault in ("outage", "error"):
            return Response.json({"detail": "Service temporarily unavailable"}, status=503)
        if fault == "throttle":
            headers = {"retry-after": f"{self.rates.retry_after_s:g}"}
            return Response.json({"detail": "Too many requests"}, status=429, headers=headers)
        if fault and not after:
            return Response(drop=True) if fault == "reset" else self._hung()
        before = self._job_ids() if kind.kind == "submit" else None
        response = self.inner(request)
        if before is not None:
            self._note_new_jobs(before, kind.prompt, orphan=fault in ("reset", "hang"))
        if fault == "reset":
            return Response(drop=True)
        if fault == "hang":
            response.delay_s = max(response.delay_s, self.rates.hang_s)
        return response

    def _draw(self, now: float) -> str | None:
        rates = self.rates
        if rates.outage is not None and rates.outage[0] <= now - self.t0 < rates.outage[1]:
            return "outage"
        draw = self._rng.random()
        for name, rate in (
            ("error", rates.error_rate),
            ("throttle", rates.throttle_rate),
            ("reset", rates.reset_rate),
            ("hang", rates.hang_rate),
        ):
            if draw < rate:
                return name
            draw -= rate
        return None

    def _hung(self) -> Response:
        return Response.json({"detail": "too late"}, status=504, delay_s=self.rates.hang_s)

    # -- the fakes' shapes ---------------------------------------------------------------------

    def _classify(self, request: Request) -> _Kind:
        path = request.path
        if path.startswith("/files/"):
            return _Kind("file", None)
        if isinstance(self.inner, FakeFal):
            _head, sep, tail = path.strip("/").partition("/requests/")
            if not sep:
                body = _json(request)
                return _Kind("submit", _text(body.get("prompt")))
            job_id, _, action = tail.partition("/")
            job = self.inner.jobs.get(job_id)
            prompt = _text(job.input.get("prompt")) if job is not None else None
            kind = {"status": "status", "cancel": "cancel", "": "result"}.get(action, "other")
            return _Kind(kind, prompt, job_id)
        parts = path.strip("/").split("/")
        if request.method == "POST" and parts[-1] == "predictions":
            inputs = _json(request).get("input")
            return _Kind("submit", _text(inputs.get("prompt")) if isinstance(inputs, dict) else None)
        if len(parts) >= 3 and parts[1] == "predictions":
            prediction = self.inner.predictions.get(parts[2])
            prompt = _text(prediction.input.get("prompt")) if prediction is not None else None
            kind = "cancel" if parts[-1] == "cancel" else "status"
            return _Kind(kind, prompt, parts[2])
        return _Kind("other", None)

    def _job_ids(self) -> set[str]:
        store = self.inner.jobs if isinstance(self.inner, FakeFal) else self.inner.predictions
        return set(store)

    def _note_new_jobs(self, before: set[str], prompt: str | None, *, orphan: bool) -> None:
        # A submit creates at most one job; jobs created meanwhile by other threads'
        # submits carry other prompts (prompts are unique per generation).
        new = [job_id for job_id in self._job_ids() - before if self._prompt_of(job_id) == prompt]
        with self._lock:
            for job_id in new:
                record = JobRecord(self.provider, job_id, prompt or "", orphan=orphan)
                self.jobs.append(record)
                self._records[job_id] = record

    def _prompt_of(self, job_id: str) -> str:
        if isinstance(self.inner, FakeFal):
            return _text(self.inner.jobs[job_id].input.get("prompt")) or ""
        return _text(self.inner.predictions[job_id].input.get("prompt")) or ""

    def cancelled(self, job_id: str) -> bool:
        """Whether the fake holds ``job_id`` as cancelled (so it is not billed)."""
        if isinstance(self.inner, FakeFal):
            return self.inner.jobs[job_id].cancelled
        return self.inner.predictions[job_id].status == "canceled"


def _json(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- the chaos run -------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    """What one chaos run measured (see :func:`run_chaos`)."""

    requests: int
    succeeded: int
    typed_errors: Counter[str]
    lost: int
    double_billed: int
    orphans: int
    retry_after_violations: int
    early_other: int
    submissions: int
    latencies: list[float]
    wall_s: float
    faults: Counter[str]
    billed_extra_jobs: int
    books: FakeBooks | None = None

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "success_rate": round(self.succeeded / self.requests, 5) if self.requests else 0.0,
            "p50_s": round(self.percentile(0.50), 4),
            "p95_s": round(self.percentile(0.95), 4),
            "p99_s": round(self.percentile(0.99), 4),
            "lost": self.lost,
            "double_billed": self.double_billed,
            "orphans": self.orphans,
            "lost_submits_found": self.books.found if self.books is not None else 0,
            "retry_after_violations": self.retry_after_violations,
            "early_requests_other_generations": self.early_other,
            "submissions": self.submissions,
            "extra_submissions_ratio": round(self.submissions / self.requests - 1, 4)
            if self.requests
            else 0.0,
            "typed_errors": dict(self.typed_errors),
            "faults_injected": sum(self.faults.values()),
            "wall_s": round(self.wall_s, 2),
        }


SIMULATED_THIRD = "sim"
"""The third provider's key: a simulated one, with the same weather as the fakes."""


def simulated_weather(rates: ChaosRates, seed: int, *, down: bool = False) -> dict[str, Any]:
    """A simulated provider section failing like the fakes: 5xx and resets as failures,
    429s with the same Retry-After, hangs; ``down`` fails everything."""
    return {
        "type": "simulated",
        "latency": {"median_s": 0.05, "p99_s": 0.3},
        "failure_rate": 1.0 if down else rates.error_rate + rates.reset_rate,
        "rate_limit_rate": 0.0 if down else rates.throttle_rate,
        "retry_after_s": rates.retry_after_s,
        "hang_rate": 0.0 if down else rates.hang_rate,
        "price": {"per_image": "0.02"},
        "seed": seed,
    }


def chaos_config(
    fal_url: str,
    replicate_url: str,
    *,
    hedge: bool = False,
    rates: ChaosRates | None = None,
    seed: int = 0,
    down: bool = False,
) -> dict[str, Any]:
    """fal, then Replicate (each on its fake), then a simulated third; product defaults else.

    The scenario sets only what it is about: the providers (small client timeouts, so
    hung requests end quickly), their order, ``retry.max_attempts: 3``, the timeouts
    and, for the ``+hedge`` variant, hedging. Retry budget, backoff, breaker and fallback
    are the product's defaults.
    """
    from .fal import DEFAULT_KEY
    from .replicate import TOKEN

    policy: dict[str, Any] = {
        "strategy": "priority",
        "order": ["fal", "replicate", SIMULATED_THIRD],
        "retry": {"max_attempts": 3},
        "timeouts": {"attempt_s": 5, "deadline_s": 20},
    }
    if hedge:
        policy["hedge"] = {"enabled": True, "delay": "p95"}
    return {
        "version": 1,
        "providers": {
            "fal": {"api_key": DEFAULT_KEY, "base_url": fal_url, "timeout_s": 1.0},
            "replicate": {"api_token": TOKEN, "base_url": replicate_url, "timeout_s": 1.0},
            SIMULATED_THIRD: simulated_weather(rates or ChaosRates(), seed, down=down),
        },
        "routing": {"default": policy},
    }


@dataclass
class FakeBooks:
    """What the fakes saw, sent back from their process at the end of a run."""

    jobs: list[tuple[str, str, str, bool, bool, str]]
    """(provider, job id, prompt, orphan, cancelled, the fake's state of it)."""
    violations: list[tuple[str, str, float]]
    early_other: int
    submissions: int
    faults: Counter[str]
    requests: Counter[str] = field(default_factory=Counter)
    """Requests the fakes answered, by kind (submit, status, result, cancel, ...)."""
    found: int = 0
    """Jobs whose submit lost its answer but which the client found and used."""
    submit_times: dict[str, list[float]] = field(default_factory=dict)
    """Per fake provider: seconds after the start at which each submit arrived."""


def _job_state(chaos: Chaos, job_id: str) -> str:
    if isinstance(chaos.inner, FakeFal):
        job = chaos.inner.jobs[job_id]
        return f"completed={job.completed} polls={job.polls} cancel_sent={job_id in chaos.inner.cancels}"
    prediction = chaos.inner.predictions[job_id]
    return f"status={prediction.status} gets={prediction.gets} cancel_sent={job_id in chaos.inner.cancels}"


def serve_chaos_fakes(
    conn: Any, seed: int, base: ChaosRates, outage: tuple[float, float], down: bool = False
) -> None:
    """The fakes' process: serve chaotic fal and Replicate fakes until told to stop.

    Protocol over ``conn`` (a multiprocessing pipe end): send ``(fal_url, replicate_url)``;
    receive ``"start"`` (the outage clock starts); receive ``"stop"``; send :class:`FakeBooks`.
    The fakes run in their own process, as a provider would: in the router's process their
    threads would compete with its event loop for the GIL and measure that instead.
    """
    from .fal import Behaviour, start_server
    from .replicate import Plan
    from .server import LoopbackServer

    fal_fake = FakeFal(behaviour=Behaviour(queue_polls=0, progress_polls=1))
    replicate_fake = FakeReplicate(plan=Plan(statuses=("processing", "succeeded")))
    fal = Chaos(fal_fake, "fal", ChaosRates(**{**base.__dict__, "outage": outage}), seed)
    replicate_outage = (0.0, float("inf")) if down else None
    replicate = Chaos(
        replicate_fake, "replicate", ChaosRates(**{**base.__dict__, "outage": replicate_outage}), seed
    )
    fal_server = start_server(fal)  # type: ignore[arg-type]
    replicate_server = LoopbackServer(replicate).start()
    for server in (fal_server, replicate_server):
        server._server.request_queue_size = 512
    try:
        conn.send((fal_server.url, replicate_server.url))
        conn.recv()
        fal.start()
        replicate.start()
        conn.recv()
        jobs = [
            (
                chaos.provider,
                r.job_id,
                r.prompt,
                r.orphan,
                chaos.cancelled(r.job_id),
                _job_state(chaos, r.job_id),
            )
            for chaos in (fal, replicate)
            for r in chaos.jobs
        ]
        conn.send(
            FakeBooks(
                jobs=jobs,
                violations=fal.violations + replicate.violations,
                early_other=fal.early_other + replicate.early_other,
                submissions=fal.submissions + replicate.submissions,
                faults=fal.faults + replicate.faults,
                found=sum(r.found for c in (fal, replicate) for r in c.jobs),
                submit_times={c.provider: c.submit_times for c in (fal, replicate)},
                requests=Counter(
                    {f"{c.provider}:{k}": n for c in (fal, replicate) for k, n in c.requests.items()}
                ),
            )
        )
    finally:
        fal_server.stop()
        replicate_server.stop()


async def run_chaos(
    requests: int = 5000,
    concurrency: int = 64,
    seed: int = 0,
    *,
    outage: tuple[float, float] = (1.0, 3.0),
    rates: ChaosRates | None = None,
    trace: dict[str, Any] | None = None,
    hedge: bool = True,
) -> ChaosReport:
    """Drive ``requests`` generations through AsyncRouter against chaotic fakes of fal and
    Replicate, and a simulated third provider with the same weather.

    The fakes serve from a child process (:func:`serve_chaos_fakes`). fal suffers a full
    outage in ``outage`` (seconds after the start). Every generation has a unique prompt,
    which maps the fakes' jobs back to it. ``trace`` (when given) receives each prompt's
    result or error. ``hedge`` turns hedging (delay p95) on in the routing policy.
    """
    import asyncio
    import multiprocessing

    from genrouter import AsyncRouter, GenRouterError

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=serve_chaos_fakes, args=(theirs, seed, rates or ChaosRates(), outage), daemon=True
    )
    process.start()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    outcome: dict[str, str] = {}
    lost = 0
    try:
        fal_url, replicate_url = await asyncio.to_thread(ours.recv)
        config = chaos_config(fal_url, replicate_url, hedge=hedge, rates=rates, seed=seed)
        async with AsyncRouter.from_config(config) as router:
            gate = asyncio.Semaphore(concurrency)
            ours.send("start")
            started = time.monotonic()

            async def one(i: int) -> None:
                nonlocal lost
                prompt = f"chaos {seed} #{i}"
                async with gate:
                    began = time.monotonic()
                    try:
                        result = await asyncio.wait_for(router.generate(prompt, model="flux-dev"), 30)
                    except GenRouterError as exc:
                        if trace is not None:
                            trace[prompt] = exc
                        errors[type(exc).__name__] += 1
                        outcome[prompt] = "error"
                        return
                    except BaseException as exc:
                        lost += 1
                        errors[f"LOST {type(exc).__name__}"] += 1
                        outcome[prompt] = "lost"
                        return
                    latencies.append(time.monotonic() - began)
                    if trace is not None:
                        trace[prompt] = result
                    outcome[prompt] = "ok"

            await asyncio.gather(*(one(i) for i in range(requests)))
            wall = time.monotonic() - started
        # Leaving the router waited for its background cancels; now read the books.
        ours.send("stop")
        books: FakeBooks = await asyncio.to_thread(ours.recv)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    lost += sum(1 for i in range(requests) if f"chaos {seed} #{i}" not in outcome)
    billed: Counter[str] = Counter()
    orphans = 0
    for _provider, _job_id, prompt, orphan, cancelled, _state in books.jobs:
        if orphan:
            orphans += 1
        elif not cancelled:
            billed[prompt] += 1
    double = sum(1 for count in billed.values() if count > 1)
    return ChaosReport(
        requests=requests,
        succeeded=len(latencies),
        typed_errors=errors,
        lost=lost,
        double_billed=double,
        orphans=orphans,
        retry_after_violations=len(books.violations),
        early_other=books.early_other,
        submissions=books.submissions,
        latencies=latencies,
        wall_s=wall,
        faults=books.faults,
        billed_extra_jobs=sum(count - 1 for count in billed.values() if count > 1),
        books=books,
    )


# -- the total outage ------------------------------------------------------------------------------


@dataclass
class OutageReport:
    """What a total outage of every provider measured (see :func:`run_outage`)."""

    requests: int
    typed_errors: Counter[str]
    untyped: int
    over_deadline: int
    deadline_s: float
    max_latency_s: float
    after_s: float
    requests_after: int
    per_request_after: dict[str, float]
    """Per provider: submissions by requests begun after ``after_s``, per such request."""
    fake_submissions_after: dict[str, int]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        worst = max(self.per_request_after.values(), default=0.0)
        return {
            "requests": self.requests,
            "typed_error_rate": round(sum(self.typed_errors.values()) / self.requests, 5)
            if self.requests
            else 0.0,
            "untyped": self.untyped,
            "over_deadline": self.over_deadline,
            "max_latency_s": round(self.max_latency_s, 3),
            "requests_after_5s": self.requests_after,
            "submissions_per_provider_per_request_after_5s": round(worst, 4),
            "by_provider_after_5s": {k: round(v, 4) for k, v in self.per_request_after.items()},
            "fake_submissions_after_5s": self.fake_submissions_after,
            "typed_errors": dict(self.typed_errors),
            "wall_s": round(self.wall_s, 2),
        }


async def run_outage(
    duration_s: float = 15.0, concurrency: int = 64, seed: int = 0, *, after_s: float = 5.0
) -> OutageReport:
    """Every provider down for ``duration_s``: fal and Replicate fakes answer 503 to
    everything, the simulated third fails every job. Requests go at ``concurrency`` until
    ``duration_s`` has passed; each must end in a typed error within its deadline, and
    the submissions of requests begun after ``after_s`` are counted per provider (one
    submission is one recorded attempt; the fakes' own counts are given beside them).
    """
    import asyncio
    import multiprocessing

    from genrouter import AsyncRouter, GenRouterError

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    down = (0.0, float("inf"))
    process = context.Process(
        target=serve_chaos_fakes, args=(theirs, seed, ChaosRates(), down, True), daemon=True
    )
    process.start()
    begun: dict[str, float] = {}
    submits: list[tuple[str, str]] = []
    errors: Counter[str] = Counter()
    untyped = over = 0
    worst = 0.0

    class Count:
        def on_attempt(self, attempt: Any, *, model: str, request: Any) -> None:
            submits.append((attempt.provider, request.prompt))

        def on_result(self, result: Any, error: Any, **_: Any) -> None:
            pass

    try:
        fal_url, replicate_url = await asyncio.to_thread(ours.recv)
        config = chaos_config(fal_url, replicate_url, seed=seed, down=True)
        deadline_s = float(config["routing"]["default"]["timeouts"]["deadline_s"])
        async with AsyncRouter.from_config(config, hooks=[Count()]) as router:
            ours.send("start")
            started = time.monotonic()
            counter = iter(range(10**9))

            async def worker() -> None:
                nonlocal untyped, over, worst
                while time.monotonic() - started < duration_s:
                    prompt = f"outage {seed} #{next(counter)}"
                    began = time.monotonic()
                    begun[prompt] = began - started
                    try:
                        await asyncio.wait_for(router.generate(prompt, model="flux-dev"), deadline_s + 10)
                    except GenRouterError as exc:
                        errors[type(exc).__name__] += 1
                    except BaseException:
                        untyped += 1
                    else:
                        untyped += 1  # a success in a total outage is a bug too
                    took = time.monotonic() - began
                    worst = max(worst, took)
                    over += took > deadline_s
                    await asyncio.sleep(0)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.monotonic() - started
        ours.send("stop")
        books: FakeBooks = await asyncio.to_thread(ours.recv)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    late = {prompt for prompt, at in begun.items() if at >= after_s}
    per_provider: Counter[str] = Counter(provider for provider, prompt in submits if prompt in late)
    providers = ("fal", "replicate", SIMULATED_THIRD)
    return OutageReport(
        requests=len(begun),
        typed_errors=errors,
        untyped=untyped,
        over_deadline=over,
        deadline_s=deadline_s,
        max_latency_s=worst,
        after_s=after_s,
        requests_after=len(late),
        per_request_after={p: per_provider[p] / len(late) if late else 0.0 for p in providers},
        fake_submissions_after={
            p: sum(1 for t in times if t >= after_s) for p, times in books.submit_times.items()
        },
        wall_s=wall,
    )
