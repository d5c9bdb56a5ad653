"""Randomly initialised diffusion pipelines, built in code: no downloads, no tokenizer files.

Two scales of each family the service serves (``sdxl``, ``flux``, ``flux-schnell``, ``wan``):

- ``tiny``: a few layers and 16-64 channels. A 32x32 image takes tens of milliseconds
  on a CPU. Tests, ``bench/gpu_serving.py --tiny`` and ``GENROUTER_RANDOM_WEIGHTS=tiny``
  (smoke-testing a deployment without weights) use it.
- ``full``: the real architectures' denoisers and VAEs at their published sizes (the
  SDXL UNet has 2.57 B parameters and the FLUX.1 transformer 11.9 B, the configs of
  ``shared/reference/diffusion_anchor.py``), so FLOPs and memory traffic are real and
  the images are noise. The text encoders keep their real widths but only
  ``FULL_TEXT_LAYERS`` layers each: prompt encoding is well under 1 % of a
  30-step generation, and a random T5-XXL would add 9.5 GB for nothing.
  ``bench/gpu_serving.py`` uses it.

Tokenizers are character-level (printable ASCII), made with the ``tokenizers`` library,
so different prompts give different embeddings without any vocabulary file.

:func:`save_random_lora` writes a LoRA with random A and B matrices for a pipeline's
denoiser, in the diffusers format that ``load_lora_weights`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "FAMILIES",
    "FULL_TEXT_LAYERS",
    "build_pipeline",
    "char_tokenizer",
    "denoiser_attribute",
    "save_random_lora",
]

FAMILIES = ("sdxl", "flux", "flux-schnell", "wan", "wan-i2v")
"""Pipeline families this module can build."""

FULL_TEXT_LAYERS = 2
"""Transformer layers of each text encoder at ``full`` scale (their widths stay real)."""

_SPECIALS = ("<|startoftext|>", "<|pad|>", "<|endoftext|>", "<unk>")
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""Attention projections a random LoRA adapts (the usual diffusers LoRA targets)."""


def char_tokenizer(max_length: int, *, bos: bool = True) -> Any:
    """A character-level fast tokenizer with CLIP-style special tokens (ids 0-3)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)]
    vocab = {token: i for i, token in enumerate((*_SPECIALS, *chars))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    template = "<|startoftext|> $A <|endoftext|>" if bos else "$A <|endoftext|>"
    core.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def _vocab_size() -> int:
    return len(_SPECIALS) + 95


def _clip(
    hidden: int, heads: int, intermediate: int, layers: int, projection: int, with_projection: bool
) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        vocab_size=_vocab_size(),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        projection_dim=projection,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _t5(d_model: int, d_kv: int, d_ff: int, heads: int, layers: int, *, umt5: bool = False) -> Any:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kwargs = {
        "vocab_size": _vocab_size(),
        "d_model": d_model,
        "d_kv": d_kv,
        "d_ff": d_ff,
        "num_layers": layers,
        "num_heads": heads,
        "pad_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 0,
        "feed_forward_proj": "gated-gelu",
    }
    if umt5:
        return UMT5EncoderModel(UMT5Config(**kwargs))
    return T5EncoderModel(T5Config(**kwargs))


def _sdxl(full: bool) -> Any:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    if full:
        unet = UNet2DConditionModel(
            sample_size=128,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            cross_attention_dim=2048,
            attention_head_dim=(5, 10, 20),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=1024,
            scaling_factor=0.13025,
            force_upcast=False,
        )
        text_encoder = _clip(768, 12, 3072, FULL_TEXT_LAYERS, 768, with_projection=False)
        text_encoder_2 = _clip(1280, 20, 5120, FULL_TEXT_LAYERS, 1280, with_projection=True)
    else:
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            transformer_layers_per_block=(1, 1),
            cross_attention_dim=64,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,  # 6 x 8 time ids + 32 pooled
            norm_num_groups=1,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=32,
            norm_num_groups=1,
        )
        text_encoder = _clip(32, 4, 37, 2, 32, with_projection=False)
        text_encoder_2 = _clip(32, 4, 37, 2, 32, with_projection=True)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    tokenizer = char_tokenizer(77)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def _flux(full: bool, schnell: bool) -> Any:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    if full:
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=not schnell,
            axes_dims_rope=(16, 56, 56),
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=16,
            layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=1024,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.1159,
            scaling_factor=0.3611,
            force_upcast=False,
        )
        text_encoder = _clip(768, 12, 3072, FULL_TEXT_LAYERS, 768, with_projection=False)
        text_encoder_2 = _t5(4096, 64, 10240, 64, FULL_TEXT_LAYERS)
    else:
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=not schnell,
            axes_dims_rope=(4, 4, 8),
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=32,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
        text_encoder = _clip(32, 4, 37, 2, 32, with_projection=False)
        text_encoder_2 = _t5(32, 8, 37, 4, 2)
    if schnell:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=char_tokenizer(77),
        text_encoder_2=text_encoder_2,
        tokenizer_2=char_tokenizer(512, bos=False),
        transformer=transformer,
    )


def _wan(full: bool, *, i2v: bool = False) -> Any:
    """Wan 2.1; with ``i2v`` the image-to-video variant (36 input channels: noise, the encoded
    first frame and its mask), without the CLIP image encoder (as Wan 2.2's 5B model)."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )

    in_channels = 36 if i2v else 16

    if full:
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=in_channels,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=8960,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        )
        vae = AutoencoderKLWan()
        text_encoder = _t5(4096, 64, 10240, 64, FULL_TEXT_LAYERS, umt5=True)
    else:
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=in_channels,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        text_encoder = _t5(32, 8, 37, 4, 2, umt5=True)
    pipeline_class = WanImageToVideoPipeline if i2v else WanPipeline
    return pipeline_class(
        tokenizer=char_tokenizer(512, bos=False),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )


def build_pipeline(
    family: str,
    scale: str = "tiny",
    *,
    device: str = "cpu",
    dtype: Any = None,
    seed: int = 0,
) -> Any:
    """A randomly initialised pipeline of ``family`` at ``scale`` (``tiny`` or ``full``).

    The weights are created on ``device`` (a full-size model straight on the GPU, as
    the anchor measurement did) and cast to ``dtype`` (default: float32). The same
    ``seed`` gives the same weights. The global RNG is left as it was.
    """
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown pipeline family {family!r}; expected one of {', '.join(FAMILIES)}")
    if scale not in ("tiny", "full"):
        raise ValueError(f"unknown scale {scale!r}; expected 'tiny' or 'full'")
    full = scale == "full"
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        if family == "sdxl":
            pipe = _sdxl(full)
        elif family in ("wan", "wan-i2v"):
            pipe = _wan(full, i2v=family == "wan-i2v")
        else:
            pipe = _flux(full, schnell=family == "flux-schnell")
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # built in training mode: T5's dropout would make outputs random
    if dtype is not None and dtype != torch.float32:
        _cast(pipe, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _cast(pipe: Any, dtype: Any) -> None:
    """Cast every component to ``dtype``, keeping the modules a model marks as float32-only."""
    import torch

    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        torch.nn.Module.to(component, dtype=dtype)  # ModelMixin.to would warn about the fp32 modules
        keep = getattr(component, "_keep_in_fp32_modules", None) or ()
        for name, module in component.named_modules():
            if any(part in keep for part in name.split(".")):
                torch.nn.Module.to(module, dtype=torch.float32)


def denoiser_attribute(pipe: Any) -> str:
    """``"unet"`` or ``"transformer"``: where the pipeline keeps its denoiser."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def save_random_lora(
    pipe: Any,
    directory: str | Path,
    name: str = "random",
    *,
    rank: int = 4,
    seed: int = 0,
    std: float = 0.5,
    zero_b: bool = False,
) -> Path:
    """Write ``<directory>/<name>.safetensors``: a LoRA with random A and B for ``pipe``'s denoiser.

    Both matrices are random (a trained LoRA's B starts at zero; a random one must not,
    or it would change nothing), unless ``zero_b``: then it changes nothing (the service's
    hotswap placeholder). Returns the file's path.
    """
    import torch

    attribute = denoiser_attribute(pipe)
    denoiser = getattr(pipe, attribute)
    denoiser = getattr(denoiser, "_orig_mod", denoiser)
    generator = torch.Generator().manual_seed(seed)
    layers: dict[str, Any] = {}
    for module_name, module in denoiser.named_modules():
        if isinstance(module, torch.nn.Linear) and module_name.endswith(tuple("." + t for t in LORA_TARGETS)):
            a = torch.randn(rank, module.in_features, generator=generator) * std
            b = torch.randn(module.out_features, rank, generator=generator) * (0.0 if zero_b else std)
            layers[f"{module_name}.lora_A.weight"] = a
            layers[f"{module_name}.lora_B.weight"] = b
    if not layers:
        raise ValueError(f"{type(denoiser).__name__} has no {'/'.join(LORA_TARGETS)} layers to adapt")
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    pipe.save_lora_weights(
        save_directory=str(target),
        weight_name=f"{name}.safetensors",
        **{f"{attribute}_lora_layers": layers},
    )
    return target / f"{name}.safetensors"
