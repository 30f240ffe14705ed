"""The device targets, by the names `device_target` takes and MindSpore's `set_device` knows
(MindSpore-free: the config schema, the launcher preflight and convert.py take them from here)."""

DEVICE_TARGETS = ("GPU", "CPU", "Ascend")
