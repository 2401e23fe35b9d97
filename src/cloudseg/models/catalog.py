"""The registered models: each architecture with its published and shipped weight files.

Importing :mod:`cloudseg.models` imports this module, which registers every model below in
:mod:`cloudseg.models.registry`; the SHA-256 of the weights that ship with cloudseg are kept
here, beside their metadata.
"""

from __future__ import annotations

from cloudseg.models.carn import carn, carn_m
from cloudseg.models.registry import ModelSpec, register
from cloudseg.models.weights import WeightsInfo

_CARN_URL = "https://github.com/nmhkahn/CARN-pytorch/raw/master/checkpoint"
CARN_M_FT_SHA256: str | None = "430707093a457790cc6816d8b3e584745e8ade76b1bb02b7755f9137a4afd390"
"""SHA-256 of weights/carn_m_ft.pth, the project's fine-tuned CARN-M (cloudseg train)."""
_CARN_RECIPE = (
    "nmhkahn/CARN-pytorch README/train.py: DIV2K train (800 images), LR by bicubic "
    "(MATLAB-style, antialiased) downsampling, multi-scale training (one random scale of 2/3/4 "
    "per batch), 64x64 patches, batch 64, L1 loss, Adam lr 1e-4 halved every 400k steps, "
    "600k steps, grad-norm clip 10"
)
_CARN_INPUT = "RGB float [0,1], NCHW, no normalisation (DIV2K mean subtracted inside the model)"
_CARN_METRIC_SOURCE = (
    "paper Table / CARN-pytorch README: Y-channel PSNR/SSIM, MATLAB eval, bicubic LR"
)

register(
    ModelSpec(
        name="carn_m",
        task="sr",
        builder=carn_m,
        weights={
            "div2k": WeightsInfo(
                filename="carn_m.pth",
                url=f"{_CARN_URL}/carn_m.pth",
                sha256="d48a759a84509351facb6b7c6d5bd6edec98b98519b8c464ee4ab44d2ba964ff",
                meta={
                    "params": 414_811,
                    "task": "sr",
                    "input": _CARN_INPUT,
                    "scales": (2, 3, 4),
                    "group": 4,
                    "trained_on": "DIV2K",
                    "metrics": {
                        "Set5_x4_psnr": 31.92,
                        "Urban100_x4_psnr": 25.62,
                        "Set5_x2_psnr": 37.53,
                        "source": _CARN_METRIC_SOURCE,
                    },
                    "gmacs_512x256_in": {2: 51.87, 3: 59.05, 4: 73.93},
                    "recipe": _CARN_RECIPE,
                    "license": "MIT",
                },
            ),
            "cloudseg_ft": WeightsInfo(
                filename="carn_m_ft.pth",
                url=None,  # ships with cloudseg: weights/ of the repository, share/cloudseg/weights
                sha256=CARN_M_FT_SHA256,
                meta={
                    "params": 414_811,
                    "task": "sr",
                    "input": _CARN_INPUT,
                    "scales": (2, 3, 4),
                    "group": 4,
                    "trained_on": "shared/data/cityscapes_lr train.txt (365 frames, never the "
                    "evaluation's), coded by the compressor's H.264 encoder (veryfast, CRF 21..29, "
                    "IDR and P-frames); from the earlier fine-tune on 9 stills",
                    "segmenter": "espnetv2_s2_city_1024x512 (frozen), at 1024x512: SR x2 head",
                    "recipe": "cloudseg train stream --route sr_ft (CE through the frozen "
                    "segmenter + L1 fidelity of the x2-downsampled output to the uncoded frame); "
                    "the model card weights/carn_m_ft.json says everything",
                    "download_hint": "it ships with cloudseg (weights/carn_m_ft.pth in the "
                    "repository, installed to share/cloudseg/weights)",
                    "license": "Apache-2.0 (this project's own training; MIT base weights)",
                },
            ),
        },
        default_weights="cloudseg_ft",
        description="CARN-M (Ahn et al., ECCV 2018), multi-scale x2/x3/x4 SR, 0.41 M params; "
        "default weights: fine-tuned by cloudseg for the default stream and segmenter",
    )
)

register(
    ModelSpec(
        name="carn",
        task="sr",
        builder=carn,
        weights={
            "div2k": WeightsInfo(
                filename="carn.pth",
                url=f"{_CARN_URL}/carn.pth",
                sha256=None,  # not verified here: the file was never fetched
                meta={
                    "params": 1_591_963,
                    "task": "sr",
                    "input": _CARN_INPUT,
                    "scales": (2, 3, 4),
                    "group": 1,
                    "trained_on": "DIV2K",
                    "metrics": {
                        "Set5_x4_psnr": 32.13,
                        "Urban100_x4_psnr": 26.07,
                        "Set5_x2_psnr": 37.76,
                        "source": _CARN_METRIC_SOURCE,
                    },
                    "gmacs_512x256_in": {2: 126.8, 3: 152.1, 4: 206.8},
                    "recipe": _CARN_RECIPE,
                    "license": "MIT",
                },
            )
        },
        default_weights="div2k",
        description="CARN (Ahn et al., ECCV 2018), multi-scale x2/x3/x4 SR, 1.59 M params",
    )
)

_ESP_URL = "https://github.com/sacmehta/EdgeNets/raw/master/model/segmentation/model_zoo/espnetv2"
_ESP_INPUT = (
    "RGB/255 normalised with ImageNet mean (0.485,0.456,0.406) std (0.229,0.224,0.225), NCHW"
)
_ESP_CLASSES = "20 outputs: Cityscapes trainIds 0..18, 19 = background/ignore"
_ESP_RECIPE = (
    "sacmehta/EdgeNets segmentation recipe, trained on Cityscapes at the listed resolution"
)
_ESP_VARIANTS = {
    "1024x512": (
        "a72d59699801c7ce8e8b89a53af9097eaaa60dc12180ecde86fd700ba1222fe8",
        0.707,
        66.4,
        2699.05,
    ),
    "512x256": (
        "6b6f26b567c82bb4d6624387f24ed505613edafad19222e1707993fbe0d1d8f6",
        0.539,
        50.4,
        674.78,
    ),
}
STREAM_SEG_SHA256: dict[str, str | None] = {
    "1024x512": "8b7178f533a9a5048063f90b8c0d92e312cd7f35eee4fbe3797090bce1a2bf74",
    "512x256": "1533b885997e7480765fb59d0c39d85e1670df8f336452b4fed009321c6f979e",
}
"""SHA-256 of weights/espnetv2_<res>_stream.pth, ESPNetv2 adapted to the decoded stream by
cloudseg (cloudseg train stream; the model cards beside them say how)."""
_STREAM_ROUTE = {"1024x512": "bilinear x2 of the decoded frame", "512x256": "the decoded frame"}

STREAM_SR_SEG_SHA256: str | None = (
    "492b1369ac987d4e43ccd64c212e2f68f1149ddbad419fb16644f9a82e8e7ae3"
)
"""SHA-256 of weights/espnetv2_1024x512_stream_sr.pth: ESPNetv2 adapted to the output of the
fine-tuned CARN-M on the decoded stream (the "both" route, sr_seg_ft)."""


def _stream_sr_weights() -> WeightsInfo:
    return WeightsInfo(
        filename="espnetv2_1024x512_stream_sr.pth",
        url=None,  # ships with cloudseg: weights/ of the repository
        sha256=STREAM_SR_SEG_SHA256,
        meta={
            "params": 789_242,
            "task": "segmentation",
            "input": _ESP_INPUT + "; CARN-M x2 (weights/carn_m_ft.pth) of a x4 H.264 stream",
            "resolution": (1024, 512),
            "num_classes": 20,
            "classes": _ESP_CLASSES,
            "background_class": 19,
            "trained_on": "shared/data/cityscapes_lr train.txt (365 frames) through the "
            "compressor's H.264 encoder and the fine-tuned CARN-M",
            "recipe": "cloudseg train stream --route sr_seg; the model card "
            "weights/espnetv2_1024x512_stream_sr.json says everything",
            "license": "Apache-2.0 (this project's own training; MIT base weights)",
        },
    )


for _res, (_sha, _munster, _val, _mflops) in _ESP_VARIANTS.items():
    _w, _h = (int(v) for v in _res.split("x"))
    register(
        ModelSpec(
            name=f"espnetv2_s2_city_{_res}",
            task="segmentation",
            builder="cloudseg.models.espnetv2:espnetv2_seg",
            builder_kwargs={"s": 2.0, "num_classes": 20},
            weights={
                "city": WeightsInfo(
                    filename=f"espnetv2_s_2.0_city_{_res}.pth",
                    url=f"{_ESP_URL}/espnetv2_s_2.0_city_{_res}.pth",
                    sha256=_sha,
                    meta={
                        "params": 789_242,
                        "task": "segmentation",
                        "input": _ESP_INPUT,
                        "resolution": (_w, _h),
                        "num_classes": 20,
                        "classes": _ESP_CLASSES,
                        "background_class": 19,
                        "metrics": {
                            "miou_munster_000061": _munster,
                            "miou_munster_000061_source": "shared/data PROVENANCE.md, 1 frame",
                            "miou_cityscapes_val_pct": _val,
                            "miou_cityscapes_val_source": "EdgeNets model_zoo README",
                        },
                        "mflops": _mflops,
                        "recipe": _ESP_RECIPE,
                        "license": "MIT",
                    },
                ),
                "cloudseg_stream": WeightsInfo(
                    filename=f"espnetv2_{_res}_stream.pth",
                    url=None,  # ships with cloudseg: weights/ of the repository
                    sha256=STREAM_SEG_SHA256[_res],
                    meta={
                        "params": 789_242,
                        "task": "segmentation",
                        "input": _ESP_INPUT + f"; {_STREAM_ROUTE[_res]} of a x4 H.264 stream",
                        "resolution": (_w, _h),
                        "num_classes": 20,
                        "classes": _ESP_CLASSES,
                        "background_class": 19,
                        "trained_on": "shared/data/cityscapes_lr train.txt (365 frames), coded "
                        "by the compressor's H.264 encoder (CRF 21..29, IDR and P-frames)",
                        "recipe": "cloudseg train stream from the official city weights; the "
                        f"model card weights/espnetv2_{_res}_stream.json says everything",
                        "download_hint": "it ships with cloudseg (weights/ of the repository, "
                        "installed to share/cloudseg/weights)",
                        "license": "Apache-2.0 (this project's own training; MIT base weights)",
                    },
                ),
                **({"cloudseg_stream_sr": _stream_sr_weights()} if _res == "1024x512" else {}),
            },
            default_weights="city",
            description=f"ESPNetv2 s=2.0 segmentation, Cityscapes, trained at {_res}",
        )
    )

register(
    ModelSpec(
        name="icnet_resnet50",
        task="segmentation",
        builder="cloudseg.models.icnet:icnet_resnet50",
        builder_kwargs={"num_classes": 19},
        weights={
            "citys": WeightsInfo(
                filename="icnet_resnet50_citys.pth",
                url=None,
                sha256=None,
                meta={
                    "params": 28_298_376,
                    "params_used": 26_249_376,
                    "task": "segmentation",
                    "input": _ESP_INPUT.replace(", NCHW", ", NCHW, full-res 2048x1024"),
                    "resolution": (2048, 1024),
                    "num_classes": 19,
                    "classes": "Cityscapes trainIds 0..18",
                    "metrics": {
                        "miou_cityscapes_val_pct": 71.0,
                        "source": "liminn/ICNet-pytorch README (train on train only)",
                    },
                    "recipe": "liminn/ICNet-pytorch train.py, ResNet50-v1s, output stride 8",
                    "download_hint": (
                        "liminn/ICNet-pytorch issues #2/#16 (Baidu pan / Google Drive mirror; "
                        "released as icnet_resnet50_197_0.710_best_model.pth, rename to "
                        "icnet_resnet50_citys.pth)"
                    ),
                    "license": "MIT",
                },
            )
        },
        default_weights="citys",
        description="ICNet with ResNet50-v1s backbone (liminn/ICNet-pytorch layout), 19 classes",
    )
)

SELECTOR_LEARNED_SHA256: str | None = (
    "9bf8a5cfa2ba377b9d52c98d8bcde5d2439ee854c2e7c86078ba02f5d35036b2"
)
"""SHA-256 of weights/selector_learned.pth, the learned frame selector (cloudseg train selector)."""

register(
    ModelSpec(
        name="selector_net",
        task="selector",
        builder="cloudseg.models.selector_net:selector_net",
        weights={
            "cloudseg": WeightsInfo(
                filename="selector_learned.pth",
                url=None,  # ships with cloudseg: weights/ of the repository, share/cloudseg/weights
                sha256=SELECTOR_LEARNED_SHA256,
                meta={
                    "params": 24_509,
                    "task": "selector",
                    "input": "HxWx3 uint8 RGB reduced by area averaging to 256x128, "
                    "normalised inside the model (ImageNet mean/std)",
                    "output": "predicted fraction of pixels whose label changed between two "
                    "frames (0..1)",
                    "targets": "espnetv2 labels of both frames (no ground truth)",
                    "trained_on": "shared/data: aachen_seq0000, frankfurt_000000_000275/557/997, "
                    "solidWhiteRight (frame gaps 1..16, synthetic warps)",
                    "metrics": {
                        "val_mae": 0.081,
                        "val_spearman": 0.582,
                        "val_pearson": 0.675,
                        "pixel_spearman": 0.664,
                        "pixel_pearson": 0.761,
                        "source": "held-out frankfurt_000000_001217 (344 pairs, gaps 1..16); "
                        "weights/selector_learned.json",
                    },
                    "ms_per_frame_one_core": 3.5,
                    "recipe": "cloudseg train selector; the model card "
                    "weights/selector_learned.json says everything",
                    "download_hint": "it ships with cloudseg (weights/selector_learned.pth in the "
                    "repository, installed to share/cloudseg/weights); cloudseg train selector "
                    "trains a new one",
                    "license": "Apache-2.0 (this project's own training)",
                },
            )
        },
        default_weights="cloudseg",
        description="learned frame selector (after Li et al., CVPR 2018): low-level features "
        "of two frames -> predicted fraction of changed labels",
    )
)
