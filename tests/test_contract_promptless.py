"""A prompt only where the model takes one (README "Adding a model in YAML": kinds ``upscale``
and ``remove-background`` take an ``image``; workflows take their declared inputs).

Driven through the public API with the smallest config a user writes, against the fal and
Replicate loopback fakes, the simulated provider, ``genrouter batch`` and ``genrouter generate``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakes.fal import FakeFal
from fakes.replicate import TOKEN, FakeReplicate
from fakes.server import LoopbackServer
from genrouter import AsyncRouter, InvalidRequestError, Router
from genrouter.batch import run_batch
from genrouter.cli import main
from genrouter.testing import set_testing
from genrouter.util._png import placeholder_png

FAL_KEY = "fal-key-promptless-0123"
PNG = placeholder_png(8, 8, 5)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = FakeFal(api_key=FAL_KEY)
    fal_server.handler = fake
    set_testing()
    return fake


@pytest.fixture
def replicate(replicate_server: LoopbackServer) -> FakeReplicate:
    fake = FakeReplicate()
    replicate_server.handler = fake
    set_testing()
    return fake


def fal_config(server: LoopbackServer) -> dict[str, Any]:
    return {"version": 1, "providers": {"fal": {"api_key": FAL_KEY, "base_url": server.url}}}


SIMULATED: dict[str, Any] = {
    "version": 1,
    "providers": {
        "sim": {
            "type": "simulated",
            "latency": 0,
            "price": {"per_image": "0.01"},
            "models": {
                "flux-dev": {"endpoint": "flux-dev"},
                "recraft-crisp-upscale": {"endpoint": "upscale"},
            },
        }
    },
}


async def test_an_upscale_model_runs_on_fal_without_a_prompt(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """An upscale request with only an image reaches fal's upscaler with the image and no prompt."""
    async with AsyncRouter.from_config(fal_config(fal_server)) as router:
        result = await router.generate(model="recraft-crisp-upscale", image=PNG)
    (job,) = fal.jobs.values()
    assert job.endpoint == "fal-ai/recraft/upscale/crisp"
    assert "prompt" not in job.input
    assert any(str(value).startswith("data:image/png;base64,") for value in job.input.values())
    assert result.outputs
    assert result.provider == "fal"


async def test_a_background_remover_runs_on_replicate_without_a_prompt(
    replicate_server: LoopbackServer, replicate: FakeReplicate
) -> None:
    """A remove-background request with only an image is created on Replicate without a prompt."""
    config = {
        "version": 1,
        "providers": {"replicate": {"api_token": TOKEN, "base_url": replicate_server.url}},
    }
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate(model="bria-remove-background", image=PNG)
    (create,) = replicate.creates
    assert "prompt" not in create.json()["input"]
    assert result.outputs
    assert result.provider == "replicate"


def test_the_sync_router_upscales_without_a_prompt() -> None:
    """``Router.generate(model=<upscaler>, image=...)`` works with no prompt at all."""
    with Router.from_config(SIMULATED) as router:
        result = router.generate(model="recraft-crisp-upscale", image=PNG)
    assert result.provider == "sim"
    assert result.outputs


async def test_an_image_model_without_a_prompt_is_an_invalid_request_naming_prompt() -> None:
    """flux-dev with no prompt raises InvalidRequestError whose field is ``prompt``, before any submit."""
    async with AsyncRouter.from_config(SIMULATED) as router:
        with pytest.raises(InvalidRequestError) as raised:
            await router.generate(model="flux-dev", width=512, height=512)
    assert raised.value.field == "prompt"
    assert "prompt" in str(raised.value)


async def test_a_video_model_without_a_prompt_is_an_invalid_request_naming_prompt(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """A video alias with only a first frame and no prompt is refused naming ``prompt``; fal gets nothing."""
    async with AsyncRouter.from_config(fal_config(fal_server)) as router:
        with pytest.raises(InvalidRequestError) as raised:
            await router.generate(model="kling-2.5-turbo", image=PNG)
    assert raised.value.field == "prompt"
    assert fal.jobs == {}


def test_explain_without_a_prompt_names_prompt_for_an_image_model() -> None:
    """``explain()`` refuses a prompt-less flux-dev request the same way ``generate`` does."""
    with Router.from_config(SIMULATED) as router:
        with pytest.raises(InvalidRequestError) as raised:
            router.explain(model="flux-dev")
        assert router.explain(model="recraft-crisp-upscale", image=PNG).viable
    assert raised.value.field == "prompt"


def test_a_blank_prompt_is_still_refused() -> None:
    """A prompt that is given but blank is an InvalidRequestError naming ``prompt``, whatever the kind."""
    with Router.from_config(SIMULATED) as router, pytest.raises(InvalidRequestError) as raised:
        router.generate("   ", model="recraft-crisp-upscale", image=PNG)
    assert raised.value.field == "prompt"


WORKFLOW = {
    "kind": "workflow",
    "endpoint": "comfy/acme/cleanup",
    "inputs": {"image": {"type": "image", "required": True}, "strength": "number"},
    "params": {"image": "loadimage_1", "strength": "denoise"},
    "price": {"per_run": "0.02"},
}


async def test_a_workflow_whose_inputs_take_no_prompt_runs_without_one(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """A workflow declaring only an image input runs on fal's comfy endpoint with no prompt."""
    config = fal_config(fal_server)
    config["providers"]["fal"]["models"] = {"cleanup": WORKFLOW}
    async with AsyncRouter.from_config(config) as router:
        result = await router.generate(model="cleanup", inputs={"image": PNG, "strength": 0.3})
    (job,) = fal.jobs.values()
    assert job.endpoint == "comfy/acme/cleanup"
    assert job.input["denoise"] == 0.3
    assert "prompt" not in job.input
    assert result.outputs


async def test_batch_lines_for_an_upscaler_need_no_prompt(tmp_path: Path) -> None:
    """Batch items for an upscaler need no prompt; a flux-dev item without one fails naming prompt."""
    items = [
        {"id": "up-1", "model": "recraft-crisp-upscale", "image": PNG_URL},
        {"id": "fox", "model": "flux-dev"},
    ]
    async with AsyncRouter.from_config(SIMULATED) as router:
        report = await run_batch(router, items, tmp_path / "out", concurrency=2)
    by_id = {
        line["id"]: line
        for line in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())
    }
    assert by_id["up-1"]["status"] == "succeeded"
    assert by_id["fox"]["status"] == "invalid"
    assert "prompt" in by_id["fox"]["error"]
    assert report is not None


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_cli_generate_upscales_an_image_file_without_a_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``genrouter generate -m <upscaler> --image in.png`` saves the output with no PROMPT argument."""
    config = tmp_path / "genrouter.yaml"
    config.write_text(yaml.safe_dump(SIMULATED))
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    code, out, err = _run_cli(
        [
            "generate",
            "-m",
            "recraft-crisp-upscale",
            "--image",
            str(image),
            "-c",
            str(config),
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    assert "provider sim" in out
    assert list((tmp_path / "o").iterdir())


def test_cli_generate_without_a_prompt_for_an_image_model_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``genrouter generate -m flux-dev`` with no PROMPT prints one error line naming prompt and exits 2."""
    config = tmp_path / "genrouter.yaml"
    config.write_text(yaml.safe_dump(SIMULATED))
    code, _out, err = _run_cli(
        ["generate", "-m", "flux-dev", "-c", str(config), "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "prompt" in err


async def test_a_passthrough_without_a_prompt_is_left_to_the_provider(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """``fal:<upscaler>`` with only an image is submitted as is: genrouter cannot know its inputs."""
    async with AsyncRouter.from_config(fal_config(fal_server)) as router:
        result = await router.generate(model="fal:fal-ai/esrgan", image="https://example.invalid/in.png")
    (job,) = fal.jobs.values()
    assert job.endpoint == "fal-ai/esrgan"
    assert "prompt" not in job.input
    assert result.provider == "fal"


def test_cli_batch_runs_upscale_lines_without_a_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``genrouter batch`` over lines with only an image for an upscaler exits 0 with every output saved."""
    config = tmp_path / "genrouter.yaml"
    config.write_text(yaml.safe_dump(SIMULATED))
    lines = tmp_path / "in.jsonl"
    lines.write_text("".join(json.dumps({"id": f"up-{i}", "image": PNG_URL}) + "\n" for i in range(3)))
    out_dir = tmp_path / "out"
    code, _out, err = _run_cli(
        ["batch", str(lines), "-m", "recraft-crisp-upscale", "-o", str(out_dir), "-c", str(config)], capsys
    )
    assert code == 0, err
    assert sorted(p.stem for p in out_dir.glob("up-*")) == ["up-0", "up-1", "up-2"]


def test_cli_route_explains_an_upscale_request_without_a_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``genrouter route -m <upscaler> --image in.png --explain`` ranks the provider with no PROMPT."""
    config = tmp_path / "genrouter.yaml"
    config.write_text(yaml.safe_dump(SIMULATED))
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    argv = ["route", "-m", "recraft-crisp-upscale", "--image", str(image), "--explain", "-c", str(config)]
    code, out, err = _run_cli(argv, capsys)
    assert code == 0, err
    assert "sim" in out
    assert "recraft-crisp-upscale" in out


async def test_a_workflow_that_requires_a_prompt_says_to_pass_prompt(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """A workflow with a required ``prompt`` input refuses a request without one, suggesting prompt=."""
    config = fal_config(fal_server)
    entry = {**WORKFLOW, "inputs": {**WORKFLOW["inputs"], "prompt": {"type": "string", "required": True}}}
    config["providers"]["fal"]["models"] = {
        "cleanup": {**entry, "params": {**WORKFLOW["params"], "prompt": "prompt"}}
    }
    async with AsyncRouter.from_config(config) as router:
        with pytest.raises(InvalidRequestError) as raised:
            await router.generate(model="cleanup", inputs={"image": PNG})
        result = await router.generate("tidy it", model="cleanup", inputs={"image": PNG})
    assert raised.value.field == "inputs.prompt"
    assert "pass prompt=..." in str(raised.value)
    (job,) = fal.jobs.values()
    assert job.input["prompt"] == "tidy it"
    assert result.outputs
