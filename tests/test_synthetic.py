"""The embedded synthetic day/night dataset: determinism, labels, the day-night gap, the on-disk
cache (reuse, growth, concurrency, atomic files) and argument errors. Small sizes, a few seconds."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from nightseg.core.errors import ConfigError
from nightseg.data.catalog import CITYSCAPES_CLASSES
from nightseg.data.io import load_sample, read_image, read_label
from nightseg.data.synthetic import GENERATOR_VERSION, build, build_catalog, dataset_dir, render_scene
from nightseg.data.synthetic.__main__ import main as synthetic_main
from nightseg.data.synthetic.stats import chroma, luma

SIZE = (64, 128)
COUNTS = {"translate_day": 2, "translate_night": 2, "train": 3, "val": 2, "test": 2}


def _files(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}


def test_same_seed_same_bytes_other_seed_differs():
    a, b = render_scene(0, "train", 3, SIZE), render_scene(0, "train", 3, SIZE)
    for kind in ("day", "night", "label"):
        assert a[kind].tobytes() == b[kind].tobytes(), kind
    c = render_scene(1, "train", 3, SIZE)
    assert not np.array_equal(a["day"], c["day"]) and not np.array_equal(a["label"], c["label"])
    # splits and indices draw different scenes
    assert not np.array_equal(a["label"], render_scene(0, "val", 3, SIZE)["label"])
    assert not np.array_equal(a["label"], render_scene(0, "train", 4, SIZE)["label"])


def test_labels_are_valid_and_varied():
    seen = set()
    for i in range(6):
        s = render_scene(0, "train", i, SIZE)
        assert s["label"].shape == SIZE and s["label"].dtype == np.uint8
        assert s["day"].shape == s["night"].shape == SIZE + (3,)
        ids = set(np.unique(s["label"]).tolist())
        assert ids <= set(range(19)) | {255}, ids
        assert {0, 2, 13} <= ids  # road, building, car in every street
        seen |= ids
    assert len(seen - {255}) >= 14, sorted(seen)


def test_night_is_darker_and_recoloured_with_the_same_label():
    ratios, shifts = [], []
    for i in range(6):
        s = render_scene(0, "test", i, SIZE)
        ratios.append(luma(s["night"]) / luma(s["day"]))
        shifts.append(chroma(s["night"]) - chroma(s["day"]))
        # the label does not depend on which domain is rendered
        assert np.array_equal(render_scene(0, "test", i, SIZE, kinds=("night",))["label"], s["label"])
    assert max(ratios) < 0.85 and np.mean(ratios) < 0.7, ratios
    assert np.linalg.norm(np.mean(shifts, axis=0)) > 2.0, shifts  # a colour cast, not just darker


def test_catalog_layout_and_files(tmp_path):
    cat = build_catalog(tmp_path, 0, list(SIZE), COUNTS)
    assert cat.name == "synthetic" and cat.class_names == CITYSCAPES_CLASSES
    assert cat.summary() == {"translate_day": 2, "translate_night": 2, "train": 3,
                             "val/synthetic_day_val": 2, "test/synthetic_night": 2}
    assert [s.name for s in cat.val] == ["synthetic_day_val"]
    assert [s.name for s in cat.test] == ["synthetic_night"]
    assert cat.train.labelled and cat.val[0].labelled and cat.test[0].labelled
    assert cat.test[0].has_reference and not cat.train.has_reference
    for sample in cat.train.samples + cat.test[0].samples + cat.translate_night.samples:
        arrays = load_sample(sample, valid_max=18)
        assert arrays["image"].shape == SIZE + (3,)
    # test = night rendering, reference = the true day rendering of the same scene
    t = cat.test[0].samples[1]
    truth = render_scene(0, "test", 1, SIZE)
    assert np.array_equal(read_image(t.image), truth["night"])
    assert np.array_equal(read_image(t.reference), truth["day"])
    assert np.array_equal(read_label(t.label), truth["label"])
    assert np.array_equal(read_image(cat.train.samples[0].image), render_scene(0, "train", 0, SIZE)["day"])
    key = dataset_dir(tmp_path, 0, SIZE)
    manifest = json.loads((key / "manifest.json").read_text())
    assert manifest["counts"] == COUNTS and manifest["generator_version"] == GENERATOR_VERSION
    assert not list(key.rglob("*.tmp"))


def test_day_test_is_the_test_scenes_by_day(tmp_path):
    """data.day_test=true: the same test scenes, labels and order, their day renderings as the
    images (a mixed day+night test for the gate); nothing new is rendered for it."""
    night_only = build_catalog(tmp_path, 0, SIZE, COUNTS)
    cat = build_catalog(tmp_path, 0, SIZE, COUNTS, day_test=True)
    night, day = cat.test
    assert (night.name, night.domain, day.name, day.domain) == (
        "synthetic_night", "night", "synthetic_day_test", "day")
    assert night.samples == night_only.test[0].samples
    assert [s.label for s in day.samples] == [s.label for s in night.samples]
    assert [s.image for s in day.samples] == [s.reference for s in night.samples]
    assert not day.has_reference
    assert np.array_equal(read_image(day.samples[1].image), render_scene(0, "test", 1, SIZE)["day"])


def test_second_call_reuses_files(tmp_path, monkeypatch):
    build_catalog(tmp_path, 0, SIZE, COUNTS)
    before = _files(tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(build, "render_scene", fail)
    cat = build_catalog(tmp_path, 0, SIZE, COUNTS)
    assert _files(tmp_path) == before
    assert len(cat.train) == 3
    build_catalog(tmp_path, 0, SIZE, {"train": 1})  # fewer: also nothing to render
    assert _files(tmp_path) == before


def test_larger_count_only_adds_and_splits_are_independent(tmp_path):
    small = build_catalog(tmp_path / "a", 0, SIZE, {"train": 2, "test": 1})
    before = _files(tmp_path / "a")
    big = build_catalog(tmp_path / "a", 0, SIZE, {"train": 4, "test": 3})
    after = _files(tmp_path / "a")
    assert all(after[p] == m for p, m in before.items())  # nothing rewritten
    assert [s.image for s in big.train.samples[:2]] == [s.image for s in small.train.samples]
    # rendered in one go elsewhere, with another test count: the same train images
    other = build_catalog(tmp_path / "b", 0, SIZE, {"train": 4, "test": 1})
    for x, y in zip(big.train.samples, other.train.samples, strict=True):
        assert x.image.read_bytes() == y.image.read_bytes()


def test_missing_file_is_rendered_again(tmp_path):
    cat = build_catalog(tmp_path, 0, SIZE, {"val": 2})
    lost = cat.val[0].samples[1].label
    data = lost.read_bytes()
    lost.unlink()
    build_catalog(tmp_path, 0, SIZE, {"val": 2})
    assert lost.read_bytes() == data


def test_accepts_omegaconf_containers(tmp_path):
    cfg = OmegaConf.create({"image_size": [64, 64], "counts": {"train": 1, "val": 0}})
    cat = build_catalog(str(tmp_path), 3, cfg.image_size, cfg.counts)
    assert len(cat.train) == 1 and len(cat.val[0]) == 0 and len(cat.test[0]) == 0


@pytest.mark.parametrize("kwargs, key", [
    ({"image_size": [32, 128]}, "data.image_size"),
    ({"image_size": [64]}, "data.image_size"),
    ({"image_size": "64x128"}, "data.image_size"),
    ({"image_size": [64.5, 128]}, "data.image_size"),
    ({"counts": {"train": -1}}, "data.counts.train"),
    ({"counts": {"train": 2.5}}, "data.counts.train"),
    ({"counts": {"trian": 3}}, "data.counts.trian"),
    ({"counts": [1, 2]}, "data.counts"),
    ({"seed": -1}, "data.seed"),
    ({"root": None}, "data.catalog.root"),
])
def test_bad_arguments_name_the_key(tmp_path, kwargs, key):
    args = {"root": tmp_path, "seed": 0, "image_size": [64, 64], "counts": {"train": 1}} | kwargs
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        build_catalog(**args)
    assert "e.g." in str(err.value) or "use one of" in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ValueError, match="unknown synthetic split"):
        render_scene(0, "training", 0, (64, 64))


@pytest.mark.slow
def test_two_processes_at_once(tmp_path):
    # Spawned children import only nightseg.data.synthetic.build (target pickled by reference).
    ctx = multiprocessing.get_context("spawn")
    args = (str(tmp_path), 5, [64, 64], {"train": 6, "test": 2})
    procs = [ctx.Process(target=build_catalog, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    key = dataset_dir(tmp_path, 5, (64, 64))
    assert len(list(key.rglob("*.png"))) == 6 * 2 + 2 * 3 and not list(key.rglob("*.tmp"))
    assert json.loads((key / "manifest.json").read_text())["counts"]["train"] == 6
    expected = render_scene(5, "train", 4, (64, 64))["day"]
    assert np.array_equal(read_image(key / "train" / "day" / "train_00004.png"), expected)


def test_worker_pool_matches_serial(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(build, "POOL_MIN", 4)  # force the process pool for a handful
    caplog.set_level(logging.INFO, logger=build.__name__)
    cat = build_catalog(tmp_path, 2, [64, 64], {"translate_night": 6})
    assert "2 processes" in caplog.text
    for i in (0, 5):
        assert np.array_equal(read_image(cat.translate_night.samples[i].image),
                              render_scene(2, "translate_night", i, (64, 64))["night"])


@pytest.mark.slow
def test_unguarded_main_script_does_not_hang(tmp_path):
    # Spawned workers re-import the main script; one that builds the dataset at top level must
    # not wait forever on its parent's lock: the pool breaks and the parent renders serially.
    script = tmp_path / "unguarded.py"
    script.write_text("import sys\nfrom nightseg.data.synthetic import build\nbuild.POOL_MIN = 2\n"
                      "cat = build.build_catalog(sys.argv[1], 0, [64, 64], {'train': 3})\n"
                      "print('built', len(cat.train))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(build.__file__).parents[3])}
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "data")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "built 3" in res.stdout and "if __name__ == '__main__'" in res.stderr


def test_preview_cli(tmp_path):
    out = tmp_path / "docs" / "preview.png"
    synthetic_main(["--preview", str(out), "--n", "2", "--size", "64", "96", "--seed", "1"])
    img = read_image(out)
    assert img.shape == (2 * 64 + 2, 3 * 96 + 4, 3)
    with pytest.raises(ConfigError, match="data.image_size"):
        synthetic_main(["--preview", str(out), "--size", "8", "8"])


def test_the_renderer_package_has_no_import_circle():
    """Each module of nightseg.data.synthetic imports only modules below it: a topological order
    of its import graph exists (the package's __init__ imports everything, so it is left out)."""
    import ast
    import graphlib

    package = Path(build.__file__).parent
    prefix = "nightseg.data.synthetic."
    graph = {}
    for path in package.glob("*.py"):
        if path.stem == "__init__":
            continue
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
                deps.add(node.module.removeprefix(prefix))
            elif isinstance(node, ast.ImportFrom) and node.module == "nightseg.data.synthetic":
                deps.add("__init__")  # the package itself: everything, hence a circle
        graph[path.stem] = deps
    assert {"layout", "objects", "vehicles", "scene", "day", "night", "render", "build", "stats",
            "__main__"} <= set(graph)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a circle
    assert "__init__" not in order
