"""reporter duplicates: exact copies and near-duplicates of real photos, without chaining."""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import kill_a_worker, noisy_run, photo, unit_vectors
from openpyxl import load_workbook

from reporter.cli import main
from reporter.collection import KEEP_ORDER, search
from reporter.collection.duplicates import group, keep_order
from reporter.collection.features import Features, _reduced, has_colour
from reporter.collection.reports import duplicates_table

SOURCES = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "brick", "page")


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.setenv("REPORTER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in SOURCES:
        cv2.imwrite(str(folder / f"{name}.png"), photo(name))
    for name in ("coffee", "rocket"):
        img = photo(name)
        h, w = img.shape[:2]
        small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}_small.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 60])
        cv2.imwrite(str(folder / f"{name}_crop.png"), img[h // 10 : -h // 10, w // 10 : -w // 10])
    shutil.copy(folder / "camera.png", folder / "camera copy.png")  # the same bytes
    later = time.time_ns() + 86_400 * 10**9
    os.utime(folder / "camera copy.png", ns=(later, later))  # and newer
    (folder / "broken.png").write_bytes(b"junk")
    return folder


def groups_csv(out) -> dict[int, list[dict]]:
    with (out / "groups.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    found: dict[int, list[dict]] = {}
    for r in rows:
        if r["group"]:
            found.setdefault(int(r["group"]), []).append(r)
    return found


@pytest.mark.parametrize(
    ("method", "coffee"),
    [
        ("phash", {"coffee.png", "coffee_small.jpg"}),  # pHash misses the crop
        ("embedding", {"coffee.png", "coffee_small.jpg", "coffee_crop.png"}),
    ],
)
def test_groups_match_their_sources_and_keep_the_best(photos, tmp_path, method, coffee):
    out = tmp_path / "o"
    assert main(["duplicates", str(photos), "--by", method, "--out", str(out), "-q"]) == 1
    found = {frozenset(r["file"] for r in rows): rows for rows in groups_csv(out).values()}
    assert frozenset(coffee) in found
    assert frozenset({"camera.png", "camera copy.png"}) in found
    assert all(
        len({r["file"].split("_")[0].split(".")[0].split(" ")[0] for r in rows}) == 1
        for rows in found.values()
    )  # fmt: skip - no group mixes two sources
    rows = found[frozenset(coffee)]
    assert [r["file"] for r in rows if r["keep"] == "yes"] == ["coffee.png"]  # full size
    assert rows[0]["keep"] == "yes" and rows[0]["distance"] == "0.0"
    camera = found[frozenset({"camera.png", "camera copy.png"})]
    assert camera[0]["file"] == "camera.png"  # identical: the older one is kept
    assert camera[1]["kind"] == "exact copy"
    assert camera[1]["same_bytes_as"] == "camera.png"
    ws = load_workbook(out / "report.xlsx")["Results"]
    assert ws.cell(2, 7).value == "note"
    by_file = {  # the pictures' rows (a section in column A), by the file in column D
        row[3].value: [c for c in row if c.value is not None]
        for row in ws.iter_rows(min_row=3)
        if row[0].value
    }
    assert by_file["camera copy.png"][-1].value.endswith("same bytes as camera.png")
    # every cell of a picture's row at its top, where its name is (the tag and the
    # distance sat at the bottom, beside the next row's name)
    assert all(c.alignment.vertical == "top" for row in by_file.values() for c in row)
    (broken,) = [r for r in csv.DictReader((out / "groups.csv").open()) if r["error"]]
    assert broken["file"] == "broken.png"
    assert (photos / "coffee_small.jpg").exists()  # nothing moved unless asked


def feature(name: str, bits: int, width: int = 100, mtime: int = 0, **more):
    value = (2**bits - 1).to_bytes(8, "big")  # the first `bits` bits set
    more = {"size": 1000, "format": "JPEG", "channels": 3} | more
    return Features(name, name, sha256=name, width=width, height=width, phash=value,
                    mtime_ns=mtime, **more)  # fmt: skip


def test_no_chaining_through_an_intermediate():
    """A and B are 6 apart, B and C 6, A and C 12: with a threshold of 8, single linkage would
    put all three together; around the kept image, C stays out."""
    a, b, c = feature("a", 0, width=300), feature("b", 6), feature("c", 12)
    (only,) = group([c, b, a], "phash", 8)
    assert [m.item.path for m in only.members] == ["a", "b"]
    assert only.members[1].distance == 6


def test_copies_of_a_near_duplicate_say_whose_bytes_they_have():
    """Byte-identical copies of a near-duplicate are near-duplicates of the kept image, not
    its copies: the page tags only the kept image's own copies "copy", and every copy names
    the file it has the bytes of."""
    kept = feature("kept.png", 0, width=300)
    kept_copy = replace(feature("kept copy.png", 0, width=300, mtime=1), sha256="kept.png")
    near = feature("near.png", 6)
    near_copies = [replace(feature(f"near {i}.png", 6, mtime=i), sha256="near.png") for i in (1, 2)]
    (only,) = group([near_copies[1], near, kept_copy, near_copies[0], kept], "phash", 8)
    table = duplicates_table([only], [], "phash", 8, "today")
    rows = [(i.features.file, i.values["kind"], i.values["same_bytes_as"], i.tag, i.score)
            for i in table.sections[0].items]  # fmt: skip
    assert rows == [
        ("kept.png", "kept", "", "keep", ""),
        ("kept copy.png", "exact copy", "kept.png", "copy", "0"),
        ("near.png", "phash near-duplicate", "", "", "6"),
        ("near 1.png", "phash near-duplicate", "near.png", "", "6"),
        ("near 2.png", "phash near-duplicate", "near.png", "", "6"),
    ]
    notes = [i.note for i in table.sections[0].items]
    assert notes[3].endswith("same bytes as near.png") and "same bytes" not in notes[2]


def every_pair_groups(x: np.ndarray, limit: float) -> set[frozenset[int]]:
    """The star rule computed the plain way: every pair's cosine in float64."""
    cosine = x.astype(np.float64) @ x.T.astype(np.float64)
    free = np.ones(len(x), bool)
    groups = set()
    for i in range(len(x)):  # the order to keep in: by path, as all else is equal
        if free[i]:
            free[i] = False
            near = np.flatnonzero(free & (1.0 - cosine[i] <= limit))
            free[near] = False
            if len(near):
                groups.add(frozenset([i, *near.tolist()]))
    return groups


@pytest.mark.parametrize(
    ("spectrum", "dense"), [("decaying", None), ("decaying", 1.0), ("even", None)]
)
def test_large_pools_of_embeddings_group_exactly_as_every_pair_would(spectrum, dense, monkeypatch):
    """Past 4,096 vectors the pairs are first ruled out by a bound on the cosine, from the
    pool's principal axes, and only the rest computed in full: the groups must be those of
    every pair. ``even`` vectors defeat the bound, so blocks are then computed in full
    (``dense`` 1.0 forbids that, to check the bound's own path on both)."""
    if dense is not None:
        monkeypatch.setattr(search, "_DENSE", dense)
    x = unit_vectors(5000, spectrum)
    pool = [Features(f"{i:05d}", f"{i:05d}", sha256=str(i), width=100, height=100,
                     embedding=x[i]) for i in range(len(x))]  # fmt: skip
    groups = group(pool, "embedding", 0.4)
    found = {frozenset(int(m.item.path) for m in g.members) for g in groups}
    expected = every_pair_groups(x, 0.4)
    assert len(expected) > 100 and found == expected
    cosine = {(int(g.kept.path), int(m.item.path)): m.distance for g in groups for m in g.members}
    for (a, b), distance in list(cosine.items())[:2000]:
        assert distance == pytest.approx(1.0 - float(x[a] @ x[b]), abs=1e-5)


def test_keep_the_most_pixels_then_colour_lossless_larger_older():
    order = [
        feature("more pixels, grey, lossy, small", 0, width=200, channels=1, size=10),
        feature("lossless, small", 0, format="PNG", size=10, mtime=9),
        feature("lossy, larger", 0, size=5000, mtime=9),
        feature("older", 0, mtime=1),
        feature("newer", 0, mtime=9),
        feature("grey, lossless, largest", 0, format="PNG", channels=1, size=9999),
    ]
    # each is kept before the next by the first criterion that tells them apart
    assert keep_order(order[::-1]) == keep_order(order[3:] + order[:3]) == order


def test_a_netpbm_file_is_lossless_and_a_jpeg_2000_may_not_be():
    """An instrument's PGM (Pillow names every Netpbm file PPM) is kept before the larger
    JPEG and JPEG 2000 exports of its picture; a JPEG 2000 may be lossy, so only its size
    puts it before the JPEG."""
    order = [
        feature("netpbm", 0, format="PPM", size=10),
        feature("jpeg 2000, larger", 0, format="JPEG2000", size=9000),
        feature("jpeg", 0, format="JPEG", size=5000),
    ]
    assert keep_order(order[::-1]) == order


def test_the_help_and_the_report_state_the_keep_order_the_code_follows(tmp_path, capsys):
    """``duplicates --help`` said "highest resolution, then sharpest, then oldest" after
    the sharpness had left the rule (it kept edited copies) and the format and file size
    had joined it; the help and the report now say one text, KEEP_ORDER."""
    assert main(["duplicates", "--help"]) == 0
    helped = " ".join(capsys.readouterr().out.split())
    assert KEEP_ORDER in helped and "sharpest" not in helped
    parts = KEEP_ORDER.removeprefix("the most pixels, then ").split(", ")
    assert parts == ["colour", "a lossless format", "the larger file", "the oldest"]
    # ... in keep_order's order (the test above checks keep_order itself)
    table = duplicates_table([], [], "phash", 8, "now")
    assert KEEP_ORDER in table.subtitle


def test_the_original_is_kept_not_its_edited_copies(tmp_path, monkeypatch):
    """Captioned, brightened, grey and recompressed copies of a photo, all of its size: the
    original PNG is kept. The variance of the Laplacian ("sharpest") kept the captioned or
    the brightened copy, and put the group around it (every distance measured from it)."""
    monkeypatch.setenv("REPORTER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        img = photo(name)
        cv2.imwrite(str(folder / f"{name}.png"), img)
        cv2.imwrite(str(folder / f"{name}_q40.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 40])
        bright = cv2.convertScaleAbs(img, alpha=1.15, beta=10)
        cv2.imwrite(str(folder / f"{name}_bright.jpg"), bright, [cv2.IMWRITE_JPEG_QUALITY, 95])
        captioned = img.copy()
        cv2.putText(captioned, "(c) 2024 SAMPLE", (10, img.shape[0] - 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 3)  # fmt: skip
        cv2.imwrite(str(folder / f"{name}_caption.jpg"), captioned)
        cv2.imwrite(str(folder / f"{name}_grey.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    for method in ("phash", "embedding"):
        out = tmp_path / method
        assert main(["duplicates", str(folder), "--by", method, "--out", str(out), "-q"]) == 0
        kept = {r["file"] for rows in groups_csv(out).values() for r in rows if r["keep"] == "yes"}
        assert kept == {"chelsea.png", "coffee.png", "astronaut.png"}, method


def test_a_grey_picture_stored_as_colour_is_grey_in_the_keep_order(tmp_path, monkeypatch):
    """A grey photo and its colour JPEG (a scan, a re-save): the grey PNG is kept, since
    the JPEG holds no more colour than it, only loss. Counting the JPEG's three channels
    as colour kept the JPEG."""
    monkeypatch.setenv("REPORTER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    grey = photo("camera")
    cv2.imwrite(str(folder / "camera.png"), grey)
    as_colour = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    cv2.imwrite(str(folder / "camera_scan.jpg"), as_colour, [cv2.IMWRITE_JPEG_QUALITY, 90])
    out = tmp_path / "out"
    assert main(["duplicates", str(folder), "--out", str(out), "-q"]) == 0
    (rows,) = groups_csv(out).values()
    assert [r["file"] for r in rows if r["keep"] == "yes"] == ["camera.png"]


def test_a_large_jpeg_is_weighed_by_what_its_reduced_decode_holds(tmp_path, monkeypatch, capsys):
    """The collection commands decode a JPEG at 1/2 to 1/8 of its size. One of a single
    sequential scan (a camera's, a phone's, a stitched panorama's) is decoded band by band
    and holds only the reduced picture, so the pixel limit weighs that: a 150-megapixel
    panorama was an ERROR row, over a max_pixels these commands did not even offer. A
    progressive one holds its whole picture's coefficients, so its full size is weighed.
    --max-pixels and --max-file-mb are now the collection commands' too."""
    from reporter import images

    monkeypatch.setenv("REPORTER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    wide = cv2.resize(photo("coffee"), (2400, 1600), interpolation=cv2.INTER_CUBIC)
    sequential, progressive = folder / "pano.jpg", folder / "pano_progressive.jpg"
    cv2.imwrite(str(sequential), wide, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(progressive), wide, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    cv2.imwrite(str(folder / "small.png"), photo("astronaut"))
    data = sequential.read_bytes()
    assert images._jpeg_scans(data) == (1, True)
    assert images._jpeg_scans(progressive.read_bytes())[1] is False
    sos = data.index(b"\xff\xda")  # one scan of one of the three components: libjpeg then
    apart = data[: sos + 4] + b"\x01" + data[sos + 5 :]  # buffers the whole picture
    assert images._jpeg_scans(apart) == (1, False)
    limit = 1_000_000  # the panoramas have 3.84 Mpx; decoded at 1/2, 0.96
    loaded = images.load(sequential, max_pixels=limit, reduced_side=512)
    assert loaded.full_size == (2400, 1600) and loaded.pixels.shape[:2] == (800, 1200)
    for path, reduced_side in ((progressive, 512), (sequential, None)):
        with pytest.raises(images.ImageLoadError, match="over the limit of 1.0 Mpx"):
            images.load(path, max_pixels=limit, reduced_side=reduced_side)
    out = tmp_path / "out"
    assert main(["duplicates", str(folder), "--out", str(out), "-q"]) == 0  # 100 Mpx
    (rows,) = groups_csv(out).values()
    assert sorted(r["file"] for r in rows) == ["pano.jpg", "pano_progressive.jpg"]
    out = tmp_path / "limited"
    limited = ["--max-pixels", str(limit), "--no-cache"]  # cached features need no decoding
    code = main(["duplicates", str(folder), "--out", str(out), "-q", *limited])
    assert code == 1 and groups_csv(out) == {}
    with (out / "groups.csv").open(encoding="utf-8", newline="") as f:
        errors = {r["file"]: r["error"] for r in csv.DictReader(f)}
    assert errors == {
        "pano_progressive.jpg": "2400x1600 is 3.8 Mpx, over the limit of 1.0 Mpx (max_pixels)"
    }
    out = tmp_path / "small_files"
    limited = ["--max-file-mb", "0.1", "--no-cache"]
    assert main(["duplicates", str(folder), "--out", str(out), "-q", *limited]) == 1
    with (out / "groups.csv").open(encoding="utf-8", newline="") as f:
        errors = {r["file"]: r["error"] for r in csv.DictReader(f)}
    assert len(errors) == 3 and all(
        e.endswith("over the limit of 0.1 MB (max_file_mb): not read") for e in errors.values()
    ), errors
    assert main(["cluster", str(folder), "--max-pixels", "0"]) == 2
    assert "--max-pixels: must be positive" in capsys.readouterr().err


def test_has_colour_looks_at_the_picture_not_the_file():
    colour = photo("coffee")
    grey_as_colour = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", grey_as_colour, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], 1)
    noisy = np.clip(grey_as_colour + np.random.default_rng(0).normal(0, 3, colour.shape), 0, 255)
    logo = grey_as_colour.copy()  # a grey page with a red stamp on 2 % of it
    h, w = logo.shape[:2]
    logo[: h // 7, : w // 7] = (0, 0, 220)
    assert has_colour(_reduced(colour)) and has_colour(_reduced(logo))
    assert not has_colour(_reduced(grey_as_colour[..., 0]))
    assert not has_colour(_reduced(grey_as_colour)) and not has_colour(_reduced(jpeg))
    assert not has_colour(_reduced(noisy.astype(np.uint8)))  # a scanner's noise in each channel
    assert has_colour(_reduced(np.full((1, 1, 3), (0, 0, 200), np.uint8)))  # one red pixel


@pytest.mark.parametrize("method", ["phash", "ahash", "embedding"])
def test_flat_pictures_are_copies_only_of_their_own_tone(tmp_path, monkeypatch, method):
    """Blank frames: every hash of a flat picture is the same whatever its tone, so black,
    white and grey frames were one group (and --move-duplicates moved all but one). Now a
    flat picture is a copy only of a flat one of its tone (a smaller or re-encoded white
    frame is still a copy of the white one), and never of a picture with content."""
    monkeypatch.setenv("REPORTER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, value in (("black", 0), ("white", 255), ("grey", 128), ("blue", (200, 30, 30))):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((120, 160, 3), value, np.uint8))
    cv2.imwrite(str(folder / "white_small.jpg"), np.full((60, 80, 3), 254, np.uint8))
    cv2.imwrite(str(folder / "black_1px.png"), np.zeros((1, 1), np.uint8))
    cv2.imwrite(str(folder / "coffee.png"), photo("coffee"))
    out = tmp_path / method
    assert main(["duplicates", str(folder), "--by", method, "--out", str(out), "-q"]) == 0
    found = sorted(sorted(r["file"] for r in rows) for rows in groups_csv(out).values())
    assert found == [["black.png", "black_1px.png"], ["white.png", "white_small.jpg"]]


def test_move_duplicates_moves_all_but_the_kept_and_logs_each(photos, tmp_path, capsys):
    target = tmp_path / "dupes"
    target.mkdir()
    (target / "coffee_small.jpg").write_bytes(b"already here")  # never overwritten
    out = tmp_path / "o"
    main(["duplicates", str(photos), "--out", str(out), "--move-duplicates", str(target)])
    assert (photos / "coffee.png").exists() and not (photos / "coffee_small.jpg").exists()
    assert (target / "coffee_small.jpg").read_bytes() == b"already here"
    assert (target / "coffee_small-2.jpg").exists() and (target / "camera copy.png").exists()
    moves = [line for line in capsys.readouterr().err.splitlines() if " INFO moved " in line]
    assert len(moves) == sum(len(rows) - 1 for rows in groups_csv(out).values())


def test_a_second_move_into_the_collection_moves_nothing_again(photos, capsys, monkeypatch):
    """--move-duplicates into a folder inside the collection, then the same command again
    (with -r): the moved files were found again, grouped with the images they had been
    moved from, and each moved again within the folder (coffee_small.jpg became
    coffee_small-2.jpg). The folder, and the reports under the collection, are now left
    out of the walk."""
    argv = ["duplicates", ".", "-r", "--move-duplicates", "dupes", "--out", "o"]
    monkeypatch.chdir(photos)
    assert main(argv) == 1  # the collection's broken.png
    moved = sorted(p.name for p in (photos / "dupes").iterdir())
    assert moved
    capsys.readouterr()
    assert main(argv) == 1
    assert sorted(p.name for p in (photos / "dupes").iterdir()) == moved
    err = capsys.readouterr().err
    assert "INFO left out ./dupes: the duplicates moved aside (--move-duplicates)" in err
    assert "INFO left out ./o: reporter's reports (out)" in err
    assert " INFO moved " not in err and groups_csv(photos / "o") == {}


def test_a_duplicate_gone_before_its_move_is_a_warning_and_the_rest_are_moved(
    photos, tmp_path, capsys, monkeypatch
):
    """A library under sync (or a second curator) loses a file between the read and the
    moves: the FileNotFoundError stopped every move after it, exit status 2, as if the
    target could not take them. The file that is gone is a WARNING line, the others are
    moved, the summary says how many were gone, and the exit status is 1."""
    from reporter.collection import duplicates as module

    (photos / "broken.png").unlink()  # no ERROR row: the status is the moves' alone
    real = module.group
    gone: list[Path] = []

    def group_then_lose_one(*args, **kwargs):
        groups = real(*args, **kwargs)
        lost = Path(groups[0].members[1].item.path)
        lost.unlink()
        gone.append(lost)
        return groups

    monkeypatch.setattr(module, "group", group_then_lose_one)
    out, target = tmp_path / "o", tmp_path / "dupes"
    assert (
        main(["duplicates", str(photos), "--move-duplicates", str(target), "--out", str(out)]) == 1
    )
    captured = capsys.readouterr()
    to_move = sum(len(rows) - 1 for rows in groups_csv(out).values())
    assert to_move >= 3 and len(list(target.iterdir())) == to_move - 1
    assert f"WARNING could not move {gone[0]}: it is gone since it was read" in captured.err
    assert f"moved {to_move - 1} duplicate(s) to {target}; 1 was gone before its move" in (
        captured.out
    )


def test_the_feature_cache_drops_the_rows_of_files_gone_from_its_folders(
    photos, tmp_path, capsys, monkeypatch
):
    """The cache kept every file it ever saw: the duplicates moved aside, files deleted or
    renamed left their rows (thumbnail, hashes, embedding) for ever. A command now drops
    the rows of files gone from the folders it read; it keeps rows of files still there
    but not read this time (a sub-folder without -r), of other folders, and of a folder
    not there (a share not mounted today)."""
    from reporter.collection.features import TABLE, default_cache

    def cached() -> set[str]:
        with sqlite3.connect(default_cache()) as db:
            return {row[0] for row in db.execute(f"SELECT path FROM {TABLE}")}

    sub, share, elsewhere = photos / "sub", photos / "share", tmp_path / "elsewhere"
    for folder in (sub, share, elsewhere):
        folder.mkdir()
        cv2.imwrite(str(folder / "x.png"), photo("coins"))
    assert main(["duplicates", str(photos), "-r", "--out", str(tmp_path / "o1"), "-q"]) == 1
    assert main(["duplicates", str(elsewhere), "--out", str(tmp_path / "o2"), "-q"]) == 0
    before = cached()
    assert str(sub / "x.png") in before and str(elsewhere / "x.png") in before
    (photos / "chelsea.png").unlink()
    share.rename(tmp_path / "unmounted")  # its folder is not there today
    (elsewhere / "x.png").unlink()  # gone, but from a folder this command does not read
    capsys.readouterr()
    target = tmp_path / "dupes"
    argv = [
        "duplicates",
        str(photos),
        "--move-duplicates",
        str(target),
        "--out",
        str(tmp_path / "o3"),
    ]
    assert main(argv) == 1  # broken.png
    moved = {str(photos / p.name) for p in target.iterdir()}
    assert (
        moved and "INFO feature cache: dropped 1 file(s) no longer there" in capsys.readouterr().err
    )
    assert before - cached() == {str(photos / "chelsea.png")}
    assert main(["duplicates", str(photos), "--out", str(tmp_path / "o4"), "-q"]) == 1
    assert before - cached() == {str(photos / "chelsea.png")} | moved
    # A file that cannot be looked at (its folder's permissions changed; root, which runs
    # these tests, is never refused, so the refusal is the file system's answer here) is
    # not a file gone: its row stays.
    real_lstat = os.lstat

    def refused(path, *args, **kwargs):
        if str(path) == str(sub / "x.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", refused)
    assert main(["duplicates", str(photos), "--out", str(tmp_path / "o5"), "-q"]) == 1
    monkeypatch.setattr(os, "lstat", real_lstat)
    assert {str(sub / "x.png"), str(share / "x.png"), str(elsewhere / "x.png")} <= cached()


def test_a_folder_to_move_into_that_cannot_be_one_is_one_line_before_any_work(
    photos, tmp_path, capsys, monkeypatch
):
    """--move-duplicates given an existing file (a name typed by mistake) read the whole
    collection, wrote the reports, then ended in a FileExistsError traceback (found by
    the command-line fuzzer). It is now refused first, in one line, exit status 2, and
    nothing is written or moved. A move that fails part-way (here the folder made
    read-only under it, as a full disk or a share's permissions would) is one line too,
    after the reports."""
    out = tmp_path / "o"
    kept = sorted(p.name for p in photos.iterdir())
    for target, said in (
        (photos / "chelsea.png", f"--move-duplicates {photos / 'chelsea.png'} is a file: "
         "give a folder (made if missing)"),
        (photos / "chelsea.png" / "dupes", f"--move-duplicates {photos / 'chelsea.png' / 'dupes'}"
         f" cannot be made: {photos / 'chelsea.png'} is a file"),
    ):  # fmt: skip
        argv = ["duplicates", str(photos), "--move-duplicates", str(target), "--out", str(out)]
        assert main(argv) == 2
        assert capsys.readouterr().err == f"reporter: error: {said}\n"
        assert not out.exists() and sorted(p.name for p in photos.iterdir()) == kept

    def refuse(source, dest):
        raise PermissionError(13, "Permission denied", str(dest))

    monkeypatch.setattr(shutil, "move", refuse)
    target = tmp_path / "dupes"
    assert (
        main(["duplicates", str(photos), "--move-duplicates", str(target), "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"reporter: error: cannot move duplicates into {target}: {target}/")
    assert err.endswith(": Permission denied; the reports are written, and the log names each "
                        "file placed before it")  # fmt: skip
    assert (out / "groups.csv").exists()


def test_thresholds_and_reports(photos, tmp_path):
    out = tmp_path / "o"
    main(["duplicates", str(photos), "--by", "phash", "--threshold", "0", "--out", str(out), "-q"])
    found = groups_csv(out)
    assert all(float(r["distance"]) == 0 for rows in found.values() for r in rows)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "camera copy.png" in page
    assert sorted(p.name for p in out.iterdir()) == ["groups.csv", "report.html", "report.xlsx"]
    assert main(["duplicates", str(photos), "--threshold", "-1"]) == 2


def test_a_name_that_is_not_utf8_works_in_every_collection_command(photos, tmp_path, capsys):
    """A library copied from a Latin-1 share holds b"M\xfcller.png": the feature cache
    (written, then read), every output and --move-duplicates keep working; the name shows
    U+FFFD, the path keeps the byte escaped, as run's outputs have them."""
    latin1 = os.fsdecode(b"M\xfcller.png")
    shutil.copy(photos / "chelsea.png", photos / latin1)  # a copy: one group with chelsea.png
    shown, stored = "M\ufffdller.png", "M\\xfcller.png"
    for round_ in ("computed", "cached"):
        out = tmp_path / f"d-{round_}"
        assert main(["duplicates", str(photos), "--out", str(out), "-q"]) == 1  # broken.png
        rows = [r for rows in groups_csv(out).values() for r in rows]
        assert any(r["file"] == shown and r["path"].endswith(stored) for r in rows), round_
        assert shown in (out / "report.html").read_text(encoding="utf-8")
        out = tmp_path / f"c-{round_}"
        assert main(["cluster", str(photos), "--k", "2", "--out", str(out), "-q"]) == 1
        assert shown in (out / "clusters.csv").read_text(encoding="utf-8")
        out = tmp_path / f"s-{round_}"
        query = str(photos / latin1)
        assert main(["search", query, str(photos), "--out", str(out), "-q"]) == 1
        assert stored in (out / "results.csv").read_text(encoding="utf-8")
    capsys.readouterr()
    target = tmp_path / "dupes"
    target.mkdir()
    out = tmp_path / "moved"
    main(["duplicates", str(photos), "--out", str(out), "--move-duplicates", str(target)])
    assert (photos / latin1).exists() != (target / latin1).exists()  # one of the two moved
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_a_worker_killed_while_features_are_computed_costs_no_rows(tmp_path, capsys):
    """SIGKILL a worker of the local pool mid-way, as the out-of-memory killer would: every
    file still gets its features, and the log says what happened."""

    folder = noisy_run(tmp_path / "many", 40, (512, 512, 3))
    killed: list[int] = []
    thread = kill_a_worker(killed)
    code = main(["duplicates", str(folder), "--by", "embedding", "--out", str(tmp_path / "o"),
                 "-j", "2", "--no-cache", "-q"])  # fmt: skip
    thread.join()
    assert killed, "no worker was seen"
    assert "a worker process died; trying" in capsys.readouterr().err
    with (tmp_path / "o" / "groups.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert code == 0 and not [r for r in rows if r["error"]]
    assert {r["file"] for r in rows} == {p.name for p in folder.iterdir()}  # all near-copies


def test_a_large_jpegs_features_come_from_a_reduced_decode(tmp_path, monkeypatch):
    """A phone's JPEG is decoded at 1/2, 1/4 or 1/8 (libjpeg's scaled DCT: a 12-megapixel
    photo's features in about a quarter of the time), keeping its shorter side >= 512 px:
    the hashes, colour moments and embedding agree with a full decode's (pHash within a
    bit), the sizes are the file's own, upright, and grey stays grey. A run's metrics
    never see a reduced decode."""
    from PIL import Image

    from reporter import images
    from reporter.collection import features

    astronaut = cv2.resize(photo("astronaut"), (2400, 1800), interpolation=cv2.INTER_CUBIC)
    turned = Image.Exif()
    turned[0x0112] = 6  # stored sideways: 2400 x 1800 on disk, 1800 x 2400 upright
    Image.fromarray(astronaut[:, :, ::-1]).save(tmp_path / "turned.jpg", exif=turned.tobytes())
    grey = cv2.resize(photo("camera"), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "grey.jpg"), grey)
    small = cv2.resize(photo("coffee"), (900, 600), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "small.jpg"), small)

    def both(name: str):
        path = tmp_path / name
        monkeypatch.setattr(features, "REDUCED_SIDE", None)
        full = features.compute(path, name, embedding=True, max_pixels=10**8, max_bytes=None)
        monkeypatch.setattr(features, "REDUCED_SIDE", 512)
        reduced = features.compute(path, name, embedding=True, max_pixels=10**8, max_bytes=None)
        return full, reduced

    shapes = {"turned.jpg": (1200, 900, 3), "grey.jpg": (512, 512), "small.jpg": (600, 900, 3)}
    sizes = {"turned.jpg": (1800, 2400), "grey.jpg": (2048, 2048), "small.jpg": (900, 600)}
    for name, shape in shapes.items():
        loaded = images.load(tmp_path / name, max_pixels=10**8, reduced_side=512)
        assert loaded.pixels.shape == shape, name  # 1/2, 1/4, and too small to reduce
        full, reduced = both(name)
        assert (reduced.width, reduced.height) == sizes[name] == (full.width, full.height)
        assert reduced.channels == full.channels
        distance = np.unpackbits(
            np.frombuffer(full.phash, np.uint8) ^ np.frombuffer(reduced.phash, np.uint8)
        )
        assert distance.sum() <= 1, name
        assert float(full.embedding @ reduced.embedding) > 0.99, name
        assert np.abs(full.colour - reduced.colour).max() < 0.01, name
    assert images.load(tmp_path / "turned.jpg", max_pixels=10**8).full_size is None
    assert images.load(tmp_path / "turned.jpg", max_pixels=10**8).pixels.shape == (2400, 1800, 3)
