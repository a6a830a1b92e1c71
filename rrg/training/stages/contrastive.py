"""Stage 2, contrastive: MedFuse-CLIP pre-training of the open_clip image and text towers on
image-report pairs, when `training.clip_epochs` > 0; the vision stage then starts from the pre-trained
image tower (rrg/training/contrastive.py).
"""

from __future__ import annotations

import numpy as np
import torch

from retrieval.medfuse_clip import MedFuseLoss
from rrg.model import factory
from rrg.training.contrastive import alignment_report, report_tokens
from rrg.training.loop import TrainingRun, jitter
from rrg.training.losses import contrastive_loss, loss_tail

NAME = "contrastive"
SEED_OFFSET = 5


def run(ctx: TrainingRun) -> dict:
    if ctx.training.clip_epochs == 0:
        return {"skipped": "training.clip_epochs is 0: the vision stage starts from random weights"}
    data = ctx.train_set
    encoder = factory.vision_encoder(ctx.config)
    loss = MedFuseLoss()
    tokens = report_tokens(data.reports, encoder)
    modules = {"encoder": encoder, "loss": loss}
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]  # vision.freeze
    optimizer = torch.optim.AdamW(params, lr=ctx.training.clip_lr, weight_decay=0.01)
    encoder.train()
    terms: list[tuple[float, float]] = []

    def train_step(batch: np.ndarray, images: torch.Tensor) -> torch.Tensor:
        out = contrastive_loss(encoder, loss, jitter(images), tokens[batch], data.label_status[batch])
        terms.append((float(out.info_nce.detach()), float(out.margin.detach())))
        return out.total

    losses = ctx.steps(
        "contrastive", len(data), ctx.training.vision_batch, ctx.training.clip_epochs, modules, optimizer,
        train_step, images=data.images,
    )
    encoder.eval()
    torch.save(encoder.state_dict(), ctx.checkpoints.folder / "towers.pt")
    val = alignment_report(encoder, ctx.val_set.images, report_tokens(ctx.val_set.reports, encoder),
                           ctx.training.clip_pca_dim)
    return {
        "final_loss": loss_tail(losses), "temperature": round(loss.temperature, 4),
        "final_info_nce": loss_tail([t[0] for t in terms]), "final_margin": loss_tail([t[1] for t in terms]),
        "val_retrieval": val,
    }
