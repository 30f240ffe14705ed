"""Learning-rate schedules, decay groups, and optimizers against torch.optim reference numbers."""
import math
from argparse import Namespace

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from src.conformer import create_model
from src.trainer.lr_schedule import build_lr_schedule
from src.trainer.optimizer import OPTIMIZERS, create_optimizer, current_lr, param_groups


def _sched_cfg(**overrides):
    cfg = dict(lr_scheduler="cosine_lr", epochs=10, warmup_length=2, warmup_lr=1e-4, base_lr=1e-3,
               min_lr=1e-5, lr_adjust=3, lr_gamma=0.5)
    return Namespace(**{**cfg, **overrides})


# ----- schedules: 10 epochs x 4 steps = 40 steps, warm-up 2 epochs = steps 0..7 -----

def test_cosine_schedule_hand_values():
    lr = build_lr_schedule(_sched_cfg(), steps_per_epoch=4)
    assert lr.dtype == np.float32 and lr.shape == (40,)
    expected = {
        0: 1e-4,                                                    # warm-up start = warmup_lr
        4: 1e-4 + 0.9e-3 * 4 / 8,                                   # half-way up
        7: 1e-4 + 0.9e-3 * 7 / 8,                                   # last warm-up step
        8: 1e-3,                                                    # first cosine step = base_lr
        24: 1e-5 + 0.5 * 0.99e-3,                                   # t = 16/32: half-way down
        39: 1e-5 + 0.5 * 0.99e-3 * (1 + math.cos(math.pi * 31 / 32)),  # last step, t = 31/32
    }
    for step, value in expected.items():
        assert lr[step] == pytest.approx(value, rel=1e-6), step
    assert np.all(np.diff(lr[8:]) < 0) and lr[39] > 1e-5  # min_lr is where the step after the last would be


def test_cosine_without_warmup_starts_at_base_lr():
    lr = build_lr_schedule(_sched_cfg(warmup_length=0), steps_per_epoch=4)
    assert lr[0] == pytest.approx(1e-3) and lr[20] == pytest.approx(1e-5 + 0.5 * 0.99e-3)


def test_step_lr_is_a_staircase_from_epoch_zero():
    lr = build_lr_schedule(_sched_cfg(lr_scheduler="step_lr", warmup_length=1), steps_per_epoch=4)
    assert lr[0] == pytest.approx(1e-4) and lr[2] == pytest.approx(1e-4 + 0.9e-3 / 2)  # warm-up
    for step, value in {4: 1e-3, 11: 1e-3, 12: 5e-4, 23: 5e-4, 24: 2.5e-4, 36: 1.25e-4, 39: 1.25e-4}.items():
        assert lr[step] == pytest.approx(value, rel=1e-6), step


def test_multistep_and_exp_lr_decay_smoothly_per_step():
    multistep = build_lr_schedule(_sched_cfg(lr_scheduler="multistep_lr", warmup_length=1), 4)
    assert multistep[12] == pytest.approx(5e-4, rel=1e-6)                  # epoch 3 = 1 * lr_adjust
    assert multistep[6] == pytest.approx(1e-3 * 0.5 ** 0.5, rel=1e-6)     # epoch 1.5
    exp = build_lr_schedule(_sched_cfg(lr_scheduler="exp_lr", warmup_length=1), 4)
    assert exp[8] == pytest.approx(2.5e-4, rel=1e-6)                       # epoch 2
    assert exp[10] == pytest.approx(1e-3 * 0.5 ** 2.5, rel=1e-6)          # epoch 2.5
    assert exp[3] == pytest.approx(1e-4 + 0.9e-3 * 3 / 4, rel=1e-6)       # warm-up applies to all


def test_constant_lr_and_errors():
    lr = build_lr_schedule(_sched_cfg(lr_scheduler="constant_lr"), 4)
    assert lr[0] == pytest.approx(1e-4) and np.all(lr[8:] == np.float32(1e-3))
    with pytest.raises(ValueError, match="unknown lr_scheduler"):
        build_lr_schedule(_sched_cfg(lr_scheduler="poly_lr"), 4)
    with pytest.raises(ValueError, match="warmup_length"):
        build_lr_schedule(_sched_cfg(warmup_length=11), 4)


# ----- weight-decay groups on the real model -----

def test_no_decay_group_on_reduced_conformer():
    net = create_model("conformer_reduced_patch16", num_classes=4)
    decay_group, no_decay_group, order = param_groups(net, 0.05)
    decay = {p.name for p in decay_group["params"]}
    no_decay = {p.name for p in no_decay_group["params"]}
    trainable = net.trainable_params()
    assert decay_group["weight_decay"] == 0.05 and no_decay_group["weight_decay"] == 0.0
    assert [p.name for p in order["order_params"]] == [p.name for p in trainable]
    assert len(decay) + len(no_decay) == len(trainable) and not decay & no_decay
    assert "cls_token" in no_decay
    for p in trainable:
        leaf = p.name.rsplit(".", 1)[-1]
        if leaf in ("gamma", "beta", "bias"):
            assert p.name in no_decay, p.name
        elif p.name != "cls_token":
            assert len(p.shape) > 1 and p.name in decay, p.name
    assert {"conv1.weight", "trans_1.attn.qkv.weight", "trans_cls_head.weight"} <= decay
    assert {"trans_norm.gamma", "conv_trans_3.cnn_block.bn1.beta", "trans_1.attn.qkv.bias"} <= no_decay
    moving = [n for n in net.parameters_dict() if "moving_" in n]
    assert moving and not set(moving) & (decay | no_decay)  # BN statistics are not optimized


# ----- optimizers against torch.optim -----
# Five updates of a small "network" (cls_token, fc1, fc2) from a fixed init with a fixed
# gradient sequence, varying lr, weight decay 0.5 on the two weight matrices only.
# REFERENCE holds the parameters (concatenated in network order) after torch 2.13 ran:
#     p = {name: torch.nn.Parameter(torch.from_numpy(init[name])) for name in SHAPES}
#     decay = [p["fc1.weight"], p["fc2.weight"]]; no_decay = the other three
#     opt = Opt([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}], lr=1.0, ...)
#     for lr, g in zip(LRS, grads):
#         set every group's lr to lr; p[name].grad = torch.from_numpy(g[name]); opt.step()
# with Opt = AdamW(betas=(0.9, 0.999), eps=1e-8); SGD(momentum=0.9); SGD(momentum=0.9, nesterov=True).
SHAPES = {"cls_token": (1, 1, 4), "fc1.weight": (3, 4), "fc1.bias": (3,), "fc2.weight": (2, 3), "fc2.bias": (2,)}
LRS = [1e-2, 3e-2, 2e-2, 5e-2, 4e-2]
WD = 0.5
REFERENCE = {
    "adamw": [0.10412509739398956, 0.49945735931396484, 0.5765665769577026, 0.31521210074424744,
              -0.08496051281690598, -0.3078996539115906, -0.3641999661922455, -0.3460921347141266,
              -0.219304159283638, 0.049337152391672134, 0.3877982795238495, 0.5693292617797852,
              0.35591304302215576, -0.0567665621638298, -0.37329137325286865, -0.4416716396808624,
              -0.3263062536716461, -0.14381898939609528, 0.07767301052808762, 0.32784438133239746,
              0.49197298288345337, 0.4014407992362976, 0.0191810242831707, -0.40586963295936584,
              -0.5122779011726379, -0.3756144642829895, -0.07796765863895416],
    "momentum": [0.09447748959064484, 0.43916648626327515, 0.4973512887954712, 0.23468121886253357,
                 -0.003536828560754657, -0.2383008748292923, -0.18397493660449982, -0.3334313631057739,
                 -0.14700590074062347, -0.05981341376900673, 0.33549827337265015, 0.3873499035835266,
                 0.32446497678756714, -0.007216873578727245, -0.24500080943107605, -0.29709890484809875,
                 -0.41661152243614197, -0.17880885303020477, -0.031048085540533066, 0.32215043902397156,
                 0.38553109765052795, 0.4435657262802124, 0.000987451639957726, -0.25052887201309204,
                 -0.4699741005897522, -0.4178791046142578, -0.1694372147321701],
    "sgd": [0.15677545964717865, 0.44334185123443604, 0.49695172905921936, 0.17154933512210846,
            -0.0027895537205040455, -0.22413375973701477, -0.14201828837394714, -0.31980982422828674,
            -0.1392887532711029, -0.03596213459968567, 0.3235771059989929, 0.3656191825866699,
            0.2448458969593048, -0.011811618693172932, -0.23080188035964966, -0.21180976927280426,
            -0.41650187969207764, -0.1794564127922058, -0.06678985804319382, 0.3086269199848175,
            0.3643634617328644, 0.40540552139282227, -0.006095294840633869, -0.2366076111793518,
            -0.386245459318161, -0.41266384720802307, -0.1697109490633011],
}


def _reference_inputs():
    """Init and gradients from closed-form formulas (the torch script used the same ones)."""
    def fill(formula):
        out, offset = {}, 0
        for name, shape in SHAPES.items():
            i = np.arange(offset, offset + int(np.prod(shape)))
            out[name] = formula(i).astype(np.float32).reshape(shape)
            offset += i.size
        return out
    init = fill(lambda i: 0.5 * np.sin(0.7 * i + 0.3))
    # magnitudes 1, 0.1, 0.01 so that Adam's per-coordinate normalization matters
    grads = [fill(lambda i, k=k: np.cos(1.3 * i + 0.9 * k) * 10.0 ** -(i % 3)) for k in range(len(LRS))]
    return init, grads


class _LinearNet(nn.Cell):
    """Parameters named like a model; its "loss" sum(p * g) has gradient exactly g."""

    def __init__(self, init):
        super().__init__()
        self.cls_token = ms.Parameter(ms.Tensor(init["cls_token"]), name="cls_token")
        self.fc1 = nn.Dense(4, 3, weight_init=ms.Tensor(init["fc1.weight"]), bias_init=ms.Tensor(init["fc1.bias"]))
        self.fc2 = nn.Dense(3, 2, weight_init=ms.Tensor(init["fc2.weight"]), bias_init=ms.Tensor(init["fc2.bias"]))

    def construct(self, g_cls, g_w1, g_b1, g_w2, g_b2):
        return ((self.cls_token * g_cls).sum() + (self.fc1.weight * g_w1).sum() + (self.fc1.bias * g_b1).sum()
                + (self.fc2.weight * g_w2).sum() + (self.fc2.bias * g_b2).sum())


class _TrainStep(nn.Cell):
    """The way a train step drives the optimizer: grads w.r.t. optimizer.parameters, then optimizer(grads)."""

    def __init__(self, net, optimizer):
        super().__init__(auto_prefix=False)  # a prefix would rename the network's parameters
        self.optimizer = optimizer
        self.grad_fn = ops.grad(net, grad_position=None, weights=optimizer.parameters)

    def construct(self, *inputs):
        grads = self.grad_fn(*inputs)
        return ops.depend(self.optimizer(grads), grads)


def _optimizer(name, net, lrs=LRS):
    cfg = Namespace(optimizer=name, beta=[0.9, 0.999], eps=1e-8, weight_decay=WD, momentum=0.9)
    return create_optimizer(cfg, net, np.array(lrs, np.float32))


def _run(step, grads):
    for g in grads:
        step(*[ms.Tensor(g[name]) for name in SHAPES])


def _flat(net):
    return np.concatenate([p.asnumpy().ravel() for p in net.trainable_params()])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_matches_torch(name):
    init, grads = _reference_inputs()
    net = _LinearNet(init)
    optimizer = _optimizer(name, net)
    assert [p.name for p in optimizer.parameters] == list(SHAPES)  # gradients come in this order
    _run(_TrainStep(net, optimizer), grads)
    assert np.abs(_flat(net) - np.array(REFERENCE[name])).max() < 1e-6


class _ScaledTrainStep(_TrainStep):
    """A train step that leaves a factor on the gradients for AdamW to apply (as TrainOneStep's unscaling
    and clipping do)."""

    def __init__(self, net, optimizer, factor: float):
        super().__init__(net, optimizer)
        self.factor = ms.Tensor(factor, ms.float32)

    def construct(self, *inputs):
        grads = self.grad_fn(*inputs)
        return ops.depend(self.optimizer(grads, self.factor), grads)


@pytest.mark.parametrize("formulation", ["AdamWUpdate", "FusedCastAdamWeightDecay", "Mul+AdamWeightDecay"])
def test_adamw_applies_the_gradient_factor(formulation):
    """AdamW(grads / 1000, grad_scale 1000) == torch on grads: with the factor inside the own kernel that
    updates every tensor, inside MindSpore's CPU kernel per tensor, and as the multiplication other devices
    run (gradients this small meet eps, so Adam's normalisation hides no missing factor)."""
    init, grads = _reference_inputs()
    net = _LinearNet(init)
    optimizer = _optimizer("adamw", net)
    assert optimizer.in_one_kernel and optimizer.scales_in_kernel  # the CPU choice
    if formulation != "AdamWUpdate":
        optimizer.in_one_kernel = False
    if formulation == "Mul+AdamWeightDecay":
        optimizer.scales_in_kernel, optimizer.fused = False, ops.AdamWeightDecay()
    _run(_ScaledTrainStep(net, optimizer, 1000.0), [{k: v / 1000.0 for k, v in g.items()} for g in grads])
    # the own kernel does torch's arithmetic; MindSpore's folds the bias corrections into lr and eps
    tolerance = 3e-8 if formulation == "AdamWUpdate" else 1e-6
    assert np.abs(_flat(net) - np.array(REFERENCE["adamw"])).max() < tolerance


def test_adamw_differs_from_mindspore_adamweightdecay():
    """Why optimizer.py has its own AdamW: nn.AdamWeightDecay skips bias correction."""
    init, grads = _reference_inputs()
    net = _LinearNet(init)
    _run(_TrainStep(net, nn.AdamWeightDecay(param_groups(net, WD), ms.Tensor(np.array(LRS, np.float32)))), grads)
    assert np.abs(_flat(net) - np.array(REFERENCE["adamw"])).max() > 1e-2


def test_resume_continues_identically(tmp_path):
    """save_checkpoint(optimizer) after 2 steps, load into a fresh one, 3 more steps == 5 uninterrupted."""
    init, grads = _reference_inputs()
    net = _LinearNet(init)
    optimizer = _optimizer("adamw", net)
    step = _TrainStep(net, optimizer)
    _run(step, grads[:2])
    path = str(tmp_path / "opt.ckpt")
    ms.save_checkpoint(optimizer, path)  # weights, adam_m.*, adam_v.*, global_step, learning_rate
    _run(step, grads[2:])

    fresh_net = _LinearNet({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})
    fresh = _optimizer("adamw", fresh_net)
    saved = ms.load_checkpoint(path)
    assert {"adam_m.fc1.weight", "adam_v.cls_token", "global_step", "learning_rate"} <= set(saved)
    not_loaded, unused = ms.load_param_into_net(fresh, saved)
    assert not not_loaded and not unused
    assert int(fresh.global_step.asnumpy()[0]) == 2 and current_lr(fresh) == pytest.approx(LRS[1])
    _run(_TrainStep(fresh_net, fresh), grads[2:])
    np.testing.assert_array_equal(_flat(fresh_net), _flat(net))


def test_current_lr_follows_the_updates():
    init, grads = _reference_inputs()
    net = _LinearNet(init)
    optimizer = _optimizer("momentum", net)
    assert current_lr(optimizer) == pytest.approx(LRS[0])  # before any update: the first one's lr
    step = _TrainStep(net, optimizer)
    for k in range(3):
        _run(step, grads[k:k + 1])
        assert current_lr(optimizer) == pytest.approx(LRS[k])


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        _optimizer("lamb", _LinearNet(_reference_inputs()[0]))


class _FactorLoss(nn.Cell):
    """(factor, unused) -> the _LinearNet "loss" of the first gradient set times `factor`: the two inputs of
    TrainOneStep, a non-finite gradient when factor is inf."""

    def __init__(self, net, grads):
        super().__init__(auto_prefix=False)
        self.net = net
        self.grads = [ms.Tensor(grads[name]) for name in SHAPES]

    def construct(self, factor, unused):
        return self.net(*[g * factor for g in self.grads])


@pytest.mark.parametrize("in_one_kernel", [True, False], ids=["AdamWUpdate", "FusedCastAdamWeightDecay"])
def test_a_skipped_step_leaves_weights_and_moments_and_the_next_step_applies(in_one_kernel):
    """TrainOneStep calls AdamW only for a finite gradient: an overflow writes nothing (the kernel writes
    Parameters in place, inside the step's branch), and the next step is the first update."""
    from src.trainer.train_one_step import TrainOneStep
    init, grads = _reference_inputs()
    net = _LinearNet(init)
    optimizer = _optimizer("adamw", net)
    optimizer.in_one_kernel = in_one_kernel and optimizer.in_one_kernel
    step = TrainOneStep(_FactorLoss(net, grads[0]), optimizer)
    state = optimizer.parameters + optimizer.moments1 + optimizer.moments2
    before = [p.asnumpy().copy() for p in state]
    unused = ms.Tensor(0.0, ms.float32)
    _, applied, _ = step(ms.Tensor(np.inf, ms.float32), unused)
    assert not bool(applied.asnumpy()) and int(optimizer.global_step.asnumpy()[0]) == 0
    for p, value in zip(state, before):
        np.testing.assert_array_equal(p.asnumpy(), value, err_msg=p.name)
    _, applied, _ = step(ms.Tensor(1.0, ms.float32), unused)
    assert bool(applied.asnumpy())
    # torch's first AdamW update: m = 0.1 g, v = 0.001 g^2, w <- w (1 - lr wd) - lr g / (|g| + eps)
    for name, p in zip(SHAPES, optimizer.parameters):
        g, wd = grads[0][name], WD if name.endswith("weight") else 0.0
        expected = init[name] * (1 - LRS[0] * wd) - LRS[0] * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(p.asnumpy(), expected, rtol=1e-6, atol=1e-7, err_msg=name)
