"""plugins/module_utils/echolab_record.py: the JSON record in which echolab_source_addresses,
echolab_bridge_route and echolab_bridge_forward keep what they changed (tests/test_roles_netns.py
runs the modules with it for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
from module_loader import load_module

record = load_module("echolab_record", "plugins/module_utils/echolab_record.py")


def test_no_record_reads_empty(tmp_path: Path) -> None:
    """No file, an empty one or one of blanks: nothing recorded."""
    assert record.read_record(str(tmp_path / "none.json")) == {}
    (tmp_path / "empty.json").write_text("")
    assert record.read_record(str(tmp_path / "empty.json")) == {}
    (tmp_path / "blank.json").write_text(" \n")
    assert record.read_record(str(tmp_path / "blank.json")) == {}


def test_written_record_reads_back_in_its_format(tmp_path: Path) -> None:
    """Indented JSON with a final newline, its folder created; read back as written."""
    path = tmp_path / "state" / "route.json"
    record.write_record(str(path), {"subnet": "10.0.0.0/24", "gateway": "192.0.2.1"})
    assert path.read_text() == '{\n  "subnet": "10.0.0.0/24",\n  "gateway": "192.0.2.1"\n}\n'
    assert record.read_record(str(path)) == {"subnet": "10.0.0.0/24", "gateway": "192.0.2.1"}
    record.write_record(str(path), {"forwarding_on": ["br0"]})
    assert record.read_record(str(path)) == {"forwarding_on": ["br0"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"added": ["10.0.0.5/32"', "is not JSON (Expecting"),
        ('["10.0.0.5/32"]', "is not a JSON object"),
    ],
)
def test_bad_record_is_refused_by_name_and_kept(tmp_path: Path, text: str, message: str) -> None:
    """A cut-off or foreign record: a ValueError naming the file and what to do; file untouched."""
    path = tmp_path / "added.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="repair it, or undo by hand") as caught:
        record.read_record(str(path))
    assert f"the record {path} {message}" in str(caught.value)
    assert path.read_text() == text
