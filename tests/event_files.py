"""Read TensorBoard event files back, as TensorBoard shows them (tensorboardX writes them but ships no
reader, and the `tensorboard` package is a large install for a test): TFRecord framing with its CRCs
checked, the Event protos tensorboardX ships, and TensorBoard's purge rule (a SessionLog START at step
S drops the points of the files read before it from step S on)."""
import glob
import os
import struct

from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c


def _records(path):
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + 12 <= len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        assert header_crc == masked_crc32c(header), f"{path}: bad length CRC at {offset}"
        body = data[offset + 12:offset + 12 + length]
        (body_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        assert body_crc == masked_crc32c(body), f"{path}: bad record CRC at {offset}"
        yield body
        offset += 16 + length


def read_events(logdir: str) -> dict:
    """{"scalars": {tag: {step: value}}, "images": {tag: [step]}, "tags": every summary tag, "purges": [step],
    "duplicates": [(tag, step)] points logged twice within what TensorBoard keeps}."""
    scalars, images, tags, purges, duplicates = {}, {}, set(), [], []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for body in _records(path):
            event = event_pb2.Event.FromString(body)
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                purges.append(event.step)
                for points in scalars.values():
                    for step in [s for s in points if s >= event.step]:
                        del points[step]
                for steps in images.values():
                    steps[:] = [s for s in steps if s < event.step]
            for value in event.summary.value:
                tags.add(value.tag)
                if value.HasField("simple_value"):
                    points = scalars.setdefault(value.tag, {})
                    if event.step in points:
                        duplicates.append((value.tag, event.step))
                    points[event.step] = value.simple_value
                elif value.HasField("image"):
                    images.setdefault(value.tag, []).append(event.step)
    return {"scalars": scalars, "images": images, "tags": tags, "purges": purges, "duplicates": duplicates}
