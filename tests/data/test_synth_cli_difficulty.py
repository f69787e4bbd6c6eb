"""``medattn data synth --difficulty/--version`` reach :func:`write_synthetic`."""

from __future__ import annotations

from medattn.data import write_synthetic


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_data_synth_passes_difficulty_and_version(tmp_path, cli):
    args = ["data", "synth", "--n", "10", "--img-size", "32", "--seed", "3"]
    cli([*args, "--out", tmp_path / "hard", "--difficulty", "0.9"])
    cli([*args, "--out", tmp_path / "v1", "--version", "1"])
    hard = write_synthetic(tmp_path / "ref_hard", n=10, img_size=32, seed=3, difficulty=0.9)
    v1 = write_synthetic(tmp_path / "ref_v1", n=10, img_size=32, seed=3, version=1)
    default = write_synthetic(tmp_path / "ref_default", n=10, img_size=32, seed=3)
    assert _files(tmp_path / "hard") == _files(hard) != _files(default)
    assert _files(tmp_path / "v1") == _files(v1) != _files(default)
    cli([*args, "--out", tmp_path / "bad", "--difficulty", "1.5"], exit_code=2)
