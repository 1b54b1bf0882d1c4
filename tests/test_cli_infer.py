"""``pclesr infer``: single recordings, folders, progress, refusals and bad inputs."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from conftest import save_tiny_fsrcnn

from napari_pclesr import infer
from napari_pclesr.cli import main
from napari_pclesr.cli._common import EXIT_BAD_INPUT, EXIT_OK, EXIT_SOME_FAILED
from napari_pclesr.cli.infer import ProgressLine
from napari_pclesr.infer import InferenceProgress, super_resolve
from napari_pclesr.io import read_sequence, write_mkt


def disc_frames(n_frames=5, shape=(40, 48), seed=0):
    """Smooth frames in camera-like units, zero outside a disc."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    inside = (rows - shape[0] / 2) ** 2 + (cols - shape[1] / 2) ** 2 <= (min(shape) / 2 - 2) ** 2
    return ((rng.random((n_frames, *shape)) * 3000 + 200) * inside).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny ×1 FSRCNN checkpoint (receptive-field radius 2 + 1 + 4 = 7)."""
    return save_tiny_fsrcnn(tmp_path_factory.mktemp("run") / "best.pt")


def write_tiff(path, frames):
    tifffile.imwrite(path, frames, photometric="minisblack")


def infer_cli(*argv) -> int:
    return main(["infer", *(str(arg) for arg in argv), "--device", "cpu"])


def test_writes_the_super_resolved_stack_and_tiles_exactly(checkpoint, tmp_path, capsys):
    frames = disc_frames()
    source, target = tmp_path / "lr.tif", tmp_path / "sr.tif"
    write_tiff(source, frames)
    assert infer_cli(checkpoint, source, target, "--tile", "19", "--batch-size", "3") == EXIT_OK
    written = tifffile.imread(target)
    _, meta = read_sequence(source)
    expected = super_resolve(frames, checkpoint, device="cpu", fov_mask=meta["fov_mask"])
    np.testing.assert_allclose(written, expected, atol=1e-5 * np.ptp(frames))
    out = capsys.readouterr().out
    assert f"{source} -> {target}: 5 frame(s) 40x48 -> 40x48 in" in out and "frames/s" in out


def test_never_writes_over_an_input_or_an_earlier_result(checkpoint, tmp_path, capsys):
    source = tmp_path / "lr.tif"
    write_tiff(source, disc_frames())
    original = source.read_bytes()
    os.link(source, tmp_path / "link.tif")
    for output in (source, tmp_path / "link.tif", tmp_path / "." / "lr.tif"):
        assert infer_cli(checkpoint, source, output) == EXIT_BAD_INPUT
        assert "refusing to write" in capsys.readouterr().err
    assert source.read_bytes() == original
    earlier = tmp_path / "sr.tif"
    earlier.write_bytes(b"an earlier result")
    assert infer_cli(checkpoint, source, earlier) == EXIT_BAD_INPUT
    assert "already exists; use --overwrite" in capsys.readouterr().err
    assert earlier.read_bytes() == b"an earlier result"
    assert infer_cli(checkpoint, source, earlier, "--overwrite") == EXIT_OK
    assert tifffile.imread(earlier).shape == (5, 40, 48)


@pytest.fixture
def recordings(tmp_path):
    """A folder of recordings: a TIFF, an .mkt, a sub-folder of frames, a damaged TIFF, a
    second file named like the TIFF, a PNG frame and a text file."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_tiff(folder / "a.tif", disc_frames(3))
    write_mkt(folder / "a.mkt", disc_frames(4, seed=1).round().astype(np.int16))
    (folder / "seq").mkdir()
    for k, frame in enumerate(disc_frames(2, seed=2).astype(np.uint16)):
        iio.imwrite(folder / "seq" / f"f{k}.png", frame)
    (folder / "broken.tif").write_bytes(b"II*\0" + b"\xff" * 64)
    iio.imwrite(folder / "lone.png", np.zeros((8, 8), np.uint8))
    (folder / "notes.txt").write_text("not a recording")
    return folder


def test_folder_mode_super_resolves_each_recording_and_skips_bad_ones(
    checkpoint, recordings, tmp_path, capsys
):
    out = tmp_path / "out"
    assert infer_cli(checkpoint, recordings, out) == EXIT_SOME_FAILED
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a_mkt_sr.tif", "a_tif_sr.tif", "seq_sr.tif"]
    assert tifffile.imread(out / "a_tif_sr.tif").shape == (3, 40, 48)
    assert tifffile.imread(out / "a_mkt_sr.tif").shape == (4, 40, 48)
    assert tifffile.imread(out / "seq_sr.tif").shape == (2, 40, 48)
    assert f"skipped {recordings / 'broken.tif'}: cannot be read as TIFF" in captured.err
    assert "left out 1 PNG frame(s)" in captured.err and "notes.txt" in captured.err
    assert "3 of 4 recording(s) super-resolved" in captured.out
    assert "1 failed: broken.tif" in captured.out
    # Every recording that worked, and only those, is reported on its own line.
    assert captured.out.count(" frame(s) 40x48 -> 40x48 in ") == 3
    # A second run refuses to replace the results unless asked.
    assert infer_cli(checkpoint, recordings, out) == EXIT_BAD_INPUT
    assert "already exist; use --overwrite" in capsys.readouterr().err


def test_folder_mode_refusals(checkpoint, recordings, tmp_path, capsys):
    assert infer_cli(checkpoint, recordings, recordings / "sr") == EXIT_BAD_INPUT
    assert "lies inside the input" in capsys.readouterr().err
    frames_only = recordings / "seq"
    assert infer_cli(checkpoint, frames_only, tmp_path / "out") == EXIT_BAD_INPUT
    assert "holds frame files: to super-resolve them as one sequence" in capsys.readouterr().err
    # One recording into a folder that does not exist yet.
    assert infer_cli(checkpoint, recordings / "a.tif", tmp_path / "results") == EXIT_OK
    assert tifffile.imread(tmp_path / "results" / "a_sr.tif").shape == (3, 40, 48)
    # With an output .tif, a folder of frames is one sequence.
    assert infer_cli(checkpoint, frames_only, tmp_path / "seq.tif") == EXIT_OK
    assert tifffile.imread(tmp_path / "seq.tif").shape == (2, 40, 48)
    only_mkt = tmp_path / "mkt"
    only_mkt.mkdir()
    (recordings / "a.mkt").rename(only_mkt / "a.mkt")
    assert infer_cli(checkpoint, only_mkt, tmp_path / "all.tif") == EXIT_BAD_INPUT
    assert "holds no PNG/TIFF frames to read as one sequence" in capsys.readouterr().err


def test_progress_line_shows_frames_per_second_and_eta():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    bar = ProgressLine(terminal, "rec.mkt")
    bar(InferenceProgress(done=50, total=200, elapsed_s=10.0))
    assert terminal.getvalue() == (
        "\rrec.mkt [######..................] 50/200 frames 5.0 frames/s ETA 0m30s"
    )
    bar(InferenceProgress(done=60, total=200, elapsed_s=11.0))  # within 0.1 s: not redrawn
    assert terminal.getvalue().count("\r") == 1
    bar.clear()
    width = len("rec.mkt [######..................] 50/200 frames 5.0 frames/s ETA 0m30s")
    assert terminal.getvalue().endswith("\r" + " " * width + "\r")
    log = io.StringIO()
    ProgressLine(log, "rec.mkt")(InferenceProgress(done=200, total=200, elapsed_s=4.0))
    assert log.getvalue() == "", "a log gets no line for a run shorter than 10 s"
    bar = ProgressLine(log, "rec.mkt")
    bar._last_draw -= 10
    bar(InferenceProgress(done=200, total=200, elapsed_s=40.0))
    assert log.getvalue() == (
        "rec.mkt [########################] 200/200 frames 5.0 frames/s ETA done\n"
    )


def test_bad_inputs_are_one_line_errors_naming_the_file(checkpoint, tmp_path, capsys):
    video = tmp_path / "bad.mpeg"
    video.write_bytes(np.random.default_rng(0).bytes(20_000))
    nan = tmp_path / "nan.tif"
    frames = disc_frames()
    frames[3, 20, 20] = np.nan
    write_tiff(nan, frames)
    run_dir = checkpoint.parent
    cases = [
        (checkpoint, video, "bad.mpeg: ffmpeg cannot open it as a video"),
        (checkpoint, nan, "nan.tif (frames 0–4) contains NaN"),
        (run_dir, nan, "is a folder, not a checkpoint file"),
        (checkpoint, tmp_path / "absent.tif", "absent.tif"),
    ]
    for source, recording, message in cases:
        assert infer_cli(source, recording, tmp_path / "out.tif") == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err and "ffmpeg version" not in err
    assert not (tmp_path / "out.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mpeg", "nan.tif"]


def test_a_huge_batch_size_runs_in_bounded_batches(checkpoint, tmp_path, capsys, monkeypatch):
    source = tmp_path / "lr.tif"
    write_tiff(source, disc_frames(6))
    monkeypatch.setattr(infer, "PASS_MEMORY_BYTES", 1_600_000)  # 4 frames of 40x48
    assert infer_cli(checkpoint, source, tmp_path / "sr.tif", "--batch-size", "100000") == EXIT_OK
    err = capsys.readouterr().err
    assert err.startswith("pclesr infer: warning: a batch of 6 frames") and err.count("\n") == 1
    assert "using batches of 4" in err
    assert tifffile.imread(tmp_path / "sr.tif").shape == (6, 40, 48)


def test_blank_frames_come_back_unchanged(checkpoint, tmp_path):
    frames = disc_frames(3)
    frames[1] = 0
    source = tmp_path / "lr.tif"
    write_tiff(source, frames)
    assert infer_cli(checkpoint, source, tmp_path / "sr.tif") == EXIT_OK
    written = tifffile.imread(tmp_path / "sr.tif")
    np.testing.assert_array_equal(written[1], 0)
    assert np.ptp(written[0]) > 0


@pytest.mark.slow
def test_real_cellvizio_recording(shared_dir, checkpoint, tmp_path):
    """The real MPEG: the whole recording read after the FoV sample (the read that used to
    fail in the frame cache), and streamed through ``pclesr infer``."""
    import imageio_ffmpeg

    path = shared_dir / "data" / "pcle_colorectal_S01V01.mpeg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    frames, meta = read_sequence(path)  # its FoV estimate caches the first 24 frames
    decoder = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray", bpp=1)
    info = next(decoder)
    width, height = info["size"]
    reference = np.stack([np.frombuffer(f, np.uint8).reshape(height, width) for f in decoder])
    assert len(reference) == 260 and frames.shape == (260, height, width)
    np.testing.assert_array_equal(np.asarray(frames), reference)  # 260 frames > the cache
    assert frames._cache_frames < 260

    output = tmp_path / "sr.tif"
    assert infer_cli(checkpoint, path, output, "--frames", "100:124") == EXIT_OK
    expected = super_resolve(
        reference[100:124], checkpoint, device="cpu", fov_mask=meta["fov_mask"]
    )
    np.testing.assert_allclose(tifffile.imread(output), expected, atol=1e-4 * 255)
    saved = read_sequence(output)[1]["raw"]["pclesr"]
    assert saved["frame_rate"] == pytest.approx(24) and saved["source_frames"] == [100, 124, 1]


PEAK_RSS_SCRIPT = """
import os, resource, subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "napari_pclesr.cli", *sys.argv[1:]])
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_frames(tmp_path):
    """502 frames of 336×464 need no more memory than 5 (measured in a child process)."""
    if not hasattr(os, "wait4"):
        pytest.skip("os.wait4 is not available on this platform")
    rng = np.random.default_rng(0)
    long = tmp_path / "long.mkt"
    base = (rng.random((336, 464)) * 2000).astype(np.int16)
    write_mkt(long, (np.roll(base, k, axis=1) for k in range(502)), frame_rate=12.0)
    write_mkt(tmp_path / "clip.mkt", (np.roll(base, k, axis=1) for k in range(5)))
    peaks = {}
    for name in ("clip", "long"):
        argv = ["infer", "nearest", str(tmp_path / f"{name}.mkt"), str(tmp_path / f"{name}.tif")]
        result = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_SCRIPT, *argv],
            capture_output=True,
            text=True,
            check=True,
        )
        peak_kib, code = (int(v) for v in result.stdout.split()[-2:])
        assert code == 0, result.stderr
        peaks[name] = peak_kib / 1024
    assert tifffile.TiffFile(tmp_path / "long.tif").series[0].shape == (502, 336, 464)
    growth = peaks["long"] - peaks["clip"]
    assert growth < 150, (
        f"peak RSS {peaks['clip']:.0f} MB for 5 frames, {peaks['long']:.0f} MB for 502"
    )
