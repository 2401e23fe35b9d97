"""Model registry and weight resolution (never touches the network)."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from cloudseg.models import registry, weights
from cloudseg.models.carn import CARN
from cloudseg.models.registry import (
    ModelSpec,
    UnknownModelError,
    build_model,
    get_spec,
    list_models,
    resolve_model_weights,
)
from cloudseg.models.weights import (
    WeightsError,
    WeightsInfo,
    load_state_dict_file,
    resolve_weights,
)

CARN_M = "weights/carn/carn_m.pth"
OFFICIAL = get_spec("carn_m").weights["div2k"]  # the published CARN-M (default: the project's)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Empty cache, no CLOUDSEG_WEIGHTS, and a urlopen that fails (and records its URLs)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CLOUDSEG_WEIGHTS", raising=False)
    monkeypatch.delenv("CLOUDSEG_OFFLINE", raising=False)
    # nor the project's own weights folder or ../shared/data/weights beside the checkout
    monkeypatch.setattr(weights, "project_weights_dir", lambda: None)
    monkeypatch.setattr(weights, "shared_weights_dir", lambda: None)
    urls: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        urls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return urls


def fake_download(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    urls: list[str] = []

    def urlopen(url: str, *args: object, **kwargs: object) -> io.BytesIO:
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return urls


def test_listing_and_unknown_name() -> None:
    assert list_models("sr") == ["carn", "carn_m"]
    assert {"espnetv2_s2_city_1024x512", "espnetv2_s2_city_512x256", "icnet_resnet50"} <= set(
        list_models("segmentation")
    )
    with pytest.raises(KeyError) as err:
        get_spec("carn_x")
    assert isinstance(err.value, UnknownModelError)
    assert "carn_x" in str(err.value) and "carn_m" in str(err.value)
    assert get_spec("espnetv2_s2_city_512x256").builder == "cloudseg.models.espnetv2:espnetv2_seg"


def test_build_from_explicit_path_loads_strictly(shared_data: Path) -> None:
    path = shared_data / CARN_M
    model = build_model("carn_m", weights=path)
    assert isinstance(model, CARN) and model.mobile and not model.training
    assert model.untrained is False
    assert model.weights_info is get_spec("carn_m").weights["div2k"]  # recognised by SHA-256
    state = load_state_dict_file(path)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_cloudseg_weights_folder_is_searched_with_subfolders(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, isolated: list[str]
) -> None:
    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(shared_data / "weights"))
    assert resolve_weights(OFFICIAL) == shared_data / CARN_M
    espnet = resolve_model_weights("espnetv2_s2_city_512x256")
    assert espnet == shared_data / "weights/espnetv2/espnetv2_s_2.0_city_512x256.pth"
    model = build_model("carn_m", "div2k")
    assert model.weights_info.meta["params"] == 414_811
    assert isolated == []  # nothing was downloaded


def test_missing_offline_raises_clear_error(tmp_path: Path, isolated: list[str]) -> None:
    with pytest.raises(WeightsError) as err:
        build_model("carn_m", "div2k")
    msg = str(err.value)
    assert "carn_m.pth" in msg and "download failed" in msg
    assert "CLOUDSEG_WEIGHTS" in msg and str(tmp_path / "cache") in msg
    assert "https://github.com/nmhkahn/CARN-pytorch/raw/master/checkpoint/carn_m.pth" in msg
    assert isolated == ["https://github.com/nmhkahn/CARN-pytorch/raw/master/checkpoint/carn_m.pth"]


def test_offline_env_and_missing_url_do_not_download(
    monkeypatch: pytest.MonkeyPatch, isolated: list[str]
) -> None:
    monkeypatch.setenv("CLOUDSEG_OFFLINE", "1")
    with pytest.raises(WeightsError, match="downloads disabled"):
        resolve_weights(OFFICIAL)
    with pytest.raises(WeightsError, match=r"icnet_resnet50_citys\.pth.*liminn/ICNet-pytorch"):
        resolve_model_weights("icnet_resnet50")
    assert isolated == []


def test_download_verifies_hash_and_fills_cache(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = fake_download(monkeypatch, (shared_data / CARN_M).read_bytes())
    path = resolve_weights(OFFICIAL)
    assert path == tmp_path / "cache/cloudseg/weights/carn_m.pth"
    assert path.read_bytes() == (shared_data / CARN_M).read_bytes()
    assert len(urls) == 1
    assert resolve_weights(OFFICIAL) == path and len(urls) == 1  # served from the cache now


def test_download_hash_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_download(monkeypatch, b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"carn_m\.pth.*SHA-256"):
        resolve_weights(OFFICIAL)
    cache = tmp_path / "cache/cloudseg/weights"
    assert list(cache.iterdir()) == []  # temp file removed, nothing cached


def test_found_file_with_wrong_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w/carn_m.pth").write_bytes(b"corrupt")
    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(tmp_path / "w"))
    with pytest.raises(WeightsError, match="expected d48a759a"):
        resolve_weights(OFFICIAL)


def test_unknown_hash_downloads_with_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_download(monkeypatch, b"payload")
    info = WeightsInfo("x.pth", "https://example.invalid/x.pth", None)
    with caplog.at_level(logging.WARNING, logger="cloudseg.models.weights"):
        path = resolve_weights(info)
    assert path.read_bytes() == b"payload"
    assert "no SHA-256" in caplog.text


def test_untrained_needs_explicit_consent(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="allow_untrained"):
        build_model("carn_m", pretrained=False)
    with pytest.raises(ValueError, match="allow_untrained"):
        build_model("carn_m", weights=None)
    with caplog.at_level(logging.WARNING, logger="cloudseg.models.registry"):
        model = build_model("carn", pretrained=False, allow_untrained=True)
    assert model.untrained is True and model.weights_info is None
    assert "RANDOM" in caplog.text


def test_wrong_weights_are_rejected(shared_data: Path) -> None:
    with pytest.raises(WeightsError, match="does not fit model 'carn'"):
        build_model("carn", weights=shared_data / CARN_M)
    with pytest.raises(WeightsError, match=r"unknown weights 'imagenet'.*div2k"):
        build_model("carn_m", weights="imagenet")
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("carn_m", weights="/nonexistent/carn_m.pth")


def test_load_state_dict_file_unwraps(tmp_path: Path) -> None:
    wrapped = {"state_dict": {"module.a.weight": torch.ones(2)}, "epoch": 3}
    torch.save(wrapped, tmp_path / "w.pth")
    state = load_state_dict_file(tmp_path / "w.pth")
    assert list(state) == ["a.weight"] and torch.equal(state["a.weight"], torch.ones(2))
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="cannot read"):
        load_state_dict_file(tmp_path / "bad.pth")


def test_lazy_string_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec(
        "tmp_lazy", "sr", "cloudseg.models.carn:carn_m", builder_kwargs={"scales": (2,)}
    )
    monkeypatch.setitem(registry._REGISTRY, "tmp_lazy", spec)
    model = build_model("tmp_lazy", pretrained=False, allow_untrained=True)
    assert isinstance(model, CARN) and model.scales == (2,)
    bad = ModelSpec("tmp_bad", "sr", "cloudseg.models.nope:make")
    monkeypatch.setitem(registry._REGISTRY, "tmp_bad", bad)
    with pytest.raises(ImportError, match="tmp_bad"):
        build_model("tmp_bad", pretrained=False, allow_untrained=True)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec)


def test_default_sr_weights_are_the_projects_fine_tuned_ones(monkeypatch) -> None:
    """The cloud's default CARN-M is weights/carn_m_ft.pth, found in the project's folder, with
    its model card beside it; the published file stays available as 'div2k'."""
    monkeypatch.undo()  # the real project folder
    spec = get_spec("carn_m")
    assert spec.default_weights == "cloudseg_ft"
    path = resolve_model_weights("carn_m")
    assert path.name == "carn_m_ft.pth" and path.parent == weights.project_weights_dir()
    model = build_model("carn_m")
    assert model.weights_info is spec.weights["cloudseg_ft"] and model.untrained is False
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["architecture"] == "carn_m" and card["degradation"]["codec"] == "h264"
    assert card["recipe"]["segmenter"] == "espnetv2_s2_city_1024x512"
