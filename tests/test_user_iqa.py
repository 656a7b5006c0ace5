"""What a new user hits with the IQA commands (issue #17): in-sample warnings, t-SNE on authentic-photo datasets,
head overwrites, small samples, exit codes and messages for missing datasets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.cli.app import app

runner = CliRunner()


def _dataset(folder, n, seed, distortion=False):
    """Generated photos whose MOS is their brightness; like CLIVE, no distortion labels unless asked."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = ["image,mos" + (",distortion" if distortion else "")]
    for i in range(n):
        level = rng.uniform(0.15, 1.0)
        pix = rng.random((32, 40, 3)) * (0.6 if i % 2 else 0.1) + level * 0.5
        Image.fromarray((pix.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"im{i:02d}.png")
        lines.append(f"im{i:02d}.png,{100 * level:.3f}" + (f",{'noise' if i % 2 else 'clean'}" if distortion else ""))
    (folder / "mos.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_iqa")
    _dataset(root / "photos", 24, seed=0)
    _dataset(root / "labelled", 16, seed=1, distortion=True)
    return root


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_crossval_on_the_same_dataset_warns_in_sample(data, tiny_encoder_dir):
    same = _run("crossval", "--train", "photos", "--test", data / "photos" / "mos.csv", "--data-root", data,
                "-m", tiny_encoder_dir, "--device", "cpu")
    assert same.exit_code == 0, same.output
    assert "24 of the 24 test images" in same.stderr and "in-sample" in same.stderr
    other = _run("crossval", "--train", "photos", "--test", "labelled", "--data-root", data, "-m", tiny_encoder_dir,
                 "--device", "cpu")
    assert other.exit_code == 0 and "in-sample" not in other.stderr


def _place_head(model_dir, name, dataset):
    """A head named `name`, fitted (so its metadata says) on `dataset`, where `sliq fit-head --name NAME` saves."""
    from sliq_cli.iqa.head import RidgeHead, user_head_path
    from sliq_cli.model.checkpoint import read_config

    head = RidgeHead.load(model_dir / "heads" / "test.safetensors")
    head.meta.update(name=name, dataset=dataset)
    return head.save(user_head_path(name, read_config(model_dir)["fingerprint"]))


def test_fit_head_refuses_to_overwrite_and_warns_on_small_samples(data, tiny_encoder_dir):
    existing = _place_head(tiny_encoder_dir, "photos", "photos")
    before = existing.read_bytes()
    args = ("fit-head", "--dataset", "photos", "--data-root", data, "-m", tiny_encoder_dir, "--splits", 2, "--device", "cpu")
    again = _run(*args)
    assert again.exit_code == 2 and str(existing) in again.stderr.replace("\n", "") and "--force" in again.stderr
    assert existing.read_bytes() == before
    forced = _run(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert "only 24 images" in forced.stderr and existing.read_bytes() != before


def test_the_library_guards_and_warns_as_the_cli_does(data, tiny_encoder_dir):
    """fit_head, crossval and plot_scatter called from Python: the same refusal and the same warnings."""
    from sliq_cli.errors import HeadExistsError, SliqWarning
    from sliq_cli.iqa.plots import plot_scatter
    from sliq_cli.iqa.protocol import DatasetRef, crossval, fit_head

    photos = DatasetRef("photos", data_root=data)
    existing = _place_head(tiny_encoder_dir, "photos", "photos")
    before = existing.read_bytes()
    with pytest.raises(HeadExistsError, match="force"):
        fit_head(photos, model=str(tiny_encoder_dir), n_splits=2, device="cpu")
    assert existing.read_bytes() == before
    with pytest.warns(SliqWarning, match="only 24 images"):
        report = fit_head(photos, model=str(tiny_encoder_dir), n_splits=2, device="cpu", force=True)
    assert report.head_path == existing and existing.read_bytes() != before
    with pytest.warns(SliqWarning, match="24 of the 24 test images .* in-sample"):
        crossval(photos, DatasetRef(data / "photos" / "mos.csv"), model=str(tiny_encoder_dir), device="cpu")
    with pytest.warns(SliqWarning, match="in-sample"):
        plot_scatter(photos, data / "api_scatter.png", model=str(tiny_encoder_dir), head="photos", device="cpu")


def test_scatter_of_a_head_on_its_training_data_warns_in_sample(data, tiny_encoder_dir):
    _place_head(tiny_encoder_dir, "photos", "photos")
    plot = _run("plot", "scatter", "photos", "--data-root", data, "--head", "photos", "-m", tiny_encoder_dir,
                "--device", "cpu", "--out", data / "scatter.png")
    assert plot.exit_code == 0, plot.output
    assert "in-sample" in plot.stderr and (data / "scatter.png").stat().st_size > 0
    other = _run("plot", "scatter", "labelled", "--data-root", data, "--head", "photos", "-m", tiny_encoder_dir,
                 "--device", "cpu", "--out", data / "scatter2.png")
    assert other.exit_code == 0 and "in-sample" not in other.stderr


def test_tsne_colours_by_binned_mos_without_distortion_labels(data, tiny_encoder_dir, tmp_path):
    res = _run("plot", "tsne", data / "photos" / "mos.csv", "-m", tiny_encoder_dir, "--device", "cpu",
               "--out", tmp_path / "t.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    res = _run("plot", "tsne", "photos", "--data-root", data, "--colour-by", "distortion", "-m", tiny_encoder_dir,
               "--out", tmp_path / "d.png")
    assert res.exit_code == 1 and "no item has attribute 'distortion'" in res.stderr
    help_text = runner.invoke(app, ["plot", "tsne", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--colour-by" in help_text and "--color-by" not in help_text  # the old spelling works, unlisted


def test_mos_bins_cover_the_scale_low_to_high(data):
    from sliq_cli.iqa.datasets import load_dataset
    from sliq_cli.iqa.plots import mos_bins

    ds = load_dataset("photos", data_root_dir=data)
    labels, order = mos_bins(ds)
    assert len(order) == 5 and set(labels) <= set(order) and order[0].startswith("MOS ")
    lowest, highest = int(np.argmin(ds.scores)), int(np.argmax(ds.scores))
    assert labels[lowest] == order[0] and labels[highest] == order[-1]


def test_missing_datasets_are_usage_errors_with_clear_messages(data, tiny_encoder_dir, tmp_path):
    res = _run("evaluate", "nosuch", "--data-root", data, "-m", tiny_encoder_dir)
    assert res.exit_code == 2
    assert res.stderr.count(str(data / "nosuch")) == 1  # the candidate path is not listed twice
    res = _run("fit-head", "--mos", tmp_path / "gone.csv", "--images", data / "photos", "-m", tiny_encoder_dir)
    assert res.exit_code == 2 and "gone.csv" in res.stderr
    res = _run("fit-head", "--mos", data / "photos" / "mos.csv", "--images", tmp_path / "nope", "-m", tiny_encoder_dir)
    assert res.exit_code == 2 and "nope" in res.stderr
