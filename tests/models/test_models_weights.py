"""Initial weights: torchvision-layout files into every variant, foreign files refused, offline error."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from medattn.errors import ConfigError
from medattn.models import MODELS, create_model, create_model_with_report, load_weights, read_state_dict
from medattn.models import weights as weights_mod

CNN_NAMES = [n for n in MODELS.names() if MODELS.get(n).backbone in ("resnet50", "densenet121")]


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-init torchvision ResNet-50 / DenseNet-121 state_dicts: the layout ImageNet weights ship in."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    files = {}
    for arch, build in (("resnet50", torchvision.models.resnet50), ("densenet121", torchvision.models.densenet121)):
        files[arch] = folder / f"{arch}.pth"
        torch.save(build().state_dict(), files[arch])
    return files


def _fresh_prefixes(model: torch.nn.Module, head: str) -> tuple[str, ...]:
    from medattn.models.attention import is_attention_module

    return tuple(f"{n}." for n, m in model.named_modules() if n and is_attention_module(m)) + (f"{head}.",)


@pytest.mark.parametrize("name", CNN_NAMES)
def test_backbone_loads_exactly_and_only_attention_and_head_stay_at_init(
    name: str, torchvision_files: dict[str, Path]
) -> None:
    spec = MODELS.get(name)
    source = torch.load(torchvision_files[spec.backbone], weights_only=True)
    torch.manual_seed(1)
    model = create_model(name, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_weights(model, read_state_dict(torchvision_files[spec.backbone]), arch=name)
    after = model.state_dict()
    fresh = _fresh_prefixes(model, weights_mod.BACKBONE_HEADS[spec.backbone])
    for key, value in after.items():
        if key in source and not key.startswith(fresh):
            assert torch.equal(value, source[key]), key
        else:
            assert key.startswith(fresh), f"{key} neither loaded nor attention/head"
            assert torch.equal(value, before[key]), f"{key} changed although the file does not hold it"
    assert set(report.shape_dropped) == {f"{weights_mod.BACKBONE_HEADS[spec.backbone]}.{p}" for p in ("weight", "bias")}
    assert all(k.startswith(fresh) for k in report.missing)
    assert (spec.attention is None) == all(
        k.startswith(weights_mod.BACKBONE_HEADS[spec.backbone]) for k in report.missing
    )


@pytest.mark.parametrize("name", ["cbam_resnet50", "se_densenet121"])
def test_create_model_with_weights_path(name: str, torchvision_files: dict[str, Path]) -> None:
    spec = MODELS.get(name)
    model, report = create_model_with_report(name, 2, weights=torchvision_files[spec.backbone], init="fair")
    assert report is not None and len(report.loaded) > 300
    assert not hasattr(model, "weights_report")  # the report is returned, not written onto the model
    source = torch.load(torchvision_files[spec.backbone], weights_only=True)
    assert torch.equal(
        model.state_dict()["features.conv0.weight" if spec.backbone == "densenet121" else "conv1.weight"],
        source["features.conv0.weight" if spec.backbone == "densenet121" else "conv1.weight"],
    )
    # init="paper" reproduces the original project: these variants start from scratch.
    assert create_model_with_report(name, 2, weights=torchvision_files[spec.backbone], init="paper")[1] is None


def test_file_of_another_architecture_is_refused(torchvision_files: dict[str, Path]) -> None:
    model = create_model("densenet121", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="look like a resnet50 state_dict and do not fit densenet121") as info:
        load_weights(model, read_state_dict(torchvision_files["resnet50"]), arch="densenet121", source="r.pth")
    assert "--weights" in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_attention_keys_in_a_plain_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "se.pth"
    torch.save(create_model("se_resnet50", 2).state_dict(), path)
    with pytest.raises(ConfigError, match="unexpected tensors outside the head"):
        create_model("resnet50", 2, weights=path)


def test_checkpoint_wrappers_prefixes_and_legacy_densenet_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.densenet121().state_dict()
    # torchvision's published DenseNet files use 'norm.1' style keys; DDP adds 'module.'.
    legacy = {
        "module." + k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.")
        if "denselayer" in k
        else "module." + k: v
        for k, v in state.items()
    }
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": legacy, "optimizer": {"lr": 0.1}}, path)
    model, report = create_model_with_report("DenseNet121", 1000, weights=path)
    assert report.missing == ()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_unreadable_file_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read weights file"):
        create_model("resnet50", 2, weights=path)


@pytest.mark.parametrize(
    "error", [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"), OSError("offline")]
)
def test_offline_imagenet_names_the_way_out(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def offline(backbone: str) -> dict:
        raise error

    monkeypatch.setattr(weights_mod, "fetch_imagenet_state_dict", offline)
    with pytest.raises(ConfigError, match="--weights PATH.*--pretrained none"):
        create_model("deit_tiny", 2, pretrained="imagenet", nr_layers=1)


def test_imagenet_path_loads_what_the_download_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    import timm

    published = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=2).state_dict()
    monkeypatch.setattr(weights_mod, "fetch_imagenet_state_dict", lambda backbone: published)
    model, report = create_model_with_report("deit_tiny", 2, pretrained="imagenet", nr_layers=2)
    assert report.source == "imagenet:deit_tiny"
    assert torch.equal(model.cls_token, published["cls_token"])
