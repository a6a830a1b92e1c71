"""The report generator: a Mistral causal language model with a LoRA adapter (the demo's small one,
or a pretrained base such as Mistral-7B), built, loaded, adapted and merged here.

Its prompt is embeddings (`rrg.model.prompt`), so that visual tokens can sit between pieces of embedded
instruction text; the same embeddings go to vLLM (`prompt_embeds`) or to transformers
(`rrg.model.generation`: the fallback engine, `rrg generate`, `rrg-eval`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from rrg.config import GeneratorConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config's dtype name."""
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {name!r}")
    return _DTYPES[name]


def build_demo_llm(config: GeneratorConfig, tokenizer: PreTrainedTokenizerFast) -> MistralForCausalLM:
    """A small Mistral with random weights, to be trained on report text."""
    mistral = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        sliding_window=None,
    )
    return MistralForCausalLM(mistral).to(torch_dtype(config.dtype))


def load_llm(
    path_or_id: str | Path, dtype: str, four_bit: bool = False, device: torch.device | None = None
) -> MistralForCausalLM:
    """A Mistral-architecture causal LM from a local folder or a hub id (no download where there is no hub),
    straight onto `device` when one is given (a 7B base never sits in host memory once per rank);
    `four_bit`: its linear weights quantized to 4-bit NF4 as it loads (QLoRA; a CUDA device)."""
    options = {"dtype": torch_dtype(dtype)}
    if device is not None and device.type != "cpu":
        options["device_map"] = {"": str(device)}
    if four_bit:
        where = device if device is not None and device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
        options |= {"quantization_config": four_bit_config(), "device_map": {"": str(where)}}
    try:
        return MistralForCausalLM.from_pretrained(str(path_or_id), **options)
    except OSError as error:
        raise ValueError(
            f"cannot load the language model {str(path_or_id)!r}: give a local folder in Hugging Face format "
            f"or a hub id reachable from this machine ({error})"
        ) from None


def four_bit_config():
    """QLoRA's storage (Dettmers et al. 2023): NF4 weights, double quantization, bf16 compute."""
    if not torch.cuda.is_available():
        raise ValueError("training.base_4bit needs a CUDA device (bitsandbytes' 4-bit kernels); set it false here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError("training.base_4bit needs bitsandbytes: install the gpu extra (uv sync --extra gpu)") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer's activations in backward instead of keeping them (non-reentrant, so
    frozen inputs and DistributedDataParallel's unused-parameter search work)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def with_new_lora(model: MistralForCausalLM, config: GeneratorConfig) -> PeftModel:
    """The model with a fresh LoRA adapter on the attention projections; the base stays frozen."""
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def with_merged_lora(model: MistralForCausalLM, path: str | Path) -> MistralForCausalLM:
    """The model with a saved PEFT adapter folded into its weights, for inference without extra matmuls.

    LoRA (Hu et al. 2021), Eq. 3: h = W0 x + (alpha / r) B A x; merged, W = W0 + (alpha / r) B A.
    """
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()
