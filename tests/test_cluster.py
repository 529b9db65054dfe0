"""reporter cluster: k-means of real photos and their copies."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest
from conftest import photo

from reporter.cli import main

SOURCES = ("coffee", "rocket", "astronaut")


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """Each source four times: as it is, half size as JPEG, greyed, cropped to 80 %."""
    monkeypatch.setenv("REPORTER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in SOURCES:
        img = photo(name)
        h, w = img.shape[:2]
        cv2.imwrite(str(folder / f"{name}.png"), img)
        small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}_small.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 60])
        cv2.imwrite(str(folder / f"{name}_grey.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        cv2.imwrite(str(folder / f"{name}_crop.png"), img[h // 10 : -h // 10, w // 10 : -w // 10])
    return folder


def clusters(out) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    with (out / "clusters.csv").open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            found.setdefault(int(r["cluster"]), set()).add(r["file"].split("_")[0].split(".")[0])
    return found


@pytest.mark.parametrize("k", ["3", "auto"])
def test_embedding_clusters_are_pure(photos, tmp_path, k, capsys):
    out = tmp_path / "o"
    assert main(["cluster", str(photos), "--k", k, "--out", str(out)]) == 0
    found = clusters(out)
    assert len(found) == 3 and all(len(sources) == 1 for sources in found.values())
    assert {s for sources in found.values() for s in sources} == set(SOURCES)
    printed = capsys.readouterr().out
    if k == "auto":
        assert "silhouette by k: 2:" in printed  # the scores the choice came from


def test_pca_reports_the_variance_it_keeps_and_pixels_run(photos, tmp_path, capsys):
    out = tmp_path / "pca"
    assert main(["cluster", str(photos), "--k", "3", "--features", "pca", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    share = float(printed.split("components keep ")[1].split(" %")[0])
    assert 95 <= share <= 100
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "of the variance" in page and "principal components" in page
    out = tmp_path / "pixels"
    assert main(["cluster", str(photos), "--k", "2", "--features", "pixels", "--out", str(out),
                 "-q"]) == 0  # fmt: skip
    assert sum(1 for _ in (out / "clusters.csv").open()) == 1 + 12


def test_copy_to_makes_a_folder_per_cluster_and_moves_nothing(photos, tmp_path):
    target = tmp_path / "sorted"
    assert main(["cluster", str(photos), "--k", "3", "--out", str(tmp_path / "o"), "-q",
                 "--copy-to", str(target)]) == 0  # fmt: skip
    folders = sorted(p.name for p in target.iterdir())
    assert folders == ["cluster-01", "cluster-02", "cluster-03"]
    assert sum(len(list(p.iterdir())) for p in target.iterdir()) == 12
    assert len(list(photos.iterdir())) == 12  # the originals stay
    for folder in target.iterdir():
        assert len({p.name.split("_")[0].split(".")[0] for p in folder.iterdir()}) == 1


def test_an_image_gone_before_its_copy_is_a_warning_and_the_rest_are_copied(
    photos, tmp_path, capsys, monkeypatch
):
    """An image deleted between the read and --copy-to's copies: a FileNotFoundError
    stopped every copy after it, exit status 2. It is now a WARNING line, the others are
    copied, and the exit status is 1."""
    from reporter.collection import cluster as module

    real = module.cluster

    def cluster_then_lose_one(items, *args, **kwargs):
        result = real(items, *args, **kwargs)
        Path(items[0].path).unlink()
        return result

    monkeypatch.setattr(module, "cluster", cluster_then_lose_one)
    target = tmp_path / "sorted"
    argv = [
        "cluster",
        str(photos),
        "--k",
        "3",
        "--out",
        str(tmp_path / "o"),
        "--copy-to",
        str(target),
    ]
    assert main(argv) == 1
    assert sum(len(list(p.iterdir())) for p in target.iterdir()) == 11
    captured = capsys.readouterr()
    assert (
        "WARNING could not copy " in captured.err and "it is gone since it was read" in captured.err
    )
    assert "copied 11 image(s) into 3 cluster folder(s)" in captured.err
    assert "1 image was gone before its copy" in captured.out


def test_a_copy_to_that_cannot_be_a_folder_is_one_line_before_any_work(photos, tmp_path, capsys):
    """--copy-to given an existing file clustered the whole collection, wrote the reports,
    then ended in a NotADirectoryError traceback. Now one line first, exit status 2."""
    target = sorted(photos.iterdir())[0]  # an image of the collection
    argv = [
        "cluster",
        str(photos),
        "--k",
        "2",
        "--copy-to",
        str(target),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"reporter: error: --copy-to {target} is a file: give a folder (made if missing)\n"
    )
    assert not (tmp_path / "o").exists()


def test_a_second_copy_into_the_collection_clusters_the_originals_only(photos, monkeypatch, capsys):
    """--copy-to a folder inside the collection, then the same command again (with -r):
    the copies were clustered too, each beside its original (24 rows for 12 images). The
    folder is now left out of the walk: a run clusters the 12 images only, whatever the
    folder already holds besides an earlier run's clusters."""
    monkeypatch.chdir(photos)
    (photos / "sorted" / "mine").mkdir(parents=True)
    (photos / "sorted" / "mine" / "x.png").write_bytes((photos / "coffee.png").read_bytes())
    (photos / "sorted" / "cluster-notes.txt").write_text("mine too", "utf-8")  # not a run's
    argv = ["cluster", ".", "-r", "--k", "3", "--copy-to", "sorted", "--out", "o"]
    assert main(argv) == 0
    assert sum(1 for _ in (photos / "o" / "clusters.csv").open()) == 1 + 12
    assert len(list((photos / "sorted").glob("cluster-*/*"))) == 12
    assert "INFO left out ./sorted: the clusters' copies (--copy-to)" in capsys.readouterr().err


def test_a_copy_to_holding_an_earlier_runs_clusters_is_refused_before_any_work(
    photos, tmp_path, capsys
):
    """The same --copy-to twice copied each image again as name-2.png beside the first
    run's copy, mixing two runs' clusters (whose numbers need not mean the same groups).
    Now the second run is one line and exit status 2 before any work; nothing is added."""
    target = tmp_path / "sorted"
    argv = ["cluster", str(photos), "--k", "3", "-q", "--copy-to", str(target), "--out"]
    assert main([*argv, str(tmp_path / "o1")]) == 0
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    assert main([*argv, str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err == (
        f"reporter: error: --copy-to {target} already holds an earlier run's clusters "
        "(cluster-01, cluster-02, cluster-03): give a new or empty folder, or remove them first\n"
    )
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert not (tmp_path / "o2").exists()


def test_too_few_images_and_bad_k_say_so(photos, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.png").write_bytes((photos / "coffee.png").read_bytes())
    assert main(["cluster", str(one), "--out", str(tmp_path / "o")]) == 2
    assert main(["cluster", str(photos), "--k", "0"]) == 2
    assert main(["cluster", str(photos), "--k", "many"]) == 2
    err = capsys.readouterr().err
    assert "clustering needs at least" in err and "Traceback" not in err


def test_exact_copies_never_ask_for_more_clusters_than_distinct_images(tmp_path, caplog):
    """Three pictures, each in three byte-identical copies: their vectors are three.
    --k auto tried k up to 8, and k-means warned on stderr (ConvergenceWarning: fewer
    distinct clusters than asked); --k 5 left clusters empty. Now auto stops at three,
    and --k 5 makes three clusters, saying why."""
    import logging
    import warnings

    import numpy as np

    from reporter.collection.cluster import cluster
    from reporter.collection.features import Features

    rng = np.random.default_rng(0)
    three = rng.normal(size=(3, 16))
    items = [
        Features(f"/x/{i}-{j}.png", f"{i}-{j}.png", embedding=three[i] / np.linalg.norm(three[i]))
        for i in range(3)
        for j in range(3)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning of scikit-learn's fails the test
        auto = cluster(items, "embedding", None)
        with caplog.at_level(logging.INFO, logger="reporter"):
            asked = cluster(items, "embedding", 5)
    assert auto.k == 3 and set(auto.silhouettes) == {2, 3}
    assert asked.k == 3 and sorted(np.bincount(asked.labels)) == [3, 3, 3]
    assert "--k 5 asked, but the images have only 3 distinct embedding vector(s)" in caplog.text
