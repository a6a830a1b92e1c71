"""Stage 5, language: the demo Mistral trained on report text alone, each report after its findings
line (skipped for a pretrained base, which is saved as it is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from prompts.instructions import report_cue
from rrg.bundle import LLM, replace_part
from rrg.model.generator import build_demo_llm, enable_gradient_checkpointing, load_llm
from rrg.model.suggested_findings import finding_names
from rrg.training.loop import Step, TrainingRun
from rrg.training.losses import loss_tail

NAME = "language"
SEED_OFFSET = 3


def run(ctx: TrainingRun) -> dict:
    generator = ctx.config.generator
    tokenizer = ctx.load_tokenizer()
    if generator.base != "demo":
        ctx.write(lambda: load_llm(generator.base, generator.dtype).save_pretrained(str(ctx.out / LLM)))
        return {"base": generator.base, "trained": False}
    device = ctx.device
    model = build_demo_llm(generator, tokenizer).to(device)
    if ctx.training.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    prompt, data = ctx.config.prompt, ctx.train_set

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    def cues_and_targets(study_set) -> tuple[list[list[int]], list[list[int]]]:
        """Each report after its own findings line: the base learns to write what the line names."""
        cues = [
            [tokenizer.bos_token_id, *ids(report_cue(finding_names(row), prompt.findings_heading))]
            for row in study_set.label_targets.cpu().numpy() > 0
        ]
        targets = [ids(" " + r.strip())[: prompt.max_report_tokens] + [tokenizer.eos_token_id]
                   for r in ctx.targets(study_set)]
        return cues, targets

    cues, targets = cues_and_targets(data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=ctx.training.lm_lr, weight_decay=0.01)
    model.train()

    target_tokens = np.array([len(t) for t in targets])

    def batch_of(rows: np.ndarray, cues: list[list[int]], targets: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """Input ids, attention mask and labels (only the report's tokens scored) of some reports."""
        longest = max(len(cues[i]) + len(targets[i]) for i in rows)
        input_ids = torch.full((len(rows), longest), tokenizer.pad_token_id, device=device)
        mask = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
        labels = torch.full((len(rows), longest), -100, device=device)
        for row, i in enumerate(rows):
            cue, target = cues[i], targets[i]
            input_ids[row, : len(cue) + len(target)] = torch.tensor(cue + target, device=device)
            mask[row, : len(cue) + len(target)] = 1
            labels[row, len(cue) : len(cue) + len(target)] = torch.tensor(target, device=device)  # the cue is not scored
        return input_ids, mask, labels

    def train_step(step: Step):
        input_ids, mask, labels = batch_of(step.rows, cues, targets)
        items = torch.tensor(int(target_tokens[step.whole].sum()), device=device)  # a mean over the whole batch's tokens
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels, num_items_in_batch=items,
                     use_cache=False).loss
        return loss, {"tokens": int(mask.sum())}

    val = ctx.val_set
    val_cues, val_targets = cues_and_targets(val)
    subset = np.arange(min(ctx.training.eval_studies, len(val)))

    def validate() -> dict[str, float]:
        """The loss on a fixed subset of the validation reports."""
        model.eval()
        with torch.no_grad(), ctx.autocast():
            input_ids, mask, labels = batch_of(subset, val_cues, val_targets)
            loss = float(model(input_ids=input_ids, attention_mask=mask, labels=labels, use_cache=False).loss)
        model.train()
        return {"loss": round(loss, 4)}

    losses = ctx.steps(
        "language", len(targets), ctx.training.lm_batch, ctx.training.lm_epochs, {"model": model}, optimizer,
        train_step, validate=validate, lengths=np.array([len(c) + len(t) for c, t in zip(cues, targets)]),
    )
    model.eval()
    model = model.cpu()
    ctx.write(lambda: replace_part(ctx.out / LLM, lambda folder: _save_llm(model, tokenizer, folder)))
    parameters = sum(p.numel() for p in model.parameters())
    return {"base": "demo", "parameters": parameters, "final_loss": loss_tail(losses)}


def _save_llm(model: nn.Module, tokenizer, folder: Path) -> None:
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
