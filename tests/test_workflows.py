"""ComfyUI workflows routed like any model: the example workflow on fal's comfy/ endpoint (loopback
fake) and on the self-hosted ComfyUI class (in-process, against a fake ComfyUI server)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fakes.comfy import FakeComfy
from fakes.fal import Behaviour, FakeFal
from fakes.server import LoopbackServer
from genrouter import (
    ArtifactKind,
    AsyncRouter,
    AttemptOutcome,
    ConfigError,
    DeadlineExceededError,
    InvalidRequestError,
    Router,
)
from genrouter.backends.modal import ModalBackend
from genrouter.testing import comfy_transport, set_testing
from genrouter.util._png import placeholder_png
from loopback import install_fal
from workflow_helpers import EXAMPLE_DIR, example_config, workflow_router

PNG = placeholder_png(8, 8, 1)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


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


def urls(servers: tuple[LoopbackServer, LoopbackServer]) -> tuple[str, str]:
    return servers[0].url, servers[1].url


# -- one workflow, two deployments -----------------------------------------------------------


async def test_runs_on_the_self_hosted_class_with_inputs_patched_into_the_workflow(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """On comfy-gpu each mapped value lands at its <node>.inputs.<name> and the saved image comes back."""
    async with workflow_router(*urls(servers)) as (router, _):
        result = await router.generate(
            model="restyle", prompt="a fox in snow", seed=7, inputs={"image": PNG, "strength": 0.4}
        )
    assert result.provider == "comfy-gpu"
    assert result.model == "restyle"
    [prompt] = comfy.prompts
    assert prompt["6"]["inputs"]["text"] == "a fox in snow"
    assert prompt["3"]["inputs"]["seed"] == 7
    assert prompt["3"]["inputs"]["denoise"] == 0.4
    assert comfy.uploads[prompt["10"]["inputs"]["image"]] == PNG
    [output] = result.outputs
    assert output.content_type == "image/png"
    assert (await output.aread()).startswith(b"\x89PNG")
    assert fal.submit_count() == 0


async def test_self_hosted_cost_is_gpu_seconds_times_the_price(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """GPU-seconds are ComfyUI's own execution time (2.5 s in the fake) × $0.000542 (L40S)."""
    async with workflow_router(*urls(servers)) as (router, _):
        result = await router.generate(model="restyle", prompt="a fox", inputs={"image": PNG})
    assert result.timings.running_s == pytest.approx(2.5)
    assert result.cost.amount_usd == Decimal("0.001355")


async def test_runs_on_the_fal_comfy_endpoint_under_its_input_names(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """On fal the same request is sent under the endpoint's names; the image goes as a data: URL."""
    async with workflow_router(*urls(servers)) as (router, _):
        result = await router.generate(
            model="restyle", prompt="a fox", seed=3, inputs={"image": PNG, "strength": 0.5}, providers=["fal"]
        )
    job = fal.job_for("a fox")
    assert job.endpoint == "comfy/acme/restyle"
    assert job.input == {"prompt": "a fox", "seed": 3, "loadimage_1": PNG_URL, "denoise": 0.5}
    assert result.provider == "fal"
    assert [o.url.rsplit("/", 1)[-1] for o in result.outputs] == ["0.png"]  # the temp preview is skipped
    assert (await result.outputs[0].aread()).startswith(b"\x89PNG")
    assert comfy.prompts == []


async def test_fal_cost_is_per_run(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """A per_run price bills each run of the workflow once."""
    async with workflow_router(*urls(servers)) as (router, _):
        result = await router.generate(
            model="restyle", prompt="a fox", inputs={"image": PNG}, providers=["fal"]
        )
    assert result.cost.amount_usd == Decimal("0.02")
    assert "1 run(s)" in (result.cost.basis or "")


async def test_explain_estimates_both_deployments(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """explain() ranks both deployments: 6 GPU-s × $0.000542 self-hosted, $0.02 per run on fal."""
    async with workflow_router(*urls(servers)) as (router, _):
        plan = router.explain(model="restyle", prompt="a fox", inputs={"image": PNG_URL})
    costs = {c.provider: c.estimated_cost_usd for c in plan.candidates}
    assert costs == {"comfy-gpu": Decimal("0.003252"), "fal": Decimal("0.02")}
    assert [c.provider for c in plan.viable] == ["comfy-gpu", "fal"]


async def test_a_request_field_fills_the_input_of_the_same_name(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """image= and strength= as request fields reach the workflow like inputs of those names."""
    async with workflow_router(*urls(servers)) as (router, _):
        await router.generate(model="restyle", prompt="a fox", image=PNG, strength=0.3)
    [prompt] = comfy.prompts
    assert comfy.uploads[prompt["10"]["inputs"]["image"]] == PNG
    assert prompt["3"]["inputs"]["denoise"] == 0.3


async def test_an_input_the_deployment_does_not_map_is_ignored_with_a_warning(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """A declared input a deployment maps to null is left out, and the result says so."""
    config = example_config(servers[0].url)
    config["providers"]["comfy-gpu"]["models"]["restyle"]["params"]["negative_prompt"] = None
    async with workflow_router(*urls(servers), config=config) as (router, _):
        result = await router.generate(
            model="restyle", prompt="a fox", inputs={"image": PNG, "negative_prompt": "blur"}
        )
    assert comfy.prompts[0]["7"]["inputs"]["text"] == "blurry, text, watermark"
    assert any("negative_prompt" in w and "ignored" in w for w in result.warnings)


# -- bad inputs never reach a provider -----------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "field", "says"),
    [
        ({"image": PNG, "strenght": 0.5}, "inputs.strenght", "did you mean 'strength'"),
        ({"image": PNG, "strength": "high"}, "inputs.strength", "not a finite number"),
        ({"image": PNG, "strength": 1.5}, "inputs.strength", "above the maximum 1"),
        ({"image": PNG, "seed": 1.5}, "inputs.seed", "not an integer"),
        ({"image": PNG, "seed": True}, "inputs.seed", "not an integer"),
        ({"image": "/tmp/fox.png"}, "inputs.image", "not an image"),
        ({"image": PNG, "negative_prompt": 3}, "inputs.negative_prompt", "not a string"),
        ({"strength": 0.5}, "inputs.image", "requires input 'image'"),
    ],
)
async def test_bad_inputs_are_refused_before_anything_is_submitted(
    servers: tuple[LoopbackServer, LoopbackServer],
    fal: FakeFal,
    comfy: FakeComfy,
    inputs: dict[str, Any],
    field: str,
    says: str,
) -> None:
    """Unknown name, wrong type, out of range, required but missing: InvalidRequestError, nothing sent."""
    async with workflow_router(*urls(servers)) as (router, transport):
        with pytest.raises(InvalidRequestError) as caught:
            await router.generate(model="restyle", prompt="a fox", inputs=inputs)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert says in str(caught.value)
    assert fal.submit_count() == 0
    assert transport.spawned == []
    assert comfy.prompts == []


async def test_inputs_on_a_model_that_is_not_a_workflow_are_refused(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """inputs belong to workflow models; an image model names the fields to use instead."""
    async with workflow_router(*urls(servers)) as (router, _):
        with pytest.raises(InvalidRequestError, match="inputs are for workflow models") as caught:
            await router.generate(model="flux-dev", prompt="a fox", inputs={"seed": 1}, providers=["fal"])
    assert caught.value.field == "inputs"
    assert fal.submit_count() == 0


async def test_submit_refuses_bad_inputs_too(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """router.submit() checks inputs before any submission, like generate()."""
    async with workflow_router(*urls(servers)) as (router, transport):
        with pytest.raises(InvalidRequestError):
            await router.submit(model="restyle", prompt="a fox", inputs={"image": PNG, "steps": 30})
    assert transport.spawned == []


def test_a_params_key_that_is_no_field_or_input_is_a_config_error(
    servers: tuple[LoopbackServer, LoopbackServer],
) -> None:
    """A typo in a workflow's params (an undeclared input) fails at construction, naming the key."""
    config = example_config(servers[0].url)
    config["providers"]["fal"]["models"]["restyle"]["params"]["strenght"] = "denoise"
    with pytest.raises(ConfigError, match="'strenght' is neither a request field nor a declared input"):
        AsyncRouter.from_config(config)


def test_deployments_that_disagree_on_an_input_type_are_a_config_error(
    servers: tuple[LoopbackServer, LoopbackServer],
) -> None:
    """Two deployments declaring one input with two types is refused."""
    config = example_config(servers[0].url)
    config["providers"]["comfy-gpu"]["models"]["restyle"]["inputs"] = {"seed": "string"}
    with pytest.raises(ConfigError, match="input 'seed' is string on comfy-gpu but integer on fal"):
        AsyncRouter.from_config(config)


def test_inputs_on_an_image_entry_are_a_config_error() -> None:
    """Only workflow entries declare inputs."""
    config = {
        "version": 1,
        "providers": {
            "fal": {
                "api_key": "k",
                "models": {"mine": {"endpoint": "fal-ai/x", "kind": "image", "inputs": {"a": "string"}}},
            }
        },
    }
    with pytest.raises(ConfigError, match="inputs are declared by workflow entries"):
        AsyncRouter.from_config(config)


# -- routing works unchanged ---------------------------------------------------------------------


async def test_fails_over_from_the_self_hosted_class_to_fal_when_comfyui_answers_503(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """ComfyUI's 503 fails the comfy-gpu attempt; the plan moves on to fal, which serves it."""
    comfy.unavailable = 10
    async with workflow_router(*urls(servers)) as (router, _):
        result = await router.generate(model="restyle", prompt="a fox", inputs={"image": PNG})
    assert result.provider == "fal"
    assert result.attempts[0].provider == "comfy-gpu"
    assert result.attempts[0].outcome is AttemptOutcome.FAILED
    assert "503" in (result.attempts[0].error or "")
    assert result.attempts[-1].outcome is AttemptOutcome.SUCCEEDED


async def test_fails_over_from_fal_to_the_self_hosted_class_on_a_503(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """fal answering 503 is retried, then the plan falls back to the self-hosted class."""
    fal.behaviour = Behaviour(submit_status=503)
    async with workflow_router(*urls(servers), order=["fal", "comfy-gpu"]) as (router, _):
        result = await router.generate(model="restyle", prompt="a fox", inputs={"image": PNG})
    assert result.provider == "comfy-gpu"
    assert {a.provider for a in result.attempts[:-1]} == {"fal"}
    assert fal.submit_count() == len(result.attempts) - 1
    assert len(comfy.prompts) == 1


async def test_a_failed_node_fails_the_attempt_and_falls_back(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """A ComfyUI execution error is a failed job naming the node; fal then serves the request."""
    comfy.fail_texts = ["cursed"]
    async with workflow_router(*urls(servers)) as (router, _):
        result = await router.generate(model="restyle", prompt="a cursed fox", inputs={"image": PNG})
    assert result.provider == "fal"
    error = result.attempts[0].error or ""
    assert "JobFailedError" in error
    assert "node 3 (KSampler)" in error


async def test_the_deadline_cancels_a_workflow_that_does_not_finish(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """A run still going when the one deadline passes is cancelled, and DeadlineExceededError raised."""
    options = {"latency_s": math.inf}
    async with workflow_router(*urls(servers), transport_options=options) as (router, transport):
        with pytest.raises(DeadlineExceededError):
            await router.generate(
                model="restyle",
                prompt="a fox",
                inputs={"image": PNG},
                providers=["comfy-gpu"],
                deadline_s=0.3,
            )
    assert len(transport.cancelled) == 1


async def test_a_hedge_on_fal_wins_over_a_stuck_self_hosted_run(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """With hedging, fal runs beside a stuck comfy-gpu run; fal wins and the loser is cancelled."""
    options = {"latency_s": math.inf}
    hedge = {"enabled": True, "delay": 0.05, "max_extra_fraction": 1.0}
    async with workflow_router(*urls(servers), transport_options=options, hedge=hedge) as (router, transport):
        result = await router.generate(model="restyle", prompt="a fox", inputs={"image": PNG})
        await asyncio.sleep(0)
    assert result.provider == "fal"
    outcomes = {(a.provider, a.outcome, a.hedged) for a in result.attempts}
    assert ("fal", AttemptOutcome.SUCCEEDED, True) in outcomes
    assert ("comfy-gpu", AttemptOutcome.HEDGE_LOST, False) in outcomes
    assert len(transport.cancelled) == 1


async def test_a_submitted_workflow_resumes_from_its_handle(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """submit() → JSON → result(): the handle, image input bytes included, survives a round trip."""
    async with workflow_router(*urls(servers)) as (router, _):
        handle = await router.submit(model="restyle", prompt="a fox", inputs={"image": PNG, "strength": 0.2})
        again = type(handle).model_validate_json(handle.model_dump_json())
        result = await router.result(again, timeout=30)
    assert again.request.inputs == {"image": PNG, "strength": 0.2}
    assert result.provider == "comfy-gpu"
    assert len(result.outputs) == 1


async def test_num_outputs_runs_the_workflow_that_many_times(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """A workflow deployment makes one run per output asked for (each billed as a run)."""
    async with workflow_router(*urls(servers)) as (router, _):
        result = await router.generate(
            model="restyle", prompt="a fox", inputs={"image": PNG}, num_outputs=2, providers=["fal"]
        )
    assert fal.submit_count() == 2
    assert len(result.outputs) == 2
    assert result.cost.amount_usd == Decimal("0.04")


def test_the_example_config_declares_both_deployments() -> None:
    """examples/workflows/genrouter.yaml serves restyle on fal's comfy/ endpoint and on the class."""
    config = copy.deepcopy(example_config("http://127.0.0.1:9"))
    router = AsyncRouter.from_config(config)
    deployments = {d.provider: d for d in router.deployments("restyle")}
    assert deployments["fal"].endpoint.startswith("comfy/")
    assert deployments["comfy-gpu"].provider_type == "modal"
    assert deployments["fal"].kind == deployments["comfy-gpu"].kind == "workflow"


async def test_a_comfyui_that_stays_down_opens_the_circuit_and_fal_takes_over(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """ComfyUI unreachable is a retryable unavailability: after repeated failures requests go to fal."""
    comfy.unavailable = 1000
    async with workflow_router(*urls(servers)) as (router, _):
        results = [
            await router.generate(model="restyle", prompt=f"fox {i}", inputs={"image": PNG}) for i in range(8)
        ]
    assert {r.provider for r in results} == {"fal"}
    assert results[-1].attempts[0].provider == "fal"  # the circuit is open: comfy-gpu is not tried first


def test_a_comfyui_provider_serves_only_its_own_models() -> None:
    """With shipped_models: false the ComfyUI class is no deployment of the shipped Modal models."""
    router = AsyncRouter.from_config(example_config("http://127.0.0.1:9"))
    assert {d.model for d in router.deployments() if d.provider == "comfy-gpu"} == {"restyle"}


async def test_an_image_input_given_as_a_path_reaches_fal_as_a_data_url(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy, tmp_path: Path
) -> None:
    """A pathlib.Path image input is read and sent inline, like the image field."""
    path = tmp_path / "fox.png"
    path.write_bytes(PNG)
    async with workflow_router(*urls(servers)) as (router, _):
        await router.generate(model="restyle", prompt="a fox", inputs={"image": path}, providers=["fal"])
    assert fal.job_for("a fox").input["loadimage_1"] == PNG_URL


def test_the_sync_router_runs_a_workflow(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """genrouter.Router.generate(model=..., inputs=...) is the same call, synchronously."""
    config = example_config(servers[0].url)
    transport = comfy_transport(servers[1].url, workflows_dir=EXAMPLE_DIR)
    backend = ModalBackend(name="comfy-gpu", settings=config["providers"]["comfy-gpu"], transport=transport)
    try:
        with Router.from_config(config, backends={"comfy-gpu": backend}) as router:
            result = router.generate(model="restyle", prompt="a fox", inputs={"image": PNG, "strength": 0.7})
    finally:
        asyncio.run(transport.aclose())
    assert result.provider == "comfy-gpu"
    assert comfy.prompts[0]["3"]["inputs"]["denoise"] == 0.7


async def test_a_large_image_input_is_uploaded_to_fal_storage_once(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy
) -> None:
    """An image input over inline_max_bytes takes the same upload path as image: one upload, reused."""
    big = PNG + bytes(300_000)
    config = example_config(servers[0].url)
    config["providers"]["fal"]["rest_url"] = servers[0].url
    async with workflow_router(*urls(servers), config=config) as (router, _):
        for prompt in ("a fox", "a second fox"):
            await router.generate(model="restyle", prompt=prompt, inputs={"image": big}, providers=["fal"])
    assert len(fal.uploads) == 1
    sent = [fal.job_for(p).input["loadimage_1"] for p in ("a fox", "a second fox")]
    assert sent[0] == sent[1]
    assert sent[0].startswith("http://")


async def test_a_video_output_of_the_self_hosted_class_is_a_video_artifact(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy, tmp_path: Path
) -> None:
    """Outputs keep their kind: a workflow's MP4 is an Artifact of kind video."""
    workflow = json.loads((EXAMPLE_DIR / "restyle.json").read_text())
    workflow["9"] = {"class_type": "VHS_VideoCombine", "inputs": {"images": ["8", 0], "filename_prefix": "c"}}
    (tmp_path / "restyle.json").write_text(json.dumps(workflow))
    options = {"workflows_dir": tmp_path}
    async with workflow_router(*urls(servers), transport_options=options) as (router, _):
        result = await router.generate(model="restyle", prompt="a fox", inputs={"image": PNG})
    [video] = result.outputs
    assert video.kind is ArtifactKind.VIDEO
    assert video.content_type == "video/mp4"
    assert video.extension == "mp4"


async def test_an_image_input_declared_on_one_deployment_is_media_on_every_one(
    servers: tuple[LoopbackServer, LoopbackServer], fal: FakeFal, comfy: FakeComfy, tmp_path: Path
) -> None:
    """An image input declared only on fal still reaches the self-hosted class as uploaded bytes."""
    config = example_config(servers[0].url)
    fal_entry = config["providers"]["fal"]["models"]["restyle"]
    fal_entry["inputs"]["photo"] = "image"
    fal_entry["params"]["photo"] = "loadimage_1"
    config["providers"]["comfy-gpu"]["models"]["restyle"]["params"]["photo"] = "10.inputs.image"
    path = tmp_path / "fox.png"
    path.write_bytes(PNG)
    async with workflow_router(*urls(servers), config=config) as (router, _):
        await router.generate(model="restyle", prompt="a fox", inputs={"image": PNG, "photo": path})
    assert comfy.uploads[comfy.prompts[0]["10"]["inputs"]["image"]] == PNG
