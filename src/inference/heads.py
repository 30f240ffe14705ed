"""The model's outputs by name: the summed logits (the prediction) and each head's."""

HEADS = ("sum", "conv", "trans")  # summed logits (the model's prediction), then each head


def heads_of(outputs) -> dict:
    """{"sum": logits, and "conv" / "trans" when the graph has them} from a graph's outputs.

    export.py's graphs put the summed logits first (alone, or followed by the two
    heads, --export_heads); a graph of the bare network has just the two heads, summed
    here as the official inference does.
    """
    if len(outputs) == 2:
        return {"sum": outputs[0] + outputs[1], "conv": outputs[0], "trans": outputs[1]}
    if len(outputs) == 3:
        return {"sum": outputs[0], "conv": outputs[1], "trans": outputs[2]}
    return {"sum": outputs[0]}


def logits_of(outputs):
    """The (summed) logits among a graph's outputs (`heads_of`)."""
    return heads_of(outputs)["sum"]
