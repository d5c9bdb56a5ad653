"""Sentinel secrets never show up in logs, errors, dumps, reprs or files the router writes."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.fal import Behaviour, FakeFal, start_server
from tests.fakes.replicate import FakeReplicate, problem
from tests.fakes.server import LoopbackServer, serve

from genrouter import AllProvidersFailedError, AsyncRouter, ConfigError
from genrouter.batch import run_batch
from genrouter.testing import set_testing

FAL_KEY = "fal-SENTINEL-9f8e7d6c5b4a"
R8_TOKEN = "r8_SENTINELtoken0123456789abcdef"
WH_SECRET = "whsec_" + base64.b64encode(b"SENTINEL-webhook-signing-key-32b").decode()
SENTINELS = (FAL_KEY, R8_TOKEN, WH_SECRET, WH_SECRET.removeprefix("whsec_"), "SENTINEL")


@pytest.fixture(scope="module")
def fal_server() -> Iterator[LoopbackServer]:
    server = start_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicate_server() -> Iterator[LoopbackServer]:
    with serve(FakeReplicate(R8_TOKEN)) as running:
        yield running


def config(fal: LoopbackServer, rep: LoopbackServer, order: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {
            "fal": {"api_key": FAL_KEY, "base_url": fal.url, **extra},
            "replicate": {"api_token": R8_TOKEN, "webhook_secret": WH_SECRET, "base_url": rep.url},
        },
        "routing": {"default": {"strategy": "priority", "order": order, "retry": {"max_attempts": 1}}},
    }


class Findings:
    def __init__(self) -> None:
        self.found: list[str] = []

    def scan(self, where: str, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        for sentinel in SENTINELS:
            if sentinel.encode() in data:
                self.found.append(f"{sentinel!r} in {where}")

    def error(self, where: str, exc: BaseException) -> None:
        seen: set[int] = set()
        chain: list[BaseException] = [exc]
        while chain:
            e = chain.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            self.scan(f"{where}: {type(e).__name__} str/repr/args", f"{e!s} {e!r} {e.args!r}")
            chain += [c for c in (e.__cause__, e.__context__) if c is not None]
            errors = getattr(e, "errors", None)
            chain += errors if isinstance(errors, list) else []
            self.scan(f"{where}: attempts", repr(getattr(e, "attempts", None)))


def scan_files(findings: Findings, root: Path) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.sqlite" for p in files)
    assert any(p.name == "results.jsonl" for p in files)
    for path in files:
        findings.scan(f"file {path.relative_to(root)}", path.read_bytes())


async def test_no_sentinel_secret_leaks(
    fal_server: LoopbackServer,
    replicate_server: LoopbackServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    set_testing()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="genrouter")
    fal = FakeFal(api_key=FAL_KEY, behaviour=Behaviour(queue_polls=0, progress_polls=0))
    fal.by_prompt["doomed"] = Behaviour(submit_status=401)
    fal_server.handler = fal
    fake_replicate = replicate_server.handler
    assert isinstance(fake_replicate, FakeReplicate)
    findings = Findings()

    async with AsyncRouter.from_config(config(fal_server, replicate_server, ["fal", "replicate"])) as router:
        result = await router.generate("a cat", model="flux-dev")
        findings.scan("generate result JSON", result.model_dump_json())
        findings.scan("generate result repr", repr(result))
        handle = await router.submit("a dog", model="flux-dev")
        findings.scan("JobHandle JSON", handle.model_dump_json())
        plan = router.explain("a cat", model="flux-dev")
        findings.scan("explain()", f"{plan.model_dump_json()} {plan!r}")
        findings.scan("router repr/str", f"{router!r} {router!s} {router.config!r} {router.config!s}")
        findings.scan("config JSON", router.config.model_dump_json())
        for name, backend in router.backends.items():
            findings.scan(f"backend {name} repr/str", f"{backend!r} {backend!s} {vars(backend)!r}")
        await router.cancel(handle)
        # The failing provider echoes the credential back in its error text.
        fake_replicate.create_faults.append(
            problem(401, f"invalid token {R8_TOKEN}", title="Unauthenticated")
        )
        with pytest.raises(AllProvidersFailedError) as failed:
            await router.generate("doomed", model="flux-dev")
        assert [a.provider for a in failed.value.attempts] == ["fal", "replicate"]
        findings.error("all-failed error", failed.value)
        report = await run_batch(router, [{"prompt": "batch cat", "model": "flux-dev"}], tmp_path / "batch")
        findings.scan("batch report", repr(report))

    with pytest.raises(ConfigError) as bad:
        AsyncRouter.from_config(
            config(fal_server, replicate_server, ["fal"], region=FAL_KEY, timeout=R8_TOKEN)
        )
    findings.error("ConfigError", bad.value)
    with pytest.raises(ConfigError) as bad_value:
        AsyncRouter.from_config(config(fal_server, replicate_server, ["fal"], timeout_s=FAL_KEY))
    findings.error("ConfigError (bad value)", bad_value.value)

    for record in caplog.records:
        findings.scan(f"log record {record.name}: {record.msg!r}", f"{record.getMessage()} {vars(record)!r}")
    findings.scan("captured log text", caplog.text)
    scan_files(findings, tmp_path)
    assert not findings.found, "\n".join(findings.found)
    assert any(r.name.startswith("genrouter") for r in caplog.records)
