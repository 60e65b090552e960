"""Artifacts readable by their owner only; nothing written or read through a symlink."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cinnamon_pool.safefiles import append_text, open_for_reading, private_folder, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_artifacts_are_0600_in_0700_folders_also_when_they_existed_before(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts" / "2026-12-03" / "run-1"
    folder.mkdir(parents=True, mode=0o755)
    old = folder / "snapshot.md"
    old.write_text("older")
    old.chmod(0o644)
    write_private(private_folder(folder) / "snapshot.md", "the page")
    write_private(folder / "screenshot.png", b"\x89PNG")
    assert mode(folder) == 0o700
    assert {p.name: mode(p) for p in folder.iterdir()} == {"snapshot.md": 0o600, "screenshot.png": 0o600}
    assert old.read_text() == "the page"


def test_a_symlink_is_refused_for_writing_appending_and_reading(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    link = tmp_path / "link"
    os.symlink(victim, link)
    for attempt in (lambda: write_private(link, "x"), lambda: append_text(link, "x"), lambda: open_for_reading(link)):
        with pytest.raises(OSError) as refused:
            attempt()
        assert refused.value.errno == errno.ELOOP
    assert victim.read_text() == "untouched"
    os.symlink(victim, tmp_path / "folder")
    with pytest.raises(OSError):
        private_folder(tmp_path / "folder")


def test_a_device_or_a_fifo_is_not_a_log_file_and_does_not_hang_the_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as refused:
        append_text(fifo, "x")  # no reader: ENXIO at open, where a blocking open would hang
    assert refused.value.errno == errno.ENXIO
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(OSError) as refused:
            open_for_reading(path)
        assert refused.value.errno == errno.EINVAL
