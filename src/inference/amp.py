"""Mixed precision as `amp_level` names it, for training and inference alike."""
import mindspore as ms


def mixed_precision(net, amp_level: str):
    """`net` under MindSpore's AMP level O0-O3 (float16; BatchNorm and the loss stay float32).

    O1 maps to MindSpore's "auto" level: its "O1" rewrites the network's Python source,
    which fails on functional ops such as ops.cat and would rebuild the network under
    new parameter names; "auto" casts per operator from the same white list, which is
    also what torch.autocast (the official recipe's AMP) does.
    """
    if amp_level == "O0":
        return net
    return ms.amp.auto_mixed_precision(net, "auto" if amp_level == "O1" else amp_level)
