"""Activation recomputation (`recompute: True`): each coupled block keeps only its outputs for the
backward pass, except that no random op (DropPath, Dropout with p > 0) is recomputed, since MindSpore
would draw its mask again (docs/training.md "Memory levers")."""
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
