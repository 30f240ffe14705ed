"""Validation metrics and the evaluation loop on hand-worked cases (src/inference/metrics.py, evaluate.py, results_file.py)."""
import math

import numpy as np
import pytest
import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn

from src.conformer import create_model
from src.inference.evaluate import evaluate
from src.inference.heads import HEADS
from src.inference.metrics import cross_entropy_per_image, format_eval_results, topk_correct


# Five images, six classes.  Rank of the label in each row (1 = highest):
CONV = np.array([[0.1, 0.9, 0.3, 0.2, 0.0, 0.5],    # label 1: rank 1
                 [0.8, 0.1, 0.7, 0.6, 0.5, 0.4],    # label 2: rank 2
                 [0.2, 0.3, 0.4, 0.5, 0.6, 0.1],    # label 5: rank 6
                 [0.0, 0.0, 0.9, 0.1, 0.2, 0.3],    # label 2: rank 1
                 [0.5, 0.4, 0.3, 0.2, 0.1, 0.6]],   # label 0: rank 2
                np.float32)
TRANS = np.array([[0.6, 0.1, 0.2, 0.3, 0.4, 0.45],  # rank 6
                  [0.1, 0.2, 0.9, 0.3, 0.4, 0.5],   # rank 1
                  [0.1, 0.2, 0.3, 0.4, 0.5, 0.9],   # rank 1
                  [0.1, 0.2, 0.5, 0.3, 0.4, 0.6],   # rank 2
                  [0.9, 0.2, 0.3, 0.4, 0.5, 0.1]],  # rank 1
                 np.float32)
# CONV + TRANS ranks the labels 1, 1, 2, 1, 1
LABELS = np.array([1, 2, 5, 2, 0], np.int32)


def test_topk_correct_by_hand():
    assert topk_correct(CONV, LABELS, 1) == 2
    assert topk_correct(CONV, LABELS, 2) == 4
    assert topk_correct(CONV, LABELS, 5) == 4
    assert topk_correct(CONV, LABELS, 10) == 5  # k capped at 6 classes: every label is in the top 6
    assert topk_correct(TRANS, LABELS, 1) == 3
    assert topk_correct(CONV + TRANS, LABELS, 1) == 4


def test_cross_entropy_per_image_by_hand():
    logits = np.array([[0, 0, 0, 0], [math.log(3), 0, 0, 0]], np.float32)
    np.testing.assert_allclose(cross_entropy_per_image(logits, np.array([2, 0])), [math.log(4), math.log(2)],
                               rtol=1e-6)


class _LogitsFromImages(nn.Cell):
    """A stand-in network: each "image" [2, K] carries its conv and transformer logits."""

    def construct(self, x):
        return x[:, 0], x[:, 1]


def _ce(logits):
    return np.mean(np.log(np.exp(logits.astype(np.float64)).sum(axis=1)) - logits[np.arange(5), LABELS])


def test_evaluate_counts_every_image_exactly():
    images = np.stack([CONV, TRANS], axis=1)  # [5, 2, 6]
    dataset = ds.NumpySlicesDataset((images, LABELS), column_names=["image", "label"], shuffle=False).batch(2)
    net = _LogitsFromImages()
    net.set_train(True)
    results = evaluate(net, dataset)  # batches of 2, 2 and 1: the last, partial one counts
    assert not net.training and results["num_images"] == 5
    assert results["conv"]["Top1-Acc"] == 2 / 5 and results["conv"]["Top5-Acc"] == 4 / 5
    assert results["transformer"]["Top1-Acc"] == 3 / 5 and results["transformer"]["Top5-Acc"] == 4 / 5
    assert results["summed"]["Top1-Acc"] == 4 / 5 and results["summed"]["Top5-Acc"] == 5 / 5
    assert results["conv"]["Loss"] == pytest.approx(_ce(CONV), rel=1e-6)
    assert results["transformer"]["Loss"] == pytest.approx(_ce(TRANS), rel=1e-6)
    assert results["summed"]["Loss"] == pytest.approx((_ce(CONV) + _ce(TRANS)) / 2, rel=1e-6)  # official rule


class _Recording:
    """A network that records the batch size of every call."""

    def __init__(self, net):
        self.net, self.batch_sizes = net, []

    def set_train(self, mode):
        self.net.set_train(mode)

    def __call__(self, images):
        self.batch_sizes.append(images.shape[0])
        return self.net(images)


def test_evaluate_runs_the_net_at_one_batch_size_and_counts_only_real_images():
    """The short last batch is padded (one compiled graph) and the metrics are those of the
    unpadded images: the same as in one batch of all five, and as worked out by hand."""
    images = np.stack([CONV, TRANS], axis=1)
    results = {}
    for batch in (2, 5):
        dataset = ds.NumpySlicesDataset((images, LABELS), column_names=["image", "label"], shuffle=False)
        net = _Recording(_LogitsFromImages())
        results[batch] = evaluate(net, dataset.batch(batch))
        assert net.batch_sizes == [batch] * (-(-5 // batch))  # 2, 2, 2 (not 2, 2, 1); 5
    for head in HEADS:  # the losses are summed in another order: equal up to rounding
        assert results[2][head] == pytest.approx(results[5][head], rel=1e-12)
    assert results[2]["num_images"] == 5
    assert results[2]["summed"]["Top1-Acc"] == 4 / 5 and results[2]["conv"]["Top1-Acc"] == 2 / 5
    assert results[2]["transformer"]["Loss"] == pytest.approx(_ce(TRANS), rel=1e-6)


def test_evaluate_on_reduced_conformer():
    ms.set_seed(0)
    np.random.seed(0)
    net = create_model("conformer_reduced_patch16", num_classes=4)
    images = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1], np.int32)
    dataset = ds.NumpySlicesDataset((images, labels), column_names=["image", "label"], shuffle=False).batch(4)
    results = evaluate(net, dataset)
    assert results["num_images"] == 6
    for head in HEADS:
        assert results[head]["Top5-Acc"] == 1.0  # top-5 of 4 classes always holds the label
        assert results[head]["Top1-Acc"] in {n / 6 for n in range(7)}
        assert 0 < results[head]["Loss"] < 20


def test_format_eval_results_matches_modelzoo_line():
    line = format_eval_results({"Loss": np.float64(1.42044), "Top1-Acc": 0.7310664, "Top5-Acc": 0.906210})
    assert line == "eval results: {'Loss': 1.4204, 'Top1-Acc': 0.731066, 'Top5-Acc': 0.90621}"


def test_confusion_matrix_by_hand_and_shards_add_up():
    from src.inference.metrics import EvalCounts
    from src.inference.results_file import results_record
    logits = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 5], [4, 4, 0], [0, 1, 0]], np.float32)
    labels = np.array([0, 2, 2, 1, 1])
    whole = EvalCounts()
    whole.add(labels, logits)
    # argmax per row (ties to the lower index): 0, 1, 2, 0, 1
    expected = [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    record = results_record(whole.results(), ["a", "b", "c"])
    assert record["confusion_matrix"] == expected and record["class_names"] == ["a", "b", "c"]
    assert record["per_class_top1"] == [1.0, 0.5, 0.5] and record["summed"]["top1"] == 3 / 5
    assert "conv" not in record and "loss" not in record["summed"]  # no heads given: no loss guessed
    shards = [EvalCounts(), EvalCounts()]
    shards[0].add(labels[:2], logits[:2])
    shards[1].add(labels[2:], logits[2:])
    assert np.array_equal(shards[0].confusion + shards[1].confusion, whole.confusion)
    empty_class = EvalCounts()
    empty_class.add(np.array([0]), logits[:1])
    assert results_record(empty_class.results())["per_class_top1"] == [1.0, None, None]


def test_results_file_without_matplotlib_is_the_json_alone(tmp_path, monkeypatch):
    import json
    import sys
    from src.inference.metrics import EvalCounts
    from src.inference.results_file import results_record, write_results
    counts = EvalCounts()
    counts.add(np.array([0, 1]), np.array([[1, 0], [1, 0]], np.float32))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    write_results(str(tmp_path / "r.json"), results_record(counts.results()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert json.loads((tmp_path / "r.json").read_text())["confusion_matrix"] == [[1, 0], [1, 0]]
