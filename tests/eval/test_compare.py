"""`rrg-eval --compare`: finished runs side by side."""

from __future__ import annotations

import json

from eval.cli import main


def _run(folder, labeler="rules", reports=3, **metrics):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"labeler": labeler, "reports": reports, **metrics}))
    return folder


def test_runs_are_printed_side_by_side_with_a_column_each(tmp_path, capsys):
    a = _run(tmp_path / "v1", **{"ce/pos/micro/all14/f1": 0.4651, "nlg/bleu4": 0.0759})
    b = _run(tmp_path / "full", **{"ce/pos/micro/all14/f1": 0.4585})
    assert main(["--compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| metric | v1 | full |"
    assert "| ce/pos/micro/all14/f1 | 0.465 | 0.459 |" in lines
    assert "| nlg/bleu4 | 0.076 | - |" in lines  # a metric one run lacks
    assert not any(line.startswith("| nlg/rouge_l") for line in lines)  # none has it: no row
    assert not any("warning" in line for line in lines)


def test_runs_that_do_not_compare_are_flagged_and_a_missing_run_is_an_error(tmp_path, capsys):
    a = _run(tmp_path / "rules", **{"nlg/bleu4": 0.1})
    b = _run(tmp_path / "chexbert", labeler="chexbert", reports=5, **{"nlg/bleu4": 0.1})
    assert main(["--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "differ in labeler" in out and "differ in reports" in out
    assert main(["--compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "no metrics.json there" in capsys.readouterr().err
