"""Stage 4, index: the training studies, for retrieving reference reports. Their image embeddings
(cosine), or the LRE trained on their entity logits by REVTAF's ranking loss and their points on the
ball (hyperbolic); either way, how close in labels the references of validation studies are."""

from __future__ import annotations

import geoopt
import numpy as np
import torch

from retrieval.metrics import mean_top1_hamming
from rrg.bundle import INDEX, replace_part
from rrg.model import factory
from rrg.model.references import ReferenceRetriever
from rrg.training.loop import Step, TrainingRun
from rrg.training.losses import loss_tail, ranking_loss

NAME = "index"
SEED_OFFSET = 2


def run(ctx: TrainingRun) -> dict:
    encoder, heads = ctx.trained_vision()
    data = ctx.train_set
    pooled, _ = ctx.encode(encoder, data.images)
    with torch.no_grad():
        entity_logits = heads(pooled.to(ctx.device))[1].float().cpu()
    summary, enhancer = {}, None
    if ctx.config.retrieval.kind == "hyperbolic":
        enhancer, summary["retriever_final_loss"] = _train_enhancer(ctx, entity_logits, data.label_status)
        ctx.write(lambda: torch.save(enhancer.state_dict(), ctx.checkpoints.folder / "enhancer.pt"))
    retriever = ReferenceRetriever.build(pooled, entity_logits, data.ids, data.reports, enhancer)
    ctx.write(lambda: replace_part(ctx.out / INDEX, retriever.index.save))
    # How close in labels the top reference of each validation study is (REVTAF eq. 6).
    val_pooled, _ = ctx.encode(encoder, ctx.val_set.images)
    with torch.no_grad():
        val_entity_logits = heads(val_pooled.to(ctx.device))[1].float().cpu()
    top = [found[0].id for found in retriever.search(val_pooled, val_entity_logits, 1)]
    row_of = {study_id: row for row, study_id in enumerate(data.ids)}
    rows = [row_of[study_id] for study_id in top]
    hamming = mean_top1_hamming(ctx.val_set.label_status, data.label_status[rows])
    return {"references": len(retriever.index), **summary, "val_mean_top1_hamming": round(hamming, 3)}


def _train_enhancer(ctx: TrainingRun, entity_logits: torch.Tensor, status: np.ndarray):
    """REVTAF's LRE on the training studies' entity logits: the in-batch ranking loss of eq. 7."""
    device = ctx.device
    enhancer = factory.retrieval_enhancer(ctx.config.retrieval).to(device)
    status, entity_logits = torch.from_numpy(status).to(device), entity_logits.to(device)
    trainable = [p for p in enhancer.parameters() if p.requires_grad]  # not the ball's curvature
    optimizer = geoopt.optim.RiemannianAdam(trainable, lr=ctx.training.retriever_lr)
    enhancer.train()

    def train_step(step: Step) -> torch.Tensor:
        return ranking_loss(enhancer.pairwise_distances(enhancer(entity_logits[step.rows])), status[step.rows])

    # The ranking compares the studies of a batch with each other: every rank computes the whole batch.
    # Float32 always: points near the ball's boundary need more than bfloat16's 8 bits of mantissa.
    losses = ctx.steps(
        "retriever", len(status), ctx.training.retriever_batch, ctx.training.retriever_epochs,
        {"enhancer": enhancer}, optimizer, train_step, shard=False, autocast=False,
    )
    return enhancer.eval().cpu(), loss_tail(losses)
