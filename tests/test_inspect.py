"""The dataset inspector counts each layout and finds every kind of broken file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fake_layouts as fl
import pytest

from nightseg.data.camvid import build_catalog as camvid_catalog
from nightseg.data.inspect_dataset import inspect_catalog, main

REPO = Path(__file__).resolve().parents[1]
REAL_CAMVID = REPO.parent / "shared/data/camvid"

FAKES = {
    "bdd100k": lambda p: fl.make_bdd100k(p, "2020"),
    "bdd10k": fl.make_bdd10k,
    "nighttime_driving": fl.make_nighttime_driving,
    "dark_zurich": fl.make_dark_zurich,
    "cityscapes": lambda p: fl.make_cityscapes(p, "labelIds"),
    "zju": fl.make_zju,
    "camvid": fl.make_camvid,
    "acdc": fl.make_acdc,
}


@pytest.mark.parametrize("dataset", sorted(FAKES))
def test_clean_tree_exits_zero(dataset, tmp_path, capsys):
    root = FAKES[dataset](tmp_path / dataset)
    assert main([dataset, str(root)]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "20x12" in out  # every image is 20x12


def test_counts_per_role_and_set(tmp_path, capsys):
    root = fl.make_camvid(tmp_path / "camvid")
    assert main(["camvid", str(root), "-o", "classes=cityscapes19"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[2].strip(): [c.strip() for c in line.split("│")[3:7]]
            for line in out.splitlines() if line.count("│") == 8}
    assert rows["camvid_train_dusk"] == ["2", "-", "2", "-"]  # images, labels, decoded, classes
    assert rows["camvid_day_train"] == ["3", "3", "3", "4/19"]  # sky, road, car, bicycle
    assert rows["camvid_dusk"] == ["1", "1", "1", "4/11"]  # scored in CamVid's 11 classes


def _break_camvid(root: Path) -> dict[str, str]:
    """One broken file of each kind; returns file name -> expected reason."""
    img = root / "train/0016E5_00390.png"
    img.write_bytes(img.read_bytes()[:60])  # truncated
    (root / "val/0016E5_07959.png").write_bytes(b"not a png at all")  # corrupt
    fl.write_label(root / "testannot/Seq05VD_f00000.png", [0, 3], size=(10, 20))  # size mismatch
    fl.write_label(root / "valannot/0016E5_07961.png", [0, 42, 200])  # unknown values
    (root / "trainannot/0016E5_00420.png").unlink()  # missing label
    (root / "test/0001TP_008550.png").unlink()  # listed image missing
    return {
        "train/0016E5_00390.png": "cannot decode image",
        "val/0016E5_07959.png": "cannot decode image",
        "testannot/Seq05VD_f00000.png": "label size 20x10 differs from its image",
        "valannot/0016E5_07961.png": "unknown label values [42, 200]",
        "trainannot/0016E5_00420.png": "label file not found",
        "test/0001TP_008550.png": "image file not found",
    }


def test_broken_files_are_each_reported(tmp_path, capsys):
    root = fl.make_camvid(tmp_path / "camvid")
    expected = _break_camvid(root)
    assert main(["camvid", str(root)]) == 1
    out = capsys.readouterr().out
    problems = out.split("problem(s):", 1)[1].splitlines()[1:-1]
    assert f"{len(expected)} problem(s):" in out and len(problems) == len(expected)
    for name, reason in expected.items():
        assert any(str(root / name) in p and reason in p for p in problems), (name, out)
    # The dusk test frame's image is missing but its label is still counted.
    report = inspect_catalog(camvid_catalog(root, on_missing="keep"))
    dusk = next(s for s in report.sets if s.name == "camvid_dusk")
    assert (dusk.images, dusk.labels, dusk.bad) == (0, 1, 1)


def test_missing_label_in_the_flat_layouts(tmp_path, capsys):
    root = fl.make_nighttime_driving(tmp_path / "nd")
    next((root / "gtCoarse_daytime_trainvaltest/test/night").iterdir()).unlink()
    assert main(["nighttime_driving", str(root)]) == 1
    assert "1 problem(s):" in capsys.readouterr().out


def test_limit_decodes_first_n_but_counts_all(tmp_path, capsys):
    root = fl.make_camvid(tmp_path / "camvid")
    (root / "train/0016E5_00420.png").write_bytes(b"broken")  # last day train frame
    assert main(["camvid", str(root), "--limit", "1"]) == 0  # beyond the limit: not decoded
    assert "camvid_day_train  │      3 │      3 │       1" in capsys.readouterr().out
    (root / "trainannot/0016E5_00420.png").unlink()
    assert main(["camvid", str(root), "--limit", "1"]) == 1  # missing files are always found


def test_layout_and_option_errors_exit_two(tmp_path, capsys):
    assert main(["cityscapes", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "expected leftImg8bit/{train,val}" in err
    assert main(["camvid", str(fl.make_camvid(tmp_path / "camvid")), "-o", "colour=1"]) == 2
    assert "camvid takes classes" in capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point(tmp_path):
    root = fl.make_zju(tmp_path / "zju")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "nightseg.data.inspect_dataset", "zju", str(root)],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "zju_night" in res.stdout and "no problems found" in res.stdout


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f"real CamVid not found at {REAL_CAMVID}")
def test_real_camvid_first_frames_are_clean(capsys):
    assert main(["camvid", str(REAL_CAMVID), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "camvid_day_train  │    305 │    305 │       4" in out and "480x360" in out
