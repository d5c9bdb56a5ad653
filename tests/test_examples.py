"""The examples run: the FastAPI webhook app, and ``genrouter generate`` / ``batch`` offline."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from cli_helpers import run
from fakes.fal import DEFAULT_KEY, FakeFal, start_server
from fakes.server import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAL_KEY = Ed25519PrivateKey.generate()


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def signed_fal_delivery(
    rid: str, payload: Any, key: Ed25519PrivateKey = FAL_KEY
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {"request_id": rid, "gateway_request_id": rid, "status": "OK", "payload": payload}
    ).encode()
    stamp = str(int(time.time()))
    message = "\n".join((rid, "user-1", stamp, hashlib.sha256(body).hexdigest())).encode()
    return {
        "X-Fal-Webhook-Request-Id": rid,
        "X-Fal-Webhook-User-Id": "user-1",
        "X-Fal-Webhook-Timestamp": stamp,
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }, body


@pytest.fixture
def fal() -> Iterator[tuple[FakeFal, LoopbackServer]]:
    fake = FakeFal()
    server = start_server(fake)
    try:
        yield fake, server
    finally:
        server.stop()


def test_fastapi_example_submits_jobs_and_receives_webhooks(fal: tuple[FakeFal, LoopbackServer]) -> None:
    """The example app submits with a webhook URL, verifies a signed delivery, and serves the result."""
    fake, server = fal
    raw = FAL_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    config = {
        "version": 1,
        "providers": {
            "fal": {
                "api_key": DEFAULT_KEY,
                "base_url": server.url,
                "webhook_public_keys": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]},
            }
        },
    }
    example = load_example("fastapi_app")
    app = example.create_app(config, public_url="https://app.example")
    with TestClient(app) as client:
        submitted = client.post("/jobs", json={"prompt": "a red fox in snow", "model": "flux-dev"})
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        rid = job["provider_request_id"]
        assert fake.jobs[rid].webhook == "https://app.example/webhooks"
        assert client.get(f"/jobs/{job['job_id']}").json()["source"] == "poll"

        forged_headers, body = signed_fal_delivery(rid, {}, key=Ed25519PrivateKey.generate())
        assert client.post("/webhooks", headers=forged_headers, content=body).status_code == 401

        payload = fake.output(fake.jobs[rid], server.url)
        headers, body = signed_fal_delivery(rid, payload)
        delivered = client.post("/webhooks", headers=headers, content=body)
        assert delivered.status_code == 200, delivered.text
        assert delivered.json()["state"] == "succeeded"
        assert client.post("/webhooks/fal", headers=headers, content=body).json()["duplicate"] is True

        state = client.get(f"/jobs/{job['job_id']}").json()
        assert (state["state"], state["source"]) == ("succeeded", "webhook")
        result = client.get(f"/jobs/{job['job_id']}/result", params={"wait": 30})
        assert result.status_code == 200, result.text
        assert result.json()["outputs"][0].startswith(server.url)
        assert client.get("/jobs/nope").status_code == 404
    assert fake.submit_count() == 1


def test_generate_on_the_offline_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``genrouter generate`` on examples/offline.yaml saves a PNG and prints provider and cost."""
    code, out, err = run(
        [
            "generate",
            "a red fox",
            "-m",
            "flux-dev",
            "-c",
            str(EXAMPLES / "offline.yaml"),
            "-o",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    assert len(list(tmp_path.glob("*.png"))) == 1
    assert "provider sim-" in out


def test_batch_on_the_offline_example_writes_results_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``genrouter batch examples/prompts.jsonl`` writes outputs and results.jsonl; a re-run resumes."""
    source = EXAMPLES / "prompts.jsonl"
    ids = [json.loads(line)["id"] for line in source.read_text().splitlines() if line.strip()]
    argv = [
        "batch",
        str(source),
        "-m",
        "flux-dev",
        "--out",
        str(tmp_path),
        "-c",
        str(EXAMPLES / "offline.yaml"),
    ]
    code, out, err = run([*argv, "--concurrency", "6"], capsys)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ids
    # The simulated providers fail a few jobs on purpose: exit 0 exactly when all succeeded.
    assert (code == 0) == all(r["status"] == "succeeded" for r in rows), err
    assert "batch summary" in out
    for row in rows:
        if row["status"] == "succeeded":
            assert row["outputs"]
            assert all((tmp_path / name).is_file() for name in row["outputs"])
            assert row["cost_usd"] is not None

    code, out, err = run(argv, capsys)
    again = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    done_before = sum(r["status"] == "succeeded" for r in rows)
    assert "already done before this run" in out
    assert sum(r["status"] == "succeeded" for r in again) >= done_before
    for first, second in zip(rows, again, strict=True):
        if first["status"] == "succeeded":
            assert second["provider_request_id"] == first["provider_request_id"]
