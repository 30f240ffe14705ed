"""conformer-ms: the Conformer classifier on MindSpore.  Importing this package first quiets
MindSpore's log (GLOG_v=3 unless the user set it), which MindSpore reads once, at its import: every
entry point imports `src` before `mindspore` (tests/runtime/test_quiet.py checks it)."""
import os

os.environ.setdefault("GLOG_v", "3")  # 3 = errors only
