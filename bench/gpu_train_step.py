"""One training step of the drafting stage at 7B scale, on a CUDA device: step time, peak memory and
throughput of the visual prompt plus a LoRA adapter on a Mistral-7B-shaped language model.

What a step is (the drafting stage's objective, `rrg/training/stages/drafting.py`, on random inputs):
- the full visual prompt of `mimic-mistral-7b` (Sinkhorn fusion of GRPs and LRPs, projector, disease
  clues; `rrg.model.factory.visual_prompt`), trainable in fp32, at the widths of BiomedCLIP ViT-B/16 at
  224 px (196 patch tokens of width 768, pooled embedding 512) and CXR-BERT (text width 768), fed random
  patch tokens and random prompt-text encodings (12 GRP sentences, 75 LRP triplets, 14 clue templates);
- a Mistral-7B-shaped causal LM with random weights, built directly in bf16 on the GPU, frozen, with a
  fresh LoRA adapter of the config's settings (`rrg.model.generator.with_new_lora`: r 16, alpha 32,
  q/k/v/o projections) and non-reentrant gradient checkpointing;
- the prompt as rrg lays it out: a few head tokens, the visual prompt's tokens (49 + 8 clue tokens), then
  the rest of the text; 320 text tokens of which the report is the last 128, and only the report is
  labelled;
- forward under bf16 autocast, loss = L_task + the visual prompt's terms (`VisualPromptLosses`: beta L_fcc,
  L_dc, clue selection), backward, gradient norm clipped to 1.0, AdamW step at the config's draft_lr.

Reported: median and mean step time (warm-up steps not timed), peak allocated GPU memory, tokens/s
(every position of the batch's sequences, visual tokens included), samples/s, trainable parameters, the
GPU and torch version; a markdown table, and a JSON file with --json.

Needs a CUDA device; on a machine without one it prints that it did not run and exits 0, so that
`make bench` completes everywhere. `--tiny` runs the same code on the CPU with a tiny Mistral shape and
tiny widths, as a smoke check of the script: its figures are not 7B figures. Figures go into
docs/performance.md only when measured on a GPU.

    python bench/gpu_train_step.py [--batch 8 --steps 20 --json out.json]
    python bench/gpu_train_step.py --tiny       # CPU smoke run of the same code path
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, MistralConfig

from rrg.config import ModelConfig, ModelWidths, load_model_config
from rrg.model import factory
from rrg.model.generator import enable_gradient_checkpointing, with_new_lora
from rrg.model.prompt import IGNORE
from rrg.model.visual_prompt import PromptTexts
from rrg.training.losses import VisualPromptLosses

CONFIG = "mimic-mistral-7b"
NOT_RUN = ("bench/gpu_train_step.py did not run: no CUDA device (torch.cuda.is_available() is False); "
           "nothing was measured.")
TINY_LABEL = "tiny CPU smoke run, not a 7B figure"

PATCH_TOKENS = 196  # ViT-B/16 at 224 px: a 14 x 14 grid
HEAD_TOKENS = 5  # [BOS] "Human: <Img>" before the visual tokens
LRP_COUNT = 75  # MedKLIP entities
CLUE_COUNT = 14  # one clue template per CheXbert label
LABEL_COUNT = 14

# The tiny shapes of --tiny: the same code, small enough for a CPU.
TINY_GENERATOR = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2,
                  "num_heads": 4, "num_kv_heads": 2, "max_positions": 1024}
TINY_WIDTHS = ModelWidths(vision_embed=32, vision_tokens=32, llm_hidden=64, text=32)
WIDTHS_7B = ModelWidths(vision_embed=512, vision_tokens=768, llm_hidden=4096, text=768)


@dataclass(frozen=True)
class Setup:
    config: ModelConfig
    widths: ModelWidths
    device: torch.device
    label: str


def setup(tiny: bool) -> Setup:
    config = load_model_config(CONFIG)
    if tiny:
        return Setup(config.replace(generator=TINY_GENERATOR), TINY_WIDTHS, torch.device("cpu"), TINY_LABEL)
    return Setup(config, WIDTHS_7B, torch.device("cuda"), "7B drafting step (random weights of the 7B shapes)")


def build_llm(config: ModelConfig, device: torch.device):
    """The generator's shape with random weights, built in bf16 on `device` (never fp32 on the CPU
    first), frozen, with a fresh LoRA adapter and non-reentrant gradient checkpointing."""
    g = config.generator
    mistral = MistralConfig(
        vocab_size=g.vocab_size, hidden_size=g.hidden_size, intermediate_size=g.intermediate_size,
        num_hidden_layers=g.num_layers, num_attention_heads=g.num_heads, num_key_value_heads=g.num_kv_heads,
        max_position_embeddings=g.max_positions, tie_word_embeddings=False, sliding_window=None,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    with device:
        base = AutoModelForCausalLM.from_config(mistral, dtype=torch.bfloat16)
    base.requires_grad_(False)
    model = with_new_lora(base, g)  # peft keeps the adapter's weights in fp32
    enable_gradient_checkpointing(model)  # as the drafting stage does with training.gradient_checkpointing
    model.train()
    return model


def random_batch(batch: int, widths: ModelWidths, config: ModelConfig, text_tokens: int, device: torch.device):
    """Random patch tokens, prompt-text encodings, label targets and text token ids for one step."""
    fusion = config.fusion
    patch = torch.randn(batch, PATCH_TOKENS, widths.vision_tokens, device=device)
    texts = PromptTexts(
        grp=torch.randn(batch, fusion.max_grp_sentences, widths.text, device=device),
        grp_mask=torch.ones(batch, fusion.max_grp_sentences, dtype=torch.bool, device=device),
        lrp=torch.randn(batch, LRP_COUNT, widths.text, device=device),
        clues=torch.randn(CLUE_COUNT, widths.text, device=device),
    )
    label_targets = (torch.rand(batch, LABEL_COUNT, device=device) < 0.3).float()
    ids = torch.randint(3, config.generator.vocab_size, (batch, text_tokens), device=device)  # not 0-2: special
    return patch, texts, label_targets, ids


def labels_of(ids: torch.Tensor, visual: int, report_tokens: int) -> torch.Tensor:
    """(B, T) labels: IGNORE on the head, the visual tokens and the prompt text; the report's ids."""
    batch, text_tokens = ids.shape
    ignored = torch.full((batch, visual + text_tokens - report_tokens), IGNORE, dtype=torch.long, device=ids.device)
    return torch.cat([ignored, ids[:, -report_tokens:]], dim=1)


def run(args: argparse.Namespace, where: Setup) -> dict:
    config, widths, device = where.config, where.widths, where.device
    if not HEAD_TOKENS < args.text_tokens - args.report_tokens:
        raise SystemExit(f"--text-tokens must exceed --report-tokens by more than {HEAD_TOKENS}")
    torch.manual_seed(0)
    model = build_llm(config, device)
    with device:
        visual_prompt = factory.visual_prompt(config, widths).train()  # fp32
    prompt_losses = VisualPromptLosses(config.fusion.fcc_weight, config.clues.dc_weight, config.clues.selection_weight)
    embedding = model.get_input_embeddings()
    lora = [p for p in model.parameters() if p.requires_grad]
    prompt_parameters = list(visual_prompt.parameters())
    trainable = prompt_parameters + lora
    optimizer = torch.optim.AdamW(trainable, lr=config.training.draft_lr, weight_decay=0.0)
    cuda = device.type == "cuda"

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    shape = {}

    def step() -> dict[str, float]:
        patch, texts, label_targets, ids = random_batch(args.batch, widths, config, args.text_tokens, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            out = visual_prompt(patch, texts)  # tokens (B, V + 2L, H)
            text = embedding(ids)  # (B, T_text, H) bf16
            visual = out.tokens.to(text.dtype)
            embeds = torch.cat([text[:, :HEAD_TOKENS], visual, text[:, HEAD_TOKENS:]], dim=1)  # (B, T, H)
            labels = labels_of(ids, visual.shape[1], args.report_tokens)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
            terms = {"task": model(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False).loss,
                     **prompt_losses(out, texts, label_targets)}
        loss = sum(terms.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        shape["sequence"], shape["visual"] = embeds.shape[1], visual.shape[1]
        return {name: float(value.detach()) for name, value in terms.items()}

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    times, terms = [], {}
    for _ in range(args.steps):
        synchronize()
        started = time.perf_counter()
        terms = step()
        synchronize()
        times.append(time.perf_counter() - started)
    for name, value in terms.items():
        if math.isnan(value):
            raise SystemExit(f"the {name} loss is NaN: the step is broken, nothing to report")
    median, mean = statistics.median(times), statistics.fmean(times)
    tokens = args.batch * shape["sequence"]
    return {
        "label": where.label,
        "tiny": args.tiny,
        "config": config.name,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "sequence_tokens": shape["sequence"],
        "visual_tokens": shape["visual"],
        "text_tokens": args.text_tokens,
        "report_tokens": args.report_tokens,
        "tokens_per_step": tokens,
        "median_step_s": round(median, 4),
        "mean_step_s": round(mean, 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "tokens_per_s": round(tokens / median, 1),
        "samples_per_s": round(args.batch / median, 2),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "trainable_visual_prompt": sum(p.numel() for p in prompt_parameters),
        "trainable_lora": sum(p.numel() for p in lora),
        "last_losses": {name: round(value, 4) for name, value in terms.items()},
    }


def table(result: dict) -> str:
    memory = "n/a (CPU)" if result["peak_memory_gib"] is None else f"{result['peak_memory_gib']:.2f} GiB"
    rows = [
        ("device", result["device"]),
        ("torch", result["torch"]),
        ("batch x sequence", (f"{result['batch']} x {result['sequence_tokens']} "
                              f"({result['visual_tokens']} visual, {result['text_tokens']} text of which "
                              f"{result['report_tokens']} report)")),
        ("steps timed (warm-up)", f"{result['steps_timed']} ({result['warmup_steps']})"),
        ("median step", f"{result['median_step_s'] * 1000:,.1f} ms"),
        ("mean step", f"{result['mean_step_s'] * 1000:,.1f} ms"),
        ("peak memory allocated", memory),
        ("tokens/s", f"{result['tokens_per_s']:,.1f}"),
        ("samples/s", f"{result['samples_per_s']:,.2f}"),
        ("trainable parameters", (f"{result['trainable_parameters']:,} (visual prompt "
                                  f"{result['trainable_visual_prompt']:,}, LoRA {result['trainable_lora']:,})")),
        ("last step's losses", ", ".join(f"{k} {v}" for k, v in result["last_losses"].items())),
    ]
    title = (f"Drafting training step, {result['label']} ({result['config']}, bf16 autocast, "
             "gradient checkpointing, AdamW, clip 1.0)")
    lines = [title, "| what | measured |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (20; --tiny: 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (3; --tiny: 1)")
    parser.add_argument("--text-tokens", type=int, default=320, help="text tokens of a sequence, report included")
    parser.add_argument("--report-tokens", type=int, default=128, help="the labelled report, the last text tokens")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--tiny", action="store_true", help=f"{TINY_LABEL}: the same code on the CPU, tiny shapes")
    args = parser.parse_args()
    args.steps = args.steps if args.steps is not None else (3 if args.tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        parser.error("--steps and --batch must be positive, --warmup not negative")
    if not args.tiny and not torch.cuda.is_available():
        print(NOT_RUN)
        return 0
    result = run(args, setup(args.tiny))
    print(table(result))
    if args.tiny:
        print(f"({TINY_LABEL}: it checks that the script works; its figures are not 7B figures)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
