"""The checksum manifest of a run's checkpoints : a torn upload does not match its entry."""

from __future__ import annotations

import hashlib

import pytest

from medattn import checkpoint as ckpt_io


def test_manifest_spots_a_truncated_or_altered_copy(tmp_path):
    path = ckpt_io.save(tmp_path / "last.pt", {"epoch": 2, "model": {}})
    manifest = ckpt_io.Manifest()
    manifest.add(path, epoch=2)
    entry = manifest.files["last.pt"]
    assert entry == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size, "epoch": 2}
    assert manifest.problem(path) is None

    data = path.read_bytes()
    torn = tmp_path / "torn" / "last.pt"
    torn.parent.mkdir()
    torn.write_bytes(data[: len(data) // 3])
    assert manifest.problem(torn) == f"truncated or corrupt: {len(data) // 3} of {len(data)} bytes"
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    torn.write_bytes(bytes(flipped))
    assert manifest.problem(torn) == "truncated or corrupt: checksum mismatch"
    assert manifest.problem(torn, "epoch_0001.pt") == "not in the checksum manifest"


def test_manifest_round_trips_through_json_and_refuses_a_torn_one(tmp_path):
    path = ckpt_io.save(tmp_path / "epoch_0001.pt", {"epoch": 1})
    manifest = ckpt_io.Manifest()
    manifest.add(path, epoch=1)
    text = manifest.to_json()
    again = ckpt_io.Manifest.from_json(text)
    assert again == manifest and again.epoch("epoch_0001.pt") == 1 and again.epoch("last.pt") is None
    with pytest.raises(ValueError):
        ckpt_io.Manifest.from_json(text[: len(text) // 2])
    with pytest.raises(ValueError):
        ckpt_io.Manifest.from_json('{"format": "something else", "files": {}}')
