"""Evaluation and inference: the inference network, test-time augmentation, both evaluation loops,
the metrics, and labelling image files.  Only network.py and evaluate.py import MindSpore, and
amp.py when it casts a network: the onnxruntime scripts use the rest."""
