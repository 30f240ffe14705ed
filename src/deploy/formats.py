"""The export formats and their file extensions (MindSpore-free: the config schema takes its choices
from here)."""

EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
FORMATS = tuple(EXTENSIONS)
