"""The standing GPU check on the CPU: its plan, PASS/SKIP lines, exit 0, in a process where
the ROS wheels, rosbags, mcap and cityscapesScripts cannot be imported (as on the GPU host);
and the training steps it runs there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("rclpy", "rosbags", "mcap", "cityscapesscripts", "av")

_RUN_BLOCKED = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {{name}}")
sys.meta_path.insert(0, Block())
from cloudseg.bench.gpu_check import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread (2 cores shared with other processes: threads spin against each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU host's run (CUDA: run it whole)")
def test_gpu_check_runs_green_on_the_cpu(tmp_path, shared_data):
    data = tmp_path / "gpu_data"  # the caller's folder: here without frames (synthetic ones)
    data.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "CLOUDSEG_WEIGHTS": str(shared_data / "weights"),
        "CLOUDSEG_OFFLINE": "1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",  # 2 shared cores: threads spinning against each other
    }
    args = ["--size", "128x64", "--budget-s", "1", "--data", str(data)]
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_BLOCKED, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    assert lines[0].startswith("gpu check plan: cpu, camera 128x64, budget 1 s")
    planned = [m.group(1) for m in map(re.compile(r"^\s+\d+\. (.+?)( \(CUDA|$)").match, lines) if m]
    for title in (
        "environment",
        "pipeline espnetv2 fp16",
        "pipeline icnet bf16",
        "LocalInference mixed batches",
        "triton export fp16",
        "train step stream",
        "torch.compile + CUDA graphs",
    ):
        assert title in planned, planned
    status = {m[1]: m[0] for m in re.findall(r"^\[(PASS|SKIP|FAIL)\] ([^:]+):", out, re.M)}
    assert set(status) >= set(planned)  # every planned section printed a line
    assert "FAIL" not in status.values(), out
    for title in ("environment", "inputs", "LocalInference mixed batches", "triton export fp32"):
        assert status[title] == "PASS", out
    for title in planned:
        if title.startswith(("pipeline", "train step")) or "CUDA graphs" in title:
            assert status[title] == "SKIP", title
    assert "padded vs single 100.00 %" in out and "warm-up batches [1, 2, 4, 8]" in out
    assert re.search(r"^\[SKIP\] timing espnetv2 fp16 b1,8: needs CUDA", out, re.M)
    assert re.search(r"^gpu check: \d+ PASS, 0 FAIL, \d+ SKIP in \d+ s$", out, re.M)


def test_a_training_step_on_the_cpu():
    from cloudseg.bench.gpu_train import train_step

    assert "weight tensors moved" in train_step("selector", torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["sr", "finetune", "icnet", "stream"])
def test_every_training_step_on_the_cpu(trainer):
    from cloudseg.bench.gpu_train import train_step

    assert "weight tensors moved" in train_step(trainer, torch.device("cpu"))


def test_the_pipeline_section_compares_with_the_cpu_labels(weights_env):
    """The CUDA section's code on the CPU: the device pipeline (here the CPU, fp32) gets
    the models of the reference (also where they are random: ICNet), so all labels agree."""
    import argparse

    from cloudseg.bench import gpu_check

    args = argparse.Namespace(size=(128, 64), frames=1, data=None, budget_s=1, verbose=False)
    check = gpu_check.Check(args, torch.device("cpu"))
    assert "1 synthetic frames at 128x64" in gpu_check.inputs(check)
    for backend in ("espnetv2", "icnet"):
        text = gpu_check.pipeline_section(backend, "fp32")(check)
        assert text == "fp32 vs CPU fp32: sr 100.00 %, bilinear 100.00 %, full 100.00 %"
