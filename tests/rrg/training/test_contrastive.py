"""MedFuse-CLIP pre-training of the two open_clip towers: it learns, it reports recall, and the vision
stage starts from what it learnt."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from retrieval.medfuse_clip import MedFuseLoss
from rrg.bundle import Bundle
from rrg.model.vision import VisionEncoder, open_clip_config
from rrg.training.contrastive import alignment_report, report_tokens
from rrg.training.losses import contrastive_loss

REPORTS = [
    "The heart is normal in size. The lungs are clear.",
    "Large right pleural effusion.",
    "Cardiomegaly with pulmonary edema.",
    "Left lower lobe atelectasis.",
]


def test_contrastive_steps_align_images_with_their_reports():
    torch.manual_seed(0)
    encoder = VisionEncoder(open_clip_config("rrg-vit-micro-clip"))
    loss = MedFuseLoss()
    images = torch.rand(4, 1, 32, 32)
    tokens = report_tokens(REPORTS, encoder)
    assert tokens.shape == (4, encoder.clip_config["text_cfg"]["context_length"])
    status = np.eye(4, 8, dtype=np.uint8)  # four different label vectors: all pairs are negatives
    optimizer = torch.optim.AdamW([*encoder.parameters(), *loss.parameters()], lr=1e-3)
    first = None
    for _ in range(30):
        out = contrastive_loss(encoder, loss, images, tokens, status)
        first = first if first is not None else float(out.total)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
    assert float(out.total) < 0.5 * first
    encoder.eval()
    report = alignment_report(encoder, images, tokens, pca_dim=2)
    assert report["image_to_text"]["recall@1"] == 1.0 and report["text_to_image"]["median_rank"] == 1.0
    assert set(report["pca2_fp16"]) == {"image_to_text", "text_to_image", "kept", "bytes_per_vector"}


def test_pretrained_towers_reach_the_bundle(micro_hyperbolic_bundle, micro_bundle):
    summary = Bundle.open(micro_hyperbolic_bundle).facts["training_summary"]["contrastive"]
    for direction in ("image_to_text", "text_to_image"):
        assert set(summary["val_retrieval"][direction]) == {"recall@1", "recall@5", "recall@10", "median_rank"}
    assert "pca4_fp16" in summary["val_retrieval"] and 0 < summary["temperature"] < 1
    # The vision stage trains the image tower only: without pre-training the text tower keeps its
    # random initialisation (the vision stage's seed); with it, the vision stage started from the
    # trained towers, so the saved text tower is another.
    key = "clip.transformer.resblocks.0.attn.in_proj_weight"
    for bundle, config, pretrained in ((micro_bundle, "rrg-vit-micro", False),
                                       (micro_hyperbolic_bundle, "rrg-vit-micro-clip", True)):
        torch.manual_seed(0 + 1)  # training.seed + the vision stage's offset
        fresh = VisionEncoder(open_clip_config(config)).state_dict()[key]
        assert torch.equal(load_file(bundle / "vision" / "model.safetensors")[key], fresh) is not pretrained


def test_a_text_tower_too_small_for_the_bpe_is_refused():
    import pytest

    with pytest.raises(ValueError, match="smaller than open_clip's BPE"):
        report_tokens(REPORTS, VisionEncoder(open_clip_config("rrg-vit-micro")))
