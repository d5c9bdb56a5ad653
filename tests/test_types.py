"""The data types: request validation, JSON round trips, cost, artifacts, states."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from genrouter import (
    Artifact,
    Attempt,
    AttemptOutcome,
    Candidate,
    Cost,
    GenerationRequest,
    GenerationResult,
    GenRouterError,
    JobHandle,
    JobState,
    JobStatus,
    LoRA,
    ProviderJob,
    RoutePlan,
    Timings,
)
from genrouter.util._png import placeholder_png, sim_url

PNG = placeholder_png(3, 2, seed=1)


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest.model_validate({"model": "flux-dev", "prompt": "a fox", **fields})


def handle(req: GenerationRequest) -> JobHandle:
    job = ProviderJob(
        provider="sim",
        endpoint="flux-dev",
        provider_request_id="sim-1",
        data={"width": 64, "nested": {"k": [1, 2]}},
        warnings=["w"],
    )
    return JobHandle(
        id="h1",
        model="flux-dev",
        provider="sim",
        endpoint="flux-dev",
        provider_request_id="sim-1",
        job=job,
        more_jobs=[job.model_copy(update={"provider_request_id": "sim-2"})],
        request=req,
        attempts=[Attempt(provider="x", endpoint="e", outcome="failed", error="ProviderError: boom")],
    )


# -- GenerationRequest ------------------------------------------------------------------------------


def test_a_minimal_request_has_sensible_defaults() -> None:
    """model and prompt suffice; one output, no LoRAs, no allow-list, no size."""
    req = request()
    assert req.num_outputs == 1
    assert req.loras == []
    assert req.providers is None
    assert (req.width, req.height, req.aspect_ratio) == (None, None, None)
    assert req.megapixels is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": " \n\t"}, "prompt is empty"),
        ({"prompt": "x" * 20_001}, "prompt"),
        ({"model": ""}, "model"),
        ({"width": 512}, "height is missing"),
        ({"height": 512}, "width is missing"),
        ({"width": 512, "height": 512, "aspect_ratio": "1:1"}, "not both"),
        ({"aspect_ratio": "16x9"}, "not of the form 'W:H'"),
        ({"aspect_ratio": "0:1"}, "not of the form 'W:H'"),
        ({"mask": "https://x/m.png"}, "mask needs an image"),
        ({"strength": 0.5}, "strength applies to image-to-image"),
        ({"providers": []}, "empty allow-list"),
        ({"num_outputs": 0}, "num_outputs"),
        ({"num_outputs": 17}, "num_outputs"),
        ({"width": 8, "height": 512}, "width"),
        ({"width": 512, "height": 9000}, "height"),
        ({"seed": 2**32}, "seed"),
        ({"image": b""}, "is empty"),
        ({"max_cost_usd": "-0.01"}, "max_cost_usd"),
        ({"deadline_s": 0}, "deadline_s"),
        ({"strategy": "fastest"}, "strategy"),
        ({"loras": [{"source": ""}]}, "source"),
        ({"loras": [{"source": "a/b", "scale": 9}]}, "scale"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_requests_are_rejected(fields: dict[str, Any], message: str) -> None:
    """Each broken rule raises pydantic's ValidationError mentioning the problem."""
    with pytest.raises(ValidationError, match=message):
        request(**fields)


def test_width_and_height_together_are_accepted() -> None:
    """width with height is a valid size, and megapixels follow from it."""
    req = request(width=1024, height=768)
    assert req.megapixels == pytest.approx(0.786432)


def test_aspect_ratio_alone_is_accepted() -> None:
    """aspect_ratio of the form W:H is valid without width/height."""
    assert request(aspect_ratio="16:9").aspect_ratio == "16:9"


def test_image_inputs_enable_mask_and_strength() -> None:
    """mask and strength are accepted when an image is given."""
    req = request(image="https://x/in.png", mask=b"\x89PNG", strength=0.7)
    assert req.strength == 0.7


def test_output_format_is_normalised() -> None:
    """output_format is lowercased and 'jpg' means 'jpeg'."""
    assert request(output_format="JPG").output_format == "jpeg"
    assert request(output_format="PNG").output_format == "png"


def test_requests_are_frozen() -> None:
    """A request cannot be changed after construction."""
    req = request()
    with pytest.raises(ValidationError):
        req.prompt = "a wolf"  # type: ignore[misc]


def test_max_cost_is_an_exact_decimal() -> None:
    """max_cost_usd keeps decimal money exact."""
    assert request(max_cost_usd="0.1").max_cost_usd == Decimal("0.1")


def test_loras_accept_dicts_and_default_scale() -> None:
    """LoRAs given as dicts become LoRA models with scale 1.0 by default."""
    req = request(loras=[{"source": "owner/style"}])
    assert req.loras == [LoRA(source="owner/style", scale=1.0)]


# -- JSON round trips -------------------------------------------------------------------------------


def test_request_json_round_trip() -> None:
    """A request with every kind of field reads back equal from JSON."""
    req = request(
        negative_prompt="blurry",
        width=512,
        height=512,
        seed=3,
        loras=[{"source": "a/b", "scale": 0.5}],
        provider_options={"fal": {"sync_mode": True}},
        providers=["a"],
        max_cost_usd="0.05",
        tags={"team": "x"},
    )
    assert GenerationRequest.model_validate_json(req.model_dump_json()) == req


def test_job_handle_json_round_trip() -> None:
    """A JobHandle reads back from JSON equal, jobs and attempts included."""
    original = handle(request(image="https://example.com/in.png", seed=9))
    restored = JobHandle.model_validate_json(original.model_dump_json())
    assert restored == original
    assert [j.provider_request_id for j in restored.jobs] == ["sim-1", "sim-2"]


def test_job_handle_serialises_bytes_as_base64() -> None:
    """A bytes image is written into the handle's JSON as base64 text."""
    original = handle(request(image=PNG))
    text = original.model_dump_json()
    assert base64.urlsafe_b64encode(PNG).decode() in text or base64.b64encode(PNG).decode() in text


def test_job_handle_json_round_trip_keeps_bytes_images() -> None:
    """A JobHandle whose request carries a bytes image reads back with the same bytes."""
    original = handle(request(image=PNG, mask=b"\x00\x01mask"))
    restored = JobHandle.model_validate_json(original.model_dump_json())
    assert restored.request.image == PNG
    assert restored == original


def test_generation_result_json_round_trip() -> None:
    """A GenerationResult (Decimal cost, attempts, artifacts) reads back equal from JSON."""
    result = GenerationResult(
        id="r1",
        model="flux-dev",
        provider="sim",
        endpoint="flux-dev",
        provider_request_id="sim-1",
        outputs=[Artifact(url="https://x/y.png", width=64, height=64, content_type="image/png")],
        seed=1,
        cost=Cost(amount_usd=Decimal("0.0125"), basis="1 × $0.0125 per_image"),
        timings=Timings(queued_s=0.1, running_s=1.2, total_s=1.4),
        attempts=[Attempt(provider="sim", endpoint="flux-dev", outcome="succeeded", duration_s=1.4)],
        warnings=["w"],
    )
    restored = GenerationResult.model_validate_json(result.model_dump_json())
    assert restored == result
    assert restored.cost.amount_usd == Decimal("0.0125")


# -- cost, states, plans --------------------------------------------------------------------------------


def test_unknown_cost_is_none_never_zero() -> None:
    """A default Cost is unknown (None), estimated, and distinct from a zero cost."""
    cost = Cost()
    assert cost.amount_usd is None
    assert cost.estimated is True
    assert cost != Cost(amount_usd=Decimal(0))


def test_job_states_are_lowercase_strings() -> None:
    """JobState values are the lowercase strings of the contract, and three are terminal."""
    assert [s.value for s in JobState] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert {s for s in JobState if s.is_terminal} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    }


def test_attempt_outcomes_are_lowercase_strings() -> None:
    """AttemptOutcome values are succeeded, failed, cancelled and hedge_lost."""
    assert [o.value for o in AttemptOutcome] == ["succeeded", "failed", "cancelled", "hedge_lost"]


def test_job_status_accepts_state_strings() -> None:
    """JobStatus takes the state as its string value."""
    assert JobStatus(state="running").state is JobState.RUNNING


def test_route_plan_viable_lists_unexcluded_candidates_in_order() -> None:
    """RoutePlan.viable keeps the non-excluded candidates, best first."""

    def candidate(name: str, excluded: str | None = None) -> Candidate:
        return Candidate(
            provider=name,
            endpoint="e",
            estimated_cost_usd=None,
            estimated_p95_s=None,
            health="closed",
            score=None,
            excluded=excluded,
        )

    plan = RoutePlan(
        model="flux-dev",
        strategy="cost",
        candidates=[candidate("a"), candidate("b"), candidate("c", excluded="lacks lora")],
    )
    assert [c.provider for c in plan.viable] == ["a", "b"]


# -- Artifact --------------------------------------------------------------------------------------------


def test_artifact_reads_a_base64_data_url() -> None:
    """read() decodes a base64 data: URL in memory."""
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert Artifact(url=url).read() == PNG


def test_artifact_reads_a_percent_encoded_data_url() -> None:
    """read() decodes a percent-encoded data: URL."""
    assert Artifact(url="data:text/plain," + quote("hello fox")).read() == b"hello fox"


def test_artifact_reads_a_sim_url_as_the_placeholder_png() -> None:
    """read() renders a sim: URL to the deterministic placeholder PNG it names."""
    artifact = Artifact(url=sim_url("sim", "sim-1", 0, 3, 2, 1))
    assert artifact.read() == PNG


async def test_artifact_aread_matches_read() -> None:
    """aread() returns the same bytes as read()."""
    artifact = Artifact(url=sim_url("sim", "sim-1", 0, 3, 2, 1))
    assert await artifact.aread() == artifact.read()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.png", "javascript:alert(1)"])
def test_artifact_refuses_other_url_schemes(url: str) -> None:
    """read() refuses file:// and other schemes with a genrouter error naming the scheme."""
    with pytest.raises(GenRouterError, match="refusing to read"):
        Artifact(url=url).read()


def test_artifact_read_enforces_max_bytes() -> None:
    """read(max_bytes=...) refuses artifacts larger than the cap."""
    with pytest.raises(GenRouterError, match="cap"):
        Artifact(url=sim_url("sim", "sim-1", 0, 3, 2, 1)).read(max_bytes=10)


def test_artifact_save_to_a_file(tmp_path: Path) -> None:
    """save(file) writes the bytes there, creating parent folders, and returns the path."""
    target = tmp_path / "out" / "fox.png"
    written = Artifact(url=sim_url("sim", "sim-1", 0, 3, 2, 1)).save(target)
    assert written == target
    assert target.read_bytes() == PNG


def test_artifact_save_into_a_directory_generates_a_name(tmp_path: Path) -> None:
    """save(dir) writes inside it under a generated name with the right extension."""
    written = Artifact(url=sim_url("sim", "sim-1", 0, 3, 2, 1), content_type="image/png").save(tmp_path)
    assert written.parent == tmp_path
    assert written.suffix == ".png"
    assert written.read_bytes() == PNG


def test_artifact_save_into_a_directory_with_a_name_stays_inside(tmp_path: Path) -> None:
    """A provided name is sanitised so the file never escapes the directory."""
    written = Artifact(url=sim_url("sim", "sim-1", 0, 3, 2, 1)).save(tmp_path, name="../../evil")
    assert written.parent == tmp_path
    assert written.name == "evil.png"


@pytest.mark.parametrize(
    ("artifact", "extension"),
    [
        (Artifact(url="https://x/y", content_type="image/jpeg"), "jpg"),
        (Artifact(url="https://x/clip.webm"), "webm"),
        (Artifact(url="https://x/y", kind="video"), "mp4"),
        (Artifact(url="data:image/webp;base64,AAAA"), "webp"),
    ],
)
def test_artifact_extension_comes_from_type_url_or_kind(artifact: Artifact, extension: str) -> None:
    """extension uses the content type, else the URL, else the kind."""
    assert artifact.extension == extension
