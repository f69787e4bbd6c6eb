"""Which checkpoint a resumed run continues from: newest first, full training states only."""

from __future__ import annotations

from medattn import checkpoint as ckpt_io
from medattn.tracking.checkpoints import resume_candidates


def test_candidates_are_full_states_newest_first():
    names = ["best.pt", "epoch_0000.pt", "manifest.json", "epoch_0002.pt", "last.pt", "epoch_0001.pt"]
    assert resume_candidates(names) == [
        "checkpoints/last.pt",
        "checkpoints/epoch_0002.pt",
        "checkpoints/epoch_0001.pt",
        "checkpoints/epoch_0000.pt",
    ]


def test_manifest_epochs_order_the_candidates_and_break_ties_for_last(tmp_path):
    manifest = ckpt_io.Manifest()
    for name, epoch in (("last.pt", 4), ("epoch_0004.pt", 4), ("epoch_0009.pt", 1)):
        path = tmp_path / name
        path.write_bytes(b"x")
        manifest.add(path, epoch)
    # a file name's number is only a fallback: the manifest says which epoch a file holds
    assert resume_candidates(["epoch_0009.pt", "epoch_0004.pt", "last.pt"], manifest) == [
        "checkpoints/last.pt",
        "checkpoints/epoch_0004.pt",
        "checkpoints/epoch_0009.pt",
    ]
