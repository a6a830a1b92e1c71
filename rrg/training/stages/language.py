"""Stage 5, language: the demo Mistral trained on report text alone, each report after its findings
line (skipped for a pretrained base, which is saved as it is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from prompts.instructions import report_cue
from rrg.bundle import LLM, replace_part
from rrg.model.generator import build_demo_llm, load_llm
from rrg.model.suggested_findings import finding_names
from rrg.training.loop import TrainingRun
from rrg.training.losses import loss_tail

NAME = "language"
SEED_OFFSET = 3


def run(ctx: TrainingRun) -> dict:
    generator = ctx.config.generator
    tokenizer = ctx.load_tokenizer()
    if generator.base != "demo":
        model = load_llm(generator.base, generator.dtype)
        model.save_pretrained(str(ctx.out / LLM))
        return {"base": generator.base, "trained": False}
    model = build_demo_llm(generator, tokenizer)
    prompt, data = ctx.config.prompt, ctx.train_set

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    # Each report after its own findings line: the base learns to write what the line names.
    cues = [
        [tokenizer.bos_token_id, *ids(report_cue(finding_names(row), prompt.findings_heading))]
        for row in data.label_targets.numpy() > 0
    ]
    targets = [ids(" " + r.strip())[: prompt.max_report_tokens] + [tokenizer.eos_token_id] for r in ctx.targets(data)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=ctx.training.lm_lr, weight_decay=0.01)
    model.train()

    def train_step(batch: np.ndarray) -> torch.Tensor:
        longest = max(len(cues[i]) + len(targets[i]) for i in batch)
        input_ids = torch.full((len(batch), longest), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        labels = torch.full((len(batch), longest), -100)
        for row, i in enumerate(batch):
            cue, target = cues[i], targets[i]
            input_ids[row, : len(cue) + len(target)] = torch.tensor(cue + target)
            mask[row, : len(cue) + len(target)] = 1
            labels[row, len(cue) : len(cue) + len(target)] = torch.tensor(target)  # the cue is not scored
        return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss

    losses = ctx.steps(
        "language", len(targets), ctx.training.lm_batch, ctx.training.lm_epochs, {"model": model}, optimizer, train_step
    )
    model.eval()
    replace_part(ctx.out / LLM, lambda folder: _save_llm(model, tokenizer, folder))
    parameters = sum(p.numel() for p in model.parameters())
    return {"base": "demo", "parameters": parameters, "final_loss": loss_tail(losses)}


def _save_llm(model: nn.Module, tokenizer, folder: Path) -> None:
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
