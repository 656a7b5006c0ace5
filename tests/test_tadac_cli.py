"""`sliq tadac build | show | preview` end to end on small generated and real images."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.cli.tadac import app
from sliq_cli.errors import InputError

runner = CliRunner()


def test_build_then_show(tmp_path, example_photos):
    src = tmp_path / "photos"
    (src / "clean").mkdir(parents=True)
    (src / "web").mkdir()
    for p in example_photos[:3]:
        shutil.copy(p, src / "clean" / p.name)
    shutil.copy(example_photos[3], src / "web" / example_photos[3].name)
    (src / "web" / "empty.jpg").write_bytes(b"")
    (src / "captions.csv").write_text(f"image,caption\nweb/{example_photos[3].name},A macaw on a branch.\n")
    db = tmp_path / "db"
    result = runner.invoke(app, ["build", str(src), "--out", str(db), "--pristine", "clean/*", "--authentic", "web/*",
                                 "--captions", str(src / "captions.csv"), "--heldout", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # not a terminal: JSON
    assert summary["counts"]["records"] == 4 and summary["counts"]["captioned"] == 1
    assert summary["skipped"][0]["reason"].startswith("empty file")
    assert "skipped" in result.stderr and "empty.jpg" in result.stderr

    shown = runner.invoke(app, ["show", str(db)])
    assert shown.exit_code == 0, shown.output
    counts = json.loads(shown.stdout)
    assert counts["records"] == {"pristine": 3, "authentic": 1}
    assert counts["splits"] == {"train": 3, "heldout": 1}
    assert counts["content"] == {"label": 0, "caption": 1, "neither": 3}
    assert counts["text_types"]["noise"] == 2 * 3 * 5


def test_build_reports_bad_labels_csv(tmp_path, example_photos):
    (tmp_path / "bad.csv").write_text("path,label\nx.jpg,cat\n")
    result = runner.invoke(app, ["build", str(example_photos[0]), "--out", str(tmp_path / "db"),
                                 "--labels", str(tmp_path / "bad.csv")])
    assert isinstance(result.exception, InputError) and "missing column 'image'" in str(result.exception)
    assert result.exception.line == 1


def test_preview_contact_sheet(tmp_path):
    img = tmp_path / "photo.png"
    yy, xx = np.mgrid[0:256, 0:320]
    pattern = np.stack([(xx * 0.8) % 256, (yy * 0.9) % 256, ((xx + yy) * 4) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pattern).save(img)
    out = tmp_path / "sheet.png"
    result = runner.invoke(app, ["preview", str(img), "--out", str(out), "--size", "48"])
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(out).convert("RGB"))
    cell = 48 + 4
    assert sheet.shape[0] == 22 + 26 * cell  # header + original + 25 types
    first_tile = sheet[22 : 22 + 48, 210 : 210 + 48]
    blur5 = sheet[22 + cell : 22 + cell + 48, 210 + 4 * cell : 210 + 4 * cell + 48]
    assert first_tile.std() > 10 and blur5.std() < first_tile.std()  # row 1 = Gaussian blur, level 5 is smoothest
    assert (sheet[30:200, 5:150] < 128).any()  # labels are drawn
