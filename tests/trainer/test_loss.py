"""The training loss on hand-worked cases: soft targets, two heads."""
import math
from argparse import Namespace

import numpy as np
import pytest
import mindspore as ms

from src.trainer.loss import SoftTargetCrossEntropy, TwoHeadLoss, create_loss


# MindSpore's CPU log_softmax is ~1e-6 off in float32 (1.3862929 for log 4), hence rel=1e-5.

def test_soft_target_ce_of_uniform_logits_is_log_k():
    target = np.array([[1, 0, 0, 0], [0.25, 0.25, 0.5, 0]], np.float32)  # any distribution
    loss = SoftTargetCrossEntropy()(ms.Tensor(np.zeros((2, 4), np.float32)), ms.Tensor(target))
    assert float(loss) == pytest.approx(math.log(4), rel=1e-5)


def test_soft_target_ce_equals_label_smoothing_ce():
    """Targets (1-eps)*onehot + eps/K give (1-eps)*(-log p_y) + eps/K * sum_k(-log p_k), batch-averaged."""
    logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0], [-0.5, 1.5, 0.5, 1.0]], np.float32)
    labels, eps, k = np.array([0, 2, 3]), 0.1, 4
    target = np.full((3, k), eps / k, np.float32)
    target[np.arange(3), labels] += 1 - eps
    neg_log_p = np.log(np.exp(logits.astype(np.float64)).sum(axis=1, keepdims=True)) - logits
    expected = np.mean((1 - eps) * neg_log_p[np.arange(3), labels] + eps / k * neg_log_p.sum(axis=1))
    loss = SoftTargetCrossEntropy()(ms.Tensor(logits), ms.Tensor(target))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_two_head_loss_is_the_mean_of_the_heads():
    conv = np.zeros((1, 4), np.float32)                            # CE = log 4
    trans = np.array([[math.log(3), 0, 0, 0]], np.float32)        # p_0 = 3 / (3 + 3): CE = log 2
    target = np.array([[1, 0, 0, 0]], np.float32)
    loss = create_loss(Namespace())((ms.Tensor(conv), ms.Tensor(trans)), ms.Tensor(target))
    assert float(loss) == pytest.approx((math.log(4) + math.log(2)) / 2, rel=1e-5)


def test_loss_is_float32_for_float16_logits():
    logits = ms.Tensor(np.array([[30.0, 0.0, -30.0]], np.float16))
    loss = TwoHeadLoss(SoftTargetCrossEntropy())((logits, logits), ms.Tensor(np.array([[0, 0, 1]], np.float32)))
    assert loss.dtype == ms.float32 and float(loss) == pytest.approx(60.0, rel=1e-5)  # log-sum-exp ~ 30
