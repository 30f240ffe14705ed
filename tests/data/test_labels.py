"""Labels files (src/data/labels.py): a flat split folder plus a CSV, in the path,label form and in
ImageNet's LOC_val_solution.csv form, read as the class-folder layout of the same images is; the
pipelines built on it; and every bad row as one line naming it."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from src.config import parse_args
from src.data.folder import DatasetError, scan_image_folder
from src.data.labels import read_labels_csv, split_samples, train_classes

SYNSETS = ("n02119789", "n01440764", "n09999999")  # created unsorted: indexed n01440764 0, n02119789 1, n09999999 2
PER_CLASS = 3


def _color(c, i):
    return (60 * c + 10 * i + 5, 100 + 20 * i, 200 - 50 * c)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/train/<synset>/ and root/val/<synset>/ class folders; root/flat/ the same val images in
    one folder named as ImageNet names them (ILSVRC2012_val_<n>.JPEG), with both CSV forms."""
    root = tmp_path_factory.mktemp("imagenet")
    loc = ["ImageId,PredictionString"]
    plain = ["path,label"]
    n = 0
    for c, synset in enumerate(SYNSETS):
        os.makedirs(root / "train" / synset)
        os.makedirs(root / "val" / synset)
        Image.new("RGB", (40, 36), _color(c, 9)).save(root / "train" / synset / "t.png")
        for i in range(PER_CLASS):
            n += 1
            image_id = f"ILSVRC2012_val_{n:08d}"
            Image.new("RGB", (40, 36), _color(c, i)).save(root / "val" / synset / f"{image_id}.JPEG", quality=95)
            loc.append(f"{image_id},{synset} 1 2 30 33 {synset} 4 4 20 20")
            plain.append(f"{image_id}.JPEG,{synset if i % 2 else sorted(SYNSETS).index(synset)}")
    os.makedirs(root / "flat")
    for path in (root / "val").rglob("*.JPEG"):
        shutil.copy(path, root / "flat" / path.name)
    (root / "loc.csv").write_text("\n".join(loc) + "\n")
    (root / "plain.csv").write_text("\n".join(plain) + "\n")
    (root / "noheader.csv").write_text("\n".join(plain[1:]) + "\n")
    return root


def _as_folders(samples):
    """[(file name, label)]: the same images compared across layouts."""
    return [(os.path.basename(path), label) for path, label in samples]


def test_both_csv_forms_give_the_class_folder_labels(tree):
    classes, by_folder = scan_image_folder(str(tree / "val"))
    assert classes == sorted(SYNSETS) == train_classes(str(tree / "train"))
    for csv_name in ("loc.csv", "plain.csv", "noheader.csv"):
        names, samples = split_samples(str(tree / "flat"), "val_labels", str(tree / csv_name), "ImageNet",
                                       str(tree / "train"), num_classes=3)
        assert names == classes
        assert _as_folders(samples) == _as_folders(by_folder), csv_name  # same order too: class, then path
        assert all(os.path.dirname(path) == str(tree / "flat") for path, _ in samples)


@pytest.mark.parametrize("row,fragment", [
    ("ILSVRC2012_val_00000099,n01440764 1 2 3 4", "line 10: no image file 'ILSVRC2012_val_00000099' in "),
    ("ILSVRC2012_val_00000001,n01111111 1 2 3 4", "line 10: unknown class 'n01111111' (not one of the 3 classes "
                                                  "of the class folders of "),
    ("ILSVRC2012_val_00000001", "line 10: expected ImageId,PredictionString"),
])
def test_a_bad_loc_row_is_one_error_naming_its_line(tree, tmp_path, row, fragment):
    kept = [line for line in (tree / "loc.csv").read_text().splitlines() if "_00000001," not in line]
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("\n".join(kept + [row]) + "\n")  # the header and 8 good rows, then line 10
    with pytest.raises(DatasetError) as error:
        split_samples(str(tree / "flat"), "val_labels", str(csv_path), "ImageNet", str(tree / "train"))
    message = str(error.value)
    assert message.startswith(f"{csv_path} {fragment}") and "\n" not in message, message


@pytest.mark.parametrize("rows,fragment", [
    (["a.png,0", "missing.png,1"], "line 2: no image file 'missing.png' in "),
    (["path,label", "a.png,zebra"], "line 2: unknown class 'zebra' (not one of the 3 classes of "),
    (["a.png,3"], "line 1: class index 3 is out of range (num_classes 3)"),
    (["a.png,0", "a.png,1"], "line 2: a.png is already labelled on line 1"),
    (["a.png,0,extra"], "line 1: expected path,label, got 'a.png,0,extra'"),
])
def test_a_bad_plain_row_is_one_error_naming_its_line(tmp_path, rows, fragment):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as error:
        read_labels_csv(str(csv_path), str(flat), sorted(SYNSETS), num_classes=3)
    assert str(error.value).startswith(f"{csv_path} {fragment}"), str(error.value)


def test_names_need_class_folders_indices_do_not_and_the_layout_key_is_checked(tree, tmp_path):
    flat, loc, train = str(tree / "flat"), str(tree / "loc.csv"), str(tree / "train")
    with pytest.raises(DatasetError, match=r"line 2: class 'n02119789' is a name, but there are no class names "
                                           r"to index it by \(.*nowhere has no class folders"):
        split_samples(flat, "val_labels", loc, "ImageNet", str(tmp_path / "nowhere"))
    indices = tmp_path / "indices.csv"
    indices.write_text("ILSVRC2012_val_00000004.JPEG,1\nILSVRC2012_val_00000001.JPEG,0\n")
    names, samples = split_samples(flat, "val_labels", str(indices), "ImageNet", str(tmp_path / "nowhere"))
    assert names == [] and _as_folders(samples) == [("ILSVRC2012_val_00000001.JPEG", 0),
                                                    ("ILSVRC2012_val_00000004.JPEG", 1)]
    with pytest.raises(DatasetError, match="val_labels is set .* but dataset ImageFolder reads class folders only"):
        split_samples(flat, "val_labels", loc, "ImageFolder", train)
    with pytest.raises(DatasetError, match=r"train has 3 classes but num_classes is 2$"):
        split_samples(flat, "val_labels", loc, "ImageNet", train, num_classes=2)
    with pytest.raises(DatasetError, match="val_labels: labels file not found: "):
        split_samples(flat, "val_labels", str(tmp_path / "no.csv"), "ImageNet", train)


def _cfg(tree, *extra):
    return parse_args(["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"),
                       "--data_url", str(tree), "--image_size", "32", "--batch_size", "2", "--num_classes", "3",
                       "--num_parallel_workers", "2", "--device_target", "CPU", "--repeated_aug", "0",
                       "--auto_augment", "", "--re_prob", "0", "--mixup", "0", "--cutmix", "0", *extra])


def _rows(dataset):
    return [(image, label) for images, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
            for image, label in zip(images, labels)]


def test_pipelines_read_the_flat_split_like_class_folders_and_shard_it(tree):
    from src.data.imagenet import create_dataset
    folders = create_dataset(_cfg(tree), "val")
    flat = create_dataset(_cfg(tree, "--val_dir", "flat", "--val_labels", str(tree / "loc.csv")), "val")
    assert flat.class_names == folders.class_names == sorted(SYNSETS)
    by_folder, by_csv = _rows(folders), _rows(flat)
    assert [int(label) for _, label in by_csv] == [int(label) for _, label in by_folder] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(by_csv, by_folder))
    # a flat training split labelled by a CSV of class indices, on two ranks: the shards partition it
    train_csv = tree / "train.csv"
    train_csv.write_text("".join(f"{name},{label}\n" for name, label in
                                 _as_folders(scan_image_folder(str(tree / "val"))[1])))
    cfg = _cfg(tree, "--train_dir", "flat", "--train_labels", str(train_csv))
    shards = [_rows(create_dataset(cfg, "train", rank_id=r, rank_size=2, drop_remainder=False)) for r in (0, 1)]
    assert [len(s) for s in shards] == [5, 5]  # 9 images, padded to 10 by wrapping around
    seen = [(tuple(np.round(image[:, 0, 0], 4)), int(np.argmax(label))) for shard in shards for image, label in shard]
    assert len(set(seen)) == 9  # every image (a uniform colour each), one of them twice
    assert sorted(label for _, label in set(seen)) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
