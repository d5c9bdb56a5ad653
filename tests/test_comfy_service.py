"""deploy/modal/comfy/service.py against a fake ComfyUI HTTP server over real loopback sockets."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.comfy import FakeComfy
from fakes.server import LoopbackServer
from genrouter.testing._comfy import load_comfy_service
from genrouter.util._png import placeholder_png
from workflow_helpers import EXAMPLE_DIR, EXAMPLE_WORKFLOW

comfy_service = load_comfy_service()
PNG = placeholder_png(8, 8, 2)


@pytest.fixture(scope="module")
def server(comfy_server: LoopbackServer) -> LoopbackServer:
    return comfy_server


@pytest.fixture
def service(server: LoopbackServer, comfy: FakeComfy) -> Iterator[Any]:
    running = comfy_service.ComfyService(
        comfy_service.ComfyConfig(url=server.url, workflows_dir=str(EXAMPLE_DIR), poll_s=0.005)
    ).start()
    yield running
    running.close()


def restyle(**inputs: Any) -> dict[str, Any]:
    return {"workflow": "restyle", "inputs": {"10.inputs.image": PNG, **inputs}}


def test_run_patches_inputs_and_returns_the_saved_image(service: Any, comfy: FakeComfy) -> None:
    """run_workflow sets each <node>.inputs.<name>, queues the prompt and returns the output bytes."""
    result = service.run_workflow(restyle(**{"6.inputs.text": "a heron", "3.inputs.seed": 11}))
    [prompt] = comfy.prompts
    assert prompt["6"]["inputs"]["text"] == "a heron"
    assert prompt["3"]["inputs"]["seed"] == 11
    assert prompt["7"]["inputs"]["text"] == "blurry, text, watermark"  # untouched nodes keep their values
    [data] = result["outputs"]
    assert data.startswith(b"\x89PNG")
    assert result["files"] == [
        {"filename": "restyle_00001_.png", "content_type": "image/png", "kind": "image", "node": "9"}
    ]
    assert result["seed"] == 11
    assert result["kind"] == "workflow"


def test_the_workflow_file_is_never_modified(service: Any, comfy: FakeComfy) -> None:
    """Patching works on a copy: the next run starts from the file's own values."""
    service.run_workflow(restyle(**{"6.inputs.text": "first"}))
    service.run_workflow(restyle())
    assert comfy.prompts[1]["6"]["inputs"]["text"] == "a watercolor painting"
    assert json.loads(EXAMPLE_WORKFLOW.read_text())["6"]["inputs"]["text"] == "a watercolor painting"


def test_image_bytes_are_uploaded_once_per_content(service: Any, comfy: FakeComfy) -> None:
    """Bytes go up with POST /upload/image, named by their hash; LoadImage gets that name."""
    service.run_workflow(restyle())
    service.run_workflow(restyle())
    assert len(comfy.uploads) == 1
    name = next(iter(comfy.uploads))
    assert name.endswith(".png")
    assert [p["10"]["inputs"]["image"] for p in comfy.prompts] == [name, name]


def test_temp_previews_are_not_outputs(tmp_path: Path, server: LoopbackServer, comfy: FakeComfy) -> None:
    """PreviewImage files (type temp) are skipped; only saved outputs come back."""
    workflow = json.loads(EXAMPLE_WORKFLOW.read_text())
    workflow["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    (tmp_path / "preview.json").write_text(json.dumps(workflow))
    service = comfy_service.ComfyService(
        comfy_service.ComfyConfig(url=server.url, workflows_dir=str(tmp_path), poll_s=0.005)
    )
    try:
        result = service.run_workflow({"workflow": "preview", "inputs": {"10.inputs.image": PNG}})
    finally:
        service.close()
    assert [f["node"] for f in result["files"]] == ["9"]


def test_gpu_seconds_are_comfyuis_execution_time(service: Any) -> None:
    """gpu_seconds is execution_success minus execution_start from ComfyUI's history (2.5 s here)."""
    assert service.run_workflow(restyle())["gpu_seconds"] == pytest.approx(2.5)


def test_an_execution_error_names_the_failed_node(service: Any, comfy: FakeComfy) -> None:
    """status_str error in the history raises WorkflowError with the node, its type and the exception."""
    comfy.fail_texts = ["boom"]
    with pytest.raises(comfy_service.WorkflowError, match=r"node 3 \(KSampler\): torch.OutOfMemoryError"):
        service.run_workflow(restyle(**{"6.inputs.text": "boom"}))


def test_comfyuis_validation_error_is_a_value_error(service: Any, comfy: FakeComfy) -> None:
    """A 400 from POST /prompt (node_errors) is a ValueError carrying ComfyUI's message per node."""
    with pytest.raises(ValueError, match=r"node 10 \(LoadImage\): Invalid image file"):
        service.run_workflow({"workflow": "restyle", "inputs": {"10.inputs.image": "never-uploaded.png"}})
    assert comfy.prompts == []


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("99.inputs.text", "has no node '99'"),
        ("6.inputs.txt", "node 6 (CLIPTextEncode) has no input 'txt'"),
        ("6.text", "is not of the form"),
    ],
)
def test_a_bad_input_path_is_refused_before_submitting(
    service: Any, comfy: FakeComfy, path: str, says: str
) -> None:
    """A path naming a missing node or input is a ValueError naming it; nothing is queued."""
    with pytest.raises(ValueError, match=re.escape(says)):
        service.run_workflow(restyle(**{path: "x"}))
    assert comfy.prompts == []
    assert comfy.uploads == {}


@pytest.mark.parametrize("name", ["missing", "../restyle", "/etc/passwd"])
def test_unknown_or_unsafe_workflow_names_are_refused(service: Any, comfy: FakeComfy, name: str) -> None:
    """Only <workflows_dir>/<name>.json is read, for a plain name."""
    with pytest.raises(ValueError, match="workflow"):
        service.run_workflow({"workflow": name, "inputs": {}})
    assert comfy.prompts == []


def test_a_ui_format_workflow_is_refused(tmp_path: Path, server: LoopbackServer) -> None:
    """A workflow saved in the UI format (nodes/links lists) asks for the API export."""
    (tmp_path / "ui.json").write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    service = comfy_service.ComfyService(
        comfy_service.ComfyConfig(url=server.url, workflows_dir=str(tmp_path))
    )
    try:
        with pytest.raises(ValueError, match="not an API-format workflow"):
            service.run_workflow({"workflow": "ui", "inputs": {}})
    finally:
        service.close()


def test_health_reports_comfyuis_queue_and_devices(service: Any) -> None:
    """health() is ok with the queue lengths and device names from ComfyUI."""
    assert service.health() == {"status": "ok", "queue_running": 0, "queue_pending": 0, "devices": ["cpu"]}


def test_health_says_unavailable_when_comfyui_is_down() -> None:
    """With nothing listening, health() reports unavailable instead of raising."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = comfy_service.ComfyService(comfy_service.ComfyConfig(url=f"http://127.0.0.1:{port}"))
    try:
        assert service.health()["status"] == "unavailable"
    finally:
        service.close()


def test_submit_runs_requests_on_the_service_threads(service: Any, comfy: FakeComfy) -> None:
    """submit() returns a future per request (the class's concurrent inputs)."""
    futures = [service.submit(restyle(**{"3.inputs.seed": n})) for n in range(3)]
    results = [f.result(timeout=30) for f in futures]
    assert sorted(r["seed"] for r in results) == [0, 1, 2]
    assert len(comfy.prompts) == 3


def test_config_reads_the_environment() -> None:
    """ComfyConfig.from_env reads GENROUTER_COMFY_* and the webhook secret."""
    config = comfy_service.ComfyConfig.from_env(
        {
            "GENROUTER_COMFY_URL": "http://127.0.0.1:9000",
            "GENROUTER_COMFY_LAUNCH": "comfy launch -- --port 9000",
            "GENROUTER_COMFY_MAX_CONCURRENT": "3",
            "GENROUTER_WEBHOOK_SECRET": "whsec_x",
        }
    )
    assert config.url == "http://127.0.0.1:9000"
    assert config.launch == ("comfy", "launch", "--", "--port", "9000")
    assert config.max_concurrent == 3
    assert config.webhook_secret == "whsec_x"
    assert "whsec_x" not in repr(config)


def test_a_video_node_output_comes_back_as_a_video(
    tmp_path: Path, server: LoopbackServer, comfy: FakeComfy
) -> None:
    """An MP4 a video node reports under gifs is returned with kind video and its content type."""
    workflow = json.loads(EXAMPLE_WORKFLOW.read_text())
    workflow["9"] = {
        "class_type": "VHS_VideoCombine",
        "inputs": {"images": ["8", 0], "filename_prefix": "clip"},
    }
    (tmp_path / "clip.json").write_text(json.dumps(workflow))
    service = comfy_service.ComfyService(
        comfy_service.ComfyConfig(url=server.url, workflows_dir=str(tmp_path), poll_s=0.005)
    )
    try:
        result = service.run_workflow({"workflow": "clip", "inputs": {"10.inputs.image": PNG}})
    finally:
        service.close()
    assert result["files"] == [
        {"filename": "clip_00001.mp4", "content_type": "video/mp4", "kind": "video", "node": "9"}
    ]
    assert result["outputs"][0][4:8] == b"ftyp"
