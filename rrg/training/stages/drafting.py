"""Stage 6, drafting: the visual prompt and a LoRA adapter learn to draft reports.

The vision encoder, heads and base language model are frozen; what trains is the visual prompt
(`rrg/model/visual_prompt.py`: the projector and, as the config has them, the Sinkhorn fusion branches
and the clue module) and the adapter, by

    L = L_task + beta L_fcc + L_dc (+ the clue selection loss, ours)

(REVTAF eq. 15 with TRRG's L_dc; REVTAF's alpha L_rank trains the LRE in the index stage, before
this one, since the references this stage learns from must exist first).

What each prompt part holds in training and at validation (as at inference):
- findings line: the study's own labels / the heads' suggestions;
- references: with hyperbolic retrieval the studies nearest in labels (REVTAF) / the LRE's;
  with cosine retrieval the nearest images, the study itself excluded, in both;
- LRPs: the entities present in the study's report / those the entity head finds.
"""

from __future__ import annotations

import numpy as np
import torch

from retrieval.index_files import open_index
from retrieval.lre import label_neighbours
from rrg.bundle import INDEX, LLM, LORA, PROMPTS, replace_part, save_modules
from rrg.data.training_data import StudySet
from rrg.model import factory
from rrg.model.generator import load_llm, with_new_lora
from rrg.model.prompt import PromptEmbedder, pad_batch
from rrg.model.prompt_texts import PromptTextEncodings, present_entities
from rrg.model.references import ReferenceRetriever
from rrg.model.suggested_findings import finding_names, suggest
from rrg.training.loop import TrainingRun
from rrg.training.losses import VisualPromptLosses, loss_tail

NAME = "drafting"
SEED_OFFSET = 4


class _AdapterState:
    """The LoRA adapter's weights alone, for checkpoints (not the frozen base model's)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.model)

    def load_state_dict(self, state: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, state)


def _prompt_texts(ctx: TrainingRun) -> PromptTextEncodings | None:
    """The encoded text prompts: built once (and kept in the bundle), reloaded when resuming."""
    config, data = ctx.config, ctx.train_set
    if not config.uses_text_prompts:
        return None
    folder = ctx.out / PROMPTS
    if folder.is_dir() and ctx.checkpoints.resuming:
        return PromptTextEncodings.load(folder, config)
    ctx.log(f"encoding the text prompts with {config.prompt.text_encoder}")
    encodings = PromptTextEncodings.build(config, data.reports, data.reports)
    replace_part(folder, encodings.save)
    return encodings


def run(ctx: TrainingRun) -> dict:
    """Train and save the drafting parts of the bundle; the stage's summary."""
    config, data, training = ctx.config, ctx.train_set, ctx.training
    encoder, heads = ctx.trained_vision()
    tokenizer = ctx.load_tokenizer()
    model = with_new_lora(load_llm(ctx.out / LLM, config.generator.dtype), config.generator)
    prompt_texts = _prompt_texts(ctx)
    widths = factory.widths_of(encoder, model.config.hidden_size, prompt_texts.dim if prompt_texts else None)
    visual_prompt = factory.visual_prompt(config, widths)
    prompt_losses = VisualPromptLosses(config.fusion.fcc_weight, config.clues.dc_weight, config.clues.selection_weight)
    embedder = PromptEmbedder(tokenizer, model.get_input_embeddings(), config.prompt)
    enhancer = ctx.trained_enhancer()
    retriever = ReferenceRetriever(open_index(ctx.out / INDEX), enhancer)
    k = config.retrieval.k

    def seen(study_set: StudySet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        """Patch tokens, label and entity logits, and index-space vectors of a split."""
        pooled, tokens = ctx.encode(encoder, study_set.images)
        with torch.no_grad():
            label_logits, entity_logits = heads(pooled)
        return tokens, label_logits, entity_logits, retriever.embed(pooled, entity_logits)

    def retrieved(study_set: StudySet, vectors: np.ndarray) -> list[list[str]]:
        """The reports the retriever finds for each study (never the study itself)."""
        found = retriever.index.search(vectors, k, exclude_ids=study_set.ids)
        return [[n.report for n in neighbors] for neighbors in found]

    tokens, _, _, vectors = seen(data)
    if enhancer is None:
        refs = retrieved(data, vectors)
    else:  # REVTAF: the training references are the studies nearest in labels
        nearest = label_neighbours(data.label_status, vectors, enhancer.curvature, k)
        refs = [[data.reports[j] for j in row] for row in nearest]
    findings = [finding_names(row) for row in data.label_targets.numpy() > 0]
    present = (data.entity_targets == 1).numpy()  # (N, 75) the report's entities
    train_reports, val_reports = ctx.targets(data), ctx.targets(ctx.val_set)
    modules = {"visual_prompt": visual_prompt, "lora": _AdapterState(model)}
    trainable = list(visual_prompt.parameters()) + [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=training.draft_lr, weight_decay=0.0)
    model.train()
    terms_seen: dict[str, list[float]] = {}

    def losses_of(batch, study_tokens, study_findings, study_refs, study_present, reports, label_targets):
        texts = None
        if prompt_texts is not None:
            texts = prompt_texts.texts_for(visual_prompt, [study_refs[i] for i in batch], study_present[batch])
        out = visual_prompt(study_tokens[batch], texts)  # tokens (B, V [+ 2L], H)
        examples = [
            embedder.training_example(out.tokens[j], study_findings[i], study_refs[i], reports[i])
            for j, i in enumerate(batch)
        ]
        embeds, mask, labels = pad_batch([e for e, _ in examples], [l for _, l in examples])
        task = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        return {"task": task, **prompt_losses(out, texts, label_targets[batch])}

    def train_step(batch: np.ndarray) -> torch.Tensor:
        terms = losses_of(batch, tokens, findings, refs, present, train_reports, data.label_targets)
        for name, value in terms.items():
            terms_seen.setdefault(name, []).append(float(value.detach()))
        return sum(terms.values())

    losses = ctx.steps("drafting", len(data), training.draft_batch, training.draft_epochs, modules, optimizer, train_step)
    model.eval()
    visual_prompt.eval()
    val = ctx.val_set
    val_tokens, val_label_logits, val_entity_logits, val_vectors = seen(val)
    val_refs = retrieved(val, val_vectors)
    with torch.no_grad():
        val_suggested = suggest(torch.sigmoid(val_label_logits).numpy(), heads.thresholds.numpy())
        val_findings = [finding_names(row) for row in val_suggested]
        val_present = present_entities(val_entity_logits, config).numpy()
        val_batches = np.array_split(np.arange(len(val)), max(1, len(val) // 32))
        val_terms = [
            losses_of(b, val_tokens, val_findings, val_refs, val_present, val_reports, val.label_targets)
            for b in val_batches
        ]
    replace_part(ctx.out / LORA, lambda folder: model.save_pretrained(str(folder)))
    save_modules(ctx.out, heads, visual_prompt, enhancer)
    summary = {"final_loss": loss_tail(losses), "val_loss": round(float(np.mean([t["task"] for t in val_terms])), 4),
               "widths": widths.to_dict()}
    if len(terms_seen) > 1:  # the terms apart, when there is more than the task's
        summary["final_terms"] = {name: loss_tail(values) for name, values in terms_seen.items()}
        summary["val_terms"] = {name: round(float(np.mean([t[name] for t in val_terms])), 4) for name in val_terms[0]}
    return summary
