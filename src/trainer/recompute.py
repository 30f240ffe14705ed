"""Activation recomputation (`recompute: True`): trade compute for training memory.

`Cell.recompute()` makes a cell keep only its outputs for the backward pass and
recompute everything inside it there (graph mode), so the activations stored per
coupled block shrink to the block's two outputs, at the cost of about one more
forward pass per step.

Random ops must not be recomputed: MindSpore draws them again in the backward
pass (its `Cell.recompute` note), so the gradient would use another drop-path or
dropout mask than the forward pass (tests/trainer/test_recompute.py shows it). Hence
the rule: a block is recomputed as a whole when it holds no active random op
(DropPath, Dropout with p > 0); otherwise each of its children is, by the same
rule, and the random cells themselves are not. With the recipe's drop_path 0.1
that recomputes the CNN blocks, FCUs, attention and MLP of every stage, and
keeps each drop-path mask from the forward pass.
"""
from mindspore import nn

from ..layers.block import Block
from ..layers.conv_block import ConvBlock
from ..layers.convtransblock import ConvTransBlock
from ..layers.drop_path import DropPath
from ..layers.fcu import FCUDown, FCUUp

BLOCKS = (ConvTransBlock, ConvBlock, Block, FCUDown, FCUUp)  # ConvBlock covers MedConvBlock


def _is_random(cell: nn.Cell) -> bool:
    if isinstance(cell, DropPath):
        return True
    if isinstance(cell, nn.Dropout):
        return not (cell.keep_prob == 1 or cell.p == 0)  # nn.Dropout.construct's test for "identity"
    return False


def recompute_without_randomness(cell: nn.Cell) -> list:
    """Mark `cell` for recomputation if it holds no random op, else its children by the same rule;
    returns the marked cells."""
    if not any(_is_random(c) for _, c in cell.cells_and_names()):
        cell.recompute()
        return [cell]
    return [marked for child in cell.cells() if not _is_random(child)
            for marked in recompute_without_randomness(child)]


def recompute_blocks(net: nn.Cell) -> list:
    """Apply `recompute_without_randomness` to the outermost Conformer blocks of `net` (the coupled
    ConvTransBlocks and the first stage's CNN and transformer blocks); returns the marked cells."""
    if isinstance(net, BLOCKS):
        return recompute_without_randomness(net)
    return [marked for child in net.cells() for marked in recompute_blocks(child)]
