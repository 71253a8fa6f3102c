"""The JSON record in which a kit module keeps what it changed on a host (its state_file), so that
its teardown undoes exactly that. The modules import it as ansible.module_utils.echolab_record
(ansible.cfg `module_utils`), so it ships to the managed host with each of them."""

from __future__ import annotations

import json
import os
from typing import Any

FIX = "repair it, or undo by hand what it lists and remove it"


def read_record(path: str) -> dict[str, Any]:
    """The record at `path`; {} when there is none (no file, or an empty one). Raises ValueError
    naming the file when it holds anything but a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the record {path} is not JSON ({exc}): {FIX}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the record {path} is not a JSON object: {FIX}")
    return data


def write_record(path: str, data: dict[str, Any]) -> None:
    """Write `data` to `path` as indented JSON (creating its folder)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
