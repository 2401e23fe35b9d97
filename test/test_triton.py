"""Triton scale-out on the CPU, with real Cityscapes frames and the real CARN-M + ESPNetv2 weights.

* ``cloudseg export triton``: the TorchScript of each (scale, mode) gives the eager pipeline's
  labels, and config.pbtxt says what Triton needs (checked by parsing it).
* ``cloudseg serve`` x 2 (pytriton in .venv-triton, skipped without it) + ``TritonInference``:
  batches spread over both servers (client counters and each server's own metrics), labels equal
  the local pipeline's; one server stopped: labels keep coming from the other; restarted: the
  client uses it again; both stopped: a clear error.

Reduced resolution so that it runs on 2 shared cores: a 256x128 camera (the 2048x1024 frames
area-downsampled by 8), x4 stream (LR 64x32), SR x4 / bilinear to 256x128 and ESPNetv2 there.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudseg.cli import main as cli_main
from cloudseg.data.cityscapes import load_rgb
from cloudseg.media.resize import downsample
from cloudseg.restore.pipeline import RestorationPipeline
from cloudseg.triton.export import export_repository, model_name
from cloudseg.triton.local import running_servers, triton_python
from cloudseg.triton.pbtxt import parse_pbtxt
from cloudseg.triton.serve import SETUP_COMMAND, ServeError, find_triton_python
from support import wait_until

CAMERA = (256, 128)  # reduced camera size (W, H) for the CPU
SCALE = 4
FRAMES = (
    "frankfurt/frankfurt_000000_000294",
    "frankfurt/frankfurt_000000_000576",
    "lindau/lindau_000005_000019",
    "munster/munster_000061_000019",
)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread here (the servers run with one too): on 2 cores shared with other
    processes, two OpenMP threads spin against each other (measured: export 26 s -> 7 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights(shared_data: Path) -> dict[str, Path]:
    return {
        "sr": shared_data / "weights/carn/carn_m.pth",
        "seg": shared_data / "weights/espnetv2/espnetv2_s_2.0_city_1024x512.pth",
    }


@pytest.fixture(scope="module")
def lr(shared_data: Path) -> np.ndarray:
    """Four real frames as the x4 stream of a 256x128 camera: (4, 32, 64, 3) uint8."""
    frames = []
    for name in FRAMES:
        path = shared_data / f"cityscapes/leftImg8bit/val/{name}_leftImg8bit.png"
        camera = downsample(load_rgb(path), 2048 // CAMERA[0], "area")
        frames.append(downsample(camera, SCALE, "area"))
    return np.stack(frames)


@pytest.fixture(scope="module")
def local(weights: dict[str, Path]) -> RestorationPipeline:
    """The cloud's local pipeline, as LocalInference would run it."""
    return RestorationPipeline(
        "carn_m", "espnetv2", sr_weights=weights["sr"], seg_weights=weights["seg"], scale=SCALE
    )


@pytest.fixture(scope="module")
def expected(local: RestorationPipeline, lr: np.ndarray) -> dict[str, np.ndarray]:
    return {mode: local.process(lr, mode).labels.numpy() for mode in ("sr", "bilinear")}


@pytest.fixture(scope="module")
def repository(tmp_path_factory, weights, lr) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("triton_repo")
    models = export_repository(
        out,
        scales=(SCALE,),
        modes=("sr", "bilinear"),
        camera_size=CAMERA,
        sr_weights=weights["sr"],
        seg_weights=weights["seg"],
        check_frames={SCALE: lr[:2]},  # the test below checks all four
        max_batch_size=4,
        preferred_batch_sizes=(2, 4),
        max_queue_delay_us=1000,
        instances=1,
        kind="KIND_CPU",
    )
    return out, models


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated:DeprecationWarning")
def test_export_traces_agree_with_eager_pipeline_and_config_parses(
    repository, lr, expected
) -> None:
    out, models = repository
    assert [m.name for m in models] == ["cloudseg_x4_sr", "cloudseg_x4_bilinear"]
    for model in models:
        mode = model.name.rsplit("_", 1)[1]
        assert model.name == model_name(SCALE, mode)
        assert model.agreement is not None and model.agreement >= 0.995, model
        traced = torch.jit.load(str(out / model.name / "1" / "model.pt"), map_location="cpu")
        with torch.no_grad():  # batch sizes other than the trace's (2)
            one = traced(torch.from_numpy(lr[:1])).numpy()
            three = traced(torch.from_numpy(lr[1:])).numpy()
        got = np.concatenate([one, three])
        assert got.dtype == np.uint8 and got.shape == (4, CAMERA[1], CAMERA[0])
        assert (got == expected[mode]).mean() >= 0.995
        assert len(np.unique(got)) > 3  # real scenes: road, building, car, ...

        config = parse_pbtxt((out / model.name / "config.pbtxt").read_text())
        assert config["name"] == model.name
        assert config["platform"] == "pytorch_libtorch"
        assert config["max_batch_size"] == 4
        (inp,) = config["input"]
        assert inp == {"name": "lr", "data_type": "TYPE_UINT8", "dims": [32, 64, 3]}
        (outp,) = config["output"]
        assert outp == {"name": "labels", "data_type": "TYPE_UINT8", "dims": [128, 256]}
        assert config["dynamic_batching"] == {
            "preferred_batch_size": [2, 4],
            "max_queue_delay_microseconds": 1000,
        }
        assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
        params = {p["key"]: p["value"]["string_value"] for p in config["parameters"]}
        assert params["mode"] == mode and params["scale"] == "4"
        assert params["reduced_by"] == "1" and params["camera_size"] == "256x128"


def test_pbtxt_reader_handles_comments_repeats_and_bad_text() -> None:
    text = '# c\nname: "m"  # trailing\nmax_batch_size: 8\nx { a: 1 }\nx { a: 2 }\nf: 1.5\nb: true'
    assert parse_pbtxt(text) == {
        "name": "m",
        "max_batch_size": 8,
        "x": [{"a": 1}, {"a": 2}],
        "f": 1.5,
        "b": True,
    }
    with pytest.raises(ValueError):
        parse_pbtxt("a { b: 1")


def test_cli_help_and_missing_triton_env(tmp_path, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["export", "triton", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "model repository" in text and "--preferred-batch-sizes" in text
    with pytest.raises(SystemExit) as exc:
        cli_main(["serve", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--grpc-port" in text and "--model-repository" in text and SETUP_COMMAND in text

    monkeypatch.delenv("CLOUDSEG_TRITON_PYTHON", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ServeError, match=re.escape(SETUP_COMMAND)):
        find_triton_python()
    assert cli_main(["serve", "--model-repository", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and SETUP_COMMAND in err and ".venv-triton" in err


# --- two servers, one client ------------------------------------------------------------------


@pytest.fixture
def servers(repository, tmp_path):
    if triton_python() is None:
        pytest.skip(f"no .venv-triton (nvidia-pytriton, numpy<2): run {SETUP_COMMAND}")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
    repo, models = repository
    with running_servers(repo, [m.name for m in models], 2, tmp_path) as pair:
        yield pair


def test_two_servers_spread_batches_fail_over_and_come_back(
    servers, repository, lr, expected, caplog
) -> None:
    from cloudseg.triton.client import NoServerError, TritonInference

    caplog.set_level(logging.INFO, logger="cloudseg.triton.client")
    a, b = servers
    sr, bilinear = model_name(SCALE, "sr"), model_name(SCALE, "bilinear")
    with TritonInference([a.url, b.url], timeout_s=30, health_interval_s=0.5) as client:
        # 1. batches spread round robin over both; labels are the local pipeline's
        for i in range(4):
            result = client.infer(lr[i % 2 * 2 : i % 2 * 2 + 2], SCALE)
            assert result.restored is None and result.ms > 0
            assert result.labels.shape == (2, CAMERA[1], CAMERA[0])
            want = expected["sr"][i % 2 * 2 : i % 2 * 2 + 2]
            assert (result.labels == want).mean() >= 0.995
        # a batch over the model's max_batch_size (4) is split, not refused
        big = client.infer(np.concatenate([lr, lr[:2]]), SCALE, sr_bypass=True)
        assert (big.labels[:4] == expected["bilinear"]).mean() >= 0.995
        counts = {s["url"]: s["batches"] for s in client.servers()}
        assert counts[a.url] >= 2 and counts[b.url] >= 2, counts
        assert a.metrics()[sr] >= 2 and b.metrics()[sr] >= 2  # the servers' own counters

        # 2. one server stops: the stream goes on on the other, no exception, logged once
        b.stop()
        before = {s["url"]: s["batches"] for s in client.servers()}
        for i in range(4):
            result = client.infer(lr[i % 2 * 2 : i % 2 * 2 + 2], SCALE, sr_bypass=True)
            want = expected["bilinear"][i % 2 * 2 : i % 2 * 2 + 2]
            assert (result.labels == want).mean() >= 0.995
        state = {s["url"]: s for s in client.servers()}
        assert not state[b.url]["up"] and state[b.url]["failures"] >= 1
        assert state[a.url]["batches"] - before[a.url] == 4
        downs = [r for r in caplog.records if "stopped answering" in r.getMessage()]
        assert len(downs) == 1 and b.url in downs[0].getMessage()

        # 3. it comes back (same ports): the health check returns it to the rotation
        b.start()
        b.wait_ready([sr, bilinear])
        back = wait_until(lambda: all(s["up"] for s in client.servers()), 20, poll_s=0.2)
        assert back, "timed out after 20 s waiting for the client to see it back"
        before = {s["url"]: s["batches"] for s in client.servers()}
        for _ in range(4):
            result = client.infer(lr[:2], SCALE)
            assert (result.labels == expected["sr"][:2]).mean() >= 0.995
        after = {s["url"]: s["batches"] for s in client.servers()}
        assert after[b.url] - before[b.url] >= 2, (before, after)
        assert any("is back" in r.getMessage() for r in caplog.records)

        # 4. every server down: a clear error, not a hang
        a.terminate()  # both at once: shutting down takes seconds
        b.terminate()
        a.stop()
        b.stop()
        with pytest.raises(NoServerError, match="every server is down"):
            client.infer(lr[:1], SCALE)


# --- the client's policies and errors, against stand-in servers (no Triton) ---------------------


class _FakeGrpcClient:
    """Stands in for tritonclient.grpc.InferenceServerClient: labels = the first channel."""

    def __init__(self, error: str | None = None, max_batch: int = 4) -> None:
        self.error, self.max_batch, self.calls = error, max_batch, []

    def infer(self, model, inputs, outputs=None, client_timeout=None):
        from tritonclient.utils import InferenceServerException

        if self.error:
            raise InferenceServerException(f"{self.error} from the stand-in", status=self.error)
        lr = inputs[0]._np_data if hasattr(inputs[0], "_np_data") else None
        shape = inputs[0].shape()
        self.calls.append((model, shape[0]))
        labels = np.zeros(shape[:3], np.uint8) if lr is None else lr[..., 0].copy()
        return type("R", (), {"as_numpy": lambda self, name: labels})()

    def get_model_config(self, model, as_json=False, client_timeout=None):
        return {"config": {"max_batch_size": self.max_batch}}

    def is_server_ready(self, client_timeout=None):
        return not self.error

    def is_model_ready(self, model, client_timeout=None):
        return not self.error

    def close(self):
        pass


def _client_with(fakes, policy="round_robin"):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
    from cloudseg.triton.client import TritonInference

    client = TritonInference(
        [f"fake{i}:8001" for i in range(len(fakes))], policy, timeout_s=1, health_interval_s=60
    )
    for server, fake in zip(client._servers, fakes, strict=True):
        server.client = fake
    return client


def test_client_policies_split_and_errors() -> None:
    from cloudseg.triton.client import NoServerError, TritonRequestError

    lr = np.zeros((2, 8, 16, 3), np.uint8)
    a, b = _FakeGrpcClient(), _FakeGrpcClient()
    with _client_with([a, b]) as client:
        for _ in range(4):
            result = client.infer(lr, 4)
            assert result.labels.shape == (2, 8, 16) and result.restored is None
        assert len(a.calls) == len(b.calls) == 2 and a.calls[0] == ("cloudseg_x4_sr", 2)
        big = client.infer(np.zeros((10, 8, 16, 3), np.uint8), 2, sr_bypass=True)  # 4 + 4 + 2
        assert big.labels.shape == (10, 8, 16)
        assert sorted(n for _, n in a.calls[2:] + b.calls[2:]) == [2, 4, 4]  # sent at once
        assert len(a.calls) > 2 and len(b.calls) > 2
        assert {m for m, _ in a.calls[2:]} == {"cloudseg_x2_bilinear"}

    c, d = _FakeGrpcClient(), _FakeGrpcClient()
    with _client_with([c, d], "least_outstanding") as client:
        client._servers[0].outstanding = 1  # a request in flight on the first server
        client.infer(lr, 4)
        client.infer(lr, 4)
        assert not c.calls and len(d.calls) == 2

    bad, good = _FakeGrpcClient("StatusCode.INVALID_ARGUMENT"), _FakeGrpcClient()
    with _client_with([bad, good]) as client:  # the request's fault: no failover, stays up
        with pytest.raises(TritonRequestError):
            client.infer(lr, 4)
        assert all(s["up"] for s in client.servers()) and not good.calls

    down = [_FakeGrpcClient("StatusCode.UNAVAILABLE") for _ in range(2)]
    with _client_with(down) as client:
        with pytest.raises(NoServerError, match="fake0:8001: down"):
            client.infer(lr, 4)
        assert [s["failures"] for s in client.servers()] == [1, 1]
    with pytest.raises(ValueError, match="policy"):
        _client_with([_FakeGrpcClient()], "random")


def test_make_inference_builds_the_triton_client_with_the_one_batch_result() -> None:
    """The node's `inference: triton` parameters -> a TritonInference (labels only) returning
    the cloud's own BatchResult type (one type for both routes)."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
    from cloudseg.cloud import engines
    from cloudseg.cloud import inference as cloud_inference
    from cloudseg.graph import INFERENCE_CHOICES, SR
    from cloudseg.triton.client import TritonInference

    assert INFERENCE_CHOICES == ("local", "triton")
    assert SR.param("triton_urls").default == "localhost:8001"
    client = engines.make_inference(
        "triton",
        None,
        triton_urls="a:8001, b:8001",
        triton_policy="least_outstanding",
        triton_timeout_s=3.0,
    )
    try:
        assert isinstance(client, TritonInference) and not client.makes_images
        assert [s["url"] for s in client.servers()] == ["a:8001", "b:8001"]
        assert "least_outstanding" in client.describe()
        fakes = [_FakeGrpcClient(), _FakeGrpcClient()]
        for server, fake in zip(client._servers, fakes, strict=True):
            server.client = fake
        result = client.infer(
            np.zeros((2, 8, 16, 3), np.uint8),
            4,
            sr_bypass=True,
            want_restored=True,
            want_overlay=True,
        )
        assert type(result) is cloud_inference.BatchResult
        assert result.restored is None and result.overlay is None
        assert result.mode == "bilinear" and result.segmentation_ms == result.ms > 0
    finally:
        client.close()
    with pytest.raises(ValueError, match="not available"):
        engines.make_inference("onnx", None)
