"""Workflows in batch (Python and ``genrouter batch``) and with webhooks from the self-hosted class."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakes.comfy import FakeComfy
from fakes.fal import Behaviour, FakeFal
from fakes.server import LoopbackServer, Request, Response
from genrouter import JobState
from genrouter.batch import run_batch
from genrouter.cli import main
from genrouter.testing import set_testing
from genrouter.util._png import placeholder_png
from loopback import install_fal
from workflow_helpers import EXAMPLE_DIR, example_config, workflow_router

PNG = placeholder_png(8, 8, 4)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture(scope="module")
def servers(
    fal_server: LoopbackServer, comfy_server: LoopbackServer
) -> tuple[LoopbackServer, LoopbackServer]:
    return fal_server, comfy_server


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    return install_fal(fal_server, behaviour=Behaviour(queue_polls=0, progress_polls=1))


@pytest.fixture(autouse=True)
def _fast() -> None:
    set_testing()


def lines(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"fox-{i}", "prompt": f"fox {i}", "inputs": {"image": PNG_URL, "strength": 0.1 * (i + 1)}}
        for i in range(n)
    ]


async def test_run_batch_runs_a_workflow_per_item(
    servers: tuple[LoopbackServer, LoopbackServer], tmp_path: Path, fal: FakeFal, comfy: FakeComfy
) -> None:
    """run_batch() sends each item's inputs through the workflow and saves one file per item."""
    from genrouter.batch import read_items

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines(3)))
    items, errors = read_items(source, model="restyle")
    assert errors == []
    async with workflow_router(servers[0].url, servers[1].url) as (router, _):
        report = await run_batch(router, items, tmp_path / "out", concurrency=2)
    assert report.ok
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["fox-0.png", "fox-1.png", "fox-2.png"]
    assert sorted(p["3"]["inputs"]["denoise"] for p in comfy.prompts) == pytest.approx([0.1, 0.2, 0.3])


def test_genrouter_batch_runs_the_workflow_across_both_deployments(
    servers: tuple[LoopbackServer, LoopbackServer],
    tmp_path: Path,
    fal: FakeFal,
    comfy: FakeComfy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI batch runs every line (two of them allowed only on fal) and exits 0."""
    path = cli_config(servers, tmp_path)
    source = tmp_path / "in.jsonl"
    items = lines(4)
    for item in items[::2]:
        item["providers"] = ["fal"]
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "batch",
                str(source),
                "-m",
                "restyle",
                "--out",
                str(out),
                "-c",
                str(path),
                "--concurrency",
                "1",
                "--no-progress",
            ]
        )
    stdout, err = capsys.readouterr()
    assert exited.value.code == 0, stdout + err + (out / "results.jsonl").read_text()
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 4
    assert [r["provider"] for r in results] == ["fal", "comfy-gpu", "fal", "comfy-gpu"]
    assert len(list(out.glob("fox-*.png"))) == 4


class Receiver:
    """A loopback webhook receiver that records deliveries."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.server = LoopbackServer(self._handle).start()

    def _handle(self, request: Request) -> Response:
        self.arrived.set()
        return Response.json({"ok": True})

    async def wait(self) -> Request:
        assert await asyncio.to_thread(self.arrived.wait, 30), "no webhook arrived"
        return [r for r in self.server.requests if r.method == "POST"][-1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.stop()


async def test_the_self_hosted_class_sends_a_signed_webhook_the_router_verifies(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy, receiver: Receiver
) -> None:
    """submit(webhook_url=) on comfy-gpu ends in a Standard Webhooks delivery handle_webhook accepts."""
    config = example_config(servers[0].url)
    config["providers"]["comfy-gpu"]["webhook_secret"] = SECRET
    async with workflow_router(
        servers[0].url, servers[1].url, config=config, transport_options={"webhook_secret": SECRET}
    ) as (router, transport):
        handle = await router.submit(
            model="restyle", prompt="a fox", inputs={"image": PNG}, webhook_url=receiver.server.url + "/hook"
        )
        delivery = await receiver.wait()
        event = await router.handle_webhook("comfy-gpu", delivery.headers, delivery.body)
        result = await router.result(handle, timeout=30)
    assert transport.spawned[0][1]["webhook_url"] == receiver.server.url + "/hook"
    assert event.provider_request_id == handle.provider_request_id
    assert event.state is JobState.SUCCEEDED
    assert event.delivery_id == f"msg_{handle.provider_request_id}"
    body = json.loads(delivery.body)
    assert base64.b64decode(body["data"]["result"]["outputs"][0]).startswith(b"\x89PNG")
    assert result.provider == "comfy-gpu"


async def test_without_a_signing_secret_the_class_warns_instead_of_sending(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy, receiver: Receiver
) -> None:
    """A deployment without GENROUTER_WEBHOOK_SECRET runs the workflow and says no webhook was sent."""
    async with workflow_router(servers[0].url, servers[1].url) as (router, _):
        handle = await router.submit(
            model="restyle", prompt="a fox", inputs={"image": PNG}, webhook_url=receiver.server.url + "/hook"
        )
        result = await router.result(handle, timeout=30)
    assert any("no webhook sent" in w for w in result.warnings)
    assert receiver.server.requests == []


def cli_config(servers: tuple[LoopbackServer, LoopbackServer], tmp_path: Path) -> Path:
    """The example config with comfy-gpu as the in-process class (an import-path backend)."""
    config = example_config(servers[0].url)
    config["providers"]["comfy-gpu"].update(
        type="workflow_helpers:InProcessComfyModal", comfy_url=servers[1].url, workflows_dir=str(EXAMPLE_DIR)
    )
    path = tmp_path / "genrouter.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_genrouter_generate_takes_workflow_inputs(
    servers: tuple[LoopbackServer, LoopbackServer],
    tmp_path: Path,
    fal: FakeFal,
    comfy: FakeComfy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-i NAME=VALUE sets an input (JSON values; @file reads an image) and the output is saved."""
    image = tmp_path / "fox.png"
    image.write_bytes(PNG)
    out = tmp_path / "out"
    argv = [
        "generate",
        "a fox",
        "-m",
        "restyle",
        "-c",
        str(cli_config(servers, tmp_path)),
        "-o",
        str(out),
        "-i",
        f"image=@{image}",
        "-i",
        "strength=0.4",
        "-i",
        "negative_prompt=blurry",
    ]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    _, err = capsys.readouterr()
    assert exited.value.code == 0, err
    [prompt] = comfy.prompts
    assert prompt["3"]["inputs"]["denoise"] == 0.4
    assert prompt["7"]["inputs"]["text"] == "blurry"
    assert comfy.uploads[prompt["10"]["inputs"]["image"]] == PNG
    assert len(list(out.glob("*.png"))) == 1


def test_genrouter_generate_names_a_bad_input_in_one_line(
    servers: tuple[LoopbackServer, LoopbackServer],
    tmp_path: Path,
    fal: FakeFal,
    comfy: FakeComfy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown input is one error line naming it; nothing is submitted."""
    argv = [
        "generate",
        "a fox",
        "-m",
        "restyle",
        "-c",
        str(cli_config(servers, tmp_path)),
        "-i",
        f"image={PNG_URL}",
        "-i",
        "denoise=0.4",
    ]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    _, err = capsys.readouterr()
    assert exited.value.code != 0
    assert err.count("\n") == 1
    assert "inputs.denoise" in err
    assert comfy.prompts == []
    assert fal.submit_count() == 0
