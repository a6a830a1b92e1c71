"""MedFuse-CLIP pre-training of the open_clip model's two towers on image-report pairs: the report
tokens and the held-out evaluation (the loss is `rrg.training.losses.contrastive_loss`).

The vision encoder is an open_clip CLIP whose text tower is built and saved with it; this stage
trains both towers with MedFuse-CLIP's objective (`retrieval.medfuse_clip`: symmetric InfoNCE with
a learnable temperature, plus a margin over hard negatives), before the supervised vision stage
starts from the pre-trained image tower. Reports are tokenised with open_clip's own BPE (shipped
in its wheel, 77 tokens).

Hard negatives: the data sets here have no patient ids (IU X-Ray), so every other report of the
batch with another label-status vector may be one, and the loss keeps the K closest in text. The
paper weighs them by a Clinical-BERT similarity (eq. 8); here the text tower's own embeddings,
detached, stand in for it.

Evaluation (`alignment_report`): Recall@1/5/10 and median rank in both directions on a held-out
split, and the same after PCA to a smaller dimension with float16 storage.
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch

from retrieval.compression import recall_kept
from rrg.model.vision import VisionEncoder


def report_tokens(reports: Sequence[str], encoder: VisionEncoder) -> torch.Tensor:
    """(N, context) open_clip BPE token ids of the reports, cut to the text tower's context."""
    text_cfg = encoder.clip_config["text_cfg"]
    tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg["context_length"])
    if text_cfg["vocab_size"] < tokenizer.vocab_size:
        raise ValueError(
            f"the text tower's vocabulary ({text_cfg['vocab_size']}) is smaller than open_clip's BPE "
            f"({tokenizer.vocab_size}): set text_cfg.vocab_size in the open_clip config"
        )
    return tokenizer(list(reports))


@torch.no_grad()
def alignment_report(
    encoder: VisionEncoder, images: torch.Tensor, tokens: torch.Tensor, pca_dim: int, batch: int = 128
) -> dict:
    """Cross-modal retrieval on a held-out split, full and PCA-compressed to float16."""
    image_embeddings = torch.cat([encoder(images[i : i + batch]).pooled for i in range(0, len(images), batch)])
    text_embeddings = torch.cat([encoder.clip.encode_text(tokens[i : i + batch]) for i in range(0, len(tokens), batch)])
    report = recall_kept(image_embeddings.cpu().numpy(), text_embeddings.cpu().numpy(), min(pca_dim, len(images)))
    return {
        "image_to_text": report["full"]["image_to_text"],
        "text_to_image": report["full"]["text_to_image"],
        f"pca{report['dim']}_fp16": {
            "image_to_text": report["compressed"]["image_to_text"],
            "text_to_image": report["compressed"]["text_to_image"],
            "kept": report["kept"],
            "bytes_per_vector": report["bytes_per_vector"],
        },
    }
