"""Offline ImageNet weights fail fast, the same way for every model.

The subprocess sends all its traffic to a local proxy that accepts connections and never answers
(the worst case: a firewall that drops packets). Without the connection probe, torchvision's
download waits forever and the Hugging Face hub retries for about 50 s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import huggingface_hub
import pytest
import timm
import torch

from medattn.models import weights

LIMIT_S = 15.0  # generous for a loaded machine; the probe gives up after DOWNLOAD_PROBE_TIMEOUT_S

SCRIPT = """
import json, sys, time
from medattn.errors import ConfigError
from medattn.models.weights import imagenet_state_dict
for backbone in sys.argv[1:]:
    start = time.monotonic()
    try:
        imagenet_state_dict(backbone, backbone)
        error = None
    except ConfigError as exc:
        error = str(exc)
    print(json.dumps({"backbone": backbone, "seconds": time.monotonic() - start, "error": error}), flush=True)
"""


@pytest.fixture
def silent_proxy():
    """``http://127.0.0.1:PORT``: accepts TCP connections (the kernel's backlog) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_every_backbone_fails_offline_within_the_limit_with_the_same_sentence(tmp_path, silent_proxy):
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("HF_")}
    env.update(
        HF_HOME=str(tmp_path / "hf"),  # nothing cached
        TORCH_HOME=str(tmp_path / "torch"),
        http_proxy=silent_proxy,
        https_proxy=silent_proxy,
        HTTP_PROXY=silent_proxy,
        HTTPS_PROXY=silent_proxy,
    )
    backbones = ["deit_tiny", "resnet50", "densenet121"]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *backbones], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["backbone"] for r in results] == backbones, proc.stdout + proc.stderr[-2000:]
    sentences = set()
    for r in results:
        assert r["seconds"] < LIMIT_S, r
        error = r["error"]
        assert error is not None and "\n" not in error, r
        assert "--weights PATH" in error and "--pretrained none" in error, error
        assert f"within {weights.DOWNLOAD_PROBE_TIMEOUT_S:g} s" in error, error
        sentences.add(error.replace(r["backbone"], "MODEL").split(" (")[0] + error.split(")")[-1])
    assert len(sentences) == 1, sentences


def test_cached_deit_weights_load_without_touching_the_network(tmp_path, monkeypatch):
    published = timm.create_model("deit_tiny_patch16_224", pretrained=False).state_dict()
    cached = tmp_path / "pytorch_model.bin"
    torch.save(published, cached)
    asked = []

    def from_cache(repo: str, filename: str):
        asked.append((repo, filename))
        return str(cached) if filename == "pytorch_model.bin" else None

    def no_network(url: str, timeout: float = 0) -> str:
        raise AssertionError(f"probed {url} although the weights are cached")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", from_cache)
    monkeypatch.setattr(weights, "unreachable", no_network)
    url, path = weights.published_weights("deit_tiny")
    assert path == cached and url.endswith("/timm/deit_tiny_patch16_224.fb_in1k")
    state = weights.fetch_imagenet_state_dict("deit_tiny")
    assert asked[0] == ("timm/deit_tiny_patch16_224.fb_in1k", "model.safetensors")
    assert torch.equal(state["cls_token"], published["cls_token"])
    assert torch.equal(state["blocks.11.mlp.fc2.weight"], published["blocks.11.mlp.fc2.weight"])
