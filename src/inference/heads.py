"""The model's outputs by name: the summed logits (the prediction) and each head's.
These names are used everywhere: results dicts, the --results_file JSON, metrics.csv columns
(`summed_top1`, ...), the training log's per-head lines."""

HEADS = ("summed", "conv", "transformer")  # summed logits (the model's prediction), then each head


def heads_of(outputs) -> dict:
    """{"summed": logits, and "conv" / "transformer" when the graph has them} from a graph's outputs.

    export.py's graphs put the summed logits first (alone, or followed by the two
    heads, --export_heads); a graph of the bare network has just the two heads, summed
    here as the official inference does.
    """
    if len(outputs) == 2:
        return {"summed": outputs[0] + outputs[1], "conv": outputs[0], "transformer": outputs[1]}
    if len(outputs) == 3:
        return {"summed": outputs[0], "conv": outputs[1], "transformer": outputs[2]}
    return {"summed": outputs[0]}


def logits_of(outputs):
    """The (summed) logits among a graph's outputs (`heads_of`)."""
    return heads_of(outputs)["summed"]
