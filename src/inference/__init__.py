"""Evaluation and inference: the inference network, test-time augmentation, both evaluation loops,
the metrics, and labelling image files.  Only network.py, amp.py and evaluate.py import MindSpore: the
onnxruntime scripts use the rest."""
