"""`rrg-eval --server`: drafts through a running `rrg serve` with the OpenAI client, concurrently,
and scores the same as drafting in-process with the same bundle."""

from __future__ import annotations

import json

import pytest

from eval.cli import main
from rrg.data.manifest import read_manifest
from serving.launch import ServerFailedError, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_server(micro_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-server")
    try:
        with running_server(micro_bundle, "hf", folder / "server.log") as url:
            yield url
    except ServerFailedError as error:
        pytest.fail(str(error))


def _records(out) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def test_server_mode_gives_the_in_process_drafts_and_scores(hf_server, micro_bundle, micro_data, tmp_path, capsys):
    common = ["--data", str(micro_data), "--max-tokens", "8", "--quiet"]
    served, local = tmp_path / "served", tmp_path / "local"
    assert main(["--server", hf_server, "--concurrency", "3", "--out", str(served), *common]) == 0
    assert main(["--bundle", str(micro_bundle), "--out", str(local), *common]) == 0
    capsys.readouterr()
    test_ids = [r["id"] for r in read_manifest(micro_data) if r["split"] == "test"]
    by_server, in_process = _records(served), _records(local)
    assert list(by_server) == test_ids  # written back in the split's order, whatever order they came in
    for study in test_ids:
        assert by_server[study]["prediction"] == in_process[study]["prediction"]
        assert by_server[study]["neighbors"] == in_process[study]["neighbors"]
    metrics = json.loads((served / "metrics.json").read_text())
    assert metrics["source"]["kind"] == "server" and metrics["source"]["model"] == "test-micro-lora"
    local_metrics = json.loads((local / "metrics.json").read_text())
    for key in ("ce/pos/example/all14/f1", "nlg/bleu4", "nlg/meteor", "nlg/cider", "retrieval/label_precision@1"):
        assert metrics[key] == pytest.approx(local_metrics[key])


def test_server_errors_name_the_study_and_keep_what_finished(hf_server, micro_data, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    good = next(r for r in read_manifest(micro_data) if r["split"] == "test")
    (data / "good.png").write_bytes((micro_data / good["image"]).read_bytes())
    (data / "bad.png").write_bytes(b"this is not a png")
    rows = [{"id": "good", "split": "test", "report": "Normal.", "image": "good.png"},
            {"id": "bad", "split": "test", "report": "Normal.", "image": "bad.png"}]
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main(["--server", hf_server, "--concurrency", "1", "--data", str(data), "--out", str(out), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rrg-eval: error: study bad: the server answered 400" in err
    assert list(_records(out)) == ["good"]  # finished before the failure, kept for a rerun


def test_unreachable_server_is_a_plain_error(micro_data, tmp_path, capsys):
    code = main(["--server", "http://127.0.0.1:9", "--data", str(micro_data), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "cannot reach the server at http://127.0.0.1:9" in capsys.readouterr().err
