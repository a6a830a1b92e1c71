"""The resumable predictions.jsonl: whole lines survive, a torn one is cut, runs are not mixed."""

from __future__ import annotations

import json

import pytest

from eval.prediction_log import RUN, PredictionLog

SOURCE = {"kind": "bundle", "split": "test", "bundle": "/b", "model": "m", "max_tokens": 8, "data": "/d"}


def _record(i: int) -> dict:
    return {"id": f"s{i}", "prediction": f"draft {i}", "reference": f"report {i}"}


def test_appended_batches_are_read_back_by_a_rerun(tmp_path):
    log = PredictionLog(tmp_path, SOURCE)
    assert log.finished == {}
    log.append([_record(0), _record(1)])
    log.append(_record(i) for i in (2,))  # any iterable
    again = PredictionLog(tmp_path, SOURCE | {"data": "/moved/d"})  # paths may move
    assert list(again.finished) == ["s0", "s1", "s2"] and again.finished["s2"] == _record(2)
    assert json.loads((tmp_path / RUN).read_text())["bundle"] == "/b"


def test_a_line_torn_by_a_kill_is_cut_and_the_rest_kept(tmp_path):
    log = PredictionLog(tmp_path, SOURCE)
    log.append([_record(0), _record(1)])
    with open(log.path, "a") as handle:
        handle.write('{"id": "s2", "predic')  # killed in the middle of a write
    again = PredictionLog(tmp_path, SOURCE)
    assert list(again.finished) == ["s0", "s1"]
    assert log.path.read_text().endswith("}\n")
    again.append([_record(2)])
    assert [json.loads(line)["id"] for line in log.path.read_text().splitlines()] == ["s0", "s1", "s2"]


def test_a_rerun_of_another_bundle_or_mode_is_refused(tmp_path):
    PredictionLog(tmp_path, SOURCE).append([_record(0)])
    for other in ({"bundle": "/other"}, {"kind": "nearest baseline"}, {"max_tokens": 64}):
        with pytest.raises(ValueError, match="holds predictions of another run"):
            PredictionLog(tmp_path, SOURCE | other)


def test_a_predictions_file_rrg_eval_did_not_start_is_not_taken_over(tmp_path):
    (tmp_path / "predictions.jsonl").write_text(json.dumps(_record(0)) + "\n")
    with pytest.raises(ValueError, match="not a folder rrg-eval made"):
        PredictionLog(tmp_path, SOURCE)


def test_a_damaged_line_in_the_middle_is_an_error_not_a_silent_loss(tmp_path):
    log = PredictionLog(tmp_path, SOURCE)
    log.append([_record(0)])
    with open(log.path, "a") as handle:
        handle.write("garbage\n" + json.dumps(_record(1)) + "\n")
    with pytest.raises(ValueError, match="predictions.jsonl:2: not valid JSON"):
        PredictionLog(tmp_path, SOURCE)
