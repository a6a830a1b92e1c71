"""The visual part of the prompt: patch tokens in, tokens in the language model's embedding space out.

    patch tokens F_v (B, N, W)
      -> [global branch] Sinkhorn attention over the GRPs (retrieved report sentences)   F_c^g
      -> [local branch]  Sinkhorn attention over the LRPs (the 75 entity triplets)        F_c^l
      -> F_c = [F_c^g ; F_c^l] along the features (REVTAF eq. 11), or F_v with fusion off
      -> projector: pooled to `vision.visual_tokens` tokens, MLP to the LLM width        (B, V, H)
      -> [clues] top-k disease clues and L learnable queries (TRRG), 2L tokens            (B, 2L, H)

Each part is switched by the model config (`fusion`, `clues`), so the v1 model (projector alone)
and every ablation are this one module. The state dict keeps the v1 projector's key names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prompts.clues import ClueInteraction, ClueOutput
from prompts.sinkhorn import MultiPromptSinkhornAttention
from rrg.config import ModelConfig
from rrg.model.projector import VisualProjector


@dataclass
class PromptTexts:
    """Encoded text prompts for a batch (from `rrg.model.prompt_texts.PromptTextEncodings`)."""

    grp: torch.Tensor | None = None  # (B, P, d) sentences of the retrieved reports
    grp_mask: torch.Tensor | None = None  # (B, P) True for real sentences
    lrp: torch.Tensor | None = None  # (B, 75, d) entity triplets
    clues: torch.Tensor | None = None  # (C, d) one embedding per clue template


@dataclass
class VisualPromptOutput:
    """Prompt tokens and what the fusion and clue modules saw on the way."""

    tokens: torch.Tensor  # (B, V [+ 2L], H)
    grp_maps: torch.Tensor | None = None  # (B, P, N) where each GRP sentence's attention fell
    lrp_maps: torch.Tensor | None = None  # (B, 75, N) the same for each entity triplet
    clues: ClueOutput | None = None


class VisualPrompt(nn.Module):
    """Fusion, projection and clues: everything between the vision encoder and the LLM."""

    def __init__(self, config: ModelConfig, token_width: int, hidden_size: int, text_dim: int | None = None):
        super().__init__()
        fusion, clues = config.fusion, config.clues
        if (fusion.enabled or clues.enabled) and text_dim is None:
            raise ValueError("fusion and clues need the text encoder's width (text_dim)")

        def branch() -> MultiPromptSinkhornAttention:
            return MultiPromptSinkhornAttention(
                token_width, text_dim, fusion.dim, heads=fusion.heads,
                eps=fusion.sinkhorn_eps, max_iter=fusion.sinkhorn_iterations, tol=fusion.sinkhorn_tol,
            )

        self.grp_attention = branch() if fusion.enabled and fusion.grp else None
        self.lrp_attention = branch() if fusion.enabled and fusion.lrp else None
        branches = (self.grp_attention is not None) + (self.lrp_attention is not None)
        fused_width = fusion.dim * branches if branches else token_width
        self.projector = VisualProjector(fused_width, hidden_size, config.vision.visual_tokens)
        self.clues = None
        if clues.enabled:
            self.clues = ClueInteraction(token_width, text_dim, clues.dim, queries=clues.queries, heads=clues.heads,
                                         k=clues.k)
            self.clue_projector = nn.Sequential(nn.LayerNorm(clues.dim), nn.Linear(clues.dim, hidden_size))

    @property
    def needs_grp(self) -> bool:
        return self.grp_attention is not None

    @property
    def needs_lrp(self) -> bool:
        return self.lrp_attention is not None

    @property
    def needs_clues(self) -> bool:
        return self.clues is not None

    def forward(self, patch_tokens: torch.Tensor, texts: PromptTexts | None = None) -> VisualPromptOutput:
        """patch_tokens: (B, N, W) from the vision encoder; texts: the encoded prompts the config needs."""
        texts = texts or PromptTexts()
        fused, grp_maps, lrp_maps = [], None, None
        if self.grp_attention is not None:
            _require(texts.grp, "GRP sentence encodings")
            grp = self.grp_attention(patch_tokens, texts.grp, texts.grp_mask)  # F_c^g (B, N, D) eq. 10-11
            fused.append(grp.fused)
            grp_maps = grp.attention_maps  # (B, P, N)
        if self.lrp_attention is not None:
            _require(texts.lrp, "LRP triplet encodings")
            lrp = self.lrp_attention(patch_tokens, texts.lrp)  # F_c^l (B, N, D) eq. 10-11
            fused.append(lrp.fused)
            lrp_maps = lrp.attention_maps  # (B, 75, N)
        features = torch.cat(fused, dim=-1) if fused else patch_tokens  # F_c = [F_c^g ; F_c^l] (B, N, 2D)
        tokens = self.projector(features)  # (B, V, H)
        clue_output = None
        if self.clues is not None:
            _require(texts.clues, "clue template encodings")
            # TRRG's v_cls: the mean of the visual tokens
            clue_output = self.clues(patch_tokens, patch_tokens.mean(dim=1), texts.clues)
            tokens = torch.cat([tokens, self.clue_projector(clue_output.tokens)], dim=1)  # (B, V + 2L, H)
        return VisualPromptOutput(tokens, grp_maps, lrp_maps, clue_output)


def _require(value: torch.Tensor | None, what: str) -> None:
    if value is None:
        raise ValueError(f"this model's config fuses {what}, but none were given")
