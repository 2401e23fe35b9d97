"""Triton for GPU hosts, checked on the CPU: model_warmup per batch bucket and the instance kind
in config.pbtxt, fp16 export plumbing, and the server honouring KIND_GPU (one clear error
where there is no CUDA) and running the warm-up batches."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
import torch

from cloudseg.restore.backends import PipelineError
from cloudseg.triton import server
from cloudseg.triton.export import export_repository, render_config
from cloudseg.triton.local import triton_python
from cloudseg.triton.pbtxt import parse_pbtxt
from cloudseg.triton.serve import server_command


def _config(**options) -> dict:
    return parse_pbtxt(render_config("m", (32, 64), (128, 256), **options))


def test_config_has_a_warmup_per_bucket_and_the_kind():
    config = _config(max_batch_size=8, kind="KIND_GPU")
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    warmups = config["model_warmup"]
    assert [w["batch_size"] for w in warmups] == [1, 2, 4, 8]
    for w in warmups:
        assert w["name"] == f"batch_{w['batch_size']}"
        assert w["inputs"] == {
            "key": "lr",
            "value": {"data_type": "TYPE_UINT8", "dims": [32, 64, 3], "zero_data": True},
        }
    odd = _config(max_batch_size=6, preferred_batch_sizes=(2, 6), kind="KIND_CPU")
    assert [w["batch_size"] for w in odd["model_warmup"]] == [1, 2, 4, 6]
    assert odd["instance_group"][0]["kind"] == "KIND_CPU"
    one = _config(max_batch_size=1, preferred_batch_sizes=(1,))
    assert [w["batch_size"] for w in one["model_warmup"]] == [1]


def test_half_precision_needs_gpu_instances(tmp_path):
    assert _config(dtype="fp16", kind="KIND_GPU")["instance_group"][0]["kind"] == "KIND_GPU"
    with pytest.raises(ValueError, match="GPU instances"):
        render_config("m", (32, 64), (128, 256), dtype="fp16", kind="KIND_CPU")
    with pytest.raises(ValueError, match="GPU instances"):  # before any model is built
        export_repository(tmp_path, dtype="fp16", kind="KIND_CPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU host's answer")
def test_fp16_export_on_a_cpu_host_says_it_needs_cuda(tmp_path):
    with pytest.raises(PipelineError, match="needs CUDA"):
        export_repository(tmp_path, dtype="fp16", device="cpu", kind="KIND_GPU")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 export traces on CUDA only")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fp16_export_runs_in_half_precision_on_cuda(tmp_path):
    (model,) = export_repository(
        tmp_path,
        modes=("sr",),
        camera_size=(256, 128),
        device="cuda",
        dtype="fp16",
        sr_weights=None,
        seg_weights=None,
        allow_untrained=True,
    )
    traced = torch.jit.load(str(model.path / "1" / "model.pt"), map_location="cuda")
    assert {p.dtype for p in traced.parameters()} == {torch.float16}
    out = traced(torch.zeros((3, 32, 64, 3), dtype=torch.uint8, device="cuda"))
    assert out.dtype == torch.uint8 and out.shape[0] == 3
    params = parse_pbtxt((model.path / "config.pbtxt").read_text())["parameters"]
    assert {"key": "dtype", "value": {"string_value": "fp16"}} in params


def test_server_picks_each_models_device(capsys):
    gpu, cpu = _config(kind="KIND_GPU"), _config(kind="KIND_CPU")
    auto = _config(kind="KIND_AUTO")
    half = _config(kind="KIND_GPU", dtype="fp16", parameters={"dtype": "fp16"})
    assert server.model_device("m", gpu, None, cuda=True) == "cuda"
    assert server.model_device("m", cpu, None, cuda=True) == "cpu"
    assert server.model_device("m", cpu, "KIND_GPU", cuda=True) == "cuda"  # --kind overrides
    assert server.model_device("m", auto, None, cuda=False) == "cpu"
    assert "KIND_AUTO and no CUDA here" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"m needs GPU instances \(KIND_GPU\).*--kind KIND_CPU"):
        server.model_device("m", gpu, None, cuda=False)
    with pytest.raises(SystemExit, match=r"needs CUDA \(fp16 weights\)"):
        server.model_device("m", half, "KIND_CPU", cuda=False)


def test_server_warm_up_runs_every_bucket():
    seen = []

    class Model:
        def __call__(self, x):
            seen.append((tuple(x.shape), x.dtype, x.device.type))
            return x

    config = _config(max_batch_size=4, preferred_batch_sizes=(2, 4))
    assert server.warm_up(Model(), config, torch, "cpu") == [1, 2, 4]
    assert seen == [((b, 32, 64, 3), torch.uint8, "cpu") for b in (1, 2, 4)]


def test_serve_passes_kind_only_when_given(tmp_path):
    args = argparse.Namespace(
        address="127.0.0.1",
        grpc_port=1,
        http_port=2,
        metrics_port=3,
        threads=1,
        workspace=None,
        models=None,
        kind=None,
    )
    assert "--kind" not in server_command(Path("py"), tmp_path, args)
    args.kind = "KIND_GPU"
    assert server_command(Path("py"), tmp_path, args)[-2:] == ["--kind", "KIND_GPU"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU host's answer")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_serve_kind_gpu_on_a_cpu_host_fails_with_one_line(tmp_path):
    python = triton_python()
    if python is None:
        pytest.skip("no .venv-triton (scripts/setup.sh --triton)")
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(render_config("m", (32, 64), (128, 256)))
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(model_dir / "1" / "model.pt"))
    cmd = [str(python), str(Path(server.__file__)), "--model-repository", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "m needs GPU instances (KIND_GPU)" in out.stderr
    assert "ready" not in out.stdout
