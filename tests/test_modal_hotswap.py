"""LoRA hotswap with torch.compile on: swapping adapters refills one slot and never recompiles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from genrouter.testing._modal import SERVICE_PATH, load_service_module  # noqa: E402
from modal_helpers import SERVICE_WARNINGS  # noqa: E402

pytestmark = [*SERVICE_WARNINGS, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def svc() -> ModuleType:
    return load_service_module(SERVICE_PATH)


@pytest.fixture
def compiled_service(svc: ModuleType, tmp_path: Path) -> Iterator[Any]:
    """Tiny SDXL compiled (the eager backend: real graphs, quick to build), with two LoRAs."""
    config = svc.ServiceConfig(
        models=("sdxl",),
        random_weights="tiny",
        device="cpu",
        cpu_threads=1,
        wait_ms=0,
        lora_dir=str(tmp_path),
        compile=True,
        compile_backend="eager",
        lora_max_rank=8,
    )
    service = svc.DiffusionService(config)
    service.load_cpu()
    random_models = svc._sibling("random_models")
    for seed, name in enumerate(("style", "other"), start=1):
        random_models.save_random_lora(
            service.models["sdxl"].pipe, tmp_path / "sdxl", name, rank=4, seed=seed
        )
    service.to_device()
    service.start()
    yield service
    service.close()


def test_swapping_loras_on_the_compiled_denoiser_never_recompiles(
    compiled_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Base, LoRA A, LoRA B at another scale, then base again: one compiled graph serves them all."""
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 5}
    base = compiled_service.generate(request)  # compiles the slot's graph once
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    style = compiled_service.generate({**request, "loras": [{"source": "style"}]})
    other = compiled_service.generate({**request, "loras": [{"source": "other", "scale": 0.5}]})
    again = compiled_service.generate(request)
    slot = compiled_service.models["sdxl"].hotswap
    assert style["outputs"][0] != base["outputs"][0]
    assert other["outputs"][0] not in (base["outputs"][0], style["outputs"][0])
    assert again["outputs"][0] == base["outputs"][0]
    assert slot.swaps == 3
    assert compiled_service.models["sdxl"].pipe.unet is compiled_service.models["sdxl"].compiled


def test_two_loras_in_one_request_run_on_the_eager_module(compiled_service: Any) -> None:
    """The slot holds one adapter; a request with two is served eagerly instead of failing."""
    result = compiled_service.generate(
        {
            "prompt": "a fox",
            "width": 32,
            "height": 32,
            "seed": 5,
            "loras": [{"source": "style"}, {"source": "other"}],
        }
    )
    assert result["outputs"]
    assert compiled_service.models["sdxl"].loras.loads == 2


def test_hotswap_is_read_from_the_environment(svc: ModuleType) -> None:
    """GENROUTER_LORA_HOTSWAP=0 turns it off; GENROUTER_LORA_MAX_RANK sets the slot's rank."""
    config = svc.ServiceConfig.from_env({"GENROUTER_LORA_HOTSWAP": "0", "GENROUTER_LORA_MAX_RANK": "32"})
    assert config.lora_hotswap is False
    assert config.lora_max_rank == 32
