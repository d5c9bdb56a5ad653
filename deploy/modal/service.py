"""genrouter's diffusion service: plain Python, no ``modal`` import. ``app.py`` wraps it for Modal.

One :class:`DiffusionService` per container serves the models of :data:`MODELS` (SDXL,
FLUX.1 dev and schnell, Wan 2.1 text-to-video) from a weights folder (a Modal Volume
or a Hugging Face cache), in bfloat16 with PyTorch's SDPA attention on a GPU, with
optional ``torch.compile`` of the denoiser. Lifecycle: :meth:`~DiffusionService.load_cpu`
(weights into CPU memory: the memory-snapshot phase), :meth:`~DiffusionService.to_device`
(to the GPU, compile, warm up), :meth:`~DiffusionService.start` (the batching thread),
:meth:`~DiffusionService.close`. :meth:`~DiffusionService.setup` does the first three.

Request: a dict of builtin values.

==================  =========================================================================
``model``           model id, one of the models this service loaded (``sdxl``, ``flux-dev``...)
``prompt``          what to generate (required)
``negative_prompt`` str; models without one (FLUX) ignore it with a warning
``width height``    ints, multiples of the model's size step (default: the model's size)
``num_outputs``     1..``max_outputs`` (default 1); output ``i`` uses ``seed + i``
``seed``            0..2**32-1; absent: derived from the request, so a re-run is identical
``steps guidance``  the model's defaults when absent
``image``           bytes: image-to-image input, resized to width x height
``strength``        (0, 1], default 0.8 (with ``image``)
``loras``           ``[{"source": name, "scale": 1.0}]``: files in the LoRA folder
``output_format``   ``png`` (default), ``jpeg``, ``webp``; video: ``webp`` (animated,
                    default), ``gif``, ``mp4`` (needs PyAV)
``duration_s fps``  video length and frame rate (video models)
==================  =========================================================================

Result: a dict of builtins: ``outputs`` (list of bytes), ``content_type``, ``kind``,
``width``, ``height``, ``seed``, ``seeds``, ``gpu_seconds`` (this request's share of its
batches' GPU time), ``batch_size``, ``queue_s``, ``encode_s``, ``started_at`` and
``finished_at`` (wall clock), ``device``, ``model``, ``warnings``, and for video
``num_frames``, ``fps``, ``duration_s``. A bad request raises ``ValueError``; a failed
generation ``RuntimeError``: only builtin exceptions, so a caller without torch or this
file can unpickle them. :meth:`~DiffusionService.generate_many` (Modal's ``@batched``
path) returns ``{"error": {"type": "ValueError", "message": ...}}`` for a failed item
instead, so one bad request does not fail its neighbours.

Same request and seed → same output: every output has its own ``torch.Generator``
(on the CPU, so the noise does not depend on the GPU model), which makes a preempted
and re-run input produce the same image (bit-identical in a batch of the same shape,
else equal up to kernel rounding).

Dynamic batching: requests are grouped by what one pipeline call must share (model,
size, steps, guidance, image-to-image strength, LoRA set, whether there is a negative
prompt, frame count) and a group runs when it holds ``max_batch_size`` images or its
first request has waited ``wait_ms``. One thread owns the GPU; encoding (PNG/JPEG/WebP) runs in a thread pool.

LoRAs: ``source`` names a file in the LoRA folder (``<lora_dir>/<model>/<name>.safetensors``,
``<lora_dir>/<name>.safetensors``, or a folder ``<lora_dir>/<name>/``). Up to
``max_loras`` adapters per model stay loaded (least recently used are deleted); a batch
activates its set with its scales, and batches without LoRAs disable them, all without
reloading the base model.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_VARIABLES",
    "MODELS",
    "DiffusionService",
    "DynamicBatcher",
    "LoraCache",
    "ModelSpec",
    "ServiceConfig",
    "builtin_error",
    "register_model",
]

log = logging.getLogger("genrouter.service")


def _sibling(name: str) -> Any:
    """Import ``<name>.py`` from this file's folder (``deploy/`` is not a package), once."""
    module_name = f"genrouter_modal.{name.lstrip('_')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot find {name}.py beside {__file__}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_batching = _sibling("_batching")
_loras = _sibling("_loras")
_checkpoints = _sibling("_checkpoints")
_media = _sibling("_media")
_requests = _sibling("_requests")
_webhooks = _sibling("_webhooks")
_config = _sibling("_config")
_models = _sibling("_models")

ENV_VARIABLES: tuple[str, ...] = _config.ENV_VARIABLES
ServiceConfig = _config.ServiceConfig
ModelSpec = _models.ModelSpec
MODELS: dict[str, Any] = _models.MODELS
register_model = _models.register_model
gpu_type = _models.gpu_type
_PIPELINES: dict[str, tuple[str, str | None]] = _models.PIPELINES
_patch_wan_prompt_cleaning = _models.patch_wan_prompt_cleaning
_outputs = _sibling("_outputs")

DynamicBatcher = _batching.DynamicBatcher
builtin_error = _batching.builtin_error
LoraCache = _loras.LoraCache
parse_request = _requests.parse_request
MAX_SEED: int = _requests.MAX_SEED
IMAGE_FORMATS: dict[str, str] = _requests.IMAGE_FORMATS
VIDEO_FORMATS: dict[str, str] = _requests.VIDEO_FORMATS


# -- the service -------------------------------------------------------------------------


@dataclasses.dataclass
class _Loaded:
    spec: ModelSpec
    pipe: Any
    img2img: Any | None
    denoiser_attr: str
    eager: Any
    compiled: Any | None
    size_step: int
    default_size: tuple[int, int]
    default_steps: int
    loras: LoraCache
    checkpoints: Any = None
    """The model's :class:`_checkpoints.CheckpointCache`."""
    config_source: str | None = None
    """Where the model's diffusers configs are (the weights' path or hub id); None for random weights."""
    hotswap: Any = None
    """The model's :class:`_loras.HotswapSlot` when LoRAs are hotswapped into the compiled denoiser."""


class DiffusionService:
    """Serves diffusion requests on one device (see the module docstring).

    ``on_lora_miss`` runs before a LoRA is declared missing (``app.py`` reloads the
    LoRA Volume there, so files uploaded after the container started are found).
    """

    def __init__(
        self, config: ServiceConfig | None = None, *, on_lora_miss: Callable[[], None] | None = None
    ):
        self.config = config or ServiceConfig.from_env()
        self.on_lora_miss = on_lora_miss
        self.models: dict[str, _Loaded] = {}
        self.device = "cpu"
        self._dtype: Any = None
        self._loaded_dtype: Any = None
        self._pool: cf.ThreadPoolExecutor | None = None
        self._batcher = DynamicBatcher(
            self._run_group, max_batch_size=self.config.max_batch_size, wait_ms=self.config.wait_ms
        )
        self._gpu_lock = threading.Lock()
        self._on_device = False
        self.gpu = "cpu"
        """The GPU type serving (Modal's names: ``H100``, ``A100-80GB``...), or ``cpu``."""
        self.warmed: list[tuple[str, int, int, int]] = []
        """``(model, width, height, batch)`` of each warm-up generation, in order."""
        self.cold_start_s: float | None = None
        """Seconds this container spent starting (set by ``app.py``); reported on its first result."""
        self._cold_start_reported = False
        self._webhooks: Any = (
            _webhooks.WebhookSender(self.config.webhook_secret) if self.config.webhook_secret else None
        )

    # -- lifecycle --------------------------------------------------------------------

    def setup(self) -> DiffusionService:
        """``load_cpu``, ``to_device`` and ``start``; returns the service."""
        self.load_cpu()
        self.to_device()
        self.start()
        return self

    def _load_dtype(self) -> Any:
        """The dtype weights are loaded in before the device is known (touches no CUDA).

        ``auto`` means bfloat16 unless the device is explicitly ``cpu``: a container loads
        to CPU memory in the snapshot phase and serves on the GPU in bfloat16, so the
        snapshot holds bfloat16 weights (half the memory, and nothing to convert later).
        """
        import torch

        if self.config.dtype != "auto":
            return getattr(torch, self.config.dtype)
        return torch.float32 if self.config.device == "cpu" else torch.bfloat16

    def _resolve_device(self) -> tuple[str, Any]:
        """The serving device and dtype: called in :meth:`to_device` (the GPU phase), never before."""
        import torch

        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self.config.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        return device, getattr(torch, dtype_name)

    def load_cpu(self) -> None:
        """Load every configured model into CPU memory: the memory-snapshot phase.

        Nothing here touches CUDA (no GPU exists in that phase): the device is resolved by
        :meth:`to_device`. Weights load in :meth:`_load_dtype` (bfloat16 for a GPU
        deployment). Random full-size weights (``random_weights="full"``) are built by
        :meth:`to_device` on the device itself: a CPU copy would be tens of GB of noise.
        """
        self._dtype = self._loaded_dtype = self._load_dtype()
        if self.config.device == "cpu" and self.config.cpu_threads:
            import torch

            torch.set_num_threads(self.config.cpu_threads)
        unknown = [m for m in self.config.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(MODELS))}")
        if self.config.random_weights == "full":
            return
        for model_id in self.config.models:
            if model_id not in self.models:
                self.models[model_id] = self._load(MODELS[model_id])

    def _load(self, spec: ModelSpec) -> _Loaded:
        import diffusers

        started = time.perf_counter()
        random_scale = self.config.random_weights
        config_source = None
        if random_scale:
            build_device = self.device if random_scale == "full" else "cpu"
            pipe = _sibling("random_models").build_pipeline(
                spec.random_family, random_scale, device=build_device, dtype=self._dtype
            )
        else:
            pipe, config_source = self._from_pretrained(getattr(diffusers, _PIPELINES[spec.family][0]), spec)
        if spec.family.startswith("wan"):
            _patch_wan_prompt_cleaning()
            # Wan's VAE is trained and run in float32; in bfloat16 it bands and flickers.
            import torch

            pipe.vae.to(dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        if str(self._dtype) == "torch.bfloat16" and spec.family == "sdxl":
            # The SDXL VAE upcasts to float32 by default (a float16 overflow); bfloat16 does not need it.
            with contextlib.suppress(Exception):
                pipe.vae.register_to_config(force_upcast=False)
        img2img = None
        img2img_name = _PIPELINES[spec.family][1]
        if spec.img2img and img2img_name:
            # from_pipe casts the shared components to float32 unless told the dtype.
            img2img = getattr(diffusers, img2img_name).from_pipe(pipe, dtype=self._dtype)
            img2img.set_progress_bar_config(disable=True)
        attr = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        vae_scale = int(
            getattr(pipe, "vae_scale_factor", None) or getattr(pipe, "vae_scale_factor_spatial", 8)
        )
        tiny = random_scale == "tiny"  # tiny random models: small and quick by default
        log.info("loaded %s in %.1fs", spec.model_id, time.perf_counter() - started)
        return _Loaded(
            spec=spec,
            pipe=pipe,
            img2img=img2img,
            denoiser_attr=attr,
            eager=getattr(pipe, attr),
            compiled=None,
            size_step=vae_scale * spec.size_factor,
            default_size=(32, 32) if tiny else spec.default_size,
            default_steps=min(2, spec.default_steps) if tiny else spec.default_steps,
            loras=LoraCache(self.config.lora_dir, spec.model_id, self.config.max_loras, self.on_lora_miss),
            checkpoints=_checkpoints.CheckpointCache(
                self.config.checkpoint_dir, spec.model_id, self.config.max_checkpoints, self.on_lora_miss
            ),
            config_source=config_source,
        )

    def _from_pretrained(self, pipeline_class: Any, spec: ModelSpec) -> tuple[Any, str]:
        source = self.config.sources.get(spec.model_id)
        if source is None and self.config.weights_dir:
            local = Path(self.config.weights_dir) / spec.model_id
            if (local / "model_index.json").is_file():
                source = str(local)
        kwargs: dict[str, Any] = {"dtype": self._dtype, "use_safetensors": True}
        if source is None:
            source = spec.source
            if spec.variant:
                kwargs["variant"] = spec.variant
        return pipeline_class.from_pretrained(source, **kwargs), source

    def to_device(self) -> None:
        """Resolve the device and dtype (the GPU phase), move the models there, compile, warm up.

        On CUDA: bfloat16 (``dtype: auto``), TF32 matmuls, channels-last UNets, and a warm-up
        of every served size (``warmup`` defaults to on with CUDA). Wan's VAE stays float32.
        """
        import torch

        if self._on_device:
            return
        self.device, self._dtype = self._resolve_device()
        cuda = self.device.startswith("cuda")
        self.gpu = gpu_type(torch.cuda.get_device_name(self.device)) if cuda else "cpu"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.config.random_weights == "full":
            for model_id in self.config.models:
                if model_id not in self.models:
                    self.models[model_id] = self._load(MODELS[model_id])
        for loaded in self.models.values():
            if self._dtype == self._loaded_dtype:
                # Already in its serving dtype (and the modules a model keeps in float32 stay so).
                loaded.pipe.to(self.device)
            else:  # "auto" on a machine without CUDA: loaded for a GPU, served in float32
                loaded.pipe.to(self.device, self._dtype)
            if loaded.spec.family.startswith("wan"):
                loaded.pipe.vae.to(dtype=torch.float32)
            if cuda and loaded.denoiser_attr == "unet":
                loaded.eager.to(memory_format=torch.channels_last)
        self._on_device = True
        if self.config.compile:
            self.compile_models(warmup=False)
        if self.config.warmup if self.config.warmup is not None else cuda:
            self.warmup()

    def compile_models(self, *, warmup: bool = True) -> None:
        """``torch.compile`` each model's denoiser (``compile_mode``, full graph); warm up to compile now.

        Batches with LoRAs keep running on the eager module (adapters change the graph).
        """
        import torch

        with self._gpu_lock:
            for loaded in self.models.values():
                if loaded.compiled is None and self._hotswaps(loaded):
                    self._prepare_hotswap(loaded)
                if loaded.compiled is None:
                    loaded.compiled = torch.compile(
                        loaded.eager,
                        mode=self.config.compile_mode if self.config.compile_backend == "inductor" else None,
                        backend=self.config.compile_backend,
                        fullgraph=True,
                    )
                    self._use_denoiser(loaded, loaded.compiled)
        if warmup:
            self.warmup()

    def _hotswaps(self, loaded: _Loaded) -> bool:
        wanted = self.config.lora_hotswap
        return bool(loaded.spec.lora and self.config.lora_dir and (True if wanted is None else wanted))

    def _prepare_hotswap(self, loaded: _Loaded) -> None:
        """Give the denoiser its hotswap slot, holding a zero placeholder, before it is compiled."""
        import tempfile

        folder = tempfile.mkdtemp(prefix="genrouter-hotswap-")
        placeholder = _sibling("random_models").save_random_lora(
            loaded.pipe, folder, "placeholder", rank=self.config.lora_max_rank, zero_b=True
        )
        slot = _loras.HotswapSlot(self.config.lora_max_rank)
        slot.prepare(loaded.pipe, str(placeholder))
        loaded.hotswap = slot

    def set_batching(self, *, max_batch_size: int | None = None, wait_ms: float | None = None) -> None:
        """Change the batching limits for groups formed from now on (benchmarks compare settings)."""
        if max_batch_size is not None:
            self._batcher.max_batch_size = max(1, max_batch_size)
        if wait_ms is not None:
            self._batcher.wait_s = max(0.0, wait_ms) / 1000

    def warmup(self) -> None:
        """Two-step generations of every model at every served size, before serving.

        Sizes: the model's default plus ``warmup_sizes`` (those its size step divides); batches:
        1, and also the largest batch when compiled, so no served shape compiles on a request.
        Each ``(model, width, height, batch)`` warmed is appended to :attr:`warmed`. A denoiser
        that fails to compile is served eagerly instead (logged), rather than failing the start.
        """
        compiled = any(m.compiled is not None for m in self.models.values())
        batches = sorted({1, min(self._batcher.max_batch_size, self.config.max_outputs)}) if compiled else [1]
        for model_id, loaded in self.models.items():
            video = loaded.spec.kind == "video"
            sizes = [loaded.default_size] + [
                size
                for size in self.config.warmup_sizes
                if size != loaded.default_size
                and not (size[0] % loaded.size_step or size[1] % loaded.size_step)
            ]
            for width, height in sizes:
                for size in [1] if video else batches:
                    started = time.perf_counter()
                    raw: dict[str, Any] = {
                        "model": model_id,
                        "prompt": "warm-up",
                        "seed": 0,
                        "num_outputs": size,
                        "width": width,
                        "height": height,
                    }
                    if loaded.spec.image_to_video:
                        raw["image"] = _media.blank_png(width, height)
                    request = self.parse(raw)
                    request.steps = 2
                    try:
                        self._generate([request])
                    except Exception:
                        if loaded.compiled is None:
                            raise
                        log.exception("torch.compile failed for %s; serving it eagerly", model_id)
                        loaded.compiled = None
                        self._use_denoiser(loaded, loaded.eager)
                        self._generate([request])
                    self.warmed.append((model_id, width, height, size))
                    log.info(
                        "warmed up %s at %dx%d, batch %d in %.1fs",
                        model_id,
                        width,
                        height,
                        size,
                        time.perf_counter() - started,
                    )

    def start(self) -> None:
        """Start the batching (GPU) thread and the encoding pool."""
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(
                self.config.encode_threads, thread_name_prefix="genrouter-encode"
            )
        self._batcher.start()

    def close(self) -> None:
        """Finish queued work and stop the threads. Idempotent."""
        self._batcher.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._webhooks is not None:
            self._webhooks.close()

    @property
    def batch_sizes(self) -> list[int]:
        """Images per pipeline batch the batcher formed so far."""
        return list(self._batcher.batches)

    # -- requests -----------------------------------------------------------------------

    def parse(self, raw: Mapping[str, Any]) -> Any:
        """Validate a request dict; ``ValueError`` names the problem."""
        return parse_request(raw, self.models, self.config)

    def submit(self, raw: Mapping[str, Any], *, call_id: str | None = None) -> cf.Future[dict[str, Any]]:
        """Queue a request for the batcher; the future gives the result dict or the error.

        With a ``webhook_url`` in the request, the signed job event (``_webhooks.py``) is
        POSTed there when the future resolves (not when it is cancelled); ``call_id`` is the
        job's id in it (Modal's call id; a random one when None).
        """
        try:
            request = self.parse(raw)
        except Exception as exc:
            future: cf.Future[dict[str, Any]] = cf.Future()
            future.set_exception(builtin_error(exc))
            self._announce(raw.get("webhook_url") if isinstance(raw, Mapping) else None, call_id, future)
            return future
        if request.webhook_url is not None and self._webhooks is None:
            request.warnings.append(
                f"no webhook sent: {_webhooks.SECRET_ENV} is not set in this deployment (see its README)"
            )
            request.webhook_url = None
        future = self._batcher.submit(request, request.key, request.num_outputs)
        self._announce(request.webhook_url, call_id, future)
        return future

    def _announce(self, url: Any, call_id: str | None, future: cf.Future[dict[str, Any]]) -> None:
        """Send the job's webhook once ``future`` resolves (if there is a URL and a secret)."""
        sender = self._webhooks
        if sender is None or not isinstance(url, str):
            return
        job_id = call_id or f"req-{os.urandom(8).hex()}"

        def done(f: cf.Future[dict[str, Any]]) -> None:
            if f.cancelled():
                return  # the caller cancelled: nobody waits for this job any more
            error = f.exception()
            if error is None:
                body = _webhooks.job_body(job_id, f.result())
            else:
                body = _webhooks.job_body(job_id, error=f"{type(error).__name__}: {error}")
            try:
                sender.send(url, body, _webhooks.message_id(job_id))
            except RuntimeError:  # closing: the sender's threads are gone
                log.warning("webhook for %s not sent: the service is closing", job_id)

        future.add_done_callback(done)

    def generate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Generate one request (through the batcher); raises ValueError or RuntimeError."""
        return self.submit(raw).result()

    def generate_many(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Generate a list of requests (Modal's ``@batched`` call), grouped without waiting.

        A failed item comes back as ``{"error": {"type", "message"}}`` in its place.
        """
        futures: list[cf.Future[dict[str, Any]]] = []
        valid: list[Any] = []
        for raw in requests:
            future: cf.Future[dict[str, Any]] = cf.Future()
            try:
                request = self.parse(raw)
            except Exception as exc:
                future.set_exception(builtin_error(exc))
            else:
                valid.append(request)
            futures.append(future)
        queued = iter(self._batcher.submit_many([(r, r.key, r.num_outputs) for r in valid]))
        futures = [f if f.done() else next(queued) for f in futures]
        results: list[dict[str, Any]] = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                error = builtin_error(exc)
                results.append({"error": {"type": type(error).__name__, "message": str(error)}})
        return results

    async def agenerate(self, raw: Mapping[str, Any], *, call_id: str | None = None) -> dict[str, Any]:
        """Generate one request from a coroutine (the Modal class's ``@modal.concurrent`` method).

        Requests awaited together are batched by the in-process batcher. A failed request
        returns ``{"error": {"type", "message"}}``. Cancelling the awaiting task (Modal
        cancels one input's task, no other) drops a queued request; one already running
        finishes with its batch and its result is discarded, so batch-mates never notice.
        """
        import asyncio

        future = self.submit(raw, call_id=call_id)
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            future.cancel()  # queued: never runs; running: cancel() is refused and the batch goes on
            raise
        except Exception as exc:
            error = builtin_error(exc)
            return {"error": {"type": type(error).__name__, "message": str(error)}}

    # -- running ------------------------------------------------------------------------

    def _run_group(self, entries: list[Any]) -> None:
        requests = [e.payload for e in entries]
        started_wall = time.time()
        outputs, shares, batch = self._generate(requests)
        assert self._pool is not None, "start() the service before generating"
        for entry, request, arrays, share in zip(entries, requests, outputs, shares, strict=True):
            self._pool.submit(self._finish, entry, request, arrays, share, batch, started_wall)

    def _finish(
        self, entry: Any, request: Any, arrays: list[Any], gpu_s: float, batch: int, started: float
    ) -> None:
        if entry.future.cancelled():
            return  # cancelled while its batch ran: nobody wants it, skip the encoding
        try:
            t0 = time.perf_counter()
            video = request.num_frames is not None
            if video:
                encoded = [_media.encode_video(a, request.output_format, request.fps or 16) for a in arrays]
                content_type = VIDEO_FORMATS[request.output_format]
            else:
                level = self.config.png_compress_level
                encoded = [_media.encode_image(a, request.output_format, level) for a in arrays]
                content_type = IMAGE_FORMATS[request.output_format]
            encode_s = time.perf_counter() - t0
            result: dict[str, Any] = {
                "model": request.model,
                "kind": "video" if video else "image",
                "outputs": encoded,
                "content_type": content_type,
                "width": request.width,
                "height": request.height,
                "seed": request.seed,
                "seeds": [(request.seed + i) % (MAX_SEED + 1) for i in range(request.num_outputs)],
                # Everything the container's GPU was held for: this request's share of its
                # batch (LoRA or checkpoint loading, encoding the prompt, denoising, decoding)
                # plus encoding its outputs.
                "gpu_seconds": gpu_s + encode_s,
                "batch_size": batch,
                "queue_s": max(0.0, entry.started - entry.enqueued),
                "encode_s": encode_s,
                "started_at": started,
                "finished_at": time.time(),
                "device": self.device,
                "gpu": self.gpu,
                "warnings": list(request.warnings),
            }
            if request.checkpoint is not None:
                result["checkpoint"] = Path(request.checkpoint[1]).name
            if self.cold_start_s is not None and not self._cold_start_reported:
                self._cold_start_reported = True
                result["cold_start_s"] = self.cold_start_s
            _outputs.place(result, request.output_volume, self.config, entry_id=f"{request.seed:08x}")
            if video:
                result.update(num_frames=request.num_frames, fps=request.fps)
                result["duration_s"] = (request.num_frames or 0) / (request.fps or 16)
            entry.future.set_result(result)
        except BaseException as exc:
            entry.future.set_exception(builtin_error(exc))

    def _use_denoiser(self, loaded: _Loaded, module: Any) -> None:
        if getattr(loaded.pipe, loaded.denoiser_attr) is not module:
            setattr(loaded.pipe, loaded.denoiser_attr, module)
            if loaded.img2img is not None:
                setattr(loaded.img2img, loaded.denoiser_attr, module)

    def _generate(self, requests: list[Any]) -> tuple[list[list[Any]], list[float], int]:
        """Run one compatible group; returns per-request arrays, GPU-second shares and the batch size."""
        import torch

        first = requests[0]
        loaded = self.models[first.model]
        slots = [
            (i, (r.seed + k) % (MAX_SEED + 1)) for i, r in enumerate(requests) for k in range(r.num_outputs)
        ]
        outputs: list[list[Any]] = [[] for _ in requests]
        shares = [0.0] * len(requests)
        size = self._batcher.max_batch_size
        cuda = self.device.startswith("cuda")
        with self._gpu_lock:
            held_from = time.perf_counter()
            if (
                loaded.compiled is not None
                and loaded.hotswap is not None
                and self._swap_in(loaded, first.loras)
            ):
                denoiser = loaded.compiled  # the LoRA (or the placeholder) sits in the compiled slot
            else:
                if first.loras or loaded.loras.loaded:
                    self._use_denoiser(loaded, loaded.eager)  # adapters are managed on the eager module
                    loaded.loras.activate(loaded.pipe, first.loras)
                # Other LoRA layers change the module graph, so those batches run eagerly.
                compiled = loaded.compiled is not None and not first.loras
                denoiser = loaded.compiled if compiled else loaded.eager
            if first.checkpoint is not None:
                key, path = first.checkpoint
                denoiser = loaded.checkpoints.get(
                    key,
                    path,
                    loaded.eager,
                    device=self.device,
                    dtype=self._dtype,
                    config=loaded.config_source,
                )
            self._use_denoiser(loaded, denoiser)
            video_image = loaded.spec.image_to_video
            pipe = loaded.img2img if first.image is not None and not video_image else loaded.pipe
            overhead_s = time.perf_counter() - held_from
            for start in range(0, len(slots), size):
                chunk = slots[start : start + size]
                kwargs = self._kwargs(loaded, requests, chunk)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    result = pipe(**kwargs)
                if cuda:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
                arrays = result.frames if first.num_frames is not None else result.images
                for (index, _), array in zip(chunk, arrays, strict=True):
                    outputs[index].append(array)
                    shares[index] += elapsed / len(chunk)
        for index, _ in slots:  # loading adapters or checkpoints held the GPU for the whole group
            shares[index] += overhead_s / len(slots)
        return outputs, shares, min(len(slots), size)

    def _swap_in(self, loaded: _Loaded, loras: Any) -> bool:
        """Serve ``loras`` from the hotswap slot; False when the slot cannot take them."""
        slot = loaded.hotswap
        if not slot.swap(loaded.pipe, loras):
            return False
        if loaded.loras.active:  # an eager LoRA batch ran since: make the slot the active adapter again
            loaded.pipe.set_adapters([slot.NAME], adapter_weights=[1.0])
            loaded.loras.active = None
        return True

    def _kwargs(self, loaded: _Loaded, requests: list[Any], chunk: list[tuple[int, int]]) -> dict[str, Any]:
        import torch

        first = requests[0]
        spec = loaded.spec
        kwargs: dict[str, Any] = {
            "prompt": [requests[i].prompt for i, _ in chunk],
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "width": first.width,
            "height": first.height,
            "generator": [torch.Generator().manual_seed(seed) for _, seed in chunk],
            "output_type": "np",
        }
        if first.negative_prompt:  # the batch key keeps requests without one apart
            kwargs["negative_prompt"] = [requests[i].negative_prompt for i, _ in chunk]
        if spec.max_sequence_length:
            tiny = self.config.random_weights == "tiny"
            kwargs["max_sequence_length"] = 32 if tiny else spec.max_sequence_length
        if first.image is not None and spec.image_to_video:
            kwargs["image"] = first.image  # one request per call: video groups never batch
        elif first.image is not None:
            kwargs["image"] = [requests[i].image for i, _ in chunk]
            kwargs["strength"] = first.strength
            if spec.family == "sdxl":  # SDXL img2img takes its size from the image
                del kwargs["width"], kwargs["height"]
        if first.num_frames is not None:
            kwargs["num_frames"] = first.num_frames
        return kwargs
