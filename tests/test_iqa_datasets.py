"""Each loader on a tiny copy of its dataset's native layout, written here (generated images, .mat via scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from sliq_cli.errors import InputError, SliqError
from sliq_cli.iqa.datasets import LIVE_FOLDERS, detect_layout, load_csv, load_dataset


def _img(path, value=128, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)
    return path


def _cell(strings, column=True):
    arr = np.empty((len(strings), 1) if column else (1, len(strings)), dtype=object)
    arr.ravel()[:] = strings
    return arr


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_live_release2(tmp_path):
    n = sum(c for _, c in LIVE_FOLDERS)
    orgs = np.zeros(n)
    orgs[::5] = 1  # reference copies, left out
    dmos = np.linspace(0, 90, n)
    refnames = [f"ref{i % 29}.bmp" for i in range(n)]
    savemat(tmp_path / "dmos.mat", {"dmos": dmos[None, :], "orgs": orgs[None, :]})
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": _cell(refnames, column=False)})
    i = 0
    for folder, count in LIVE_FOLDERS:
        for k in range(1, count + 1):
            if not orgs[i] and k <= 6:
                _img(tmp_path / folder / f"img{k}.bmp")
            i += 1
    with pytest.raises(InputError, match="missing.*--skip-missing"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path, skip_missing=True)
    assert ds.name == "live" and ds.synthetic and not ds.higher_is_better
    assert len(ds) + len(ds.missing) == int((orgs == 0).sum())
    first = ds.items[0]  # jp2k/img2.bmp is entry 1 (entry 0 is a reference copy)
    assert first.path.name == "img2.bmp" and first.score == pytest.approx(dmos[1]) and first.ref == refnames[1]
    assert {it.attrs["distortion"] for it in ds.items} == {f for f, _ in LIVE_FOLDERS}
    fast = [it for it in ds.items if it.attrs["distortion"] == "fastfading"][0]
    assert fast.score == pytest.approx(dmos[n - 174 + int(fast.path.stem[3:]) - 1])


def test_live_wrong_length(tmp_path):
    savemat(tmp_path / "dmos.mat", {"dmos": np.ones((1, 10)), "orgs": np.zeros((1, 10))})
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": _cell(["a"] * 10, column=False)})
    with pytest.raises(InputError, match="dmos.mat.*10 entries"):
        load_dataset(tmp_path)


def test_csiq(tmp_path):
    rows = [("1600", 1, "noise", 1, 0.06, 0.06), ("1600", 2, "jpeg 2000", 3, 0.1, 0.4), ("cactus", 5, "fnoise", 2, 0.1, 0.2),
            ("cactus", 3, "blur", 5, 0.1, 0.9), ("1600", 4, "contrast", 1, 0.0, 0.1), ("cactus", 1, "jpeg", 4, 0.1, 0.5)]
    lines = ["image,dst_idx,dst_type,dst_lev,dmos_std,dmos"] + [",".join(map(str, r)) for r in rows]
    _write(tmp_path / "csiq.DMOS.csv", "\n".join(lines) + "\n")
    names = ["awgn/1600.AWGN.1.png", "jpeg2000/1600.jpeg2000.3.png", "fnoise/cactus.fnoise.2.png",
             "blur/cactus.BLUR.5.png", "contrast/1600.contrast.1.png", "jpeg/cactus.JPEG.4.png"]
    for name in names:
        _img(tmp_path / "dst_imgs" / name)
    ds = load_dataset(tmp_path)
    assert ds.name == "csiq" and ds.scale == (0.0, 1.0) and not ds.higher_is_better
    assert [it.path.relative_to(tmp_path / "dst_imgs").as_posix() for it in ds.items] == names
    assert ds.refs == ["1600", "1600", "cactus", "cactus", "1600", "cactus"]
    assert ds.scores.tolist() == [r[5] for r in rows]


def test_tid2013_case_insensitive_names(tmp_path):
    _write(tmp_path / "mos_with_names.txt", "5.51429 i01_01_1.bmp\n4.2 i01_02_3.bmp\n3.1 i25_01_1.bmp\n")
    _write(tmp_path / "mos_std.txt", "0.13\n0.2\n0.3\n")
    _img(tmp_path / "distorted_images" / "i01_01_1.bmp")
    _img(tmp_path / "distorted_images" / "i01_02_3.bmp")
    _img(tmp_path / "distorted_images" / "I25_01_1.BMP")
    _img(tmp_path / "reference_images" / "I01.BMP")
    ds = load_dataset(tmp_path)
    assert ds.name == "tid2013" and ds.higher_is_better and ds.scale == (0.0, 9.0)
    assert ds.items[2].path.name == "I25_01_1.BMP" and ds.items[2].ref == "i25"
    assert ds.refs == ["i01", "i01", "i25"] and ds.items[1].std == pytest.approx(0.2)
    assert ds.items[1].attrs == {"distortion": "02", "level": "3"}


def test_tid2013_bad_line(tmp_path):
    _write(tmp_path / "mos_with_names.txt", "5.5 i01_01_1.bmp\nfive i01_01_2.bmp\n")
    with pytest.raises(InputError, match=r"mos_with_names.txt:2: mos 'five' is not a number"):
        load_dataset(tmp_path)


def test_kadid10k(tmp_path):
    _write(tmp_path / "dmos.csv", "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.49\nI02_10_05.png,I02.png,1.2,0.16\n")
    _img(tmp_path / "images" / "I01_01_01.png")
    _img(tmp_path / "images" / "I02_10_05.png")
    ds = load_dataset(tmp_path)
    assert ds.name == "kadid10k" and ds.higher_is_better and ds.synthetic
    assert ds.refs == ["I01.png", "I02.png"] and ds.items[0].std == pytest.approx(0.7)
    assert ds.items[1].attrs["distortion"] == "10"


def test_koniq10k(tmp_path):
    header = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"
    _write(tmp_path / "koniq10k_scores_and_distributions.csv", f"{header}\n10004473376.jpg,0,0,25,73,7,105,3.83,0.53,77.38\n"
           "10007357496.jpg,0,3,45,47,1,96,3.47,0.58,68.28\n")
    _img(tmp_path / "1024x768" / "10004473376.jpg")
    _img(tmp_path / "1024x768" / "10007357496.jpg")
    ds = load_dataset(tmp_path)
    assert ds.name == "koniq10k" and not ds.synthetic and ds.refs is None
    assert ds.scores.tolist() == [3.83, 3.47] and ds.items[1].std == pytest.approx(0.58)


def test_clive_skips_training_images(tmp_path):
    names = [f"t{i}.bmp" for i in range(1, 8)] + ["3.bmp", "4.bmp", "5.bmp"]
    mos = np.arange(len(names), dtype=float)[None, :] * 10
    (tmp_path / "Data").mkdir()
    savemat(tmp_path / "Data" / "AllImages_release.mat", {"AllImages_release": _cell(names)})
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    savemat(tmp_path / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": mos / 10})
    for name in names[:7]:
        _img(tmp_path / "Images" / "trainingImages" / name)
    for name in names[7:]:
        _img(tmp_path / "Images" / name)
    ds = load_dataset(tmp_path)
    assert ds.name == "clive" and [it.path.name for it in ds.items] == ["3.bmp", "4.bmp", "5.bmp"]
    assert ds.scores.tolist() == [70.0, 80.0, 90.0] and ds.items[0].std == pytest.approx(7.0)


def test_flive_official_split(tmp_path):
    db = tmp_path / "database"
    names = [f"voc_emotic_ava/img{i}.jpg" for i in range(6)]
    _write(db / "labels_image.csv", "name,mos\n" + "".join(f"{n},{50 + i}\n" for i, n in enumerate(names)))
    _write(db / "labels640.csv", f"name_image,mos_image\n{names[4]},54\n{names[5]},55\n")
    _write(db / "labels=640_padded.csv", "name_image,mos_image,is_valid\n" + "".join(
        f"{n},{50 + i},{'True' if i == 3 else 'False'}\n" for i, n in enumerate(names[:4])))
    for n in names:
        _img(db / n)
    assert detect_layout(tmp_path) == "flive"
    ds = load_dataset(tmp_path)
    assert ds.name == "flive" and ds.official_split == ["train", "train", "train", "val", "test", "test"]


def test_spaq_resizes_at_load(tmp_path):
    _write(tmp_path / "Annotations" / "MOS and Image attribute scores.csv",
           "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n00001.jpg,42.65,40,47,47,45,46\n"
           "00002.jpg,30.2,40,47,47,45,46\n00003.jpg,77,40,47,47,45,46\n")
    for i in (1, 2, 3):
        _img(tmp_path / "TestImage" / f"0000{i}.jpg")
    ds = load_dataset(tmp_path)
    assert ds.name == "spaq" and ds.resize_shorter == 512 and ds.scores.tolist() == [42.65, 30.2, 77.0]


def test_name_under_data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _write(root / "kadid10k" / "dmos.csv", "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.49\n")
    _img(root / "kadid10k" / "images" / "I01_01_01.png")
    _write(root / "mine" / "mos.csv", "image,mos\na.png,1\n")
    _img(root / "mine" / "a.png")
    assert load_dataset("kadid", data_root_dir=root).name == "kadid10k"
    monkeypatch.setenv("SLIQ_DATA", str(root))
    assert load_dataset("KADID10K").name == "kadid10k"
    assert load_dataset("mine").name == "mine"
    with pytest.raises(SliqError, match="not found under"):
        load_dataset("live")


def test_generic_csv(tmp_path):
    imgs = tmp_path / "imgs"
    for n in ("a.png", "b.png", "c.png"):
        _img(imgs / n)
    csv = _write(tmp_path / "scores.csv", "image,mos,mos_std,ref,split,distortion\na.png,1.5,0.1,r1,train,blur\n"
                 "b.png,3,,r1,val,noise\nc.png,4.5,0.3,r2,test,blur\n")
    ds = load_csv(csv, imgs)
    assert ds.name == "scores" and ds.synthetic and ds.scale == (1.5, 4.5)
    assert ds.official_split == ["train", "val", "test"] and ds.attribute("distortion") == ["blur", "noise", "blur"]
    assert ds.items[1].std is None and ds.items[2].std == pytest.approx(0.3)
    with pytest.raises(SliqError, match="no item has attribute 'level'"):
        ds.attribute("level")


@pytest.mark.parametrize(("text", "match"), [
    ("img,mos\na.png,1\n", r"scores.csv:1: missing column\(s\) image"),
    ("image,mos\na.png,1\nb.png,n/a\n", r"scores.csv:3: mos 'n/a' is not a number"),
    ("image,mos\na.png,1\nb.png,2\na.png,3\n", r"scores.csv:4: duplicate entry for 'a.png' \(first at line 2\)"),
    ("image,mos,split\na.png,1,training\n", r"scores.csv:2: split 'training' is not one of"),
    ("image,mos\na.png,1\nzz.png,2\n", r"scores.csv: 1 listed image file\(s\) are missing: .*zz.png"),
    ("image,mos\na.png,inf\n", r"scores.csv:2: mos 'inf' is not a finite number"),
    ("image,mos\na.png\n", r"scores.csv:2: mos '' is not a number"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, match):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    with pytest.raises(InputError, match=match):
        load_csv(_write(tmp_path / "scores.csv", text))


def test_skip_missing_keeps_the_rest(tmp_path):
    _img(tmp_path / "a.png")
    ds = load_csv(_write(tmp_path / "mos.csv", "image,mos\na.png,1\ngone.png,2\n"), skip_missing=True)
    assert [it.path.name for it in ds.items] == ["a.png"] and [p.name for p in ds.missing] == ["gone.png"]
    assert ds.name == tmp_path.name


def test_unknown_folder(tmp_path):
    with pytest.raises(SliqError, match="not a known dataset layout"):
        load_dataset(tmp_path)


def test_clive_dev_subset_loads(shared_data):
    ds = load_dataset("clive-dev", data_root_dir=shared_data)
    assert ds.name == "clive-dev" and len(ds) == 627 and not ds.missing and not ds.synthetic
    assert 0 <= ds.scores.min() < ds.scores.max() <= 100 and all(it.std is not None for it in ds.items)
