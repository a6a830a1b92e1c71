"""Stage 1, tokenizer: a byte-level BPE vocabulary learned from the training reports (the demo base),
or the pretrained base's own tokenizer, saved with the language model."""

from __future__ import annotations

from rrg.bundle import LLM
from rrg.training.loop import TrainingRun
from rrg.training.tokenizer import train_report_tokenizer

NAME = "tokenizer"
SEED_OFFSET = 0  # each stage's seed is training.seed plus its own offset, so a new stage changes no other's


def run(ctx: TrainingRun) -> dict:
    generator = ctx.config.generator
    if generator.base == "demo":
        tokenizer = train_report_tokenizer(ctx.train_set.reports, generator.vocab_size)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(generator.base)
        if tokenizer.pad_token is None:  # Mistral's has none; batches need one (masked out anyway)
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    ctx.write(lambda: tokenizer.save_pretrained(str(ctx.out / LLM)))
    return {"vocab_size": len(tokenizer)}
