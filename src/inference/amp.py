"""Mixed precision as `amp_level` names it, for training and inference alike.  MindSpore is imported
when a network is cast: the config schema takes AMP_LEVELS from here without it."""

AMP_LEVELS = ("O0", "O1", "O2", "O3")  # O0 = float32


def mixed_precision(net, amp_level: str):
    """`net` under MindSpore's AMP level O1-O3 (float16; BatchNorm and the loss stay float32), or as it
    is for O0.

    O1 maps to MindSpore's "auto" level: its "O1" rewrites the network's Python source,
    which fails on functional ops such as ops.cat and would rebuild the network under
    new parameter names; "auto" casts per operator from the same white list, which is
    also what torch.autocast (the official recipe's AMP) does.
    """
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"unknown amp_level {amp_level!r}; known: {', '.join(AMP_LEVELS)}")
    if amp_level == "O0":
        return net
    import mindspore as ms
    from src.kernels import set_plain_kernels
    # AMP inserts its casts per operator after each cell chose its formulation, so an own CPU kernel
    # (float32 only) would be handed float16 buffers: under AMP the cells run MindSpore's ops
    set_plain_kernels(net)
    return ms.amp.auto_mixed_precision(net, "auto" if amp_level == "O1" else amp_level)
