"""The Modal backend: contract, payloads, cost, error mapping, the SDK transport, and routing to it."""

from __future__ import annotations

import asyncio
import io
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")
modal_exception = pytest.importorskip("modal.exception")

from PIL import Image  # noqa: E402

from genrouter import AsyncRouter, GenerationRequest, JobHandle, LoRA  # noqa: E402
from genrouter.backends.modal import ModalBackend, SdkModalTransport, map_modal_error  # noqa: E402
from genrouter.catalog import CatalogEntry, Deployment, Limits, Price, build_deployment  # noqa: E402
from genrouter.errors import (  # noqa: E402
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)
from genrouter.testing import BackendContract, InProcessModalTransport  # noqa: E402
from genrouter.testing._modal import SERVICE_PATH, load_service_module, modal_error  # noqa: E402
from genrouter.types import JobState  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute in the model:UserWarning"),
]

PRICE = Decimal("0.001097")
SIZE_LIMITS = Limits(
    max_outputs_per_call=4, width=(16, 2048), height=(16, 2048), default_size=(32, 32), max_loras=4
)


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One tiny CPU service (SDXL and FLUX-dev) with a random SDXL LoRA named 'style'."""
    svc = load_service_module(SERVICE_PATH)
    lora_dir = tmp_path_factory.mktemp("modal-loras")
    config = svc.ServiceConfig(
        models=("sdxl", "flux-dev"),
        random_weights="tiny",
        device="cpu",
        cpu_threads=1,
        lora_dir=str(lora_dir),
        wait_ms=5,
    )
    service = svc.DiffusionService(config).setup()
    svc._sibling("random_models").save_random_lora(service.models["sdxl"].pipe, lora_dir / "sdxl", "style")
    yield service
    service.close()


def modal_deployment(
    model: str = "sdxl", params: dict[str, str | None] | None = None, kind: str = "image"
) -> Deployment:
    entry = CatalogEntry(
        endpoint=model,
        kind=kind,  # type: ignore[arg-type]
        capabilities=["text-to-image", "image-to-image", "lora"],  # type: ignore[list-item]
        limits=SIZE_LIMITS,
        params=params,
        price=Price(per_gpu_second=PRICE),
        gpu_seconds_per_output=1.0,
    )
    return build_deployment(provider="modal", provider_type="modal", model=model, entry=entry, spec=None)


def make_backend(transport: Any, **settings: Any) -> ModalBackend:
    return ModalBackend(name="modal", settings=settings, transport=transport)


async def run(backend: ModalBackend, deployment: Deployment, request: GenerationRequest) -> Any:
    job = await backend.submit(deployment, request)
    status = await backend.wait(job, 30)
    return job, status


class TestModalBackendContract(BackendContract):
    """ModalBackend over InProcessModalTransport meets the backend contract."""

    @pytest.fixture
    def backend(self, shared_service: Any) -> ModalBackend:
        """A backend whose calls run the tiny service."""
        transport = InProcessModalTransport(service=shared_service)
        return make_backend(transport, token_id="ak-test-id", token_secret="as-very-secret")

    @pytest.fixture
    def deployment(self) -> Deployment:
        """The SDXL deployment."""
        return modal_deployment()

    @pytest.fixture
    def slow_backend(self, shared_service: Any) -> ModalBackend:
        """A backend whose calls never finish until cancelled."""
        return make_backend(InProcessModalTransport(service=shared_service, latency_s=math.inf))

    @pytest.fixture
    def reopen(self, backend: ModalBackend) -> ModalBackend:
        """A second backend reading the same Modal (transport)."""
        return make_backend(backend.transport)

    @pytest.fixture
    def secrets(self) -> list[str]:
        """The token secret."""
        return ["as-very-secret"]

    @pytest.fixture
    def contract_request(self, deployment: Deployment) -> GenerationRequest:
        """A tiny request."""
        return GenerationRequest(model="sdxl", prompt="a red fox in snow", seed=7, width=32, height=32)


# -- payloads and results --------------------------------------------------------------------


async def test_submit_sends_a_payload_of_builtins_under_genrouter_names(shared_service: Any) -> None:
    """The class receives model, prompt, size, seed, LoRAs and image bytes as plain values."""
    transport = InProcessModalTransport(service=shared_service)
    image = _png(Image.new("RGB", (32, 32), (10, 20, 30)))
    request = GenerationRequest(
        model="sdxl",
        prompt="a fox",
        width=32,
        height=48,
        seed=3,
        image=image,
        strength=0.5,
        loras=[LoRA(source="style", scale=0.7)],
    )
    await make_backend(transport).submit(modal_deployment(), request)
    model_id, payload = transport.spawned[0]
    assert model_id == "sdxl"
    assert payload == {
        "model": "sdxl",
        "prompt": "a fox",
        "width": 32,
        "height": 48,
        "num_outputs": 1,
        "seed": 3,
        "strength": 0.5,
        "image": image,
        "loras": [{"source": "style", "scale": 0.7}],
    }


async def test_submit_fixes_a_seed_when_the_request_has_none(shared_service: Any) -> None:
    """Without a request seed the backend picks one, so a re-run input reproduces its output."""
    transport = InProcessModalTransport(service=shared_service)
    job = await make_backend(transport).submit(
        modal_deployment(), GenerationRequest(model="sdxl", prompt="x")
    )
    assert isinstance(transport.spawned[0][1]["seed"], int)
    assert job.data["seed"] == transport.spawned[0][1]["seed"]


async def test_fields_mapped_to_null_are_dropped_with_a_warning(shared_service: Any) -> None:
    """A params entry mapped to null keeps that field out of the payload and says so."""
    transport = InProcessModalTransport(service=shared_service)
    deployment = modal_deployment("flux-dev", params={"negative_prompt": None})
    request = GenerationRequest(model="flux-dev", prompt="x", negative_prompt="blurry", width=32, height=32)
    job = await make_backend(transport).submit(deployment, request)
    assert "negative_prompt" not in transport.spawned[0][1]
    assert any("negative_prompt" in w for w in job.warnings)


async def test_result_outputs_are_data_urls_of_the_generated_images(shared_service: Any) -> None:
    """Outputs come back as data: URLs whose bytes are PNGs of the requested size."""
    backend = make_backend(InProcessModalTransport(service=shared_service))
    request = GenerationRequest(model="sdxl", prompt="x", width=48, height=32, num_outputs=2, seed=1)
    job, status = await run(backend, modal_deployment(), request)
    result = await backend.fetch_result(job)
    assert status.state is JobState.SUCCEEDED
    assert [a.url.split(",")[0] for a in result.outputs] == ["data:image/png;base64"] * 2
    assert Image.open(io.BytesIO(await result.outputs[0].aread())).size == (48, 32)


async def test_running_s_is_the_gpu_time_the_service_measured(shared_service: Any) -> None:
    """timings.running_s is the GPU-seconds the service reported (what per_gpu_second prices)."""
    backend = make_backend(InProcessModalTransport(service=shared_service))
    job, _ = await run(backend, modal_deployment(), GenerationRequest(model="sdxl", prompt="x", seed=2))
    result = await backend.fetch_result(job)
    assert result.timings.running_s == result.raw["gpu_seconds"] > 0


async def test_cold_start_adds_the_cold_start_estimate_to_the_cost(shared_service: Any) -> None:
    """With no warm container at submit, cost = (GPU-seconds + cold_start_s) × price, estimated."""
    backend = make_backend(InProcessModalTransport(service=shared_service, warm=0), cold_start_s=20)
    job, _ = await run(backend, modal_deployment(), GenerationRequest(model="sdxl", prompt="x", seed=2))
    result = await backend.fetch_result(job)
    gpu_s = Decimal(repr(result.timings.running_s))
    assert result.cost.estimated
    assert result.cost.amount_usd == (PRICE * (gpu_s + 20)).quantize(Decimal("0.000001")).normalize()
    assert "cold start" in (result.cost.basis or "")


async def test_warm_container_cost_is_the_actual_gpu_seconds_times_the_price(shared_service: Any) -> None:
    """With a warm container the cost is actual: the GPU-seconds the class reported × the price.

    (Issue 15 replaced "the backend reports no cost; the router prices running_s": the class
    now reports everything it held the GPU for, which is what Modal bills.)
    """
    backend = make_backend(InProcessModalTransport(service=shared_service, warm=2))
    job, _ = await run(backend, modal_deployment(), GenerationRequest(model="sdxl", prompt="x", seed=2))
    result = await backend.fetch_result(job)
    gpu_s = Decimal(repr(result.raw["gpu_seconds"]))
    assert not result.cost.estimated
    assert result.cost.amount_usd == (PRICE * gpu_s).quantize(Decimal("0.000001")).normalize()
    assert "GPU-s held" in (result.cost.basis or "")


async def test_service_rejection_is_an_invalid_request(shared_service: Any) -> None:
    """A request the service refuses (an unknown LoRA) fails the job with InvalidRequestError."""
    backend = make_backend(InProcessModalTransport(service=shared_service))
    request = GenerationRequest(model="sdxl", prompt="x", loras=[LoRA(source="no-such-lora")])
    job, status = await run(backend, modal_deployment(), request)
    assert status.state is JobState.FAILED
    with pytest.raises(InvalidRequestError, match="not found"):
        await backend.fetch_result(job)


# -- error mapping -------------------------------------------------------------------------------

SUBMIT_ERRORS = [
    ("ConnectionError", ProviderUnavailableError),
    ("ServiceError", ProviderUnavailableError),
    ("InternalError", ProviderUnavailableError),
    ("ResourceExhaustedError", RateLimitedError),
    ("NotFoundError", ProviderError),
    ("AuthError", AuthenticationError),
    ("PermissionDeniedError", AuthenticationError),
    ("InvalidError", InvalidRequestError),
    ("ConflictError", InvalidRequestError),
    ("RequestSizeError", InvalidRequestError),
    ("SerializationError", InvalidRequestError),
    ("VersionError", ConfigError),
    ("ClientClosed", ProviderError),
]


@pytest.mark.parametrize(("name", "expected"), SUBMIT_ERRORS)
async def test_modal_error_at_spawn_maps_to_a_genrouter_error(
    shared_service: Any, name: str, expected: type[GenRouterError]
) -> None:
    """Each Modal exception from spawn becomes the genrouter error its meaning calls for."""
    transport = InProcessModalTransport(service=shared_service)
    transport.inject(modal_error(name, "boom"), on="spawn")
    with pytest.raises(expected) as info:
        await make_backend(transport).submit(modal_deployment(), GenerationRequest(model="sdxl", prompt="x"))
    assert type(info.value) is expected
    assert info.value.provider == "modal"


async def test_failed_spawn_leaves_the_container_count_query_to_finish(shared_service: Any) -> None:
    """A failed spawn does not cancel the stats query beside it; aclose waits for it instead.

    Cancelling a modal SDK call while its event-loop thread starts drops the SDK's inner
    coroutine unawaited, so the query (bounded at 2 s) is left to end on its own.
    """
    answered = asyncio.Event()
    outcomes: list[str] = []

    class SlowStats(InProcessModalTransport):
        async def warm_containers(self, model_id: str) -> int | None:
            try:
                await answered.wait()
            except asyncio.CancelledError:
                outcomes.append("cancelled")
                raise
            outcomes.append("answered")
            return 1

    transport = SlowStats(service=shared_service)
    transport.inject(modal_error("InvalidError", "boom"), on="spawn")
    backend = make_backend(transport)
    with pytest.raises(InvalidRequestError):
        await backend.submit(modal_deployment(), GenerationRequest(model="sdxl", prompt="x"))
    closing = asyncio.create_task(backend.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()
    answered.set()
    await closing
    assert outcomes == ["answered"]


def test_not_found_at_spawn_is_a_404_that_is_not_retried() -> None:
    """A missing app or class is a 404 ProviderError that is not retried (deploy it first)."""
    error = map_modal_error(modal_error("NotFoundError", "Lookup failed"), provider="modal", at_submit=True)
    assert isinstance(error, ProviderError)
    assert (error.status_code, error.retryable) == (404, False)


OUTCOME_ERRORS = [
    ("FunctionTimeoutError", JobFailedError, False),
    ("OutputExpiredError", JobFailedError, True),
    ("RemoteError", ProviderUnavailableError, True),
    ("InternalFailure", ProviderUnavailableError, True),
    ("ExecutionError", ConfigError, False),
    ("DeserializationError", ConfigError, False),
]


@pytest.mark.parametrize(("name", "expected", "retryable"), OUTCOME_ERRORS)
async def test_modal_error_as_a_calls_result_fails_the_job(
    shared_service: Any, name: str, expected: type[GenRouterError], retryable: bool
) -> None:
    """A call that ended in a Modal error is failed, and fetch_result raises the mapped error."""
    transport = InProcessModalTransport(service=shared_service)
    backend = make_backend(transport)
    job = await backend.submit(modal_deployment(), GenerationRequest(model="sdxl", prompt="x"))
    transport.inject(modal_error(name, "boom"), on="get")
    assert (await backend.poll(job)).state is JobState.FAILED
    with pytest.raises(expected) as info:
        await backend.fetch_result(job)
    assert type(info.value) is expected
    assert info.value.retryable is retryable


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ConnectionError", ProviderUnavailableError), ("AuthError", AuthenticationError)],
)
async def test_modal_error_while_asking_for_a_result_is_raised_by_poll(
    shared_service: Any, name: str, expected: type[GenRouterError]
) -> None:
    """A failed request to Modal (not the call's failure) is raised from poll; the job stays pinned."""
    transport = InProcessModalTransport(service=shared_service)
    backend = make_backend(transport)
    job = await backend.submit(modal_deployment(), GenerationRequest(model="sdxl", prompt="x"))
    transport.inject(modal_error(name, "boom"), on="get")
    with pytest.raises(expected):
        await backend.poll(job)
    assert (await backend.wait(job, 30)).state is JobState.SUCCEEDED


def test_every_modal_exception_class_maps_to_a_genrouter_error() -> None:
    """map_modal_error turns every exception class modal.exception defines into a GenRouterError."""
    classes = [
        value
        for value in vars(modal_exception).values()
        if isinstance(value, type) and issubclass(value, BaseException) and not issubclass(value, Warning)
        if value.__module__.startswith("modal")
    ]
    assert len(classes) > 30
    for cls in classes:
        instance = cls.__new__(cls)  # some take extra constructor arguments (ImageBuildError)
        BaseException.__init__(instance, "boom")
        for at_submit in (True, False):
            error = map_modal_error(instance, provider="modal", at_submit=at_submit)
            assert isinstance(error, GenRouterError), cls


@pytest.mark.parametrize(
    ("error", "expected"),
    [(ValueError("bad size"), InvalidRequestError), (RuntimeError("CUDA error"), JobFailedError)],
)
def test_exceptions_raised_by_the_class_map_by_their_builtin_type(
    error: Exception, expected: type[GenRouterError]
) -> None:
    """The class's own ValueError is an invalid request; any other exception a failed job."""
    assert type(map_modal_error(error, provider="modal")) is expected


def test_input_cancellation_maps_to_a_cancelled_job() -> None:
    """InputCancellation (a BaseException in modal) is a job failed with state cancelled."""
    error = map_modal_error(modal_exception.InputCancellation("stop"), provider="modal")
    assert isinstance(error, JobFailedError)
    assert error.state == "cancelled"


# -- the SDK transport ------------------------------------------------------------------------


class _FakeCall:
    def __init__(self, object_id: str, get: Any, cancelled: list[str]) -> None:
        self.object_id = object_id
        self.get = SimpleNamespace(aio=get)
        self.cancel = SimpleNamespace(aio=self._cancel)
        self._cancelled = cancelled

    async def _cancel(self) -> None:
        self._cancelled.append(self.object_id)


def fake_modal(*, spawn: Any = None, get: Any = None) -> SimpleNamespace:
    """A stand-in for the modal module, recording lookups."""
    record = SimpleNamespace(lookups=[], instances=[], cancelled=[])

    async def default_spawn(payload: dict[str, Any]) -> _FakeCall:
        return _FakeCall("fc-123", get, record.cancelled)

    def from_name(app: str, name: str, *, environment_name: str | None, client: Any) -> Any:
        record.lookups.append((app, name, environment_name, client))

        def instantiate(**parameters: Any) -> Any:
            record.instances.append(parameters)
            return SimpleNamespace(
                generate=SimpleNamespace(spawn=SimpleNamespace(aio=spawn or default_spawn))
            )

        return instantiate

    return SimpleNamespace(
        record=record,
        Cls=SimpleNamespace(from_name=from_name),
        FunctionCall=SimpleNamespace(
            from_id=lambda call_id, client=None: _FakeCall(call_id, get, record.cancelled)
        ),
    )


def sdk_transport(modal: SimpleNamespace, timeout_s: float = 5.0) -> SdkModalTransport:
    transport = SdkModalTransport(
        app="genrouter-diffusion", cls="Diffusion", environment="dev", timeout_s=timeout_s
    )
    transport._modal = modal
    return transport


async def test_sdk_transport_spawns_on_the_class_for_the_model() -> None:
    """spawn looks the class up by app and class name and instantiates it with model_id."""
    modal = fake_modal()
    call_id = await sdk_transport(modal).spawn("flux-dev", {"prompt": "x"})
    assert call_id == "fc-123"
    assert modal.record.lookups == [("genrouter-diffusion", "Diffusion", "dev", None)]
    assert modal.record.instances == [{"model_id": "flux-dev"}]


async def test_sdk_transport_reads_builtin_timeout_from_get_as_still_running() -> None:
    """FunctionCall.get raising the builtin TimeoutError means the call is still running."""

    async def get(timeout: float) -> Any:  # noqa: ASYNC109 - FunctionCall.get's signature
        raise TimeoutError

    assert await sdk_transport(fake_modal(get=get)).get("fc-1", 0.5) is None


async def test_sdk_transport_bounds_a_hung_get_with_its_own_deadline() -> None:
    """A get that never answers ends at genrouter's deadline as ProviderUnavailableError."""

    async def get(timeout: float) -> Any:  # noqa: ASYNC109 - FunctionCall.get's signature
        await asyncio.sleep(60)

    with pytest.raises(ProviderUnavailableError, match="did not answer"):
        await sdk_transport(fake_modal(get=get), timeout_s=0.05).get("fc-1", 0.0)


async def test_sdk_transport_bounds_a_hung_spawn_as_outcome_unknown() -> None:
    """A spawn with no answer may have been accepted: SubmitOutcomeUnknownError, never resent."""

    async def spawn(payload: dict[str, Any]) -> Any:
        await asyncio.sleep(60)

    with pytest.raises(SubmitOutcomeUnknownError):
        await sdk_transport(fake_modal(spawn=spawn), timeout_s=0.05).spawn("sdxl", {})


async def test_sdk_transport_cancels_by_call_id() -> None:
    """cancel rebuilds the FunctionCall from its id and cancels it."""
    modal = fake_modal()
    await sdk_transport(modal).cancel("fc-9")
    assert modal.record.cancelled == ["fc-9"]


async def test_missing_modal_package_is_a_config_error_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the modal package the first call raises ConfigError naming the extra."""
    monkeypatch.setitem(sys.modules, "modal", None)
    transport = SdkModalTransport(app="a", cls="C")
    with pytest.raises(ConfigError, match=r"pip install 'genrouter\[modal\]'"):
        await transport.spawn("sdxl", {})


def test_backend_without_credentials_says_why_it_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no token anywhere, unavailable_reason tells how to provide one (explain shows it)."""
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "absent.toml"))
    backend = ModalBackend(name="modal", settings={})
    assert backend.unavailable_reason is not None
    assert "modal token new" in backend.unavailable_reason


async def test_real_sdk_without_a_token_maps_to_authentication_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real modal client, given no token, fails at once; the backend reports AuthenticationError."""
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "absent.toml"))
    backend = ModalBackend(name="modal", settings={"timeout_s": 10})
    with pytest.raises(AuthenticationError):
        await backend.submit(modal_deployment(), GenerationRequest(model="sdxl", prompt="x"))
    await backend.aclose()


def test_router_construction_does_not_import_modal() -> None:
    """Building a router with a modal provider neither imports modal nor looks anything up."""
    code = textwrap.dedent(
        """
        import sys
        import genrouter
        router = genrouter.AsyncRouter.from_config(
            {"version": 1, "providers": {"modal": {"type": "modal", "app": "a", "cls": "C"}}}
        )
        router.explain(genrouter.GenerationRequest(model="sdxl", prompt="x"))
        assert "modal" not in sys.modules, "modal was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- through the router -----------------------------------------------------------------------


def router_config(**routing: Any) -> dict[str, Any]:
    """A modal provider (tiny-size SDXL with LoRAs) beside a cheaper simulated one without LoRAs."""
    modal_sdxl = {
        "endpoint": "sdxl",
        "capabilities": ["text-to-image", "image-to-image", "lora"],
        "limits": {"max_outputs_per_call": 4, "width": [16, 2048], "height": [16, 2048], "max_loras": 4},
        "price": {"per_gpu_second": str(PRICE)},
        "gpu_seconds_per_output": 1.0,
    }
    sim_sdxl = {"endpoint": "sdxl", "capabilities": ["text-to-image"], "price": {"per_image": "0.0001"}}
    return {
        "version": 1,
        "providers": {
            "modal": {"type": "modal", "models": {"sdxl": modal_sdxl}},
            "sim": {"type": "simulated", "models": {"sdxl": sim_sdxl}},
        },
        "routing": {"default": {"strategy": "cost", **routing}},
    }


async def test_router_routes_a_lora_request_only_to_the_modal_deployment(shared_service: Any) -> None:
    """A request with a LoRA excludes the cheaper provider without LoRAs and runs on Modal."""
    transport = InProcessModalTransport(service=shared_service)
    async with AsyncRouter.from_config(
        router_config(), backends={"modal": make_backend(transport)}
    ) as router:
        request = GenerationRequest(
            model="sdxl", prompt="a castle", width=32, height=32, seed=4, loras=[LoRA(source="style")]
        )
        plan = router.explain(request)
        result = await router.generate(request)
    assert [c.provider for c in plan.viable] == ["modal"]
    assert result.provider == "modal"
    assert transport.spawned[0][1]["loras"] == [{"source": "style", "scale": 1.0}]
    assert result.cost.amount_usd is not None


async def test_job_handle_resumes_by_call_id_in_a_new_router(shared_service: Any) -> None:
    """A JobHandle read back from JSON is fetched by its call id in another router, without resubmitting."""
    transport = InProcessModalTransport(service=shared_service)
    request = GenerationRequest(model="sdxl", prompt="a castle", width=32, height=32, seed=4)
    async with AsyncRouter.from_config(router_config(), backends={"modal": make_backend(transport)}) as first:
        handle = await first.submit(request.model_copy(update={"providers": ["modal"]}))
    restored = JobHandle.model_validate_json(handle.model_dump_json())
    async with AsyncRouter.from_config(
        router_config(), backends={"modal": make_backend(transport)}
    ) as second:
        result = await second.result(restored, timeout=30)
    assert restored.provider_request_id.startswith("fc-")
    assert result.provider_request_id == restored.provider_request_id
    assert len(transport.spawned) == 1


async def test_deadline_cancels_the_call_through_the_transport(shared_service: Any) -> None:
    """When the request's deadline passes, the running call is cancelled at Modal."""
    transport = InProcessModalTransport(service=shared_service, latency_s=math.inf)
    config = router_config()
    async with AsyncRouter.from_config(config, backends={"modal": make_backend(transport)}) as router:
        with pytest.raises(DeadlineExceededError):
            await router.generate(
                "a castle", model="sdxl", width=32, height=32, providers=["modal"], deadline_s=0.3
            )
    assert len(transport.cancelled) == 1
    assert transport.cancelled[0] == next(iter(transport.calls))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
