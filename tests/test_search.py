"""reporter search on real photos (scikit-image's) and transformed copies of them."""

from __future__ import annotations

import csv
import math
import os
import shutil
import sqlite3

import cv2
import numpy as np
import pytest
from conftest import photo, unit_vectors

from reporter.cli import main
from reporter.collection import features, search
from reporter.collection.features import FeatureCache, Features, gather
from reporter.collection.search import Index, rank
from reporter.compare import Input

SOURCES = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "camera",
    "coins",
    "brick",
    "hubble_deep_field",
)
EVIL = "=cmd|' calc'!A0 <img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in SOURCES:
        cv2.imwrite(str(folder / f"{name}.png"), photo(name))
    for name in ("chelsea", "coffee", "rocket"):
        img = photo(name)
        h, w = img.shape[:2]
        small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}_small.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 60])
        cv2.imwrite(
            str(folder / f"{name}_crop.png"), img[h // 10 : h - h // 10, w // 10 : w - w // 10]
        )
        cv2.imwrite(
            str(folder / f"{name}_tight.png"), img[h // 4 : h - h // 8, w // 8 : w - w // 4]
        )
    shutil.copy(folder / "coins.png", folder / EVIL)
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("x", encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPORTER_CACHE", str(tmp_path / "cache"))


def results(out) -> list[dict]:
    with (out / "results.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["embedding", "phash", "colour", "ahash"])
def test_search_finds_the_resized_and_reencoded_copy_first(collection, tmp_path, method):
    out = tmp_path / "o"
    code = main(["search", str(collection / "chelsea.png"), str(collection), "--by", method,
                 "--top", "5", "--out", str(out), "-q", "-j", "1"])  # fmt: skip
    assert code == 1  # broken.png is an ERROR row
    rows = results(out)
    ranked = [r for r in rows if r["rank"]]
    assert [int(r["rank"]) for r in ranked] == [1, 2, 3, 4, 5]
    assert all(r["file"] != "chelsea.png" for r in ranked)  # the query is left out
    if method == "embedding":  # what it shows: both copies first, the crop included
        assert {r["file"] for r in ranked[:2]} == {"chelsea_small.jpg", "chelsea_crop.png"}
    else:  # hashes survive scaling and JPEG
        assert ranked[0]["file"] == "chelsea_small.jpg"
    scores = [float(r["score"]) for r in ranked]
    assert scores == sorted(scores, reverse=method == "embedding")  # best first
    (error,) = [r for r in rows if r["error"]]
    assert error["file"] == "broken.png" and "not a readable image" in error["error"]


def test_any_run_metric_ranks_with_the_query_as_the_baseline(collection, tmp_path):
    """--by ssim_64: each image brought to the query's size and compared as reporter run
    would; the resized JPEG copy first, the unrelated photos far behind."""
    out = tmp_path / "o"
    assert main(["search", str(collection / "rocket.png"), str(collection), "--by", "ssim_64",
                 "--top", "3", "--out", str(out), "-q", "-j", "1"]) == 1  # fmt: skip
    ranked = [r for r in results(out) if r["rank"]]
    assert ranked[0]["file"] == "rocket_small.jpg" and float(ranked[0]["score"]) > 0.95
    assert [r["method"] for r in ranked] == ["ssim_64"] * 3
    scores = [float(r["score"]) for r in ranked]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("metric", ["psnr", "psnr_local"])
def test_an_identical_copy_ranks_first_by_psnr(collection, tmp_path, metric):
    """An identical copy's PSNR is inf: the best score, ranked first, not left out."""
    out = tmp_path / "o"
    assert main(["search", str(collection / "coins.png"), str(collection), "--by", metric,
                 "--top", "2", "--out", str(out), "-q", "-j", "1"]) == 1  # fmt: skip
    ranked = [r for r in results(out) if r["rank"]]
    assert ranked[0]["file"] == "'" + EVIL and float(ranked[0]["score"]) == math.inf
    assert math.isfinite(float(ranked[1]["score"]))


def test_the_embedding_finds_the_tight_crop_that_hashes_miss(collection, tmp_path):
    """A crop to the middle 60 % off centre: the embedding ranks it with the copies; pHash,
    robust to scaling but not to crops, does not."""
    top = {}
    for method in ("embedding", "phash"):
        out = tmp_path / method
        main(["search", str(collection / "coffee.png"), str(collection), "--by", method,
              "--top", "3", "--out", str(out), "-q", "-j", "1"])  # fmt: skip
        top[method] = {r["file"] for r in results(out) if r["rank"]}
    assert top["embedding"] == {"coffee_small.jpg", "coffee_crop.png", "coffee_tight.png"}
    assert "coffee_tight.png" not in top["phash"]


def test_many_queries_in_one_pass_and_reports_that_escape(collection, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text(f"{collection / 'rocket.png'}\n\n{collection / 'coffee.png'}\n", "utf-8")
    out = tmp_path / "o"
    code = main(["search", "--queries", str(queries), str(collection), "--top", "3",
                 "--out", str(out), "-q"])  # fmt: skip
    assert code == 1
    rows = [r for r in results(out) if r["rank"]]
    assert [r["query"] for r in rows] == ["rocket.png"] * 3 + ["coffee.png"] * 3
    assert {r["file"] for r in rows[:3]} == {
        "rocket_small.jpg",
        "rocket_crop.png",
        "rocket_tight.png",
    }
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.xlsx", "results.csv"]


def test_hostile_names_are_escaped_and_never_formulas(collection, tmp_path):
    out = tmp_path / "o"
    main(["search", str(collection / "coins.png"), str(collection), "--by", "phash",
          "--top", "1", "--out", str(out), "-q"])  # fmt: skip
    (hit,) = [r for r in results(out) if r["rank"]]
    assert hit["file"] == "'" + EVIL  # the identical copy, as text in a spreadsheet
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "http://" not in page and "https://" not in page
    from openpyxl import load_workbook

    ws = load_workbook(out / "report.xlsx")["Results"]
    cells = [c for row in ws.iter_rows() for c in row if c.value == EVIL]
    assert cells and all(c.data_type == "s" and c.quotePrefix for c in cells)


def test_the_cache_computes_only_new_and_changed_files(collection, tmp_path):
    folder = tmp_path / "grow"
    shutil.copytree(collection, folder)
    items = [Input(p, p.name) for p in sorted(folder.glob("*.png"))]
    cache = FeatureCache(tmp_path / "features.sqlite")
    first = gather(items, embedding=True, jobs=1, cache=cache)
    assert not any(f.cached for f in first)
    cv2.imwrite(str(folder / "camera.png"), photo("camera")[::-1])  # changed in place
    os.utime(folder / "camera.png", ns=(1, 1))
    cv2.imwrite(str(folder / "new.png"), photo("coffee")[:, ::-1])
    items = [Input(p, p.name) for p in sorted(folder.glob("*.png"))]
    second = gather(items, embedding=True, jobs=1, cache=cache)
    fresh = {f.file for f in second if not f.cached}
    assert fresh == {"camera.png", "new.png", "broken.png"}  # errors are never cached
    again = {f.file: f for f in second}
    before = {f.file: f for f in first}
    assert np.array_equal(again["rocket.png"].embedding, before["rocket.png"].embedding)
    assert again["camera.png"].sha256 != before["camera.png"].sha256
    # what the keep order reads comes back from the cache as it was computed
    assert (again["rocket.png"].format, again["rocket.png"].channels) == ("PNG", 3)
    assert again["rocket.png"].size == before["rocket.png"].size
    cache.close()


def test_an_older_schemas_table_is_dropped(tmp_path):
    """A new schema's cache is a new table: the old one, with every thumbnail and
    embedding it held, would otherwise stay in the file for ever."""
    path = tmp_path / "features.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE features_v2 (path TEXT PRIMARY KEY, thumbnail BLOB)")
    FeatureCache(path).close()
    with sqlite3.connect(path) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {f"features_v{features.SCHEMA}"}


def test_no_cache_writes_nothing(collection, tmp_path):
    out = tmp_path / "o"
    main(["search", str(collection / "rocket.png"), str(collection), "--by", "phash",
          "--no-cache", "--out", str(out), "-q"])  # fmt: skip
    assert not (tmp_path / "cache" / "features.sqlite").exists()


def test_bad_queries_and_arguments_say_so_in_one_line(collection, tmp_path, capsys):
    args = ["--out", str(tmp_path / "o"), "-q"]
    assert main(["search", str(collection / "broken.png"), str(collection), *args]) == 2
    assert main(["search", str(tmp_path / "none.png"), str(collection), *args]) == 2
    assert main(["search", str(collection / "rocket.png"), *args]) == 2
    assert main(["search", str(collection / "rocket.png"), str(collection), "--by", "x"]) == 2
    assert (
        main(["search", str(collection / "rocket.png"), str(collection), "--formats", "json"]) == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "query" in err and "no such file" in err
    assert main(["search", str(collection), str(collection), *args]) == 2  # a folder as query
    err = capsys.readouterr().err
    assert f"query {collection} is a folder: give one image file" in err


def test_a_query_of_a_file_that_cannot_be_read_is_its_row_and_the_others_are_answered(
    collection, tmp_path, capsys
):
    """One missing or unreadable query of a --queries file ended the whole search (exit
    status 2, no report for the queries that could be answered). Each is now an ERROR
    row naming it, the others are answered, and the status is 1. The file may carry a
    byte order mark (its first path was not found) and comment lines."""
    queries = tmp_path / "q.txt"
    lines = ["# today's queries", str(collection / "rocket.png"), str(tmp_path / "gone.png"),
             str(collection / "broken.png"), "/dev/null",
             str(collection / "coffee.png")]  # fmt: skip
    queries.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    out = tmp_path / "o"
    argv = ["search", "--queries", str(queries), str(collection), "--by", "phash", "--top", "2"]
    assert main([*argv, "--out", str(out), "-q", "--no-cache", "--jobs", "1"]) == 1
    with (out / "results.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["query"] for r in rows if r["rank"] == "1"] == ["rocket.png", "coffee.png"]
    errors = {r["file"]: r["error"] for r in rows if r["error"]}
    assert errors[str(tmp_path / "gone.png")] == f"query {tmp_path / 'gone.png'}: no such file"
    assert errors["/dev/null"] == "query /dev/null is a device: give one image file"
    assert errors["broken.png"].startswith(f"query {collection / 'broken.png'}: ")
    assert len(errors) == 3  # broken.png once, as the query, not again as a file
    assert "Search by phash: 2 of 5 queries answered" in (out / "report.html").read_text("utf-8")
    from openpyxl import load_workbook

    ws = load_workbook(out / "report.xlsx")["Results"]
    heads = [c.value for c in ws[2]]
    assert heads[-1] == "error" and heads.index("score") != len(heads) - 1
    row = next(r for r in ws.iter_rows(min_row=3) if r[3].value == "broken.png")
    # the message in a wrapped column of its own, its row as tall as its lines; in the
    # score's column, 22 characters wide, it was cut by the path beside it
    assert row[-1].value == errors["broken.png"] and row[-1].alignment.wrap_text
    assert row[4].value is None
    assert ws.row_dimensions[row[0].row].height >= 15 * math.ceil(len(row[-1].value) / 60)
    capsys.readouterr()
    none = tmp_path / "none.txt"
    none.write_text(f"{tmp_path / 'gone.png'}\n{collection / 'broken.png'}\n", "utf-8")
    assert main(["search", "--queries", str(none), str(collection), "-q", "--no-cache"]) == 2
    assert capsys.readouterr().err == (
        f"reporter: error: none of the 2 queries can be read; the first: query "
        f"{tmp_path / 'gone.png'}: no such file\n"
    )
    for text, said in (
        ("# nothing\n\n", f"the queries file {none} names no query"),
        (b"\xff\xfeq\x00", f"the queries file {none} is not UTF-8 text (byte 0): give one "
         "query path per line"),
    ):  # fmt: skip
        none.write_bytes(text if isinstance(text, bytes) else text.encode())
        assert main(["search", "--queries", str(none), str(collection), "-q"]) == 2
        assert capsys.readouterr().err == f"reporter: error: {said}\n"


def test_a_cache_folder_that_cannot_be_one_costs_the_cache_not_the_command(
    collection, tmp_path, monkeypatch, capsys
):
    """REPORTER_CACHE naming a file (or a home under /proc) ended search and duplicates
    in 'reporter: error: ...: Not a directory' before any work, and search --index hnsw
    after it: the cache is an optimisation. Each command now warns once and does its work
    without it."""
    where = tmp_path / "a-file"
    where.write_text("not a folder", "utf-8")
    monkeypatch.setenv("REPORTER_CACHE", str(where))
    query = str(collection / "rocket.png")
    for argv in (["search", query, str(collection), "--by", "phash"],
                 ["search", query, str(collection), "--index", "hnsw"],
                 ["duplicates", str(collection)]):  # fmt: skip
        code = main([*argv, "--out", str(tmp_path / argv[0]), "--jobs", "1", "-q"])
        err = capsys.readouterr().err
        assert code == 1, err  # broken.png is an ERROR row: the work was done
        assert f"WARNING feature cache {where}/features.sqlite not used" in err
        assert "reporter: error" not in err
        assert ("search index not saved in" in err) == ("hnsw" in argv)


def test_past_index_from_the_bounds_give_exactly_every_images_top(monkeypatch):
    """Pools of INDEX_FROM images or more are searched through bounds on the cosine from the
    pool's principal axes: on 6,000 vectors spread as real embeddings are, the top 10 are
    those of every image's score, in the same order (the bound never below the cosine)."""
    monkeypatch.setattr(search, "INDEX_FROM", 2000)
    x = unit_vectors(6000, "decaying")
    pool = pool_of(x)
    index = Index("embedding", pool)
    for q in range(0, len(x), 40):
        values = x @ x[q]
        values[q] = -np.inf  # the query's own file is left out
        want = np.argsort(-values, kind="stable")[:10]
        got = rank("embedding", pool[q], pool, 10, index).hits
        assert [int(h.item.path) for h in got] == want.tolist()
        assert [h.score for h in got] == pytest.approx(values[want].tolist(), abs=1e-5)
    assert index._bound is not None  # the bounds were used


def pool_of(x: np.ndarray) -> list[Features]:
    return [Features(f"{i:05d}", f"{i:05d}", sha256=str(i), width=9, height=9, embedding=x[i])
            for i in range(len(x))]  # fmt: skip


def test_the_saved_hnsw_index_finds_the_same_neighbours_and_is_built_once(tmp_path, caplog):
    """--index hnsw (faiss, in the test extra): on the same 6,000 vectors, its top 10 holds
    99 % or more of the exact top 10 and always the nearest; the index is saved in the cache
    folder and read back, not rebuilt; another collection gets its own."""
    x = unit_vectors(6000, "decaying")
    pool, folder = pool_of(x), tmp_path / "saved"
    caplog.set_level("INFO", logger="reporter")
    index = Index("embedding", pool, hnsw=True, saved=folder)
    assert "building a search index of 6000 images" in caplog.text
    recall, nearest = [], []
    for q in range(0, len(x), 40):
        values = x @ x[q]
        values[q] = -np.inf
        want = np.argsort(-values, kind="stable")[:10].tolist()
        got = [int(h.item.path) for h in rank("embedding", pool[q], pool, 10, index).hits]
        recall.append(len(set(got) & set(want)) / 10)
        nearest.append(got[0] == want[0])
    assert np.mean(recall) >= 0.99 and all(nearest)
    (saved,) = folder.glob("hnsw-*.faiss")
    caplog.clear()
    again = Index("embedding", pool, hnsw=True, saved=folder)
    assert again.graph.ntotal == 6000 and "building" not in caplog.text
    Index("embedding", pool[:-1], hnsw=True, saved=folder)  # a collection that lost a file
    assert "building" in caplog.text and len(list(folder.glob("hnsw-*.faiss"))) == 2


def test_search_with_the_hnsw_index_from_the_command_line(collection, tmp_path, capsys):
    out = tmp_path / "out"
    query = str(collection / "coffee.png")
    assert main(["search", query, str(collection), "--index", "hnsw", "--out", str(out), "-q"]) == 1
    ranked = [r["file"] for r in results(out) if r["rank"]]  # 1: the broken file's ERROR row
    assert set(ranked[:2]) == {"coffee_small.jpg", "coffee_crop.png"} and "coffee.png" not in ranked
    assert list((tmp_path / "cache").glob("hnsw-*.faiss"))
    assert main(["search", query, str(collection), "--index", "hnsw", "--by", "phash"]) == 2
    assert "--index hnsw is for --by embedding only" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["embedding", "colour", "phash"])
def test_a_collection_of_only_unreadable_files_gives_error_rows(collection, tmp_path, method):
    """Nothing to rank against: the query alone, every file its ERROR row, status 1."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not an image")
    out = tmp_path / "o"
    code = main(["search", str(collection / "coffee.png"), str(folder), "--by", method,
                 "--out", str(out), "-q", "--no-cache"])  # fmt: skip
    assert code == 1
    got = results(out)
    assert not [r for r in got if r["rank"]]
    assert sorted(r["file"] for r in got if r["error"]) == ["a.png", "b.jpg"]


def test_a_twelve_bit_cameras_image_is_seen_by_its_own_depth(tmp_path):
    """A 12-bit camera's 16-bit file (0-4095), the same picture at the full 16-bit range,
    and its 8-bit export are one picture to the collection commands: the same hashes and
    thumbnail. By the top 8 bits, the 12-bit one was 0-15: a black thumbnail, and an
    embedding of black that every such image shared."""
    from test_images import twelve_bit

    pixels = twelve_bit(0)
    versions = {"12bit.tif": pixels, "16bit.tif": pixels << 4, "8bit.png": (pixels >> 4)}
    found = {}
    for name, img in versions.items():
        cv2.imwrite(str(tmp_path / name), img.astype(np.uint8) if name == "8bit.png" else img)
        found[name] = features.compute(
            tmp_path / name, name, embedding=True, max_pixels=10**8, max_bytes=None
        )
    ref = found["8bit.png"]
    for f in found.values():
        assert f.error is None
        assert (f.phash, f.ahash) == (ref.phash, ref.ahash), f.file
        assert f.thumbnail == ref.thumbnail, f.file
        assert float(f.embedding @ ref.embedding) > 0.9999, f.file
    thumb = cv2.imdecode(np.frombuffer(ref.thumbnail, np.uint8), cv2.IMREAD_UNCHANGED)
    assert thumb.max() > 200
