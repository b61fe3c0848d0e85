"""Tiny fake dataset trees in each official layout, for the dataset and inspector tests.

Every builder writes a few small images (H x W = 12 x 20) and labels under ``root`` and returns
what a test needs to check counts. Label values are chosen per dataset: Cityscapes train ids
(0..18, 255) unless the layout says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (12, 20)  # rows, cols


def write_image(path: Path, size: tuple[int, int] = SIZE, seed: int = 0) -> Path:
    """A random RGB image; JPEG or PNG from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def write_label(path: Path, values: list[int], size: tuple[int, int] = SIZE) -> Path:
    """A single-channel PNG cycling through ``values``, so each appears."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = np.resize(np.asarray(values, dtype=np.uint8), size[0] * size[1])
    Image.fromarray(flat.reshape(size)).save(path)  # 2-D uint8 -> mode L
    return path


TRAIN_IDS = [0, 1, 2, 13, 18, 255]


# --- BDD100K / BDD10K ------------------------------------------------------------------------------

# (name, timeofday, weather) per split; day = daytime, night = night, others are in neither.
BDD100K_FRAMES = {
    "train": [
        ("d3-clear.jpg", "daytime", "clear"), ("d1-clear.jpg", "daytime", "clear"),
        ("d2-rainy.jpg", "daytime", "rainy"), ("d4-clear.jpg", "daytime", "clear"),
        ("n2-clear.jpg", "night", "clear"), ("n1-clear.jpg", "night", "clear"),
        ("n3-snowy.jpg", "night", "snowy"), ("x1-clear.jpg", "dawn/dusk", "clear"),
        ("x2-undef.jpg", "undefined", "clear"),
    ],
    "val": [("dv-clear.jpg", "daytime", "clear"), ("nv-clear.jpg", "night", "clear")],
}


def make_bdd100k(root: Path, release: str = "2018") -> Path:
    """images/100k/{train,val} with labels in the 2018 or 2020 (det_20) JSON format."""
    for split, frames in BDD100K_FRAMES.items():
        entries = []
        for i, (name, tod, weather) in enumerate(frames):
            write_image(root / "images/100k" / split / name, seed=i)
            entry = {"name": name, "attributes": {"weather": weather, "scene": "city street",
                                                  "timeofday": tod}, "timestamp": 10000,
                     "labels": [{"category": "car", "attributes": {"occluded": False},
                                 "box2d": {"x1": 1, "y1": 1, "x2": 5, "y2": 5}}]}
            entries.append(entry)
        path = (root / f"labels/bdd100k_labels_images_{split}.json" if release == "2018"
                else root / f"labels/det_20/det_{split}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries))
    return root


BDD10K_NAMES = {"train": ["t-day1", "t-day2", "t-night1"], "val": ["v-day1", "v-night1"],
                "test": ["s-1"]}
BDD10K_NIGHT = ["t-night1", "v-night1"]


def make_bdd10k(root: Path) -> Path:
    """images/10k/{train,val,test} and labels/sem_seg/masks/{train,val}."""
    for split, names in BDD10K_NAMES.items():
        for i, name in enumerate(names):
            write_image(root / "images/10k" / split / f"{name}.jpg", seed=i)
            if split != "test":
                write_label(root / "labels/sem_seg/masks" / split / f"{name}.png", TRAIN_IDS)
    return root


# --- Cityscapes family --------------------------------------------------------------------------

CITIES = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 2}}
LABEL_IDS = [0, 7, 8, 11, 26, 33, 4]  # void ids 0 and 4 -> 255, the others -> 0, 1, 2, 13, 18


def make_cityscapes(root: Path, label_kind: str = "labelTrainIds") -> Path:
    """leftImg8bit/{train,val}/<city>/ with gtFine labelTrainIds or labelIds."""
    values = TRAIN_IDS if label_kind == "labelTrainIds" else LABEL_IDS
    for split, cities in CITIES.items():
        for city, n in cities.items():
            for i in range(n):
                stem = f"{city}_000000_{i:06d}"
                write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=i)
                write_label(root / "gtFine" / split / city / f"{stem}_gtFine_{label_kind}.png", values)
    return root


def make_nighttime_driving(root: Path, n: int = 3, start: int = 0) -> Path:
    """``n`` frames numbered from ``start`` (another ``start`` makes a folder of other frames)."""
    for i in range(start, start + n):
        stem = f"0_frame_{i:04d}"
        write_image(root / f"leftImg8bit/test/night/{stem}_leftImg8bit.png", seed=i)
        write_label(root / f"gtCoarse_daytime_trainvaltest/test/night/{stem}_gtCoarse_labelTrainIds.png",
                    TRAIN_IDS)
    return root


DARK_ZURICH = {"day": 3, "night": 2, "twilight": 1, "val": 2}


def make_dark_zurich(root: Path) -> Path:
    for domain in ("day", "night", "twilight"):
        for i in range(DARK_ZURICH[domain]):
            seq = f"GOPR00{i % 2}"
            write_image(root / f"rgb_anon/train/{domain}/{seq}/{seq}_{domain}_{i:06d}_rgb_anon.png",
                        seed=i)
    for i in range(DARK_ZURICH["val"]):
        seq = "GOPR0356"
        write_image(root / f"rgb_anon/val/night/{seq}/{seq}_{i:06d}_rgb_anon.png", seed=i)
        write_label(root / f"gt/val/night/{seq}/{seq}_{i:06d}_gt_labelTrainIds.png", TRAIN_IDS)
    return root


def make_zju(root: Path, labelled: bool = True) -> Path:
    for i in range(3):
        write_image(root / f"day/d{i}.jpg", seed=i)
    for i in range(2):
        write_image(root / f"night/n{i}.png", seed=i)
        if labelled:
            write_label(root / f"labels/night/n{i}.png", TRAIN_IDS)
    return root


# --- CamVid ----------------------------------------------------------------------------------------

# Frames per split: 0001TP is the dusk sequence.
CAMVID = {
    "train": ["0001TP_006690", "0001TP_006720", "0006R0_f01800", "0016E5_00390", "0016E5_00420"],
    "val": ["0016E5_07959", "0016E5_07961"],
    "test": ["0001TP_008550", "Seq05VD_f00000", "Seq05VD_f00030"],
}
CAMVID_VALUES = [0, 3, 8, 10, 11]


def make_camvid(root: Path, lists: bool = True) -> Path:
    """{train,val,test}[annot]/ and, with ``lists``, the *.txt lists with the SegNet prefix."""
    for split, stems in CAMVID.items():
        rows = []
        for i, stem in enumerate(stems):
            write_image(root / split / f"{stem}.png", seed=i)
            write_label(root / f"{split}annot" / f"{stem}.png", CAMVID_VALUES)
            rows.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png")
        if lists:
            (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


# --- ACDC ------------------------------------------------------------------------------------------

# Images per condition and split; test has no labels (the benchmark's server scores it).
ACDC = {"train": 3, "val": 2, "test": 2}
INVALID = [0, 1]  # ACDC's *_gt_invIds.png: 1 marks a pixel whose content is uncertain


def make_acdc(root: Path, conditions: tuple[str, ...] = ("night", "fog")) -> Path:
    """rgb_anon/<condition>/<split>[_ref]/<sequence>/, gt/<condition>/{train,val}/<sequence>/ with
    labelTrainIds and invIds (every other pixel of the first row invalid)."""
    for c, condition in enumerate(conditions):
        for split, n in ACDC.items():
            for i in range(n):
                seq = f"GOPR0{c}{i % 2}"  # recordings differ between conditions
                stem = f"{seq}_frame_{i:06d}"
                write_image(root / f"rgb_anon/{condition}/{split}/{seq}/{stem}_rgb_anon.png", seed=i)
                write_image(root / f"rgb_anon/{condition}/{split}_ref/{seq}/{stem}_rgb_ref_anon.png",
                            seed=i + 10)
                if split == "test":
                    continue
                gt = root / f"gt/{condition}/{split}/{seq}"
                write_label(gt / f"{stem}_gt_labelTrainIds.png", TRAIN_IDS)
                invalid = np.zeros(SIZE, dtype=np.uint8)
                invalid[0, ::2] = 1
                invalid_path = gt / f"{stem}_gt_invIds.png"
                Image.fromarray(invalid).save(invalid_path)
    return root
