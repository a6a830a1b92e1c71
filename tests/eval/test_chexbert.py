"""The CheXbert labeler, loaded from a tiny checkpoint written in the released chexbert.pth layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertTokenizerFast

from eval.chexbert import CLASSES, CheXbertLabeler, CheXbertModel, clean_report, read_checkpoint
from eval.cli import main
from prompts.text_encoder import default_encoder_folder
from prompts.vocabulary import CHEXBERT_LABELS

VOCAB_SIZE = 30522  # bert-base-uncased's, the vocabulary CheXbert's tokenizer uses


def _tiny_model(seed: int = 0) -> CheXbertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=1,
                        intermediate_size=64, max_position_embeddings=512)
    return CheXbertModel(config, with_pooler=True).eval()


def _save(model: CheXbertModel, path) -> None:
    """As the released file: DataParallel's "module." prefix, under "model_state_dict"."""
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("chexbert") / "chexbert.pth"
    model = _tiny_model()
    _save(model, path)
    return path, model


def test_the_labeler_gives_the_checkpoints_own_argmax_for_every_head(tiny_checkpoint):
    path, model = tiny_checkpoint
    reports = ["Heart size is normal.\n\nNo pleural effusion.", "Small   left effusion.", ""]
    labeler = CheXbertLabeler.load(path, batch_size=2)
    labelled = labeler.label_reports(reports)
    tokenizer = BertTokenizerFast(str(default_encoder_folder() / "vocab.txt"), do_lower_case=True)
    for report, labels in zip(reports, labelled):
        tokens = tokenizer([clean_report(report)], return_tensors="pt")
        with torch.no_grad():
            logits = model(tokens["input_ids"], tokens["attention_mask"])
        expected = [int(head.argmax()) for head in logits]
        assert list(labels) == list(CHEXBERT_LABELS)
        assert [CLASSES.index(labels[name]) for name in CHEXBERT_LABELS] == expected


def test_classes_decode_as_chexbert_codes_them(tmp_path):
    model = _tiny_model()
    with torch.no_grad():
        for i, head in enumerate(model.linear_heads):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[i % head.out_features] = 10.0  # head i says class i mod its class count
    path = tmp_path / "chexbert.pth"
    _save(model, path)
    [labels] = CheXbertLabeler.load(path).label_reports(["Cardiomegaly."])
    assert labels["Enlarged Cardiomediastinum"] == "blank"  # head 0, class 0
    assert labels["Cardiomegaly"] == "positive"  # head 1, class 1
    assert labels["Lung Opacity"] == "negative"  # head 2, class 2
    assert labels["Lung Lesion"] == "uncertain"  # head 3, class 3
    assert labels["No Finding"] == "positive"  # head 13 of 2 classes: 13 mod 2 = 1


def test_reports_are_cut_to_512_tokens():
    labeler = CheXbertLabeler(_tiny_model(), BertTokenizerFast(str(default_encoder_folder() / "vocab.txt")))
    assert len(labeler.label_reports(["effusion " * 2000])) == 1  # position embeddings stop at 512


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"state_dict": {}}, "not a CheXbert checkpoint"),
        ({"model_state_dict": {"module.linear_heads.0.weight": torch.zeros(4, 8)}}, "expected 14 heads"),
    ],
)
def test_other_files_are_refused_with_what_was_expected(tmp_path, content, words):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match=words):
        read_checkpoint(path)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read it"):
        read_checkpoint(tmp_path / "garbage.pth")


def _two_predictions(folder: Path) -> Path:
    """A predictions file of two reports, for rrg-eval's score-only mode."""
    path = folder / "p.jsonl"
    path.write_text("".join(
        json.dumps({"id": str(i), "prediction": p, "reference": r}) + "\n"
        for i, (p, r) in enumerate([("No effusion.", "Small effusion."), ("Cardiomegaly.", "Normal heart.")])
    ))
    return path


def test_rrg_eval_scores_with_chexbert_and_names_it_everywhere(tiny_checkpoint, tmp_path, capsys):
    path, _ = tiny_checkpoint
    predictions = _two_predictions(tmp_path)
    out = tmp_path / "out"
    assert main(["--predictions", str(predictions), "--labeler", "chexbert", "--chexbert-weights", str(path),
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labeler"] == "chexbert" and "ce/pos/micro/all14/f1" in metrics
    assert "labeler: chexbert" in capsys.readouterr().out
    first = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert set(first["labels"]) == {"chexbert"}
    assert (out / "per_label.csv").read_text().splitlines()[1].startswith("chexbert,")


def test_chexbert_without_weights_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--predictions", str(tmp_path / "p.jsonl"), "--labeler", "chexbert", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "needs --chexbert-weights" in capsys.readouterr().err


def test_both_labelers_label_every_report_and_are_scored_side_by_side(tiny_checkpoint, tmp_path, capsys):
    path, _ = tiny_checkpoint
    predictions = _two_predictions(tmp_path)
    out = tmp_path / "out"
    assert main(["--predictions", str(predictions), "--labeler", "both", "--chexbert-weights", str(path),
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labeler"] == "chexbert"  # the main labeler's CE is ce/...
    rules = metrics["labelers"]["rules"]
    assert "ce/pos/example/all14/f1" in rules
    assert 0.0 <= rules["agreement_with_chexbert/references"] <= 1.0
    for line in (out / "predictions.jsonl").read_text().splitlines():
        labels = json.loads(line)["labels"]
        assert set(labels) == {"chexbert", "rules"}
        assert all(len(labels[name]["prediction"]) == 14 for name in labels)
    assert labels["rules"]["reference"]["No Finding"] == "positive"  # "Normal heart."
    rows = (out / "per_label.csv").read_text().splitlines()[1:]
    assert len(rows) == 56 and {row.split(",")[0] for row in rows} == {"chexbert", "rules"}
    printed = capsys.readouterr().out
    assert "labeler: chexbert" in printed and "labeler: rules" in printed
