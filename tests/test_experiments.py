"""``pclesr experiment``: configuration checks, a tiny run end to end, resume, the report, SRCNN."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from napari_pclesr import models
from napari_pclesr.cli import main as cli_main
from napari_pclesr.experiments import (
    ConfigError,
    available_configs,
    load_config,
    render_report,
    run_experiment,
)

# A whole table in a few seconds: one tiny FSRCNN and one baseline on 64 × 64 phantoms.
TINY = """
[experiment]
title = "Tiny table"
source = "nobody, Table 0"
task = "pcle"
metrics = ["ssim", "delta_gcf_lr", "tot_cs"]
discussion = "Why ours differs."

[data.syn]
kind = "phantoms"

[[sections]]
name = "syn/syn"
train = "syn"
test = "syn"

[methods.net]
label = "Net"
model = "fsrcnn"
settings = { loss = "l1", lr = 1e-3 }

[methods.unsharp]
label = "Unsharp"
baseline = "unsharp"

[scales.small]
iterations = 4
val_every = 2
batch_size = 4
patch_size = 16
frame_size = 64
frames = 4
train_sequences = 1
val_sequences = 1
test_sequences = 1
hparams.fsrcnn = { features = 8, shrink_features = 4, mapping_layers = 1 }

[scales.paper]
iterations = 100
batch_size = 4
patch_size = 16
frame_size = 64
frames = 4
train_sequences = 1
val_sequences = 1
test_sequences = 1

[paper."syn/syn".LR]
ssim = [0.81, 0.06]
[paper."syn/syn".Net]
ssim = [0.87, 0.05]
tot_cs = 0.7
"""


def write_config(tmp_path, text=TINY, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run shared by the tests that only read its outputs."""
    folder = tmp_path_factory.mktemp("run")
    config = load_config(write_config(folder))
    lines = []
    out = run_experiment(config, folder / "results", device="cpu", say=lines.append)
    return out, lines


# -- configurations -----------------------------------------------------------------------------


def test_shipped_configs_load_and_declare_the_seed_tables():
    assert available_configs() == [
        "seed000_real",
        "seed000_table1",
        "seed000_table2",
        "seed001_table1",
        "seed002_table1",
    ]
    table1 = load_config("seed000_table1")
    assert [s.name for s in table1.sections] == ["syn/syn", "org/org", "syn/org"]
    assert {m.label for m in table1.methods.values()} == {
        "EDSR L1", "FSRCNN L1", "EDSR SSIM+L1", "FSRCNN SSIM+L1", "SRGAN",
    }  # fmt: skip
    assert table1.paper["syn/org"]["EDSR SSIM+L1"]["tot_cs"] == 0.65
    cycle = load_config("seed001_table1")
    domains = {m.settings["target_domain"] for m in cycle.methods.values()}
    assert domains == {"natural", "unpaired", "paired", "rescaled"}
    assert {m.settings["objective"] for m in cycle.methods.values()} == {"cycle"}
    dense = load_config("seed002_table1")
    assert [s.scale for s in dense.sections] == [2, 4, 8]
    assert dense.paper["x2"]["DenseNet"] == {"psnr": 38.57, "ssim": 0.950}


def test_the_real_recording_config_needs_the_recording_and_says_where(tmp_path, shared_dir):
    with pytest.raises(ConfigError, match=r"data\.real\.path.*does not exist.*--data-dir"):
        load_config("seed000_real", data_dir=tmp_path)
    config = load_config("seed000_real", data_dir=shared_dir / "data")
    assert config.data["real"].kind == "recording" and config.data["real"].degradation == "org"
    assert [s.name for s in config.sections] == ["org/org", "syn/org"]
    assert config.methods["pretrained_edsr"].checkpoint == "pretrained:edsr"


# Real frames as LR, their mosaic HR-hat as the reference: 3 blocks of 4 frames.
REAL = (
    TINY.replace(
        '[data.syn]\nkind = "phantoms"',
        '[data.real]\nkind = "recording"\n'
        'path = "pcle_colorectal_S01V01.mpeg"\nframes = 12\nframe_step = 2',
    )
    .replace('train = "syn"\ntest = "syn"', 'train = "real"\ntest = "real"')
    .replace('name = "syn/syn"', 'name = "org/org"')
    .replace('[paper."syn/syn"', '[paper."org/org"')
)


def test_a_real_recording_is_scored_against_its_mosaic(tmp_path, shared_dir):
    from napari_pclesr.experiments.data import build_pairs

    config = load_config(write_config(tmp_path, REAL), data_dir=shared_dir / "data")
    pairs = build_pairs(config.data["real"], config.scales["small"], "test", config.seed)
    lr, hr_hat, fov = pairs.lr(0), pairs.hr(0), pairs.fov_mask(0)
    assert lr.shape == hr_hat.shape and lr.shape[1:] == (592, 576) and len(lr) >= 2
    # Integer frames scaled to [0, 1]; the FoV is the lit disc, not the whole frame.
    assert lr.min() >= 0 and lr.max() <= 1 and 0.4 < fov.mean() < 0.9
    assert not lr[:, ~fov].any() and not hr_hat[:, ~fov].any()
    out = run_experiment(config, tmp_path / "results", device="cpu", say=lambda line: None)
    rows = read_csv(out / "scores.csv")
    assert {row["method"] for row in rows} == {"LR", "net", "unsharp"}
    assert all(math.isfinite(float(row[key])) for row in rows for key in ("ssim", "tot_cs"))
    lr_ssim = [float(row["ssim"]) for row in rows if row["method"] == "LR"]
    # HR-hat fuses the block's own frames: close to each LR frame, but not equal to it.
    assert all(0.7 < value < 0.999 for value in lr_ssim)


@pytest.mark.parametrize(
    ("change", "key", "cause"),
    [
        (("[data.syn]", "[data.syn]\ncolour = 3"), "data.syn.colour", "unknown key"),
        (('model = "fsrcnn"', 'model = "fsrcnnn"'), "methods.net.model", "unknown value"),
        (('loss = "l1"', 'loss = "l7"'), "methods.net.settings", "l7"),
        (('baseline = "unsharp"', 'baseline = "sharpest"'), "methods.unsharp.baseline", "sharp"),
        (('test = "syn"', 'test = "real"'), "sections[0].test", "choose one of syn"),
        (("iterations = 4", "iterations = 0"), "scales.small.iterations", ">= 1"),
        (("[paper.", "[paper.\"syn/syn\".Nett]\nssim = 1\n[paper."), "paper.syn/syn.Nett", "LR"),
        (('kind = "phantoms"', 'kind = "recording"\npath = "absent.mpeg"'), "data.syn.path",
         "absent.mpeg does not exist"),
    ],
)  # fmt: skip
def test_a_bad_config_names_the_file_and_the_key(tmp_path, change, key, cause):
    path = write_config(tmp_path, TINY.replace(*change, 1))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {key}: ")
    assert cause in message


def test_cli_refuses_a_bad_config_before_any_work(tmp_path, capsys):
    path = write_config(tmp_path, TINY.replace('model = "fsrcnn"', 'model = "nope"'))
    out = tmp_path / "results"
    status = cli_main(["experiment", str(path), "--out", str(out)])
    assert status == 2
    error = capsys.readouterr().err
    assert "methods.net.model" in error and str(path) in error
    assert "Traceback" not in error
    assert not out.exists()  # nothing was started


def test_unpaired_cycle_domain_without_target_data_fails_naming_it(tmp_path):
    text = TINY.replace(
        'settings = { loss = "l1", lr = 1e-3 }',
        'settings = { objective = "cycle", target_domain = "unpaired" }',
    )
    with pytest.raises(ConfigError, match=r"methods\.net\.target_source: missing.*HR-hat"):
        load_config(write_config(tmp_path, text))


# -- a run --------------------------------------------------------------------------------------


def test_tiny_run_writes_the_results_folder(finished_run):
    out, _ = finished_run
    for name in ("config.toml", "environment.json", "scores.csv", "summary.csv", "summary.md"):
        assert (out / name).is_file(), name
    assert (out / "config.toml").read_text() == TINY
    environment = json.loads((out / "environment.json").read_text())
    assert environment["device"] == "cpu" and environment["torch"] == torch.__version__
    scores = read_csv(out / "scores.csv")
    # LR, Net and Unsharp, each on the 4 frames of the one test sequence.
    assert [row["label"] for row in scores] == ["LR"] * 4 + ["Net"] * 4 + ["Unsharp"] * 4
    assert all(math.isfinite(float(row["ssim"])) for row in scores)
    assert {float(row["delta_gcf_lr"]) for row in scores if row["label"] == "LR"} == {0.0}
    summary = {row["label"]: row for row in read_csv(out / "summary.csv")}
    net_ssim = [float(row["ssim"]) for row in scores if row["label"] == "Net"]
    assert float(summary["Net"]["ssim_mean"]) == pytest.approx(np.mean(net_ssim))
    assert float(summary["Net"]["ssim_paper_mean"]) == 0.87
    assert summary["Unsharp"]["ssim_paper_mean"] == ""  # the paper has no such column
    assert "| SSIM |" in (out / "summary.md").read_text()
    assert (out / "figures" / "syn-syn.png").stat().st_size > 1000
    assert (out / "figures" / "ssim.png").stat().st_size > 1000
    done = json.loads((out / "training" / "syn-x1" / "net" / "done.json").read_text())
    assert done["iterations"] == 4 and done["checkpoint"] in ("best.pt", "last.pt")


def test_an_earlier_run_is_never_overwritten_unless_asked(finished_run, capsys):
    out, _ = finished_run
    before = (out / "scores.csv").read_bytes()
    status = cli_main(["experiment", str(out / "config.toml"), "--out", str(out)])
    assert status == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "scores.csv").read_bytes() == before


def test_resume_skips_finished_cells_and_resumes_interrupted_training(tmp_path, finished_run):
    out, _ = finished_run
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    config = load_config(write_config(tmp_path))
    lines = []
    run_experiment(config, copy, resume=True, device="cpu", say=lines.append)
    assert sum("done earlier, skipped" in line for line in lines) == 3
    assert not any("training" in line for line in lines)
    # Interrupt the network's cell: its scores and its done marker gone, last.pt kept.
    (copy / "cells" / "syn-syn" / "net.csv").unlink()
    (copy / "training" / "syn-x1" / "net" / "done.json").unlink()
    lines.clear()
    run_experiment(config, copy, resume=True, device="cpu", say=lines.append)
    assert any("resuming Net" in line for line in lines)
    assert sum("done earlier, skipped" in line for line in lines) == 2
    assert (copy / "cells" / "syn-syn" / "net.csv").is_file()
    # The resumed training had nothing left to do (4 of 4 iterations were saved in last.pt).
    done = json.loads((copy / "training" / "syn-x1" / "net" / "done.json").read_text())
    assert done["iterations"] == 4


def test_resume_refuses_another_configuration(tmp_path, finished_run):
    out, _ = finished_run
    changed = load_config(write_config(tmp_path, TINY.replace("iterations = 4", "iterations = 5")))
    with pytest.raises(ValueError, match="another configuration"):
        run_experiment(changed, out, resume=True, device="cpu")


def test_downsampled_task_scores_interpolation_in_the_known_order(tmp_path):
    text = TINY.replace('task = "pcle"', 'task = "downsampled"')
    text = text.replace(
        'metrics = ["ssim", "delta_gcf_lr", "tot_cs"]', 'metrics = ["psnr", "ssim"]'
    )
    text = text.replace('test = "syn"', 'test = "syn"\nscale = 2\nmethods = ["near", "cubic"]')
    text = text.replace("frame_size = 64", "frame_size = 96")
    text += '[methods.near]\nlabel = "Nearest"\nbaseline = "nearest"\n'
    text += '[methods.cubic]\nlabel = "Bicubic"\nbaseline = "bicubic"\n'
    text = text.replace('[paper."syn/syn".LR]\nssim = [0.81, 0.06]\n', "")
    text = text.replace('[paper."syn/syn".Net]', '[paper."syn/syn".Bicubic]')
    out = run_experiment(load_config(write_config(tmp_path, text)), tmp_path / "r", device="cpu")
    summary = {row["label"]: row for row in read_csv(out / "summary.csv")}
    assert set(summary) == {"Nearest", "Bicubic"}  # no LR row: it has another size
    assert float(summary["Bicubic"]["psnr_mean"]) > float(summary["Nearest"]["psnr_mean"])
    assert float(summary["Bicubic"]["ssim_mean"]) > float(summary["Nearest"]["ssim_mean"])


# -- the report ---------------------------------------------------------------------------------


def test_report_puts_ours_beside_the_paper_and_warns_about_small_runs(finished_run, tmp_path):
    out, _ = finished_run
    text = render_report([out])
    assert "## Tiny table" in text and "Paper: nobody, Table 0." in text
    assert "Small-scale CPU run" in text
    summary = {row["label"]: row for row in read_csv(out / "summary.csv")}
    ours = float(summary["Net"]["ssim_mean"])
    assert f"{ours:.3f}" in text and "(0.870 ± 0.050)" in text
    assert "Why ours differs." in text
    assert "ours − paper" in text
    page = tmp_path / "results.md"
    assert cli_main(["experiment", "--report", str(out), "--output", str(page)]) == 0
    assert page.read_text() == text


def test_report_of_an_unfinished_folder_fails_clearly(tmp_path, capsys):
    assert cli_main(["experiment", "--report", str(tmp_path)]) == 2
    assert "no summary.csv" in capsys.readouterr().err


# -- SRCNN --------------------------------------------------------------------------------------


def test_srcnn_parameter_count_by_hand():
    # 9-1-5 with 64 and 32 maps: conv weights and biases; the upscaling has no weights.
    by_hand = (9 * 9 * 64 + 64) + (64 * 32 + 32) + (32 * 5 * 5 + 1)
    assert by_hand == 8129
    for scale in (1, 2, 4, 8):
        assert models.count_parameters(models.create("srcnn", scale=scale)) == by_hand
    nine_five_five = models.create("srcnn", mid_kernel=5)
    assert models.count_parameters(nine_five_five) == by_hand - 64 * 32 + 64 * 32 * 25


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_srcnn_shape_and_bicubic_start(scale):
    model = models.create("srcnn", scale=scale)
    frames = torch.rand(2, 1, 9, 13, generator=torch.Generator().manual_seed(0))
    out = model(frames)
    assert out.shape == (2, 1, 9 * scale, 13 * scale)
    # It restores the bicubic enlargement: with the mapping made an identity path, the output
    # is exactly bicubic interpolation.
    with torch.no_grad():
        for conv in model.body[::2]:
            conv.weight.zero_()
            conv.bias.zero_()
        centre = [k // 2 for k in model.body[0].weight.shape[-2:]]
        model.body[0].weight[0, 0, centre[0], centre[1]] = 1.0
        model.body[2].weight[0, 0] = 1.0
        model.body[4].weight[0, 0, 2, 2] = 1.0
    expected = torch.nn.functional.interpolate(
        frames, scale_factor=scale, mode="bicubic", align_corners=False
    ) if scale > 1 else frames  # fmt: skip
    np.testing.assert_allclose(model(frames).detach(), expected.clamp(min=0), atol=1e-6)


def test_srcnn_rejects_even_kernels():
    with pytest.raises(ValueError, match="mid_kernel must be odd"):
        models.create("srcnn", mid_kernel=2)
