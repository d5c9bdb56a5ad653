"""Fuzzing ``AsyncRouter.generate(**kwargs)`` with keyword dicts near the GenerationRequest schema.

Whatever the caller passes (wrong types, out-of-range numbers, unknown keys, huge strings,
bytes or paths as images), ``generate`` ends with a GenerationResult or a typed
GenRouterError, never another exception type and never a hang.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genrouter import AsyncRouter, GenerationResult, GenRouterError
from genrouter.testing import set_testing
from genrouter.util._png import placeholder_png

# Huge strings make hypothesis warn about their repr; the warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

CONFIG: dict[str, Any] = {
    "version": 1,
    "providers": {
        "sim": {
            "type": "simulated",
            "latency": 0,
            "price": {"per_image": "0.01"},
            "seed": 0,
        }
    },
}

PNG_PATH = Path(tempfile.gettempdir()) / f"genrouter-fuzz-{os.getpid()}.png"

# Any value of any JSON-ish or Python-ish type, including ones no field accepts.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just(Path("/nonexistent/genrouter-fuzz.png")),
    st.just(object()),
    st.decimals(allow_nan=True),
)

near = {
    "model": st.one_of(st.sampled_from(["flux-dev", "sdxl", "flux-schnell", "", "nope", "FLUX-DEV"]), junk),
    "prompt": st.one_of(
        st.text(max_size=60),
        st.sampled_from([20_000, 20_001, 1_000_000]).map(lambda n: "x" * n),
        st.builds(lambda: "a fox " * 50_000),
        st.just("   "),
        st.just("\x00fox\ud800"),
        junk,
    ),
    "negative_prompt": st.one_of(st.text(max_size=20), junk),
    "width": st.one_of(st.integers(-10, 10_000), st.sampled_from([512, 1024]), junk),
    "height": st.one_of(st.integers(-10, 10_000), st.sampled_from([512, 1024]), junk),
    "aspect_ratio": st.one_of(st.sampled_from(["16:9", "1:1", "0:0", "9:16", "a:b", "99999:1"]), junk),
    "num_outputs": st.one_of(st.integers(-2, 20), junk),
    "seed": st.one_of(st.integers(-5, 2**33), junk),
    "steps": st.one_of(st.integers(-5, 1000), junk),
    "guidance": st.one_of(st.floats(-5, 100), junk),
    "image": st.one_of(
        st.binary(max_size=64),
        st.just(placeholder_png(8, 8, 0)),
        st.just(PNG_PATH),
        st.just(str(PNG_PATH)),
        st.just("https://example.com/a.png"),
        st.just("data:image/png;base64,!!!"),
        st.just(Path("/nonexistent/x.png")),
        st.just(Path("/")),
        junk,
    ),
    "mask": st.one_of(st.binary(max_size=16), junk),
    "strength": st.one_of(st.floats(-1, 2), junk),
    "loras": st.one_of(
        st.lists(
            st.fixed_dictionaries({"path": st.text(max_size=10)}, optional={"scale": junk}), max_size=10
        ),
        junk,
    ),
    "duration_s": st.one_of(st.floats(-1, 1000), junk),
    "fps": st.one_of(st.integers(-1, 500), junk),
    "output_format": st.one_of(st.sampled_from(["png", "jpeg", "webp", "JPG", "gif"]), junk),
    "safety_checker": st.one_of(st.booleans(), junk),
    "provider_options": st.one_of(
        st.dictionaries(st.sampled_from(["sim", "fal", "x"]), st.dictionaries(st.text(max_size=5), junk)),
        junk,
    ),
    "providers": st.one_of(st.lists(st.sampled_from(["sim", "fal", "other", ""]), max_size=3), junk),
    "strategy": st.one_of(
        st.sampled_from(["cost", "latency", "balanced", "priority", "weighted", "x"]), junk
    ),
    "max_cost_usd": st.one_of(st.sampled_from(["0", "0.001", "1", "-1", "NaN", "1e400"]), junk),
    "deadline_s": st.one_of(st.floats(-1, 100_000), junk),
    "tags": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), junk),
}

requests = st.fixed_dictionaries({}, optional=near).flatmap(
    lambda fields: (
        st.dictionaries(st.text(min_size=1, max_size=12).filter(str.isidentifier), junk, max_size=2).map(
            lambda extra: {**extra, **fields}
        )
        | st.just(fields)
    )
)


@pytest.fixture(scope="module", autouse=True)
def _png_file() -> Any:
    PNG_PATH.write_bytes(placeholder_png(8, 8, 0))
    yield
    PNG_PATH.unlink(missing_ok=True)


async def _one(kwargs: dict[str, Any]) -> None:
    set_testing()
    router = AsyncRouter.from_config(CONFIG)
    try:
        result = await asyncio.wait_for(router.generate(**kwargs), timeout=5)
    except GenRouterError:
        return
    except TimeoutError as exc:  # asyncio's own timeout, not genrouter's DeadlineExceededError
        pytest.fail(f"generate hung past 5 s on {kwargs!r}: {exc!r}")
    finally:
        await router.aclose()
    assert isinstance(result, GenerationResult)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests)
def test_generate_returns_a_result_or_a_typed_error(kwargs: dict[str, Any]) -> None:
    asyncio.run(_one(kwargs))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.fixed_dictionaries(
        {"model": st.just("flux-dev"), "prompt": st.just("a fox")},
        optional={k: v for k, v in near.items() if k not in ("model", "prompt")},
    )
)
def test_mostly_valid_requests_return_a_result_or_a_typed_error(kwargs: dict[str, Any]) -> None:
    asyncio.run(_one(kwargs))


def test_a_valid_request_succeeds() -> None:
    async def run() -> GenerationResult:
        set_testing()
        async with AsyncRouter.from_config(CONFIG) as router:
            return await router.generate(model="flux-dev", prompt="a fox")

    assert asyncio.run(run()).provider == "sim"
