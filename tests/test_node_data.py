"""A node's own data: the three layouts read alike, and each kind of bad data is refused naming its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedtosc.data.local import UNLABELLED, NodeDataError, read_node_data, resolve_node_data, sample_digests

CLASSES = ("cat", "dog", "ship")


def _write_png(path: Path, value: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value, value // 2, 255 - value) if mode == "RGB" else value).save(path)


def test_class_folders_give_every_image_its_folders_class(tmp_path: Path) -> None:
    _write_png(tmp_path / "dog" / "a.png", 10)
    _write_png(tmp_path / "dog" / "b.png", 20)
    _write_png(tmp_path / "ship" / "c.png", 30)
    (tmp_path / "ship" / "notes.txt").write_text("not an image: ignored")

    samples = read_node_data(tmp_path)

    assert samples.images.shape == (3, 3, 5, 6) and samples.images.dtype == np.uint8
    assert samples.images[2, 0, 0, 0] == 30
    assert resolve_node_data(samples, CLASSES, (3, 5, 6)).tolist() == [1, 1, 2]


def test_flat_folder_labels_come_from_the_csv_and_unlisted_files_are_unlabelled(tmp_path: Path) -> None:
    for name, value in (("x.png", 1), ("y.png", 2), ("z.png", 3)):
        _write_png(tmp_path / name, value, mode="L")
    (tmp_path / "labels.csv").write_text("file,label\nx.png,ship\nz.png,cat\n")

    samples = read_node_data(tmp_path)

    assert samples.images.shape == (3, 1, 5, 6)
    assert resolve_node_data(samples, CLASSES, (1, 5, 6)).tolist() == [2, UNLABELLED, 0]


def test_flat_folder_without_csv_is_all_unlabelled(tmp_path: Path) -> None:
    _write_png(tmp_path / "x.png", 1)
    assert resolve_node_data(read_node_data(tmp_path), CLASSES, (3, 5, 6)).tolist() == [UNLABELLED]


@pytest.mark.parametrize("layout", ["hwc", "hw"])
def test_npz_images_and_labels_by_name_or_index(tmp_path: Path, layout: str) -> None:
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    if layout == "hw":
        images = images[..., 0]
    path = tmp_path / "node.npz"
    np.savez(path, images=images, labels=np.array(["dog", ""]))
    samples = read_node_data(path)
    channels = 3 if layout == "hwc" else 1
    assert resolve_node_data(samples, CLASSES, (channels, 4, 4)).tolist() == [1, UNLABELLED]
    assert np.array_equal(samples.images[1, 0], images[1, ..., 0] if layout == "hwc" else images[1])

    np.savez(path, images=images, labels=np.array([2, -1]))
    assert resolve_node_data(read_node_data(path), CLASSES, (channels, 4, 4)).tolist() == [2, UNLABELLED]


def test_empty_folder_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(NodeDataError, match=f"{tmp_path} holds no images"):
        read_node_data(tmp_path)


def test_missing_path_is_refused_naming_the_node_config_key(tmp_path: Path) -> None:
    with pytest.raises(NodeDataError, match="fix data-path"):
        read_node_data(tmp_path / "absent")


def test_unreadable_image_is_refused_naming_the_file(tmp_path: Path) -> None:
    _write_png(tmp_path / "cat" / "good.png", 1)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(NodeDataError, match=r"cannot read image .*cat/broken\.jpg.*replace or remove"):
        read_node_data(tmp_path)


def test_mixed_image_sizes_are_refused_naming_the_odd_file(tmp_path: Path) -> None:
    _write_png(tmp_path / "cat" / "a.png", 1)
    _write_png(tmp_path / "cat" / "b.png", 1, size=(7, 7))
    with pytest.raises(NodeDataError, match=r"cat/b\.png is 3x7x7"):
        read_node_data(tmp_path)


def test_wrong_shape_for_the_run_is_refused_naming_a_file_and_the_expected_shape(tmp_path: Path) -> None:
    _write_png(tmp_path / "cat" / "a.png", 1)
    with pytest.raises(NodeDataError, match=r"cat/a\.png is 3x5x6 .* student takes 1x8x8"):
        resolve_node_data(read_node_data(tmp_path), CLASSES, (1, 8, 8))


def test_unknown_class_folder_is_refused_naming_the_file_and_the_known_classes(tmp_path: Path) -> None:
    _write_png(tmp_path / "cat" / "a.png", 1)
    _write_png(tmp_path / "horse" / "h.png", 1)
    with pytest.raises(NodeDataError, match=r"horse/h\.png: class 'horse' is not one of .*'cat', 'dog', 'ship'"):
        resolve_node_data(read_node_data(tmp_path), CLASSES, (3, 5, 6))


def test_csv_naming_a_missing_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    _write_png(tmp_path / "x.png", 1)
    (tmp_path / "labels.csv").write_text("file,label\nx.png,cat\ngone.png,dog\n")
    with pytest.raises(NodeDataError, match=r"labels\.csv line 3"):
        read_node_data(tmp_path)


def test_npz_out_of_range_index_and_wrong_dtype_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.npz"
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 7]))
    with pytest.raises(NodeDataError, match=r"node\.npz row 1: label 7 is not a class index"):
        resolve_node_data(read_node_data(path), CLASSES, (1, 4, 4))
    np.savez(path, images=np.zeros((2, 4, 4), np.float32))
    with pytest.raises(NodeDataError, match=r"node\.npz: images float32"):
        read_node_data(path)


def test_npz_with_pickled_objects_is_refused_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "node.npz"
    np.savez(path, images=np.zeros((1, 4, 4), np.uint8), labels=np.array([{"a": 1}], dtype=object))
    with pytest.raises(NodeDataError, match=r"cannot read .*node\.npz"):
        read_node_data(path)


def test_sample_digest_is_sha256_of_the_stored_bytes() -> None:
    import hashlib

    images = np.arange(2 * 1 * 2 * 2, dtype=np.uint8).reshape(2, 1, 2, 2)
    digests = sample_digests(images)
    assert digests.shape == (2, 32)
    assert digests[1].tobytes() == hashlib.sha256(images[1].tobytes()).digest()


def test_simulated_node_folders_missing_under_node_root_are_named_before_any_work(tmp_path: Path) -> None:
    from fedtosc.config import ConfigError
    from fedtosc.preflight import load_checked_config

    (tmp_path / "node0").mkdir()
    overrides = [f"dataset.node_root={tmp_path}", "knowledge.delivery=transfer_set", "federation.num_clients=3",
                 "channel.clients=awgn:10"]
    with pytest.raises(ConfigError, match=r"has no node1, node2/: write them with `fedtosc data split --out"):
        load_checked_config(overrides)
    with pytest.raises(ConfigError, match="set knowledge.delivery=transfer_set"):
        load_checked_config([*overrides[:1], *overrides[2:]])
