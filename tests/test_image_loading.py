"""Images decoded once at start: the in-memory cache, data.verify_images, one message for every unreadable
file or missing folder, and evaluation folders that hold only query/ and bounding_box_test/."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train, run_train, train_cli, write_market_tree
from PIL import Image

from ppreid.utils.errors import BadImageError, DatasetLayoutError, find_input_error

MARKET = "Market-1501-v15.09.15"


def _market(tmp_path: Path) -> Path:
    """A private tiny Market-1501 under ``tmp_path/data`` (tests damage it); returns the data root."""
    data = tmp_path / "data"
    write_market_tree(data / MARKET, list(range(1, 9)), list(range(101, 107)), cams=6)
    return data


def _datamodule(tmp_path: Path, data: Path, *overrides: str):
    from hydra.utils import instantiate

    cfg = compose_train(TINY + ["data=market1501", *overrides], tmp_path / "run", data)
    return instantiate(cfg.data, _convert_="all")


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image")
    return path


def _truncate(path: Path) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (16, 32), (10, 200, 30)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.mark.parametrize("cache", ["true", "false"])
def test_every_unreadable_image_is_listed_in_one_message_at_start(tmp_path, cache):
    data = _market(tmp_path)
    root = data / MARKET
    bad_train = _garbage(sorted((root / "bounding_box_train").glob("*.jpg"))[3])
    bad_gallery = _truncate(sorted((root / "bounding_box_test").glob("*.jpg"))[-1])
    dm = _datamodule(tmp_path, data, f"data.cache_images={cache}")
    with pytest.raises(BadImageError) as err:
        dm.setup("fit")  # the targets are checked before training too
    msg = str(err.value)
    assert msg.startswith("2 of ") and "cannot be read" in msg
    assert str(bad_train) in msg and str(bad_gallery) in msg and "data.verify_images=false" in msg
    assert msg.index(str(bad_train)) < msg.index(str(bad_gallery))  # in the order of the run's sets


def test_verify_off_reports_the_file_when_it_is_read(tmp_path, caplog):
    data = _market(tmp_path)
    bad = _garbage(sorted((data / MARKET / "bounding_box_train").glob("*.jpg"))[0])
    dm = _datamodule(tmp_path, data, "data.verify_images=false", "data.cache_images=false")
    dm.setup("fit")
    dataset = dm.train_dataset()
    index = [r.path for r in dm.train_records].index(str(bad))
    with pytest.raises(BadImageError, match=f"cannot read image {bad}"):
        dataset[index]
    with caplog.at_level(logging.INFO, logger="ppreid.data.datamodule"):
        auto = _datamodule(tmp_path, _market(tmp_path / "b"), "data.verify_max_images=10", "data.cache_images=false")
        auto.setup("fit")
    assert "data.verify_images=auto: off" in caplog.text
    with pytest.raises(Exception) as err:  # Hydra's instantiate wraps it; train.py prints the one line
        _datamodule(tmp_path, data, "data.verify_images=maybe")
    assert "data.verify_images='maybe': use true, false or auto" in str(find_input_error(err.value))


def test_images_in_memory_give_the_same_batches_without_the_files(tmp_path, caplog):
    data = _market(tmp_path)
    with caplog.at_level(logging.INFO, logger="ppreid.data.datamodule"):
        cached = _datamodule(tmp_path, data, "data.cache_images=auto")
        cached.setup("fit")
    assert "data.verify_images=auto: on" in caplog.text and "data.cache_images=auto: on" in caplog.text
    from_files = _datamodule(tmp_path, data, "data.cache_images=false")
    from_files.setup("fit")
    assert len(next(iter(cached.stores.values()))) == len(cached.train_records) + len(cached.val_set.records) + sum(
        len(t.records) for t in cached.targets
    )
    torch.manual_seed(0)
    expected = from_files.first_train_batch()["image"]
    shutil.rmtree(data / MARKET)  # memory only from here on
    torch.manual_seed(0)
    assert torch.equal(cached.first_train_batch()["image"], expected)
    eval_batch = next(iter(cached.eval_dataloaders()[0]))
    assert eval_batch["image"].shape == (16, 3, 32, 16)
    off = _datamodule(tmp_path, _market(tmp_path / "c"), "data.cache_max_gib=0.000001")
    with caplog.at_level(logging.INFO, logger="ppreid.data.datamodule"):
        off.setup("fit")
    assert "data.cache_images=auto: off" in caplog.text and not off.stores


def test_unreadable_file_in_a_dataloader_worker_is_one_line(tmp_path):
    from torch.utils.data import DataLoader

    from ppreid.data.datasets.base import ReIDRecord
    from ppreid.data.image_dataset import ImageDataset
    from ppreid.data.transforms import build_transforms

    bad = _garbage(tmp_path / "0001_c1_000000.jpg")
    loader = DataLoader(
        ImageDataset([ReIDRecord(str(bad), 1, 0)], build_transforms(32, 16, is_train=False)),
        batch_size=1,
        num_workers=1,
    )
    with pytest.raises(BadImageError) as err:
        next(iter(loader))
    assert str(err.value).startswith(f"cannot read image {bad}") and "Traceback" not in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_channels_last_batches_keep_their_values(tmp_path):
    dm = _datamodule(tmp_path, _market(tmp_path), "data.channels_last=true")
    images = torch.rand(2, 3, 8, 4)
    batch = dm.on_after_batch_transfer({"image": images.clone(), "pid": torch.tensor([1, 2])}, 0)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last) and torch.equal(batch["image"], images)


# ----------------------------------------------------------------------------- missing data, before any work
def _genepers_without_targets(tmp_path: Path, reid_data_dir: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(reid_data_dir / "GenePerson", data / "GenePerson")  # Market-style GenePerson, no targets
    return data


def test_missing_targets_are_named_together_before_training(tmp_path, reid_data_dir):
    data = _genepers_without_targets(tmp_path, reid_data_dir)
    from hydra.utils import instantiate

    cfg = compose_train(TINY + ["data=genepers"], tmp_path / "run", data)
    dm = instantiate(cfg.data, _convert_="all")
    with pytest.raises(DatasetLayoutError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert msg.startswith("2 dataset problems (nothing was trained or evaluated)"), msg
    assert MARKET in msg and "DukeMTMC-reID" in msg and "MSMT17" not in msg  # optional targets only warn
    ways = msg.splitlines()[-1]  # how to go on: each missing target's root key, the embedded targets, test=false
    assert ways.startswith("to go on: data.targets.0.root=<market1501 folder> data.targets.1.root=<dukemtmc folder>")
    assert "data=genepers_to_mini data.root=" in ways and ways.endswith("test=false (train only, test no target)")
    roots = [f"data.targets.0.root={reid_data_dir / MARKET}", f"data.targets.1.root={reid_data_dir / 'DukeMTMC-reID'}"]
    cfg = compose_train(TINY + ["data=genepers", *roots], tmp_path / "run1", data)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")  # the keys the message names are the real ones
    assert dm.target_names == ["market1501", "dukemtmc"]
    cfg = compose_train(TINY + ["data=genepers", "test=false"], tmp_path / "run2", data)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")  # test=false: the targets are not needed
    assert dm.train_records and not dm.targets


def test_missing_source_and_target_one_message(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(
        TINY + ["data=genepers", f"data.root={tmp_path / 'nowhere'}"], tmp_path / "run", tmp_path / "empty"
    )
    dm = instantiate(cfg.data, _convert_="all")
    with pytest.raises(DatasetLayoutError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert msg.startswith("3 dataset problems (nothing was trained or evaluated):\n  - genepers: no GenePerson"), msg
    assert len(msg.splitlines()) == 5 and "nowhere" in msg and MARKET in msg and "DukeMTMC-reID" in msg
    assert msg.splitlines()[-1].startswith("to go on: data.targets.0.root="), msg


@pytest.mark.slow
def test_cli_genepers_without_market_stops_before_training(tmp_path, reid_data_dir):
    data = _genepers_without_targets(tmp_path, reid_data_dir)
    proc = train_cli(
        "data=genepers", f"data.root={data / 'GenePerson'}", tiny=True, run_dir=tmp_path / "run", data_dir=data
    )
    assert proc.returncode != 0
    assert MARKET in proc.stderr and "DukeMTMC-reID" in proc.stderr and "Traceback" not in proc.stderr
    assert "data=genepers_to_mini" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_cli_corrupt_gallery_image_in_worker_is_one_clear_line(tmp_path):
    data = _market(tmp_path)
    bad = _garbage(sorted((data / MARKET / "bounding_box_test").glob("*.jpg"))[2])
    proc = train_cli(
        "data=market1501",
        "train=false",
        "data.verify_images=false",
        "data.cache_images=false",
        "data.num_workers=2",
        tiny=True,
        run_dir=tmp_path / "run",
        data_dir=data,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot read image {bad}"), last


# ----------------------------------------------------------------------------- evaluation-only folders
def test_query_gallery_only_folders_parse_for_evaluation(tmp_path, reid_data_dir):
    from ppreid.data.datasets.base import build_dataset

    data = _market(tmp_path)
    shutil.rmtree(data / MARKET / "bounding_box_train")
    with pytest.raises(DatasetLayoutError, match="bounding_box_train"):
        build_dataset("market1501", data / MARKET)
    splits = build_dataset("market1501", data / MARKET, eval_only=True)
    assert not splits.train and len(splits.query) == 6 and len(splits.gallery) == 6 * 4 + 1  # + distractor
    msmt = tmp_path / "MSMT17"
    shutil.copytree(reid_data_dir / "MSMT17", msmt)
    shutil.rmtree(msmt / "train")
    for name in ("list_train.txt", "list_val.txt"):
        (msmt / name).unlink()
    splits = build_dataset("msmt17", msmt, eval_only=True)
    assert not splits.train and splits.query and splits.gallery


def test_evaluate_on_query_gallery_only_market(tmp_path):
    data = _market(tmp_path)
    shutil.rmtree(data / MARKET / "bounding_box_train")
    res = run_train(TINY + ["data=market1501", "train=false"], tmp_path / "run", data)
    assert set(res["test"]["market1501"]) == {"R1", "R5", "R10", "mAP", "mINP"}
