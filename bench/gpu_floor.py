"""The GPU floor of a 7B draft: the front's throughput at batch 1/8/32, and transformers' generation
latency for a randomly initialised model of Mistral-7B's exact shape in bf16 (speed needs no weights).

Needs a CUDA device; on a machine without one it prints that it did not run, and exits 0, so that
`make bench` completes everywhere. The front here is vision + finding heads + the visual prompt
(Sinkhorn fusion and clues, the `full` variant of mistral-7b-lora) on random inputs; retrieval,
which needs a trained index, is measured by bench/retrieval_search.py.

    uv run python bench/gpu_floor.py [--prompt-tokens 300] [--new-tokens 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from transformers import MistralConfig, MistralForCausalLM

from rrg.config import load_model_config, with_ablation
from rrg.model.vision import FindingHeads, VisionEncoder, open_clip_config
from rrg.model.visual_prompt import PromptTexts, VisualPrompt

TEXT_DIM = 384


def _timed(function, repeats: int) -> float:
    function()  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@torch.no_grad()
def front_rows(config, repeats: int) -> list[tuple[str, str]]:
    vision = VisionEncoder(open_clip_config(config.vision.open_clip_model)).cuda().eval()
    heads = FindingHeads(vision.embed_dim).cuda().eval()
    prompt = VisualPrompt(config, vision.token_width, config.generator.hidden_size, TEXT_DIM).cuda().eval()
    rows = []
    for batch in (1, 8, 32):
        images = torch.rand(batch, 1, vision.image_size, vision.image_size, device="cuda")
        texts = PromptTexts(
            grp=torch.randn(batch, config.fusion.max_grp_sentences, TEXT_DIM, device="cuda"),
            grp_mask=torch.ones(batch, config.fusion.max_grp_sentences, dtype=torch.bool, device="cuda"),
            lrp=torch.randn(batch, 75, TEXT_DIM, device="cuda"),
            clues=torch.randn(14, TEXT_DIM, device="cuda"),
        )

        def run(images=images, texts=texts):
            seen = vision(images)
            heads(seen.pooled)
            prompt(seen.tokens, texts)

        seconds = _timed(run, repeats)
        rows.append((f"front, batch {batch}", f"{batch / seconds:,.1f} images/s ({seconds * 1000:.1f} ms per batch)"))
    return rows


@torch.no_grad()
def generation_rows(config, prompt_tokens: int, new_tokens: int, repeats: int) -> list[tuple[str, str]]:
    g = config.generator
    with torch.device("cuda"):
        model = MistralForCausalLM(MistralConfig(
            vocab_size=g.vocab_size, hidden_size=g.hidden_size, intermediate_size=g.intermediate_size,
            num_hidden_layers=g.num_layers, num_attention_heads=g.num_heads, num_key_value_heads=g.num_kv_heads,
            max_position_embeddings=g.max_positions, tie_word_embeddings=False, sliding_window=None,
        )).to(torch.bfloat16).eval()
    embeds = torch.randn(1, prompt_tokens, g.hidden_size, device="cuda", dtype=torch.bfloat16) * 0.02
    mask = torch.ones(1, prompt_tokens, dtype=torch.long, device="cuda")

    def run():
        model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    seconds = _timed(run, repeats)
    return [(f"HF generate, 7B bf16, {prompt_tokens}-token prompt, {new_tokens} new tokens",
             f"{seconds:.2f} s per draft ({new_tokens / seconds:.1f} tokens/s)")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("GPU floor of a 7B draft (random weights of the mistral-7b-lora shapes)")
    if not torch.cuda.is_available():
        print("not run: this machine has no CUDA device (docs/performance.md says how to run it on one)")
        return 0
    config = with_ablation(load_model_config("mistral-7b-lora"), "full")
    rows = front_rows(config, args.repeats) + generation_rows(config, args.prompt_tokens, args.new_tokens, args.repeats)
    print(f"device: {torch.cuda.get_device_name()}")
    print("| what | measured |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
