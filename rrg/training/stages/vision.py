"""Stage 3, vision: the open_clip encoder and the finding heads, supervised by each study's labels and
entities; then the heads' suggestion thresholds, tuned on the validation split."""

from __future__ import annotations

import numpy as np
import torch

from prompts.vocabulary import CHEXBERT_LABELS
from rrg.bundle import save_vision
from rrg.data.training_data import StudySet
from rrg.model import factory
from rrg.model.suggested_findings import NEVER, example_f1, suggest, tune_thresholds, with_no_finding
from rrg.model.vision import FindingHeads, VisionEncoder
from rrg.training.loop import Step, TrainingRun, jitter
from rrg.training.losses import FindingLoss, loss_tail

NAME = "vision"
SEED_OFFSET = 1


def run(ctx: TrainingRun) -> dict:
    data, device, training = ctx.train_set, ctx.device, ctx.training
    encoder = factory.vision_encoder(ctx.config)
    if (ctx.checkpoints.folder / "towers.pt").is_file():  # MedFuse-CLIP pre-trained
        encoder.load_state_dict(torch.load(ctx.checkpoints.folder / "towers.pt", map_location="cpu"))
    heads = factory.finding_heads(encoder.embed_dim)
    encoder, heads = encoder.to(device), heads.to(device)
    if training.gradient_checkpointing:
        encoder.clip.visual.set_grad_checkpointing(True)
    criterion = FindingLoss()
    modules = {"encoder": encoder, "heads": heads}
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]  # vision.freeze
    optimizer = torch.optim.AdamW(params, lr=training.vision_lr, weight_decay=0.05)
    encoder.train()

    def train_step(step: Step) -> torch.Tensor:
        seen = encoder(jitter(step.images, step.rows, step.number, training.seed))
        label_logits, entity_logits = heads(seen.pooled)
        return criterion(label_logits, entity_logits, data.label_targets[step.rows].to(device),
                         data.entity_targets[step.rows].to(device), data.entity_targets[step.whole])

    val = ctx.val_set  # loaded now, on every rank: the passes below run on rank 0 alone

    def validate() -> dict[str, float]:
        encoder.eval()
        probabilities = _probabilities(ctx, encoder, heads, val)
        encoder.train()
        return {"mean_auc_14": _mean_auc(probabilities, val.label_targets.cpu().numpy() > 0)}

    losses = ctx.steps(
        "vision", len(data), training.vision_batch, training.vision_epochs, modules, optimizer, train_step,
        images=data.images, validate=validate,
    )
    encoder.eval()
    heads.eval()
    if training.gradient_checkpointing:
        encoder.clip.visual.set_grad_checkpointing(False)
    val_probabilities = _probabilities(ctx, encoder, heads, val)
    val_positives = val.label_targets.cpu().numpy() > 0
    thresholds = tune_thresholds(val_probabilities, val_positives)
    heads.thresholds.copy_(torch.from_numpy(thresholds))
    encoder, heads = encoder.cpu(), heads.cpu()

    def save() -> None:
        save_vision(ctx.out, encoder.clip_config, encoder)
        torch.save(heads.state_dict(), ctx.checkpoints.folder / "heads.pt")

    ctx.write(save)
    suggested = with_no_finding(suggest(val_probabilities, thresholds))
    return {
        "train_studies": len(data),
        "final_loss": loss_tail(losses),
        "val_mean_auc_14": _mean_auc(val_probabilities, val_positives),
        "suggestion_thresholds": {n: round(float(t), 2) for n, t in zip(CHEXBERT_LABELS, thresholds) if t < NEVER},
        "val_example_f1_of_suggestions": round(example_f1(suggested, val_positives), 4),
    }


@torch.no_grad()
def _probabilities(ctx: TrainingRun, encoder: VisionEncoder, heads: FindingHeads, study_set: StudySet) -> np.ndarray:
    """(N, 14) the heads' label probabilities for a split."""
    pooled, _ = ctx.encode(encoder, study_set.images)
    return torch.sigmoid(heads(pooled.to(ctx.device))[0]).float().cpu().numpy()


def _mean_auc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Mean ROC AUC over the labels with both classes present."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(targets[:, j], scores[:, j]) for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]
    return round(float(np.mean(aucs)), 4) if aucs else None
