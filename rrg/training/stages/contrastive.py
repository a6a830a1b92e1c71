"""Stage 2, contrastive: MedFuse-CLIP pre-training of the open_clip image and text towers on
image-report pairs, when `training.clip_epochs` > 0; the vision stage then starts from the pre-trained
image tower (rrg/training/contrastive.py).
"""

from __future__ import annotations

import torch

from retrieval.medfuse_clip import MedFuseLoss
from rrg.model import factory
from rrg.training.contrastive import alignment_report, report_tokens
from rrg.training.loop import Step, TrainingRun, jitter
from rrg.training.losses import contrastive_loss, loss_tail

NAME = "contrastive"
SEED_OFFSET = 5


def run(ctx: TrainingRun) -> dict:
    if ctx.training.clip_epochs == 0:
        return {"skipped": "training.clip_epochs is 0: the vision stage starts from random weights"}
    data, device, seed = ctx.train_set, ctx.device, ctx.training.seed
    encoder = factory.vision_encoder(ctx.config).to(device)
    loss = MedFuseLoss().to(device)
    tokens = report_tokens(data.reports, encoder)
    modules = {"encoder": encoder, "loss": loss}
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]  # vision.freeze
    optimizer = torch.optim.AdamW(params, lr=ctx.training.clip_lr, weight_decay=0.01)
    encoder.train()

    def train_step(step: Step):
        out = contrastive_loss(encoder, loss, jitter(step.images, step.rows, step.number, seed),
                               tokens[step.rows].to(device), data.label_status[step.rows])
        return out.total, {"info_nce": float(out.info_nce.detach()), "margin": float(out.margin.detach())}

    # In-batch contrast: every rank computes the whole batch (no sharding, no accumulation).
    losses = ctx.steps(
        "contrastive", len(data), ctx.training.vision_batch, ctx.training.clip_epochs, modules, optimizer,
        train_step, images=data.images, shard=False,
    )
    encoder.eval()
    ctx.write(lambda: torch.save(encoder.state_dict(), ctx.checkpoints.folder / "towers.pt"))
    encoder = encoder.cpu()
    val = alignment_report(encoder, ctx.val_set.images, report_tokens(ctx.val_set.reports, encoder),
                           ctx.training.clip_pca_dim)
    terms = ctx.terms_tail("contrastive")
    return {
        "final_loss": loss_tail(losses), "temperature": round(loss.temperature, 4),
        "final_info_nce": terms.get("info_nce"), "final_margin": terms.get("margin"),
        "val_retrieval": val,
    }
