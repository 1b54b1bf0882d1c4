"""Atomic writes: stale temporary files, file modes, and write errors that name file and cause."""

from __future__ import annotations

import errno
import os
import re
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from napari_pclesr import _atomic
from napari_pclesr._atomic import atomic_path, remove_stale_temporaries
from napari_pclesr.train.checkpoint import save_checkpoint

KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    from napari_pclesr._atomic import atomic_path

    with atomic_path(sys.argv[1]) as temporary:
        print(temporary.name, flush=True)
        os._exit(9)  # killed mid-write: no clean-up runs
    """
)


def temporary_name(target, pid, host=None):
    return f".{target.stem}.{pid}.{host or _atomic._host_tag()}.0123abcd{target.suffix}"


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "last.pt"
    finished = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True, text=True
    )
    assert finished.returncode == 9
    left = tmp_path / finished.stdout.strip()
    assert left.is_file() and left.stat().st_size == 0 and not target.exists()
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_only_temporaries_of_dead_local_processes_are_removed(tmp_path):
    target = tmp_path / "last.pt"
    live_writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files = {
            "dead": tmp_path / temporary_name(target, dead_pid()),
            "this process": tmp_path / temporary_name(target, os.getpid()),
            "live process": tmp_path / temporary_name(target, live_writer.pid),
            "other host": tmp_path / temporary_name(target, dead_pid(), host="elsewhere"),
            "other target": tmp_path / temporary_name(tmp_path / "best.pt", dead_pid()),
            "longer stem": tmp_path / temporary_name(tmp_path / "last.1.pt", dead_pid()),
            "user file": tmp_path / ".last.notes.pt",
        }
        for path in files.values():
            path.write_bytes(b"")
        assert remove_stale_temporaries(target) == [files["dead"]]
    finally:
        live_writer.kill()
        live_writer.wait()
    assert sorted(p for p in tmp_path.iterdir()) == sorted(
        path for name, path in files.items() if name != "dead"
    )


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_mode_of_the_umask(tmp_path, umask):
    from napari_pclesr.metrics import compare, evaluate_methods

    previous = os.umask(umask)
    try:
        with atomic_path(tmp_path / "a.npy") as temporary:
            np.save(temporary, np.zeros(3))
        frames = np.random.default_rng(0).random((2, 16, 16))
        table = compare(evaluate_methods({"x": frames * 0.9}, frames, frames * 0.8))
        table.to_csv(tmp_path / "scores.csv")
    finally:
        os.umask(previous)
    for name in ("a.npy", "scores.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_full_disk_names_the_file_and_the_cause(tmp_path, monkeypatch):
    target = tmp_path / "sr.tif"
    target.write_bytes(b"earlier result")

    def full(temporary):
        temporary.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    expected = re.escape(f"cannot write {target}: no space left")
    with pytest.raises(OSError, match=expected) as info, atomic_path(target) as temporary:
        full(temporary)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.tif"]

    # torch reports a full disk as a RuntimeError: the free space tells what happened.
    monkeypatch.setattr(
        _atomic.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 4096})()
    )
    expected = re.escape("no space left on the device (4,096 bytes free)")
    with pytest.raises(OSError, match=expected), atomic_path(target):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
    with pytest.raises(ValueError, match="bad values"), atomic_path(target):
        raise ValueError("bad values")  # not a failed write: left as it is


def test_a_real_write_failure_through_torch_names_the_checkpoint(tmp_path):
    """The file-size limit makes the operating system refuse the write (EFBIG), as a full
    disk would (ENOSPC); torch turns the error into a RuntimeError."""
    path = tmp_path / "last.pt"
    payload = {"state_dict": {"w": torch.zeros(100_000)}, "normalisation": {}}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
    try:
        with pytest.raises(OSError, match=re.escape(f"cannot write {path}: the file is too large")):
            save_checkpoint(payload, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_reported_before_writing(tmp_path):
    expected = re.escape(f"the folder {tmp_path / 'absent'} does not exist")
    with pytest.raises(FileNotFoundError, match=expected), atomic_path(tmp_path / "absent" / "x"):
        pass
