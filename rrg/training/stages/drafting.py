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

What the frozen parts make of the studies (patch tokens, logits, references) is computed once, by
rank 0, into `.train/drafting-setup/` (patch tokens memory-mapped), and read from there by every rank
and by a resumed run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prompts.labeler import label_report
from prompts.vocabulary import CHEXBERT_LABELS
from retrieval.index_files import open_index
from retrieval.lre import label_neighbours
from rrg.bundle import INDEX, LLM, LORA, PROMPTS, replace_part, save_modules
from rrg.data.training_data import StudySet
from rrg.model import factory
from rrg.model.generation import SamplingSettings, generate_hf
from rrg.model.generator import enable_gradient_checkpointing, load_llm, with_new_lora
from rrg.model.prompt import PromptEmbedder, pad_batch
from rrg.model.prompt_texts import PromptTextEncodings, present_entities
from rrg.model.references import ReferenceRetriever
from rrg.model.suggested_findings import example_f1, finding_names, suggest
from rrg.model.visual_prompt import PromptTexts
from rrg.paths import write_atomically
from rrg.training.loop import Step, TrainingRun, in_order
from rrg.training.losses import VisualPromptLosses, loss_tail

NAME = "drafting"
SEED_OFFSET = 4
SETUP = "drafting-setup"


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


@dataclass
class _Seen:
    """What the frozen parts make of one split's studies."""

    tokens: np.ndarray  # (N, P, W) patch tokens of the frozen tower (memory-mapped)
    references: np.ndarray  # (N, k) rows of the training split whose reports are each study's references
    label_logits: torch.Tensor  # (N, 14)
    entity_logits: torch.Tensor  # (N, 75)


def _prompt_texts(ctx: TrainingRun) -> PromptTextEncodings | None:
    """The encoded text prompts: built once by rank 0 (and kept in the bundle), read by every rank."""
    config, data = ctx.config, ctx.train_set
    if not config.uses_text_prompts:
        return None
    folder = ctx.out / PROMPTS

    def build_if_missing() -> None:  # rank 0 decides, so every rank meets the same barrier
        if folder.is_dir() and ctx.checkpoints.resuming:
            return
        ctx.log(f"encoding the text prompts with {config.prompt.text_encoder}")
        encodings = PromptTextEncodings.build(config, data.reports, data.reports)
        replace_part(folder, encodings.save)

    ctx.write(build_if_missing)
    return PromptTextEncodings.load(folder, config)


def _setup(ctx: TrainingRun, encoder, heads, retriever: ReferenceRetriever, enhancer) -> tuple[_Seen, _Seen]:
    """The train and validation splits as the frozen parts see them: from the setup cache, built first if
    missing (by rank 0; the other ranks wait, then read it)."""
    folder = ctx.checkpoints.folder / SETUP
    k = ctx.config.retrieval.k
    data, val = ctx.train_set, ctx.val_set
    row_of = {study_id: row for row, study_id in enumerate(data.ids)}

    def retrieved(study_set: StudySet, vectors: np.ndarray) -> np.ndarray:
        """Training rows the retriever finds for each study (never the study itself)."""
        found = retriever.index.search(vectors, k, exclude_ids=study_set.ids)
        return np.array([[row_of[n.id] for n in neighbors] for neighbors in found], dtype=np.int64)

    def build_if_missing() -> None:  # rank 0 decides, so every rank meets the same barrier
        if (folder / "setup.pt").is_file():
            ctx.log(f"drafting: reusing the frozen tower's outputs in {folder}")
            return
        ctx.log(f"drafting: encoding {len(data) + len(val)} studies with the frozen tower into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        parts = {}
        for split, study_set in (("train", data), ("val", val)):
            pooled, label_logits, entity_logits = _encode_into(ctx, encoder, heads, study_set, folder / f"{split}.npy")
            vectors = retriever.embed(pooled, entity_logits)
            if split == "train" and enhancer is not None and ctx.training.draft_references == "label_neighbours":
                # REVTAF: the training references are the studies nearest in labels
                references = label_neighbours(study_set.label_status, vectors, enhancer.curvature, k,
                                              device=ctx.device)
            else:
                references = retrieved(study_set, vectors)
            parts[split] = {"references": references, "label_logits": label_logits, "entity_logits": entity_logits}
        write_atomically(folder / "setup.pt", lambda p: torch.save(parts, p))  # last: the cache is complete

    ctx.write(build_if_missing)
    parts = torch.load(folder / "setup.pt", weights_only=False)
    return tuple(
        _Seen(np.load(folder / f"{split}.npy", mmap_mode="r"), parts[split]["references"],
              parts[split]["label_logits"], parts[split]["entity_logits"])
        for split in ("train", "val")
    )


@torch.no_grad()
def _encode_into(ctx: TrainingRun, encoder, heads, study_set: StudySet, path: Path):
    """Patch tokens of a split written into a .npy file a batch at a time; (pooled, label logits, entity
    logits) on the CPU."""
    dtype = np.float16 if ctx.training.precision == "bf16" else np.float32
    tokens, pooled, labels, entities = None, [], [], []
    partial = path.with_suffix(".partial.npy")
    written = 0
    for _, batch in ctx.images(study_set.images, in_order(len(study_set), 128)):
        with ctx.autocast():
            seen = encoder(batch)
            label_logits, entity_logits = heads(seen.pooled)
        if tokens is None:
            shape = (len(study_set), *seen.tokens.shape[1:])
            tokens = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        tokens[written : written + len(batch)] = seen.tokens.float().cpu().numpy()
        written += len(batch)
        pooled.append(seen.pooled.float().cpu())
        labels.append(label_logits.float().cpu())
        entities.append(entity_logits.float().cpu())
    tokens.flush()
    del tokens
    partial.replace(path)
    return torch.cat(pooled), torch.cat(labels), torch.cat(entities)


def _on(texts: PromptTexts | None, device: torch.device) -> PromptTexts | None:
    if texts is None:
        return None
    return dataclasses.replace(texts, **{f.name: getattr(texts, f.name).to(device) for f in dataclasses.fields(texts)
                                         if getattr(texts, f.name) is not None})


def run(ctx: TrainingRun) -> dict:
    """Train and save the drafting parts of the bundle; the stage's summary."""
    config, data, training, device = ctx.config, ctx.train_set, ctx.training, ctx.device
    encoder, heads = ctx.trained_vision()
    tokenizer = ctx.load_tokenizer()
    # The frozen base in the dtype it is served in (bfloat16 for a 7B base), so the adapter learns the
    # numbers vLLM will compute with; bf16 precision autocasts the rest.
    model = load_llm(ctx.out / LLM, config.generator.dtype, four_bit=training.base_4bit, device=device)
    if training.base_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing)
    model = with_new_lora(model, config.generator)  # peft puts the adapter on its base layers' device
    if not training.base_4bit:  # (bitsandbytes' 4-bit weights refuse .to(); they load where they belong)
        model = model.to(device)
    if training.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    prompt_texts = _prompt_texts(ctx)
    widths = factory.widths_of(encoder, model.config.hidden_size, prompt_texts.dim if prompt_texts else None)
    visual_prompt = factory.visual_prompt(config, widths).to(device)
    prompt_losses = VisualPromptLosses(config.fusion.fcc_weight, config.clues.dc_weight, config.clues.selection_weight)
    embedder = PromptEmbedder(tokenizer, model.get_input_embeddings(), config.prompt)
    enhancer = ctx.trained_enhancer()
    retriever = ReferenceRetriever(open_index(ctx.out / INDEX), enhancer)
    seen, val_seen = _setup(ctx, encoder, heads, retriever, enhancer)
    del encoder  # the frozen tower's work is in the setup cache

    val = ctx.val_set
    findings = [finding_names(row) for row in data.label_targets.cpu().numpy() > 0]
    present = (data.entity_targets == 1).cpu().numpy()  # (N, 75) the report's entities
    with torch.no_grad():
        val_suggested = suggest(torch.sigmoid(val_seen.label_logits).cpu().numpy(), heads.thresholds.cpu().numpy())
    val_findings = [finding_names(row) for row in val_suggested]
    val_present = present_entities(val_seen.entity_logits, config).cpu().numpy()
    train_reports, val_reports = ctx.targets(data), ctx.targets(val)
    train_targets = np.array([len(embedder.target_ids(r)) for r in train_reports])  # tokens L_task averages over
    modules = {"visual_prompt": visual_prompt, "lora": _AdapterState(model)}
    trainable = list(visual_prompt.parameters()) + [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=training.draft_lr, weight_decay=0.0)
    model.train()

    def visual_prompt_of(rows, split: _Seen, study_present):
        """Each study's references, and the visual prompt's output for the studies (tokens (B, V [+ 2L], H))."""
        references = [[data.reports[j] for j in split.references[i]] for i in rows]
        texts = None
        if prompt_texts is not None:
            texts = _on(prompt_texts.texts_for(visual_prompt, references, study_present[rows]), device)
        patches = torch.from_numpy(np.ascontiguousarray(split.tokens[rows])).to(device, torch.float32)
        return references, texts, visual_prompt(patches, texts)

    def losses_of(rows, split: _Seen, study_findings, study_present, reports, label_targets, whole=None):
        """The loss terms of some studies; with `whole` (the step's global batch) each term is their share
        of the whole batch's term, else their own mean."""
        references, texts, out = visual_prompt_of(rows, split, study_present)
        examples = [
            embedder.training_example(out.tokens[j], study_findings[i], refs, reports[i])
            for j, (i, refs) in enumerate(zip(rows, references))
        ]
        embeds, mask, labels = pad_batch([e for e, _ in examples], [l for _, l in examples])
        # L_task: a mean over the whole batch's tokens (over these studies' own without `whole`)
        items = None if whole is None else torch.tensor(int(train_targets[whole].sum()), device=device)
        task = model(inputs_embeds=embeds, attention_mask=mask, labels=labels, num_items_in_batch=items,
                     use_cache=False).loss
        whole_targets = None if whole is None else label_targets[whole]
        return {"task": task, **prompt_losses(out, texts, label_targets[rows].to(device), whole_targets)}, int(mask.sum())

    def train_step(step: Step):
        terms, tokens = losses_of(step.rows, seen, findings, present, train_reports, data.label_targets, step.whole)
        return sum(terms.values()), {**{k: float(v.detach()) for k, v in terms.items()}, "tokens": tokens}

    subset = np.arange(min(training.eval_studies, len(val)))

    def validate() -> dict[str, float]:
        """Loss and the CE example F1 of greedy drafts on a fixed subset of the validation split."""
        model.eval()
        visual_prompt.eval()
        with torch.no_grad(), ctx.autocast():
            terms, _ = losses_of(subset, val_seen, val_findings, val_present, val_reports, val.label_targets)
            references, _, out = visual_prompt_of(subset, val_seen, val_present)
            prompts = [embedder.prompt_embeds(out.tokens[j], val_findings[i], references[j])
                       for j, i in enumerate(subset)]
            drafts = generate_hf(model, tokenizer, prompts, SamplingSettings(max_tokens=config.prompt.max_report_tokens))
        model.train()
        visual_prompt.train()
        drafted = np.array([[label_report(d.text)[n] == "positive" for n in CHEXBERT_LABELS] for d in drafts])
        truth = val.label_targets[subset].cpu().numpy() > 0
        return {"loss": round(float(terms["task"]), 4), "draft_example_f1": round(example_f1(drafted, truth), 4)}

    # Each study's sequence length, near enough to group batches by it: its report and its references.
    reference_tokens = np.array([min(embedder.count_tokens(r), config.prompt.max_reference_tokens) for r in data.reports])
    lengths = train_targets + reference_tokens[seen.references].sum(axis=1)
    losses = ctx.steps("drafting", len(data), training.draft_batch, training.draft_epochs, modules, optimizer,
                       train_step, parallel=[visual_prompt, model], validate=validate, lengths=lengths)
    model.eval()
    visual_prompt.eval()
    with torch.no_grad(), ctx.autocast():
        val_batches = np.array_split(np.arange(len(val)), max(1, len(val) // 32))
        val_terms = [
            {k: float(v) for k, v in losses_of(b, val_seen, val_findings, val_present, val_reports,
                                               val.label_targets)[0].items()}
            for b in val_batches
        ]

    def save() -> None:
        replace_part(ctx.out / LORA, lambda folder: model.save_pretrained(str(folder)))
        save_modules(ctx.out, heads.cpu(), visual_prompt.cpu(), enhancer)

    ctx.write(save)
    summary = {"final_loss": loss_tail(losses), "val_loss": round(float(np.mean([t["task"] for t in val_terms])), 4),
               "widths": widths.to_dict()}
    if len(val_terms[0]) > 1:  # the terms apart, when there is more than the task's
        summary["final_terms"] = ctx.terms_tail("drafting")
        summary["val_terms"] = {name: round(float(np.mean([t[name] for t in val_terms])), 4) for name in val_terms[0]}
    return summary
