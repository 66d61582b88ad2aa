"""Dataset parsers on tiny folder trees of empty files (parsers never open images)."""

import json
import re
from pathlib import Path

import pytest

from ppreid.data.datasets import build_dataset, merge_train_sets
from ppreid.data.datasets.base import ReIDRecord, ReIDSplits
from ppreid.utils.errors import ConfigValueError, DatasetLayoutError


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def triples(records):
    return [(Path(r.path).name, r.pid, r.camid) for r in records]


def make_market(root: Path, ext: str = "jpg") -> None:
    touch(
        root / "bounding_box_train",
        f"0007_c1s1_000001_00.{ext}",
        f"0007_c2s1_000002_00.{ext}",
        f"0002_c3s1_000003_00.{ext}",
        f"0005_c6s1_000004_00.{ext}",
        f"0000_c1s1_000005_00.{ext}",
        f"-1_c1s1_000006_00.{ext}",
        "Thumbs.db",
    )
    touch(root / "query", f"0002_c1s1_000010_00.{ext}", f"0005_c2s1_000011_00.{ext}", f"0007_c4s1_000012_00.{ext}")
    touch(
        root / "bounding_box_test",
        f"0002_c2s1_000020_00.{ext}",
        f"0005_c3s1_000021_00.{ext}",
        f"0000_c1s1_000022_00.{ext}",
        f"-1_c3s1_000023_00.{ext}",
        f"0007_c5s1_000024_00.{ext}",
    )


MARKET_TRAIN = [  # sorted file order; original pids 2, 5, 7 -> 0, 1, 2; pid 0 and -1 dropped
    ("0002_c3s1_000003_00.jpg", 0, 2),
    ("0005_c6s1_000004_00.jpg", 1, 5),
    ("0007_c1s1_000001_00.jpg", 2, 0),
    ("0007_c2s1_000002_00.jpg", 2, 1),
]
MARKET_QUERY = [("0002_c1s1_000010_00.jpg", 2, 0), ("0005_c2s1_000011_00.jpg", 5, 1), ("0007_c4s1_000012_00.jpg", 7, 3)]
MARKET_GALLERY = [
    ("0000_c1s1_000022_00.jpg", 0, 0),
    ("0002_c2s1_000020_00.jpg", 2, 1),
    ("0005_c3s1_000021_00.jpg", 5, 2),
    ("0007_c5s1_000024_00.jpg", 7, 4),
]


def test_market1501_rules(tmp_path):
    make_market(tmp_path)
    ds = build_dataset("market1501", tmp_path)
    assert triples(ds.train) == MARKET_TRAIN
    assert triples(ds.query) == MARKET_QUERY
    assert triples(ds.gallery) == MARKET_GALLERY
    assert ds.num_train_pids == 3 and ds.num_train_cams == 4
    assert Path(ds.train[0].path) == tmp_path / "bounding_box_train" / "0002_c3s1_000003_00.jpg"


def test_market1501_nested_layout(tmp_path):
    make_market(tmp_path / "Market-1501-v15.09.15")
    ds = build_dataset("market1501", str(tmp_path))
    assert triples(ds.train) == MARKET_TRAIN
    assert Path(ds.root) == tmp_path / "Market-1501-v15.09.15"


def test_missing_folder_names_path_and_layout(tmp_path):
    make_market(tmp_path)
    (tmp_path / "query" / "0002_c1s1_000010_00.jpg").unlink()
    (tmp_path / "query" / "0005_c2s1_000011_00.jpg").unlink()
    (tmp_path / "query" / "0007_c4s1_000012_00.jpg").unlink()
    (tmp_path / "query").rmdir()
    with pytest.raises(DatasetLayoutError) as err:
        build_dataset("market1501", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "query") in msg and "bounding_box_train" in msg and "paths.data_dir" in msg
    with pytest.raises(DatasetLayoutError, match="bounding_box_train"):
        build_dataset("market1501", tmp_path / "nowhere")


def test_misnamed_file_names_file_and_pattern(tmp_path):
    make_market(tmp_path)
    touch(tmp_path / "query", "person7.jpg")
    with pytest.raises(DatasetLayoutError) as err:
        build_dataset("market1501", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "query" / "person7.jpg") in msg
    assert r"([-\d]+)_c(\d+)" in msg and "0002_c1s1_000451_03.jpg" in msg


def test_empty_folder_and_bad_camera(tmp_path):
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / d).mkdir()
    with pytest.raises(DatasetLayoutError, match=re.escape(str(tmp_path / "bounding_box_train"))):
        build_dataset("market1501", tmp_path)
    make_market(tmp_path)
    touch(tmp_path / "query", "0002_c7s1_000099_00.jpg")  # Market has 6 cameras
    with pytest.raises(DatasetLayoutError, match="c7"):
        build_dataset("market1501", tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(ConfigValueError, match="market1501"):
        build_dataset("market", "/nowhere")


def test_dukemtmc_eight_cameras(tmp_path):
    touch(tmp_path / "DukeMTMC-reID" / "bounding_box_train", "0005_c8_f0000001.jpg", "0001_c2_f0000002.jpg")
    touch(tmp_path / "DukeMTMC-reID" / "query", "0001_c1_f0000003.jpg")
    touch(tmp_path / "DukeMTMC-reID" / "bounding_box_test", "0001_c7_f0000004.jpg", "7140_c3_f0000005.jpg")
    ds = build_dataset("dukemtmc", tmp_path)
    assert triples(ds.train) == [("0001_c2_f0000002.jpg", 0, 1), ("0005_c8_f0000001.jpg", 1, 7)]
    assert triples(ds.query) == [("0001_c1_f0000003.jpg", 1, 0)]
    assert triples(ds.gallery) == [("0001_c7_f0000004.jpg", 1, 6), ("7140_c3_f0000005.jpg", 7140, 2)]
    touch(tmp_path / "DukeMTMC-reID" / "query", "0001_c9_f0000006.jpg")
    with pytest.raises(DatasetLayoutError, match="c9"):
        build_dataset("dukemtmc", tmp_path)


def write_lines(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


@pytest.mark.parametrize(
    "version,train_dir,test_dir", [("V1", "train", "test"), ("V2", "mask_train_v2", "mask_test_v2")]
)
def test_msmt17_lists_val_merged_into_train(tmp_path, version, train_dir, test_dir):
    root = tmp_path / f"MSMT17_{version}" if version == "V2" else tmp_path
    (root / train_dir).mkdir(parents=True)
    (root / test_dir).mkdir()
    write_lines(
        root / "list_train.txt",
        ["0010/0010_000_03_0303morning_0001_0.jpg 10", "0003/0003_001_01_0303morning_0002_0.jpg 3"],
    )
    write_lines(root / "list_val.txt", ["0007/0007_002_15_0303noon_0003_0.jpg 7"])
    write_lines(root / "list_query.txt", ["0100/0100_000_05_0303noon_0004_0.jpg 100"])
    write_lines(
        root / "list_gallery.txt",
        ["0100/0100_001_02_0303noon_0005_0.jpg 100", "0042/0042_000_12_0303noon_0006_0.jpg 42", ""],
    )
    ds = build_dataset("msmt17", tmp_path)
    # train = list_train + list_val, sorted by path; pids 3, 7, 10 -> 0, 1, 2; camera = 3rd field - 1
    assert triples(ds.train) == [
        ("0003_001_01_0303morning_0002_0.jpg", 0, 0),
        ("0007_002_15_0303noon_0003_0.jpg", 1, 14),
        ("0010_000_03_0303morning_0001_0.jpg", 2, 2),
    ]
    assert Path(ds.train[0].path) == root / train_dir / "0003" / "0003_001_01_0303morning_0002_0.jpg"
    assert triples(ds.query) == [("0100_000_05_0303noon_0004_0.jpg", 100, 4)]
    assert Path(ds.query[0].path).parent.parent == root / test_dir
    assert triples(ds.gallery) == [
        ("0042_000_12_0303noon_0006_0.jpg", 42, 11),
        ("0100_001_02_0303noon_0005_0.jpg", 100, 1),
    ]
    assert len(build_dataset("msmt17", tmp_path, include_val=False).train) == 2


def test_msmt17_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="list_train.txt"):
        build_dataset("msmt17", tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    write_lines(tmp_path / "list_train.txt", ["0010/0010_000_03_a_0001_0.jpg 10"])
    write_lines(tmp_path / "list_val.txt", ["0007/0007_002_15_a_0003_0.jpg 7"])
    write_lines(tmp_path / "list_query.txt", ["0100/0100_000_05_a_0004_0.jpg"])  # pid missing
    with pytest.raises(DatasetLayoutError, match="list_gallery.txt"):
        build_dataset("msmt17", tmp_path)
    write_lines(tmp_path / "list_gallery.txt", ["0100/0100_001_02_a_0005_0.jpg 100"])
    with pytest.raises(DatasetLayoutError, match=r"list_query.txt line 1"):
        build_dataset("msmt17", tmp_path)


def test_cuhk03np_variants(tmp_path):
    lab, det = tmp_path / "labeled", tmp_path / "detected"
    touch(lab / "bounding_box_train", "0003_c1_1.png", "0003_c2_1.png", "0001_c1_1.png")
    touch(lab / "query", "0900_c1_1.png")
    touch(lab / "bounding_box_test", "0900_c2_1.png", "0901_c2_1.png")
    touch(det / "bounding_box_train", "0004_c2_1.png", "0002_c1_1.png", "0002_c1_1.jpg")  # .jpg ignored
    touch(det / "query", "0900_c1_2.png")
    touch(det / "bounding_box_test", "0900_c2_2.png")
    labeled = build_dataset("cuhk03np", tmp_path, variant="labeled")
    detected = build_dataset("cuhk03np", tmp_path, variant="detected")
    assert triples(labeled.train) == [("0001_c1_1.png", 0, 0), ("0003_c1_1.png", 1, 0), ("0003_c2_1.png", 1, 1)]
    assert triples(labeled.gallery) == [("0900_c2_1.png", 900, 1), ("0901_c2_1.png", 901, 1)]
    assert triples(detected.train) == [("0002_c1_1.png", 0, 0), ("0004_c2_1.png", 1, 1)]
    assert triples(detected.query) == [("0900_c1_2.png", 900, 0)]
    with pytest.raises(ConfigValueError, match="variant"):
        build_dataset("cuhk03np", tmp_path, variant="both")
    with pytest.raises(DatasetLayoutError, match="labeled"):
        build_dataset("cuhk03np", tmp_path / "nowhere")


ATTRS = {1: {"gender": "female", "hair": "long"}, 4: {"gender": "male", "hair": "short"}}


def manifest_line(file: str, pid: int, camid: int, **extra) -> str:
    return json.dumps(
        {
            "file": file,
            "pid": pid,
            "camid": camid,
            "seed": 1,
            "attributes": dict(ATTRS.get(pid, {"gender": "male"}), camera=f"cam{camid}"),
            **extra,
        }
    )


def make_genepers(root: Path) -> None:
    files = [
        ("00004_c1_000000.jpg", 4, 0),
        ("00001_c2_000001.jpg", 1, 1),
        ("00001_c3_000002.jpg", 1, 2),
        ("00000_c1_000003.jpg", 0, 0),
    ]
    touch(root / "bounding_box_train", *[f for f, _, _ in files])
    write_lines(root / "manifest.jsonl", [manifest_line(f"bounding_box_train/{f}", p, c) for f, p, c in files])


def test_genepers_manifest_attributes(tmp_path):
    make_genepers(tmp_path)
    ds = build_dataset("genepers", tmp_path)
    # pid 0 is a normal synthetic identity; pids 0, 1, 4 -> 0, 1, 2
    assert triples(ds.train) == [
        ("00000_c1_000003.jpg", 0, 0),
        ("00001_c2_000001.jpg", 1, 1),
        ("00001_c3_000002.jpg", 1, 2),
        ("00004_c1_000000.jpg", 2, 0),
    ]
    assert ds.train[1].attributes == {"gender": "female", "hair": "long", "camera": "cam1"}
    assert ds.train[3].attributes == {"gender": "male", "hair": "short", "camera": "cam0"}
    assert ds.query == [] and ds.gallery == []


def test_genepers_without_manifest_uses_names(tmp_path):
    make_genepers(tmp_path)
    (tmp_path / "manifest.jsonl").unlink()
    ds = build_dataset("genepers", tmp_path)
    assert [(p, c) for _, p, c in triples(ds.train)] == [(0, 0), (1, 1), (1, 2), (2, 0)]
    assert all(r.attributes is None for r in ds.train)


def test_genepers_held_out_split(tmp_path):
    make_genepers(tmp_path)
    touch(tmp_path / "query", "00010_c1_000100.jpg")
    touch(tmp_path / "bounding_box_test", "00010_c2_000101.jpg", "00011_c2_000102.jpg")
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write(manifest_line("query/00010_c1_000100.jpg", 10, 0) + "\n")
    ds = build_dataset("genepers", tmp_path)
    assert len(ds.train) == 4
    assert triples(ds.query) == [("00010_c1_000100.jpg", 10, 0)]
    assert ds.query[0].attributes == {"gender": "male", "camera": "cam0"}
    assert triples(ds.gallery) == [("00010_c2_000101.jpg", 10, 1), ("00011_c2_000102.jpg", 11, 1)]
    assert ds.gallery[0].attributes is None  # not listed in the manifest


def test_genepers_test_only_domain(tmp_path):
    touch(tmp_path / "query", "00003_c1_000000.jpg")
    touch(tmp_path / "bounding_box_test", "00003_c2_000001.jpg")
    ds = build_dataset("genepers", tmp_path)
    assert ds.train == [] and triples(ds.query) == [("00003_c1_000000.jpg", 3, 0)]
    (tmp_path / "query" / "00003_c1_000000.jpg").unlink()
    (tmp_path / "query").rmdir()
    with pytest.raises(DatasetLayoutError, match=re.escape(str(tmp_path / "query"))):
        build_dataset("genepers", tmp_path)


def test_genepers_inconsistencies(tmp_path):
    make_genepers(tmp_path)
    touch(tmp_path / "bounding_box_train", "00009_c1_000009.jpg")
    with pytest.raises(DatasetLayoutError, match="00009_c1_000009.jpg.*not listed"):
        build_dataset("genepers", tmp_path)
    (tmp_path / "bounding_box_train" / "00009_c1_000009.jpg").unlink()
    (tmp_path / "bounding_box_train" / "00000_c1_000003.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="missing.*00000_c1_000003.jpg"):
        build_dataset("genepers", tmp_path)
    make_genepers(tmp_path)
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(DatasetLayoutError, match="line 5"):
        build_dataset("genepers", tmp_path)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()[:4]
    lines[0] = manifest_line("bounding_box_train/00004_c1_000000.jpg", 4, 1)
    write_lines(tmp_path / "manifest.jsonl", lines)
    with pytest.raises(DatasetLayoutError, match="00004_c1_000000.jpg.*camid 1"):  # name says c1 = camid 0
        build_dataset("genepers", tmp_path)
    with pytest.raises(DatasetLayoutError, match="GenePerson"):
        build_dataset("genepers", tmp_path / "nowhere")


def test_merge_train_sets_offsets():
    a = ReIDSplits("a", "/a", train=[ReIDRecord("a0", 0, 0), ReIDRecord("a1", 2, 1), ReIDRecord("a2", 1, 0)])
    b = ReIDSplits("b", "/b", train=[ReIDRecord("b0", 1, 2, {"x": 1}), ReIDRecord("b1", 0, 0)])
    records, num_pids, num_cams = merge_train_sets([a, b])
    assert [(r.path, r.pid, r.camid) for r in records] == [
        ("a0", 0, 0),
        ("a1", 2, 1),
        ("a2", 1, 0),
        ("b0", 3 + 1, 2 + 2),
        ("b1", 3 + 0, 2 + 0),
    ]
    assert (num_pids, num_cams) == (5, 5)
    assert records[3].attributes == {"x": 1}
    assert (b.train[0].pid, b.train[0].camid) == (1, 2)  # inputs untouched
    assert merge_train_sets([a])[1:] == (3, 2)


def test_image_dataset_items_and_bad_images(tmp_path):
    import io

    import torch
    from PIL import Image

    from ppreid.data.image_dataset import ImageDataset
    from ppreid.utils.errors import BadImageError

    good = tmp_path / "0001_c1_000000.png"
    Image.new("RGB", (4, 6), (255, 0, 51)).save(good)
    gray = tmp_path / "0002_c2_000000.png"
    Image.new("L", (4, 6), 102).save(gray)
    garbage = tmp_path / "0003_c1_000000.jpg"
    garbage.write_bytes(b"this is not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="JPEG")
    truncated = tmp_path / "0004_c1_000000.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    records = [
        ReIDRecord(str(p), pid, cam)
        for p, pid, cam in [
            (good, 1, 0),
            (gray, 2, 1),
            (garbage, 3, 0),
            (truncated, 4, 0),
            (tmp_path / "gone.jpg", 5, 0),
        ]
    ]
    ds = ImageDataset(records)
    assert len(ds) == 5
    item = ds[0]
    assert (item["pid"], item["camid"], item["index"]) == (1, 0, 0)
    assert item["image"].shape == (3, 6, 4)
    assert torch.allclose(item["image"][:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    assert torch.allclose(ds[1]["image"], torch.full((3, 6, 4), 0.4))  # grayscale -> RGB
    for i in (2, 3, 4):
        with pytest.raises(BadImageError) as err:
            ds[i]
        assert records[i].path in str(err.value) and "re-download" in str(err.value)
    ds_t = ImageDataset(records[:1], transform=lambda img: torch.zeros(3, 2, 2))
    assert ds_t[0]["image"].shape == (3, 2, 2)


def test_relabel_uses_sorted_original_pids():
    from ppreid.data.datasets.base import relabel

    recs = [ReIDRecord("x", 7, 0), ReIDRecord("y", 2, 1), ReIDRecord("z", 5, 0), ReIDRecord("w", 7, 2)]
    assert [(r.path, r.pid, r.camid) for r in relabel(recs)] == [("x", 2, 0), ("y", 0, 1), ("z", 1, 0), ("w", 2, 2)]
    assert recs[0].pid == 7  # input untouched
