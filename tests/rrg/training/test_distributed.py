"""`rrg train` under torchrun: the global batch shared by the ranks, DistributedDataParallel keeping them
equal, only rank 0 writing, and a run that resumes on another number of ranks; on gloo (CPU), the same
code path NCCL takes on GPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rrg.training.checkpoints import batch_at, epoch_order, steps_per_epoch
from rrg.training.distributed import Ranks

PARTS = ("vision/model.safetensors", "modules.safetensors", "lora/adapter_model.safetensors", "llm/model.safetensors")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _tensors(bundle: Path) -> dict[str, torch.Tensor]:
    return {f"{part}:{k}": v for part in PARTS for k, v in load_file(bundle / part).items()}


def _assert_close_bundles(expected: Path, got: Path, atol: float = 2e-3) -> None:
    a, b = _tensors(expected), _tensors(got)
    assert a.keys() == b.keys()
    worst = max((float((a[k] - b[k]).abs().max()), k) for k in a)
    assert worst[0] < atol, f"largest difference {worst[0]:.2e} in {worst[1]}"


def _summaries(bundle: Path) -> dict:
    stages = json.loads((bundle / "config.json").read_text())["training_summary"]
    return {name: {k: v for k, v in summary.items() if k != "seconds"} for name, summary in stages.items()}


def test_the_ranks_parts_of_each_batch_are_disjoint_and_cover_the_epoch():
    count, batch = 37, 8
    for world in (1, 2, 3, 4):
        for accumulate in (1, 2):
            seen = []
            for step in range(steps_per_epoch(count, batch)):
                whole = batch_at(step, count, batch, seed=5)
                parts = [np.array_split(Ranks(rank=r, world=world).shard(whole), accumulate) for r in range(world)]
                flat = [i for rank_parts in parts for part in rank_parts for i in part]
                assert flat == list(whole)  # in order, each study once
                seen += flat
            assert len(seen) == len(set(seen)) == steps_per_epoch(count, batch) * batch
            assert set(seen) <= set(epoch_order(count, 5, 0).tolist())
    with pytest.raises(ValueError, match="cannot be shared"):
        Ranks(rank=0, world=4).shard(np.arange(3))


# The loop alone, under torchrun: a small regression whose loss is a share of the whole batch's mean.
_LOOP_SCRIPT = r'''
import json, sys
from pathlib import Path
import numpy as np, torch
from torch import nn
from rrg.config import load_model_config
from rrg.training.loop import TrainingRun
from rrg.training.distributed import Ranks

out, accumulate = Path(sys.argv[1]), int(sys.argv[2])
ranks = Ranks.from_environment("cpu")
config = load_model_config("test-micro").replace(training={"accumulate": accumulate, "checkpoint_every": 1000})
ctx = TrainingRun(out / "data", out / "bundle", config, progress=False, log=lambda m: None, ranks=ranks)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
features, targets = torch.randn(40, 4, generator=torch.Generator().manual_seed(1)), torch.randn(40, 3, generator=torch.Generator().manual_seed(2))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
seen = []

def train_step(step):
    seen.append([int(i) for i in step.rows])
    error = (model(features[step.rows]) - targets[step.rows]) ** 2
    return error.sum() / (len(step.whole) * 3)

ctx.steps("toy", 40, 8, 3, {"model": model}, optimizer, train_step)
weights = {k: v.tolist() for k, v in model.state_dict().items()}
(out / f"rank{ranks.rank}.json").write_text(json.dumps({"weights": weights, "seen": seen, "world": ranks.world}))
ranks.close()
'''


def _run_loop(tmp_path: Path, name: str, ranks: int, accumulate: int) -> list[dict]:
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "loop_script.py"
    script.write_text(_LOOP_SCRIPT)
    command = [*TORCHRUN, f"--nproc_per_node={ranks}", str(script), str(out), str(accumulate)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


def _weights(result: dict) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v) for k, v in result["weights"].items()}


def test_two_gloo_ranks_and_accumulation_train_as_one_process_on_the_whole_batch(tmp_path):
    single = _run_loop(tmp_path, "one", 1, 1)[0]
    pair = _run_loop(tmp_path, "two", 2, 1)
    accumulated = _run_loop(tmp_path, "acc", 1, 2)[0]  # 2 micro-batches of 4 = one batch of 8

    # Each rank saw its own half of every batch; together, every study of every step once.
    rank0, rank1 = pair[0]["seen"], pair[1]["seen"]
    assert len(rank0) == len(rank1) == 15  # 5 steps x 3 epochs
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        assert not set(a) & set(b)
        assert a + b == [int(i) for i in batch_at(step, 40, 8, 0)]
    assert [a + b for a, b in zip(accumulated["seen"][::2], accumulated["seen"][1::2])] == single["seen"]

    # DDP kept the ranks identical, and both equal the single process to float tolerance.
    w0, w1, w = _weights(pair[0]), _weights(pair[1]), _weights(single)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    for other in (w0, _weights(accumulated)):
        assert all(torch.allclose(other[k], w[k], atol=1e-5) for k in w)
    assert not (tmp_path / "two" / "bundle" / ".train" / "toy.pt").exists()  # finished: no checkpoint left


def _kill_processes_with(marker: str) -> None:
    """SIGKILL every process whose command line names `marker` (torchrun's workers run in their own sessions)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_torchrun_two_ranks_train_the_bundle_one_process_trains(micro_bundle, micro_data, tmp_path):
    out = tmp_path / "two-ranks"
    # Validation passes (rank 0 alone, between steps) change no weight: the bundle still matches.
    command = [*TORCHRUN, "--nproc_per_node=2", "-m", "rrg", "-q", "train", "--data", str(micro_data),
               "--out", str(out), "--config", "test-micro", "--set", "training.eval_every=4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_close_bundles(micro_bundle, out)
    assert _summaries(out) == _summaries(micro_bundle)
    facts = json.loads((out / "config.json").read_text())
    assert facts["trained_with"]["ranks"] == 2
    # Only rank 0 wrote: each step of each stage logged once, one TensorBoard run per stage.
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["stage"], r["step"], r["kind"]) for r in rows]
    assert len(keys) == len(set(keys)) and {"vision", "language", "drafting"} <= {r["stage"] for r in rows}
    assert {r["stage"] for r in rows if r["kind"] == "val"} == {"vision", "language", "drafting"}
    assert len(list((out / "logs" / "tensorboard" / "drafting").glob("events.out.tfevents.*"))) == 1
    assert not (out / ".train").exists()


@pytest.mark.slow
def test_a_two_rank_run_killed_mid_drafting_resumes_on_one_rank(micro_bundle, micro_data, tmp_path):
    out = tmp_path / "killed"
    command = [*TORCHRUN, "--nproc_per_node=2", "-m", "rrg", "-q", "train", "--data", str(micro_data),
               "--out", str(out), "--config", "test-micro"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 400
    while not (out / ".train" / "drafting.pt").is_file():  # test-micro checkpoints every 4 steps
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "training never reached a drafting-stage checkpoint"
        time.sleep(0.05)
    _kill_processes_with(str(out))  # the agent and both ranks, without warning
    process.wait()
    assert not (out / "config.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "rrg", "train", "--data", str(micro_data), "--out", str(out),
                              "--config", "test-micro"], capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "drafting: resuming at step" in resumed.stderr
    assert "reusing the frozen tower's outputs" in resumed.stderr  # the setup cache, not a new encoding
    _assert_close_bundles(micro_bundle, out)
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    drafting = [r["step"] for r in rows if r["stage"] == "drafting" and r["kind"] == "train"]
    assert drafting == sorted(set(drafting)) == list(range(1, len(drafting) + 1))  # no step lost or logged twice


def test_batches_grouped_by_length_cover_the_epoch_and_pad_less():
    from rrg.training.checkpoints import epoch_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 200, size=1000)
    for epoch in range(2):
        plain = epoch_batches(1000, 16, 3, epoch)
        grouped = epoch_batches(1000, 16, 3, epoch, lengths)
        assert [list(b) for b in plain] == [list(batch_at(epoch * 62 + i, 1000, 16, 3)) for i in range(62)]
        assert sorted(i for b in grouped for i in b) == sorted(i for b in plain for i in b)  # the same studies
        assert all(len(b) == 16 for b in grouped)
        padded = {name: sum(len(b) * lengths[b].max() for b in batches)
                  for name, batches in (("plain", plain), ("grouped", grouped))}
        assert padded["grouped"] < 0.7 * padded["plain"]
        assert [list(b) for b in grouped] == [list(b) for b in epoch_batches(1000, 16, 3, epoch, lengths)]
