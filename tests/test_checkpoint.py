"""detect.checkpoint: atomic writes and load errors that name the file."""

import os
import stat

import pytest
import torch

from detect.checkpoint import FORMAT, CheckpointError, load_checkpoint, remove_partial_files, save_checkpoint


def _checkpoint(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "classes": {1: "a", 7: "b"}, "iteration": 5}


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "sub" / "model.pth"  # the folder is created
    save_checkpoint(path, _checkpoint(1.0))
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT
    assert torch.equal(loaded["model"]["w"], torch.ones(3))
    assert loaded["classes"] == {1: "a", 7: "b"} and loaded["iteration"] == 5
    assert [p.name for p in path.parent.iterdir()] == ["model.pth"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    save_checkpoint(path, _checkpoint(1.0))
    old_bytes = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # a crash midway through writing
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _checkpoint(2.0))
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_interrupted_save_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "model.pth", _checkpoint(1.0))
    assert list(tmp_path.iterdir()) == []


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(CheckpointError, match=f"not found: {path}"):
        load_checkpoint(path)


def test_plain_state_dict_is_not_a_detect_checkpoint(tmp_path):
    path = tmp_path / "torchvision.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "not a detect checkpoint" in str(info.value)
    assert "convert_torchvision.py" in str(info.value)


def test_unreadable_file_names_the_path(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint"):
        load_checkpoint(path)


def test_checkpoint_without_classes_is_an_error(tmp_path):
    path = tmp_path / "partial.pth"
    torch.save({"format": FORMAT, "model": {}}, path)
    with pytest.raises(CheckpointError, match=f"{path}: checkpoint lacks 'classes'"):
        load_checkpoint(path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoint_mode_follows_the_umask(tmp_path, umask, mode):
    """Colleagues read checkpoints as they read every other output: the umask decides, not 0600."""
    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "model.pth", _checkpoint(1.0))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model.pth").stat().st_mode) == mode


def test_partial_files_of_killed_writers_are_found_and_removed(tmp_path):
    save_checkpoint(tmp_path / "model_0000002.pth", _checkpoint(1.0))
    (tmp_path / ".model_0000004.pth.4242.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")
    assert [p.name for p in remove_partial_files(tmp_path)] == [".model_0000004.pth.4242.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000002.pth", "notes.tmp"]
