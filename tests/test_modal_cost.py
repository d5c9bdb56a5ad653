"""Honest cost and latency on the Modal route: everything the GPU was held for, the GPU that ran,
measured container starts, and single-file checkpoints and warm-up sizes in the service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from genrouter import AsyncRouter, GenerationRequest
from genrouter.backends.modal import ModalBackend
from genrouter.testing import InProcessModalTransport
from genrouter.testing._modal import SERVICE_PATH, load_service_module
from modal_helpers import SERVICE_WARNINGS

pytestmark = SERVICE_WARNINGS

H100 = Decimal("0.001097")
A100_80 = Decimal("0.000694")


@pytest.fixture(scope="module")
def svc() -> ModuleType:
    return load_service_module(SERVICE_PATH)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"loras": tmp_path_factory.mktemp("loras"), "checkpoints": tmp_path_factory.mktemp("checkpoints")}


@pytest.fixture(scope="module")
def service(svc: ModuleType, folders: dict[str, Path]) -> Iterator[Any]:
    config = svc.ServiceConfig(
        models=("sdxl",),
        random_weights="tiny",
        device="cpu",
        cpu_threads=1,
        wait_ms=0,
        lora_dir=str(folders["loras"]),
        checkpoint_dir=str(folders["checkpoints"]),
    )
    service = svc.DiffusionService(config).setup()
    random_models = svc._sibling("random_models")
    random_models.save_random_lora(service.models["sdxl"].pipe, folders["loras"] / "sdxl", "style", seed=1)
    yield service
    service.close()


def sdxl_config(gpu_seconds_per_output: float = 2.2, cold_start_s: float = 20.0) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {
            "gpu": {
                "type": "modal",
                "cold_start_s": cold_start_s,
                "models": {
                    "sdxl": {
                        "endpoint": "sdxl",
                        "capabilities": ["text-to-image", "lora"],
                        "limits": {"max_outputs_per_call": 4, "width": [16, 2048], "height": [16, 2048]},
                        "price": {"per_gpu_second": str(H100)},
                        "gpu_seconds_per_output": gpu_seconds_per_output,
                    }
                },
            }
        },
    }


REQUEST = GenerationRequest(model="sdxl", prompt="a lighthouse", width=32, height=32, seed=3)


class PretendGpu:
    """The in-process service, reporting that it ran on ``gpu`` (and optionally a container start)."""

    def __init__(self, service: Any, gpu: str, cold_start_s: float | None = None) -> None:
        self.service = service
        self.gpu = gpu
        self.cold_start_s = cold_start_s

    def submit(self, request: dict[str, Any], *, call_id: str | None = None) -> Any:
        future = self.service.submit(request, call_id=call_id)
        import concurrent.futures as cf

        relabelled: cf.Future[dict[str, Any]] = cf.Future()

        def copy(done: Any) -> None:
            error = done.exception()
            if error is not None:
                relabelled.set_exception(error)
                return
            result = dict(done.result(), gpu=self.gpu)
            if self.cold_start_s is not None:
                result["cold_start_s"] = self.cold_start_s
            relabelled.set_result(result)

        future.add_done_callback(copy)
        return relabelled


async def generate(transport: Any, config: dict[str, Any] | None = None) -> Any:
    backend = ModalBackend(
        name="gpu", settings=(config or sdxl_config())["providers"]["gpu"], transport=transport
    )
    async with AsyncRouter.from_config(config or sdxl_config(), backends={"gpu": backend}) as router:
        return await router.generate(REQUEST.model_copy(update={"providers": ["gpu"]}))


async def test_an_a100_fallback_is_priced_as_an_a100(service: Any) -> None:
    """A result that ran on the A100-80GB fallback costs GPU-seconds × the A100-80GB rate, actual."""
    result = await generate(InProcessModalTransport(service=PretendGpu(service, "A100-80GB")))  # type: ignore[arg-type]
    gpu_s = Decimal(repr(result.raw["gpu_seconds"]))
    assert result.raw["gpu"] == "A100-80GB"
    assert not result.cost.estimated
    assert result.cost.amount_usd == (A100_80 * gpu_s).quantize(Decimal("0.000001")).normalize()
    assert "A100-80GB" in (result.cost.basis or "")


async def test_an_h100_result_is_priced_at_the_h100_rate(service: Any) -> None:
    """The GPU that ran picks the rate: an H100 result costs GPU-seconds × the H100 rate."""
    result = await generate(InProcessModalTransport(service=PretendGpu(service, "H100")))  # type: ignore[arg-type]
    gpu_s = Decimal(repr(result.raw["gpu_seconds"]))
    assert result.cost.amount_usd == (H100 * gpu_s).quantize(Decimal("0.000001")).normalize()


async def test_a_measured_container_start_is_billed_as_actual_cost(service: Any) -> None:
    """A result carrying its container's measured start adds it to the GPU-seconds, still actual."""
    transport = InProcessModalTransport(service=PretendGpu(service, "H100", cold_start_s=12.5), warm=0)  # type: ignore[arg-type]
    result = await generate(transport)
    gpu_s = Decimal(repr(result.raw["gpu_seconds"]))
    assert not result.cost.estimated
    assert (
        result.cost.amount_usd == (H100 * (gpu_s + Decimal("12.5"))).quantize(Decimal("0.000001")).normalize()
    )
    assert "container start (measured)" in (result.cost.basis or "")


def test_latency_hint_adds_the_observed_share_of_cold_starts_times_the_measured_start() -> None:
    """The hint is 1.2 × s/output + 1 + P(cold) × expected start; both are learnt from what was seen."""
    from genrouter.catalog import CatalogEntry, Price, build_deployment

    entry = CatalogEntry(endpoint="sdxl", price=Price(per_gpu_second=H100), gpu_seconds_per_output=2.0)
    deployment = build_deployment(provider="gpu", provider_type="modal", model="sdxl", entry=entry, spec=None)
    backend = ModalBackend(name="gpu", settings={"cold_start_s": 20}, transport=object())  # type: ignore[arg-type]
    assert backend.latency_hint(deployment) == pytest.approx(1.2 * 2.0 + 1.0)
    for cold in (True, False, False, False):
        backend.cold_starts.saw_submit(cold)
    assert backend.latency_hint(deployment) == pytest.approx(1.2 * 2.0 + 1.0 + 0.25 * 20.0)
    backend.cold_starts.observe(8.0)
    backend.cold_starts.observe(4.0)
    assert backend.latency_hint(deployment) == pytest.approx(1.2 * 2.0 + 1.0 + 0.25 * 6.0)


async def test_cold_submits_and_measured_starts_are_learnt_from_routed_requests(service: Any) -> None:
    """A submit finding no warm container counts as cold; a measured start becomes the expected one."""
    transport = InProcessModalTransport(service=PretendGpu(service, "H100", cold_start_s=9.0), warm=0)  # type: ignore[arg-type]
    backend = ModalBackend(name="gpu", settings={"cold_start_s": 20}, transport=transport)
    async with AsyncRouter.from_config(sdxl_config(), backends={"gpu": backend}) as router:
        await router.generate(REQUEST.model_copy(update={"providers": ["gpu"]}))
    assert backend.cold_starts.cold_share == 1.0
    assert backend.cold_starts.expected_s == 9.0


class FakeTime:
    """perf_counter that only moves when told (so GPU-second accounting is checked without wall time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now


def test_gpu_seconds_include_lora_loading_and_encoding(
    service: Any, svc: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose LoRA had to be loaded is charged the loading, the denoising and its encoding."""
    clock = FakeTime()
    monkeypatch.setattr(svc, "time", clock)
    cache = service.models["sdxl"].loras
    activate = cache.activate

    def slow_activate(pipe: Any, wanted: Any) -> None:
        clock.now += 5.0  # loading the adapter takes 5 s of GPU time
        activate(pipe, wanted)

    monkeypatch.setattr(cache, "activate", slow_activate)
    encode = svc._media.encode_image

    def slow_encode(*args: Any, **kwargs: Any) -> bytes:
        clock.now += 0.5
        return encode(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(svc._media, "encode_image", slow_encode)
    result = service.generate(
        {"prompt": "a fox", "width": 32, "height": 32, "seed": 9, "loras": [{"source": "style"}]}
    )
    assert result["gpu_seconds"] >= 5.5
    assert result["encode_s"] == pytest.approx(0.5)


# -- single-file checkpoints and warm-up sizes -------------------------------------------------------


def _save_checkpoint(service: Any, path: Path, seed: int) -> None:
    """A diffusers-layout single-file SDXL UNet (other random weights: a stand-in fine-tune)."""
    import torch
    from safetensors.torch import save_file

    unet = service.models["sdxl"].eager
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        state = {k: v.contiguous() for k, v in type(unet).from_config(unet.config).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def test_a_checkpoint_named_per_request_changes_the_output_and_the_base_returns(
    service: Any, folders: dict[str, Path]
) -> None:
    """checkpoint="anime" serves that file's denoiser for the request; the next request gets the base one."""
    _save_checkpoint(service, folders["checkpoints"] / "sdxl" / "anime.safetensors", seed=1)
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 2}
    base = service.generate(request)
    tuned = service.generate({**request, "checkpoint": "anime"})
    again = service.generate(request)
    assert tuned["outputs"][0] != base["outputs"][0]
    assert tuned["checkpoint"] == "anime.safetensors"
    assert again["outputs"][0] == base["outputs"][0]
    assert service.models["sdxl"].checkpoints.loads == 1


def test_an_unknown_checkpoint_is_a_value_error_naming_it(service: Any) -> None:
    """A checkpoint not in the folder is refused before anything runs."""
    with pytest.raises(ValueError, match="checkpoint 'missing' not found"):
        service.generate({"prompt": "a fox", "width": 32, "height": 32, "checkpoint": "missing"})


def test_a_checkpoint_outside_the_folder_is_refused(service: Any) -> None:
    """Paths and URLs are not checkpoint names."""
    with pytest.raises(ValueError, match="file name in the checkpoint folder"):
        service.generate({"prompt": "a fox", "width": 32, "height": 32, "checkpoint": "../etc/passwd"})


def test_every_served_size_is_warmed_up(svc: ModuleType) -> None:
    """warmup_sizes: each model warms at its default size and each extra size its size step divides."""
    config = svc.ServiceConfig(
        models=("sdxl",),
        random_weights="tiny",
        device="cpu",
        cpu_threads=1,
        warmup=True,
        warmup_sizes=((48, 32), (33, 33)),
    )
    service = svc.DiffusionService(config).setup()
    service.close()
    assert service.warmed == [("sdxl", 32, 32, 1), ("sdxl", 48, 32, 1)]


def test_warmup_sizes_are_read_from_the_environment(svc: ModuleType) -> None:
    """GENROUTER_WARMUP_SIZES="1024x1024,832x1216" lists the sizes to warm."""
    config = svc.ServiceConfig.from_env({"GENROUTER_WARMUP_SIZES": "1024x1024, 832x1216"})
    assert config.warmup_sizes == ((1024, 1024), (832, 1216))


async def test_a_checkpoint_is_asked_for_through_provider_options(
    service: Any, folders: dict[str, Path]
) -> None:
    """provider_options={"modal": {"checkpoint": name}} reaches the class and serves that checkpoint."""
    _save_checkpoint(service, folders["checkpoints"] / "sdxl" / "routed.safetensors", seed=3)
    transport = InProcessModalTransport(service=service)
    config = sdxl_config()
    config["providers"] = {"modal": config["providers"]["gpu"]}
    backend = ModalBackend(name="modal", settings={}, transport=transport)
    async with AsyncRouter.from_config(config, backends={"modal": backend}) as router:
        result = await router.generate(
            REQUEST.model_copy(update={"provider_options": {"modal": {"checkpoint": "routed"}}})
        )
    assert transport.spawned[0][1]["checkpoint"] == "routed"
    assert result.raw["checkpoint"] == "routed.safetensors"


def test_a_checkpoint_with_loras_is_refused(service: Any, folders: dict[str, Path]) -> None:
    """A request naming a checkpoint and LoRAs is a ValueError saying to pick one."""
    _save_checkpoint(service, folders["checkpoints"] / "sdxl" / "solo.safetensors", seed=4)
    with pytest.raises(ValueError, match="checkpoint with LoRAs"):
        service.generate(
            {
                "prompt": "a fox",
                "width": 32,
                "height": 32,
                "checkpoint": "solo",
                "loras": [{"source": "style"}],
            }
        )


class StatsInProcess(InProcessModalTransport):
    """The in-process transport, also answering get_current_stats (one runner, a backlog of 2)."""

    async def current_stats(self, model_id: str) -> dict[str, int]:
        return {"backlog": 2, "num_total_runners": 1, "num_running_inputs": 1}


async def test_the_live_capacity_prediction_uses_the_measured_container_start(service: Any) -> None:
    """After a result reports a 9 s container start, explain()'s capacity note predicts with 9 s, not 20."""
    transport = StatsInProcess(service=PretendGpu(service, "H100", cold_start_s=9.0))  # type: ignore[arg-type]
    backend = ModalBackend(name="gpu", settings={"cold_start_s": 20}, transport=transport)
    config = {**sdxl_config(), "routing": {"default": {"strategy": "cost", "latency_slo_s": 30}}}
    async with AsyncRouter.from_config(config, backends={"gpu": backend}) as router:
        await router.generate(REQUEST.model_copy(update={"providers": ["gpu"]}))
        router.explain("a fox", model="sdxl")
        for _ in range(3):
            await asyncio.sleep(0)
        plan = router.explain("a fox", model="sdxl")
    assert any("cold start 9s" in note for note in plan.notes)
