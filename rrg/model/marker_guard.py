"""No de-identification marker in a draft: the tokens that would write one are never drawn.

The texts every model learns from have their markers taken out (`rrg.data.deidentified`), and the demo
tokenizer is trained on those texts, so it has no token for "XXXX" or "___". But a byte-level or
pretrained vocabulary can still spell one from pieces ("X" then "X"), and a pretrained base (Mistral)
has whole marker tokens from its own pre-training. So drafting bans them:

- a token whose text holds a marker ("XX" or "__" and longer) is never drawn;
- a token that starts with "X" ("_") is not drawn after one that ends with "X" ("_").

transformers' generate() takes the exact rule as a logits processor (`MarkerGuard.processor`). vLLM takes
`bad_words` (`MarkerGuard.bad_words`): the marker tokens and the two-piece spellings "XX" and "__" as its
tokenizer splits them.
"""

from __future__ import annotations

import functools

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

# The characters a marker is a run of (IU X-Ray's "XXXX", MIMIC-CXR's "___"), as rrg.data.deidentified reads them.
MARKER_CHARACTERS = ("X", "_")
# SentencePiece vocabularies (Mistral's) spell a byte they have no piece for as "<0xNN>".
_BYTE_PIECES = {f"<0x{ord(c):02X}>": c for c in MARKER_CHARACTERS}


def _token_text(piece: str) -> str:
    """A vocabulary entry's characters; ASCII letters and "_" read the same in byte-level and SentencePiece."""
    return _BYTE_PIECES.get(piece, piece)


class MarkerGuard:
    """Which tokens of a vocabulary can write a de-identification marker."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        size = len(tokenizer)
        texts = [_token_text(piece or "") for piece in tokenizer.convert_ids_to_tokens(list(range(size)))]
        self.vocab_size = size
        self.marker_tokens = [i for i, t in enumerate(texts) if any(c * 2 in t for c in MARKER_CHARACTERS)]
        self.marker_texts = sorted({tokenizer.decode([i]).strip() for i in self.marker_tokens} - {""})
        # For each marker character: the tokens ending with it, and the (B,) mask of those starting with it.
        # On the CPU whatever the model's device: one guard per tokenizer serves every model; `banned`
        # looks up on the CPU and the logits processor moves its answer to the scores' device.
        self._ending = {
            c: torch.tensor([t.endswith(c) for t in texts], device="cpu") for c in MARKER_CHARACTERS
        }
        self._starting = {
            c: torch.tensor([t.startswith(c) for t in texts], device="cpu") for c in MARKER_CHARACTERS
        }
        self._always = torch.zeros(size, dtype=torch.bool, device="cpu")
        self._always[self.marker_tokens] = True

    def banned(self, previous: torch.Tensor | None) -> torch.Tensor:
        """(B, V) True for the tokens that may not follow each row's `previous` token ((B,) ids, or None)."""
        if previous is None:
            return self._always[None]
        banned = self._always.expand(len(previous), -1).clone()
        for c in MARKER_CHARACTERS:
            after = self._ending[c][previous.clamp(max=self.vocab_size - 1).cpu()]  # (B,)
            banned |= after[:, None] & self._starting[c][None]
        return banned

    def processor(self) -> LogitsProcessor:
        """The rule as a transformers logits processor."""
        return _MarkerBan(self)

    def bad_words(self) -> list[str]:
        """The rule as vLLM's `SamplingParams.bad_words`."""
        return [c * 2 for c in MARKER_CHARACTERS] + self.marker_texts


class _MarkerBan(LogitsProcessor):
    def __init__(self, guard: MarkerGuard):
        self.guard = guard

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # With inputs_embeds, generate()'s input_ids hold only the generated tokens (none at the first step).
        previous = input_ids[:, -1] if input_ids.shape[1] else None
        banned = self.guard.banned(previous).to(scores.device)  # (B, V)
        width = min(scores.shape[-1], banned.shape[-1])  # a model's head can be wider than its vocabulary
        scores = scores.clone()
        scores[:, :width] = scores[:, :width].masked_fill(banned[:, :width], float("-inf"))
        return scores


@functools.lru_cache(maxsize=8)
def marker_guard(tokenizer: PreTrainedTokenizerBase) -> MarkerGuard:
    """The guard of a tokenizer, built once per tokenizer object."""
    return MarkerGuard(tokenizer)
