"""What infer.py, infer_onnx.py and eval_onnx.py share: finding images, decoding them ahead in
threads, batching, top-k, class names, the prediction files and the report of unreadable files.

MindSpore-free on purpose: a model is just `forward(images [B, 3, S, S] float32) -> logits [B, C]`,
so the onnxruntime scripts never import MindSpore.  Every image goes through
src/data/preprocess.py (`load_rgb` + `eval_transform`), as in eval.py.
"""
import argparse
import io
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from src.config import add_output_arg
from src.data.folder import DatasetError
from src.data.labels import check_layout, read_labels_csv, split_samples
from src.data.preprocess import IMAGE_EXTENSIONS, ImageReadError, eval_transform, is_image_file, load_rgb
from src.errors import ConformerError
from src.io import write_atomic, write_json_atomic
from src.metrics import EvalCounts
from src.runtime.console import Console

FEATURE_OUTPUTS = ("conv_features", "transformer_features")  # ONNX output names, as export.py writes them
ORT_PROVIDERS = {  # CPU kept after CUDA: onnxruntime places the few nodes CUDA lacks there
    "CPU": ["CPUExecutionProvider"],
    "GPU": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


class InferenceError(ConformerError, RuntimeError):
    """A problem that stops an inference script, reported as one line."""


def add_data_args(parser, data_help: str, data_default: bool = False) -> None:
    """Options of every inference script: DATA (optional if `data_default`) and decoding ahead; the batch is
    the config's batch_size."""
    parser.add_argument("data", metavar="DATA", nargs="?" if data_default else None, default="", help=data_help)
    parser.add_argument("--prefetch", type=_non_negative_int, default=16,
                        help="images decoded ahead in a thread pool; 0 = decode inline (default: 16)")


def add_prediction_args(parser) -> None:
    """Options of infer.py and infer_onnx.py (their outputs are identical)."""
    add_output_arg(parser, "JSON {image path: class} (default: %(default)s); unreadable images go to "
                           "OUTPUT.errors.json {image path: reason}", default="predictions.json")
    parser.add_argument("--topk", type=_non_negative_int, default=0,
                        help="K > 0: JSON values become the top K [{'class': i, 'prob': p}] (softmax of the "
                             "summed logits) and each line shows the top-1 probability (default: 0 = off)")
    parser.add_argument("--class_names", default="",
                        help="text file with one class name per line, or an ImageFolder dataset folder whose "
                             "sorted subfolders are the classes; adds names to the output")
    parser.add_argument("--features", default="", metavar="F.npz",
                        help="also write the embeddings to this .npz: paths [N], conv [N, C] (the pooled CNN "
                             "feature) and transformer [N, E] (the class token after trans_norm), rows in the "
                             "JSON's order (default: off)")


def add_onnx_args(parser) -> None:
    parser.add_argument("--onnx_path", required=True, help="ONNX model written by export.py")
    parser.add_argument("-m", dest="ort_device", choices=tuple(ORT_PROVIDERS), default=None,
                        help="onnxruntime device (default: --device_target); GPU needs onnxruntime-gpu")
    add_ort_threads_arg(parser)


def add_ort_threads_arg(parser) -> None:
    """--ort_threads: of the onnxruntime scripts and tools/bench.py."""
    parser.add_argument("--ort_threads", type=_non_negative_int, default=0,
                        help="onnxruntime intra-op threads (default: 0 = one per physical core); on a machine "
                             "busy with other work fewer can be faster")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


_non_negative_int = _int_at_least(0)


def find_images(data: str) -> list:
    """Absolute paths of the images at `data`: that file, or every image file below that folder, sorted.

    A file named explicitly is taken whatever its extension (decoding decides); in
    a folder only image extensions (any case) count, so notes.txt is not an error.
    """
    if os.path.isfile(data):
        return [os.path.abspath(data)]
    if not os.path.isdir(data):
        raise InferenceError(f"no such file or directory: {data}")
    # followlinks: the same files as the dataset scan (src/data/folder.py)
    paths = [os.path.join(root, name) for root, _, names in os.walk(data, followlinks=True) for name in names
             if is_image_file(name)]
    if not paths:
        raise InferenceError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in {data}")
    return sorted(os.path.abspath(p) for p in paths)


def dataset_classes(root: str) -> list:
    """Class names of an ImageFolder dataset: its sorted subfolder names (torchvision's order)."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise InferenceError(f"{root} has no class subfolders")
    return classes


def load_class_names(source: str) -> list:
    """Class names from a text file (one per line) or a dataset folder (sorted subfolders)."""
    if os.path.isdir(source):
        return dataset_classes(source)
    if not os.path.isfile(source):
        raise InferenceError(f"class names: no such file or directory: {source}")
    try:
        with open(source, encoding="utf-8") as f:
            names = [line.strip() for line in f.read().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise InferenceError(f"class names: cannot read {source} ({e})") from None
    while names and not names[-1]:
        names.pop()  # a trailing blank line is not a class
    if not names:
        raise InferenceError(f"class names: {source} is empty")
    return names


def _load(path: str, image_size: int, crop_pct: float):
    """(path, CHW array or None, reason or None) -- runs in the decoding threads."""
    try:
        return path, eval_transform(load_rgb(path), image_size, crop_pct), None
    except ImageReadError as e:
        return path, None, str(e)


def decode_ahead(paths: list, image_size: int, crop_pct: float, prefetch: int):
    """Yield `_load` results in the order of `paths`, keeping up to `prefetch` decoding in threads.

    PIL releases the GIL while decoding and resizing, so threads overlap it with the forward pass.
    """
    if prefetch == 0:
        for path in paths:
            yield _load(path, image_size, crop_pct)
        return
    with ThreadPoolExecutor(max_workers=min(prefetch, os.cpu_count() or 1)) as pool:
        pending = deque()
        for path in paths:
            pending.append(pool.submit(_load, path, image_size, crop_pct))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def image_batches(paths: list, batch_size: int, cfg, errors: dict, prog: str):
    """Yield (paths, images [B, 3, S, S]) of the readable images; unreadable ones go to `errors`
    {path: reason} and get one warning line on stderr."""
    batch_paths, arrays = [], []
    for path, array, reason in decode_ahead(paths, cfg.image_size, cfg.crop_pct, cfg.prefetch):
        if reason is not None:
            errors[path] = reason
            print(f"{prog}: warning: skipped {path}: {reason}", file=sys.stderr, flush=True)
            continue
        batch_paths.append(path)
        arrays.append(array)
        if len(arrays) == batch_size:
            yield batch_paths, np.stack(arrays)
            batch_paths, arrays = [], []
    if arrays:
        yield batch_paths, np.stack(arrays)


def heads_of(outputs: list) -> dict:
    """{"sum": logits, and "conv" / "trans" when the graph has them} from a graph's outputs.

    export.py's graphs put the summed logits first (alone, or followed by the two
    heads, --export_heads); a graph of the bare network has just the two heads, summed
    here as the official inference does.
    """
    if len(outputs) == 2:
        return {"sum": outputs[0] + outputs[1], "conv": outputs[0], "trans": outputs[1]}
    if len(outputs) == 3:
        return {"sum": outputs[0], "conv": outputs[1], "trans": outputs[2]}
    return {"sum": outputs[0]}


def logits_of(outputs: list) -> np.ndarray:
    """The (summed) logits among a graph's outputs (`heads_of`)."""
    return heads_of(outputs)["sum"]


def flip_tta(forward):
    """`forward` averaged over the images and their horizontal mirrors (tta: flip), as FlipTTA
    (src/inference_network.py) does in the MindSpore scripts; a dict of heads or a tuple with the features is averaged per output."""
    def averaged(images):
        plain, mirrored = forward(images), forward(np.ascontiguousarray(images[..., ::-1]))
        if isinstance(plain, dict):
            return {head: (plain[head] + mirrored[head]) / 2 for head in plain}
        if isinstance(plain, tuple):  # (logits, conv features, transformer features)
            return tuple((p + m) / 2 for p, m in zip(plain, mirrored))
        return (plain + mirrored) / 2
    averaged.session = getattr(forward, "session", None)
    return averaged


def with_tta(forward, tta: str):
    """`forward` under the config's `tta` ('' = as it is)."""
    return flip_tta(forward) if tta == "flip" else forward


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _check_class_names(names, num_classes: int, source: str) -> None:
    if names is not None and len(names) != num_classes:
        raise InferenceError(f"--class_names {source} has {len(names)} classes, the model predicts "
                             f"{num_classes}")


def _prediction(path: str, logits: np.ndarray, topk: int, names):
    """(JSON value, console line) of one image."""
    best = int(np.argmax(logits))
    parts = [f"class: {best}"] + ([f"name: {names[best]}"] if names else [])
    if not topk:
        return best, f"{path} ({', '.join(parts)})"
    probs = softmax(logits[None])[0]
    order = np.argsort(-probs, kind="stable")[:topk]  # stable: ties keep argmax's choice first
    top = [{"class": int(i), "prob": round(float(probs[i]), 6)} for i in order]
    if names:
        for entry in top:
            entry["name"] = names[entry["class"]]
    return top, f"{path} ({', '.join(parts)}, prob: {probs[best]:.4f})"


def _known_labels(cfg, names):
    """{abs image path: class} from --val_labels for infer.py / infer_onnx.py, or None: paths relative to
    DATA (its folder when DATA is one image), class names indexed by --class_names."""
    check_layout(cfg.dataset, "val_labels", cfg.val_labels)
    if not cfg.val_labels:
        return None
    root = cfg.data if os.path.isdir(cfg.data) else os.path.dirname(os.path.abspath(cfg.data))
    samples = read_labels_csv(cfg.val_labels, root, names or [], key="val_labels",
                              names_from=f"--class_names {cfg.class_names}", no_names="give them with --class_names")
    return {os.path.abspath(path): label for path, label in samples}


def predict(cfg, prog: str, build_forward) -> int:
    """infer.py / infer_onnx.py: label every image at cfg.data; returns the exit status.

    `build_forward(batch_size)` is called once the images and class names are
    known to be usable, so a bad DATA fails before any model is loaded.  A reader that closes
    stdout early (`| head -n 1`) stops the console lines only: every image is still labelled
    and the JSON written, which is what the status 0 then says.  With --val_labels the images
    it labels are also scored against it (one line on stderr; the JSON is unchanged).
    """
    paths = find_images(cfg.data)
    names = load_class_names(cfg.class_names) if cfg.class_names else None
    try:
        known = _known_labels(cfg, names)
    except DatasetError as e:
        raise InferenceError(str(e)) from None
    batch_size = min(cfg.batch_size, len(paths))  # one image runs at batch 1, not padded to batch_size
    forward = build_forward(batch_size)
    predictions, errors, console, counts, features = {}, {}, Console(), EvalCounts(), ([], [])
    for batch_paths, images in image_batches(paths, batch_size, cfg, errors, prog):
        logits = forward(images)
        if cfg.features:  # forward gives (logits, conv features, transformer features)
            logits, conv, trans = logits
            features[0].append(conv)
            features[1].append(trans)
        _check_class_names(names, logits.shape[1], cfg.class_names)
        for path, row in zip(batch_paths, logits):
            predictions[path], line = _prediction(path, row, cfg.topk, names)
            console.line(line)
        if known is not None:
            labelled = [i for i, path in enumerate(batch_paths) if path in known]
            if labelled:
                _check_labels_fit(cfg.val_labels, [known[batch_paths[i]] for i in labelled], logits.shape[1])
                counts.add([known[batch_paths[i]] for i in labelled], logits[labelled])
    errors_path = cfg.output + ".errors.json"
    write_errors(errors_path, errors)
    if not predictions:
        raise InferenceError(f"none of the {len(paths)} images could be read (reasons in {errors_path})")
    if cfg.features:
        write_features(cfg.features, list(predictions), *(np.concatenate(f) for f in features))
    write_json_atomic(cfg.output, predictions)
    skipped = f", skipped {len(errors)} unreadable (see {errors_path})" if errors else ""
    wrote = cfg.output + (f" and {cfg.features}" if cfg.features else "")
    print(f"{prog}: labelled {len(predictions)} images{skipped}; wrote {wrote}", file=sys.stderr)
    if known is not None:
        print(f"{prog}: {_accuracy_line(counts, len(known), cfg.val_labels)}", file=sys.stderr)
    return 0


def write_features(path: str, paths: list, conv: np.ndarray, transformer: np.ndarray) -> None:
    """The embeddings file of --features: `paths` [N] (str), `conv` [N, C], `transformer` [N, E] float32."""
    buffer = io.BytesIO()
    np.savez(buffer, paths=np.array(paths, dtype=str), conv=conv.astype(np.float32),
             transformer=transformer.astype(np.float32))
    write_atomic(path, buffer.getvalue(), mode="wb")


def _check_labels_fit(source: str, labels: list, num_classes: int) -> None:
    if max(labels) >= num_classes:
        raise InferenceError(f"{source} gives class {max(labels)}, the model predicts {num_classes} classes")


def _accuracy_line(counts, num_known: int, source: str) -> str:
    if counts.num_images == 0:
        return f"none of the {num_known} images in {source} was among those labelled"
    m = counts.results()["sum"]
    return (f"against {source}: {{'Top1-Acc': {round(m['Top1-Acc'], 6)}, 'Top5-Acc': {round(m['Top5-Acc'], 6)}}} "
            f"({counts.num_images} of its {num_known} images)")


def evaluate(cfg, prog: str, forward) -> dict:
    """eval_onnx.py: `EvalCounts.results()` of `forward` (images -> `heads_of` dict) over the dataset
    at cfg.data, plus "printed": the line's dict (6 decimals) and "class_names".

    The images and labels are those of eval.py's pipeline: class folders (class = rank of the sorted
    folder name, a class folder without images is an error there too), or with val_labels the flat
    folder cfg.data labelled by that CSV, class names indexed by data_url/train_dir.
    """
    try:
        classes, samples = split_samples(cfg.data, "val_labels", cfg.val_labels, cfg.dataset,
                                         os.path.join(cfg.data_url, cfg.train_dir), cfg.train_labels)
    except DatasetError as e:
        raise InferenceError(str(e)) from None
    labels = dict(samples)
    num_classes = max(len(classes), max(labels.values()) + 1)
    errors, counts = {}, EvalCounts()
    for batch_paths, images in image_batches(sorted(labels), cfg.batch_size, cfg, errors, prog):
        heads = forward(images)
        if heads["sum"].shape[1] < num_classes:
            raise InferenceError(f"{cfg.val_labels or cfg.data} has {num_classes} classes, the model predicts "
                                 f"{heads['sum'].shape[1]}")
        counts.add([labels[p] for p in batch_paths], heads["sum"], heads.get("conv"), heads.get("trans"))
    if not counts.num_images:
        raise InferenceError(f"none of the {len(labels)} images in {cfg.data} could be read")
    skipped = f", skipped {len(errors)} unreadable" if errors else ""
    print(f"{prog}: evaluated {counts.num_images} images in {len(classes) or num_classes} classes{skipped}",
          file=sys.stderr)
    results = counts.results()
    results["printed"] = {k: round(results["sum"][k], 6) for k in ("Top1-Acc", "Top5-Acc")}
    results["class_names"] = classes
    return results


def write_errors(path: str, errors: dict) -> None:
    """Write {path: reason} of the unreadable images, or remove a stale file when there are none."""
    if errors:
        write_json_atomic(path, errors)
    elif os.path.exists(path):
        os.remove(path)


def ort_session_options(threads: int = 0) -> ort.SessionOptions:
    """The onnxruntime settings of every inference path (tools/bench.py measures them; docs/export.md).

    These are onnxruntime's own defaults, pinned so that a new onnxruntime cannot change them
    silently: against them, basic or extended graph optimisation, parallel execution and no
    memory arena were slower or no faster for conformer_tiny at 224 px, batch 1 and 16.
    `threads` (--ort_threads) is the one setting that depends on the machine.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # fuses LayerNorm, Gelu
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # the graph is one chain: nothing to overlap
    options.enable_cpu_mem_arena = True
    options.intra_op_num_threads = threads
    return options


def onnx_forward(path: str, device: str, image_size: int, threads: int = 0, heads: bool = False,
                 features: bool = False):
    """`forward` running an ONNX file in onnxruntime on CPU or GPU with `ort_session_options(threads)`:
    images -> summed logits, or with `heads` the `heads_of` dict, or with `features` (logits, conv
    features, transformer features) from a file exported with --export_features; any problem is one
    InferenceError."""
    if device not in ORT_PROVIDERS:
        raise InferenceError(f"onnxruntime runs on CPU or GPU, not {device} (set -m CPU or -m GPU)")
    if not os.path.isfile(path):
        raise InferenceError(f"ONNX file not found: {path}")
    provider = ORT_PROVIDERS[device][0]
    if provider not in ort.get_available_providers():
        raise InferenceError(f"{provider} is not available in this onnxruntime {ort.__version__} install "
                             f"(has: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
                             "or use -m CPU / --device_target CPU")
    try:
        session = ort.InferenceSession(path, ort_session_options(threads), providers=ORT_PROVIDERS[device])
    except Exception as e:  # onnxruntime's exceptions share no base class beyond Exception
        raise InferenceError(f"{path}: not a loadable ONNX model ({first_line(e)})") from None
    if session.get_providers()[0] != provider:  # onnxruntime falls back to CPU with only a warning
        raise InferenceError(f"{provider} could not be initialised (CUDA/cuDNN libraries missing?); "
                             "use -m CPU / --device_target CPU")
    image_input = session.get_inputs()[0]
    size = image_input.shape[2:]
    if all(isinstance(d, int) for d in size) and list(size) != [image_size, image_size]:
        raise InferenceError(f"{path} takes {size[0]}x{size[1]} images: pass --image_size {size[0]}")

    outputs = [o.name for o in session.get_outputs()]
    if features and not set(FEATURE_OUTPUTS) <= set(outputs):
        raise InferenceError(f"{path} has no feature outputs (outputs: {', '.join(outputs)}): export it with "
                             "export.py --export_features")
    feature_at = [outputs.index(name) for name in FEATURE_OUTPUTS if name in outputs]

    def forward(images):
        results = session.run(None, {image_input.name: images})
        logits = heads_of([r for i, r in enumerate(results) if i not in feature_at])  # the features are no head
        if features:
            return (logits["sum"], *(results[i] for i in feature_at))
        return logits if heads else logits["sum"]
    forward.session = session  # for inspection (tests, benchmarks)
    return forward


def first_line(error: Exception) -> str:
    """The first line of an exception's message (MindSpore and onnxruntime write pages)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
