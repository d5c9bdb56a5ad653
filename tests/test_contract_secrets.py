"""Secrets of the new features never show (contract: "Secrets never appear in logs, reprs,
exception text or files"): fal's storage token, credential-like ``provider_headers``, the
Modal ``webhook_secret``, and what ``genrouter loadtest`` prints and writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from fakes.fal import Behaviour, FakeFal
from fakes.server import LoopbackServer
from genrouter import AllProvidersFailedError, AsyncRouter
from genrouter.backends.modal import ModalBackend
from genrouter.cli import main
from genrouter.testing import set_testing
from genrouter.util._png import placeholder_png

FAL_KEY = "fal-key-SENTINEL-0a1b2c3d"
CDN_TOKEN = "cdn-SENTINEL-storage-token-77"
HEADER_SECRET = "hdr-SENTINEL-value-5e6f"
MODAL_SECRET = "whsec_U0VOVElORUwtbW9kYWwtd2ViaG9vay1rZXktMzJi"
SENTINELS = (FAL_KEY, CDN_TOKEN, HEADER_SECRET, MODAL_SECRET, MODAL_SECRET.removeprefix("whsec_"))
BIG_PNG = placeholder_png(400, 400, 9)  # over the 256 KiB inline limit once padded below


def leaks(where: str, text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [f"{s!r} in {where}" for s in SENTINELS if s.encode() in data]


def error_text(exc: BaseException) -> str:
    parts: list[str] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        parts.append(f"{e!s} {e!r} {e.args!r} {getattr(e, 'attempts', '')!r}")
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
        todo += list(getattr(e, "errors", []) or [])
    return " ".join(parts)


async def test_storage_tokens_and_credential_headers_never_show(
    fal_server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A storage token and an ``X-Api-Key`` header stay out of logs, results, handles and errors."""
    set_testing()
    caplog.set_level(logging.DEBUG)
    fake = FakeFal(api_key=FAL_KEY, behaviour=Behaviour(queue_polls=0, progress_polls=0))
    fake.token = CDN_TOKEN
    fake.by_prompt["refused"] = Behaviour(submit_status=401)
    fal_server.handler = fake
    config: dict[str, Any] = {
        "version": 1,
        "providers": {
            "fal": {
                "api_key": FAL_KEY,
                "base_url": fal_server.url,
                "rest_url": fal_server.url,
                "provider_headers": {"X-Api-Key": HEADER_SECRET},
            }
        },
        "routing": {"default": {"retry": {"max_attempts": 1}}},
    }
    found: list[str] = []
    image = BIG_PNG + bytes(300_000)
    headers = {"fal": {"X-Fal-Auth-Token": HEADER_SECRET, "X-Fal-Queue-Priority": "low"}}
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate(
            "a cat", model="flux-dev", image=image, strength=0.5, provider_headers=headers
        )
        assert fake.uploads, "the image was not uploaded"
        found += leaks("result", f"{result.model_dump_json()} {result!r}")
        handle = await router.submit(
            "a dog", model="flux-dev", image=image, strength=0.5, provider_headers=headers
        )
        found += leaks("handle", f"{handle.model_dump_json()} {handle!r}")
        await router.cancel(handle)
        found += leaks("router", f"{router!r} {router.config!r} {router.config.model_dump_json()}")
        found += leaks("backend", " ".join(f"{b!r} {vars(b)!r}" for b in router.backends.values()))
        with pytest.raises(AllProvidersFailedError) as failed:
            await router.generate(
                "refused", model="flux-dev", image=image, strength=0.5, provider_headers=headers
            )
        found += leaks("error", error_text(failed.value))
    for record in caplog.records:
        found += leaks(f"log {record.name}", f"{record.getMessage()} {vars(record)!r}")
    assert not found, "\n".join(found)


def test_the_modal_webhook_secret_never_shows_in_a_repr_or_dump() -> None:
    """The Modal section's ``webhook_secret`` is in no repr, str or JSON dump of the router or its backend."""
    section = {"app": "genrouter-diffusion", "cls": "Diffusion", "webhook_secret": MODAL_SECRET}
    backend = ModalBackend(name="gpu", settings=section, transport=object())  # type: ignore[arg-type]
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"gpu": {"type": "modal", **section}}}, backends={"gpu": backend}
    )
    text = f"{router!r} {router.config!r} {router.config.model_dump_json()} {backend!r} {vars(backend)!r}"
    assert not leaks("modal", text)


def test_loadtest_output_and_report_hold_no_secret(
    fal_server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``genrouter loadtest --json --report`` against a provider that refuses every request leaks no key."""
    set_testing()
    fake = FakeFal(api_key=FAL_KEY, behaviour=Behaviour(submit_status=401))
    fal_server.handler = fake
    cfg = tmp_path / "genrouter.yaml"
    cfg.write_text(
        json.dumps(
            {
                "version": 1,
                "providers": {
                    "fal": {
                        "api_key": FAL_KEY,
                        "base_url": fal_server.url,
                        "provider_headers": {"X-Api-Key": HEADER_SECRET},
                    }
                },
            }
        )
    )
    report = tmp_path / "report"
    with pytest.raises(SystemExit):
        main(
            [
                "loadtest",
                "-m",
                "flux-dev",
                "-c",
                str(cfg),
                "--requests",
                "4",
                "--concurrency",
                "2",
                "--json",
                "--report",
                str(report),
            ]
        )
    out, err = capsys.readouterr()
    found = leaks("stdout", out) + leaks("stderr", err)
    for path in report.rglob("*"):
        if path.is_file():
            found += leaks(str(path.name), path.read_bytes())
    assert json.loads(out)["failed"] == 4
    assert not found, "\n".join(found)
