"""rl._io: the one atomic-write mechanism (trainer checkpoints, study results, SFT cache)."""

import json

import pytest
import torch

from rl._io import atomic_save, atomic_write, atomic_write_json, atomic_write_text, remove_stale_temps


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})

    def crash(f):
        f.write(b'{"a": 2, "partial')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_text_json_and_torch_round_trip(tmp_path):
    atomic_write_text(tmp_path / "sub" / "t.txt", "héllo\n")  # creates the folder, writes UTF-8
    assert (tmp_path / "sub" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "j.json", {"b": [1.5, float("nan")]})
    back = json.loads((tmp_path / "j.json").read_text())
    assert back["b"][0] == 1.5 and back["b"][1] != back["b"][1]
    atomic_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.arange(3))


def test_remove_stale_temps_only_removes_temps(tmp_path):
    (tmp_path / ".r.json.abc.tmp").write_text("torn")
    (tmp_path / "r.json").write_text("{}")
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
