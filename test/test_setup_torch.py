"""The PyTorch build of the set-up (scripts/torch_build, used by scripts/setup.sh and
scripts/setup_triton.sh): the host's mode, what pip resolves for each mode from the package
registry (pip's ``--dry-run --report``: nothing installed), and the one-line verdict after a
CUDA install, its failures simulated on this CPU host."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "torch_build"


def _load():
    loader = importlib.machinery.SourceFileLoader("torch_build", str(SCRIPT))
    spec = importlib.util.spec_from_loader("torch_build", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


torch_build = _load()


def _dry_run(requirement: str, tmp_path: Path, *extra: str) -> list[dict]:
    """What ``pip install --dry-run`` of ``requirement`` into this venv would install (no
    dependencies resolved: the wheel's own metadata lists them). Skips the test for a +cpu
    requirement that pip's sources here do not hold (the install falls back, with a note)."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run",
         "--no-deps", "--report", str(report), *extra, requirement],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode and "+cpu" in requirement and "No matching distribution" in done.stderr:
        pytest.skip(f"pip's sources here hold no {requirement} wheel")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(report.read_text())["install"]


def test_mode_is_forced_or_follows_the_nvidia_driver(tmp_path, monkeypatch) -> None:
    assert torch_build.detect_mode("cuda") == "cuda"
    assert torch_build.detect_mode("cpu") == "cpu"
    with pytest.raises(ValueError):
        torch_build.detect_mode("rocm")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(torch_build, "DRIVER_FILE", str(tmp_path / "no-driver"))
    assert torch_build.detect_mode() == "cpu"
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.82.07  Wed Aug 27\n")
    monkeypatch.setattr(torch_build, "DRIVER_FILE", str(driver))
    assert torch_build.detect_mode() == "cuda"
    assert torch_build.driver_version() == "580.82.07"
    # the command line the setup scripts call
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "mode", "--cuda"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "cuda"


def test_the_two_requirements_exclude_each_other() -> None:
    from packaging.specifiers import SpecifierSet

    cpu, cuda = torch_build.requirement("cpu"), torch_build.requirement("cuda")
    version = torch_build.TORCH_VERSION
    assert cpu == f"torch=={version}+cpu" and cuda == f"torch==={version}"
    cpu_spec, cuda_spec = SpecifierSet(cpu[5:]), SpecifierSet(cuda[5:])
    # an installed CPU build does not satisfy the CUDA requirement (and back): a switch reinstalls
    assert not cuda_spec.contains(f"{version}+cpu") and cuda_spec.contains(version)
    assert cpu_spec.contains(f"{version}+cpu") and not cpu_spec.contains(version)


def test_setup_scripts_ask_torch_build_and_name_no_extra_index() -> None:
    for name in ("setup.sh", "setup_triton.sh"):
        text = (ROOT / "scripts" / name).read_text()
        assert "torch_build" in text
        assert "index-url" not in text and "index_url" not in text.lower()
        assert "torch==" not in text  # the pin lives in torch_build only
    for name in ("setup.sh", "setup_triton.sh"):
        bad = subprocess.run(
            ["bash", str(ROOT / "scripts" / name), "--gpu"], capture_output=True, text=True
        )
        assert bad.returncode == 2 and "unknown option --gpu" in bad.stderr


def test_cpu_mode_resolves_the_small_cpu_wheel(tmp_path) -> None:
    [wheel] = _dry_run(torch_build.requirement("cpu"), tmp_path, "--ignore-installed")
    assert wheel["metadata"]["version"] == f"{torch_build.TORCH_VERSION}+cpu"
    requires = wheel["metadata"].get("requires_dist", [])
    assert not [r for r in requires if r.startswith(("nvidia-", "cuda-"))]
    url = wheel["download_info"]["url"]
    if url.startswith("file://"):  # a local wheel: check it is the small one
        from urllib.parse import unquote, urlparse

        assert Path(unquote(urlparse(url).path)).stat().st_size < 400e6


@pytest.mark.slow  # downloads the half-GB CUDA wheel from the registry to read its metadata
def test_cuda_mode_resolves_the_registry_cuda_build_and_replaces_a_cpu_one(tmp_path) -> None:
    requirement = torch_build.requirement("cuda")
    installed = torch.__version__
    [wheel] = _dry_run(requirement, tmp_path)  # into this venv as it is
    assert wheel["metadata"]["version"] == torch_build.TORCH_VERSION
    requires = wheel["metadata"].get("requires_dist", [])
    nvidia = [r for r in requires if r.startswith("nvidia-")]
    assert any(r.startswith("nvidia-cudnn-cu13") for r in nvidia), requires
    assert installed.startswith(torch_build.TORCH_VERSION)
    # this venv's torch is the CPU build: pip would replace it, not call it satisfied
    assert installed.endswith("+cpu") or torch.version.cuda is not None


def test_cpu_venv_asked_for_its_own_build_is_satisfied(tmp_path) -> None:
    if not torch.__version__.endswith("+cpu"):
        pytest.skip(f"this venv's torch is {torch.__version__}, not the CPU build")
    assert _dry_run(torch_build.requirement("cpu"), tmp_path) == []


def test_check_says_in_one_line_why_cuda_is_not_there(tmp_path, monkeypatch) -> None:
    ok, line = torch_build.check("cpu")
    assert ok and line.startswith(f"torch {torch.__version__}")
    if torch.cuda.is_available():
        ok, line = torch_build.check("cuda")
        assert ok and torch.cuda.get_device_name(0) in line
        return
    if torch.version.cuda is None:  # this venv: the CPU build
        ok, line = torch_build.check("cuda")
        assert not ok and "CPU build" in line and "\n" not in line
    # a CUDA 13 build on a host whose driver is too old, or without one
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path))
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19\n")
    monkeypatch.setattr(torch_build, "DRIVER_FILE", str(driver))
    ok, line = torch_build.check("cuda")
    assert not ok and "\n" not in line
    assert "driver 535.104.05 is too old for CUDA 13.0: 580.65.06 or newer needed" in line
    monkeypatch.setattr(torch_build, "DRIVER_FILE", str(tmp_path / "none"))
    ok, line = torch_build.check("cuda")
    assert not ok and "no NVIDIA driver or GPU found" in line


@pytest.mark.parametrize(("flags", "mode"), [((), "cpu"), (("--cuda",), "cuda")])
def test_triton_env_gets_the_cpu_build_on_a_cpu_host(tmp_path, flags, mode) -> None:
    """scripts/setup_triton.sh on this host (no NVIDIA driver) with a stand-in venv interpreter
    that records its calls: torch_build installs the CPU build unless --cuda says otherwise."""
    if Path(torch_build.DRIVER_FILE).exists():
        pytest.skip("this host has an NVIDIA driver")
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("setup_triton.sh", "torch_build"):
        (root / "scripts" / name).write_bytes((ROOT / "scripts" / name).read_bytes())
    calls = tmp_path / "calls"
    stub = root / ".venv-triton" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    done = subprocess.run(
        ["bash", str(root / "scripts" / "setup_triton.sh"), *flags],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    installs = [c for c in calls.read_text().splitlines() if " install " in f" {c} "]
    assert installs[0].endswith(f"torch_build install {mode} {stub}"), installs
    assert "nvidia-pytriton==0.7.0" in installs[1] and "torch" not in installs[1]
