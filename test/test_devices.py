"""`cloudseg.devices`: device texts parsed into one `torch.device` (cpu, cuda, cuda:N, auto), and
the host copies of results (`to_host`), on this CPU host; the CUDA-only parts skip without one."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest
import torch

from cloudseg.devices import (
    DeviceError,
    device_arg,
    is_cuda,
    parse_device,
    resolve_device,
    synchronize,
    to_host,
)

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu", torch.device("cpu")),
        ("cuda", torch.device("cuda")),
        ("cuda:0", torch.device("cuda", 0)),
        ("cuda:3", torch.device("cuda", 3)),
        (" CUDA:1 ", torch.device("cuda", 1)),
        (torch.device("cuda", 2), torch.device("cuda", 2)),
    ],
)
def test_valid_texts_parse_to_one_device(text, expected) -> None:
    assert parse_device(text) == expected
    assert is_cuda(text) == (expected.type == "cuda")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("gpu", "expected cpu, cuda, cuda:N"),
        ("cuda:x", "the index after 'cuda:' must be a number"),
        ("cuda:", "the index after 'cuda:' must be a number"),
        ("cuda:-1", "the index after 'cuda:' must be a number"),
        ("cpu:0", "cpu takes no index"),
        ("mps", "expected cpu, cuda, cuda:N"),
        ("", "expected cpu, cuda, cuda:N"),
        ("auto", "resolve_device"),
        (torch.device("meta"), "device must be cpu or cuda"),
    ],
)
def test_invalid_texts_are_one_clear_error(text, says) -> None:
    with pytest.raises(DeviceError) as err:
        parse_device(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_option_type_takes_auto_and_refuses_the_rest_with_the_reason() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", type=device_arg, default="auto")
    assert parser.parse_args(["--device", "cuda:1"]).device == "cuda:1"
    assert parser.parse_args([]).device == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "gpu"])


@pytest.mark.skipif(CUDA, reason="a CPU host's resolution (this one has CUDA)")
def test_auto_on_a_cpu_host_is_the_cpu_and_says_why(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="cloudseg.devices"):
        assert resolve_device("auto") == torch.device("cpu")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("device auto -> cpu: torch") and "\n" not in line
    assert resolve_device("cpu") == torch.device("cpu")
    for text in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match="CUDA is not available here"):
            resolve_device(text)


def test_host_copies_of_cpu_tensors_and_none() -> None:
    labels = torch.arange(12, dtype=torch.uint8).view(1, 3, 4)
    with torch.inference_mode():
        image = torch.full((1, 3, 4, 3), 7, dtype=torch.uint8)
    out = to_host([labels, None, image])
    assert out[1] is None
    assert isinstance(out[0], np.ndarray) and out[0].dtype == np.uint8
    np.testing.assert_array_equal(out[0], labels.numpy())
    assert out[2].shape == (1, 3, 4, 3) and (out[2] == 7).all()
    assert to_host([None]) == [None]
    synchronize(torch.device("cpu"))  # nothing to wait for: no error


def test_local_inference_on_cpu_goes_through_the_host_copy(weights_env) -> None:
    """The cloud's batch path (`LocalInference.infer`) with the device given as a parsed
    device: labels, restored image and overlay come back as numpy arrays."""
    from cloudseg.cloud.local import LocalInference
    from cloudseg.cloud.service import CloudService

    service = CloudService(device="cpu", dtype="fp16", cpu_max_width=256)
    assert service.device == torch.device("cpu")
    assert service.options["dtype"] == "fp32"  # the CPU runs fp32 whatever was asked
    inference = LocalInference(service)
    assert not inference.cuda
    lr = np.random.default_rng(0).integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
    result = inference.infer(lr, 4, want_restored=True, want_overlay=True)
    for array in (result.labels, result.restored, result.overlay):
        assert isinstance(array, np.ndarray) and array.dtype == np.uint8
    assert result.labels.shape[0] == 2 and result.restored.shape[-1] == 3


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_n_gets_fp16_pinning_and_host_copies(weights_env) -> None:
    from cloudseg.cloud.local import LocalInference
    from cloudseg.cloud.service import CloudService

    service = CloudService(device="cuda:0", dtype="fp16")
    assert service.device == torch.device("cuda", 0) and service.options["dtype"] == "fp16"
    inference = LocalInference(service)
    assert inference.cuda
    lr = np.zeros((2, 64, 128, 3), np.uint8)
    result = inference.infer(lr, 4, want_restored=True, want_overlay=True)
    assert isinstance(result.labels, np.ndarray) and isinstance(result.overlay, np.ndarray)
    on_device = torch.ones(3, device="cuda:0")
    assert to_host([on_device])[0].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.skipif(CUDA, reason="a CPU host's refusal (this one has CUDA)")
def test_demo_refuses_a_cuda_device_before_starting_anything() -> None:
    from cloudseg.demo import DemoError, check_inputs

    for device in ("cuda", "cuda:1"):
        with pytest.raises(DemoError, match=f"device '{device}' requested but CUDA is not"):
            check_inputs(None, cloud_params={"device": device})
    check_inputs(None, cloud_params={"device": "auto"})  # auto: the CPU here, no error
