"""Labels files: a split read as a flat folder of images plus a CSV naming each image's class, in the
two forms docs/inference.md "Labels files" describes (`path,label` and ImageNet's
`ImageId,PredictionString`). MindSpore-free, so the training pipeline, eval_onnx.py and infer.py
read the same CSV with the same rules; every problem in a file is one DatasetError naming the line."""
import csv
import os

from .folder import DatasetError, scan_image_folder
from .preprocess import is_image_file

# `dataset` key -> how a split is read.  ImageNet: each split from class folders unless its labels
# key (train_labels / val_labels) names a CSV; ImageFolder: class folders only.
LAYOUTS = {
    "ImageNet": "class folders data_url/<split>/<class>/<image>, or a flat split folder with a labels CSV",
    "ImageFolder": "class folders data_url/<split>/<class>/<image> only (train_labels / val_labels must be '')",
}
LOC_HEADER = ("imageid", "predictionstring")


def check_layout(dataset: str, key: str, labels_csv: str) -> None:
    """A labels CSV where the `dataset` layout reads class folders only is one error naming both keys."""
    if dataset not in LAYOUTS:
        raise DatasetError(f"dataset: {dataset!r} is not one of {', '.join(LAYOUTS)}")
    if labels_csv and dataset == "ImageFolder":
        raise DatasetError(f"{key} is set ({labels_csv}) but dataset ImageFolder reads class folders only: "
                           f"set dataset ImageNet, or {key} ''")


def _read_rows(path: str, key: str) -> list:
    """[(line number, [fields])] of the non-blank rows of a CSV file."""
    if not os.path.isfile(path):
        raise DatasetError(f"{key}: labels file not found: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: a spreadsheet's BOM
            reader = csv.reader(f)
            rows = [(reader.line_num, [field.strip() for field in row]) for row in reader if any(row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{key}: cannot read {path} ({e})") from None
    if not rows:
        raise DatasetError(f"{key}: {path} has no rows")
    return rows


def _is_loc(rows: list) -> bool:
    return tuple(field.lower() for field in rows[0][1][:2]) == LOC_HEADER


def _loc_rows(rows: list, path: str):
    """(line, image id, label text) of LOC_val_solution.csv's rows after its header."""
    for line, fields in rows[1:]:
        if len(fields) < 2 or not fields[1]:
            raise DatasetError(f"{path} line {line}: expected ImageId,PredictionString (a synset first), "
                               f"got {','.join(fields)!r}")
        yield line, fields[0], fields[1].split()[0]


def _plain_rows(rows: list, path: str):
    for line, fields in rows:
        if len(fields) != 2 or not fields[0]:
            raise DatasetError(f"{path} line {line}: expected path,label, got {','.join(fields)!r}")
        yield line, fields[0], fields[1]


def csv_class_names(path: str, root: str, key: str) -> list:
    """The sorted class names a labels CSV of the split folder `root` uses (its non-integer labels);
    [] when it gives indices only."""
    rows = _read_rows(path, key)
    loc = _is_loc(rows)
    names = {label for _, _, label in (_loc_rows(rows, path) if loc else _plain_rows(rows, path))
             if not _is_index(label)}
    if not loc and not os.path.isfile(os.path.join(root, rows[0][1][0])):
        names.discard(rows[0][1][1])  # a header's "label" is no class (read_labels_csv applies the full rule)
    return sorted(names)


def _is_index(text: str) -> bool:
    return text.isdigit()


def train_classes(train_root: str, train_labels: str = "") -> list:
    """The class names labels files are indexed by: the sorted class folders of the training split,
    or with `train_labels` the sorted names that file uses; [] when there are none (then only class
    indices can be given)."""
    if train_labels:
        return csv_class_names(train_labels, train_root, "train_labels")
    if not os.path.isdir(train_root):
        return []
    return sorted(entry.name for entry in os.scandir(train_root) if entry.is_dir())


class _ImageIds:
    """ImageId -> file in the split folder: the id itself, or the id plus an image extension."""

    def __init__(self, root: str):
        self.root, self._by_stem = root, None

    def find(self, image_id: str):
        if os.path.isfile(os.path.join(self.root, image_id)):
            return image_id
        if self._by_stem is None:  # one listing of the folder, not one stat per extension and row
            self._by_stem = {os.path.splitext(name)[0]: name for name in os.listdir(self.root)
                             if is_image_file(name)}
        return self._by_stem.get(image_id)


def read_labels_csv(path: str, root: str, classes: list, num_classes=None, key: str = "val_labels",
                    names_from: str = "the training split", no_names: str = "") -> list:
    """[(image path, class index)] of a labels CSV for the split folder `root`, sorted by class then
    path (the ImageFolder reader's order, which the evenly spaced subsets rely on).

    `classes`: the names a label may give (index = position); `num_classes`: the bound of an index
    (None: len(classes) if there are names, else unbounded).  The errors of an unknown name say
    where the names come from (`names_from`) or, when there are none, how to give them (`no_names`)."""
    if not os.path.isdir(root):
        raise DatasetError(f"data folder not found: {root}")
    rows = _read_rows(path, key)
    index_of = {name: i for i, name in enumerate(classes)}
    bound = num_classes if num_classes is not None else (len(classes) or None)
    loc = _is_loc(rows)
    ids = _ImageIds(root)
    seen, samples = {}, []
    for n, (line, name, label_text) in enumerate(_loc_rows(rows, path) if loc else _plain_rows(rows, path)):
        file = ids.find(name) if loc else (name if os.path.isfile(os.path.join(root, name)) else None)
        if label_text in index_of:
            label = index_of[label_text]
        elif _is_index(label_text) and (bound is None or int(label_text) < bound):
            label = int(label_text)
        elif n == 0 and not loc and file is None:
            continue  # a header row
        elif _is_index(label_text):
            raise DatasetError(f"{path} line {line}: class index {label_text} is out of range "
                               f"(num_classes {bound})")
        elif classes:
            raise DatasetError(f"{path} line {line}: unknown class {label_text!r} (not one of the "
                               f"{len(classes)} classes of {names_from})")
        else:
            raise DatasetError(f"{path} line {line}: class {label_text!r} is a name, but there are no class "
                               f"names to index it by ({no_names or names_from + ' gives none'}; or use "
                               "class indices)")
        if file is None:
            raise DatasetError(f"{path} line {line}: no image file {name!r} in {root}")
        full = os.path.join(root, file)
        if full in seen:
            raise DatasetError(f"{path} line {line}: {file} is already labelled on line {seen[full]}")
        seen[full] = line
        samples.append((full, label))
    if not samples:
        raise DatasetError(f"{key}: {path} labels no images")
    return sorted(samples, key=lambda s: (s[1], s[0]))


def split_samples(root: str, key: str, labels_csv: str, dataset: str, train_root: str,
                  train_labels: str = "", num_classes=None):
    """-> (class names, [(image path, class index)]) of one split, by the `dataset` layout: the
    class folders of `root`, or with `labels_csv` the flat folder `root` labelled by that file
    (class names from `train_root` / `train_labels`; [] when it has none).

    A split holding more classes than `num_classes` (when given) is an error, like an index beyond it.
    """
    check_layout(dataset, key, labels_csv)
    if not labels_csv:
        classes, samples = scan_image_folder(root)
        if num_classes is not None and len(classes) > num_classes:
            raise DatasetError(f"{root} has {len(classes)} class folders but num_classes is {num_classes}")
        return classes, samples
    if key == "train_labels":
        train_root, train_labels = root, labels_csv
    classes = train_classes(train_root, train_labels)
    source = train_labels or train_root
    if num_classes is not None and len(classes) > num_classes:
        raise DatasetError(f"{source} has {len(classes)} classes but num_classes is {num_classes}")
    names_from = train_labels or f"the class folders of {train_root}"
    no_names = f"{train_labels} names none" if train_labels else f"{train_root} has no class folders"
    return classes, read_labels_csv(labels_csv, root, classes, num_classes, key, names_from, no_names)
