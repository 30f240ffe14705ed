"""The onnxruntime path of infer_onnx.py, eval_onnx.py and the benchmark: an exported ONNX file as a
NumPy forward function, with the session settings and options they share.  MindSpore-free on purpose
(a test runs these scripts with MindSpore unimportable)."""
import os

import onnxruntime as ort

from src.errors import first_line
from src.inference.heads import heads_of
from src.inference.images import InferenceError, non_negative_int

FEATURE_OUTPUTS = ("conv_features", "transformer_features")  # ONNX output names, as export.py writes them
ORT_PROVIDERS = {  # CPU kept after CUDA: onnxruntime places the few nodes CUDA lacks there
    "CPU": ["CPUExecutionProvider"],
    "GPU": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def add_onnx_args(parser) -> None:
    parser.add_argument("--onnx_path", required=True, help="ONNX model written by export.py")
    parser.add_argument("-m", dest="ort_device", choices=tuple(ORT_PROVIDERS), default=None,
                        help="onnxruntime device (default: --device_target); GPU needs onnxruntime-gpu")
    add_ort_threads_arg(parser)


def add_ort_threads_arg(parser) -> None:
    """--ort_threads: of the onnxruntime scripts and tools/bench.py."""
    parser.add_argument("--ort_threads", type=non_negative_int, default=0,
                        help="onnxruntime intra-op threads (default: 0 = one per physical core); on a machine "
                             "busy with other work fewer can be faster")


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
            return (logits["summed"], *(results[i] for i in feature_at))
        return logits if heads else logits["summed"]
    forward.session = session  # for inspection (tests, benchmarks)
    return forward

