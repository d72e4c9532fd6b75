"""``iii-gateway keygen``: a 0600 private key file, its public key alone on stdout, no overwrite."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.link import format_public_key, load_private_key, parse_public_key


def test_keygen_writes_a_private_key_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "edge.key"
    assert main(["keygen", str(path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert printed == format_public_key(load_private_key(str(path)))
    parse_public_key(printed)  # the text a peers file or a Bridge's public_key takes

    assert main(["keygen", "--public", str(path)]) == 0
    assert capsys.readouterr().out.strip() == printed


def test_keygen_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "edge.key"
    assert main(["keygen", str(path)]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keygen", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "refusing to overwrite" in captured.err
    assert format_public_key(load_private_key(str(path))) == first  # untouched
    assert main(["keygen", "--force", str(path)]) == 0
    second = capsys.readouterr().out.strip()
    assert second != first and format_public_key(load_private_key(str(path))) == second
