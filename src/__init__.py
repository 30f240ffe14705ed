"""conformer-ms: the Conformer classifier on MindSpore (model, data, training, inference, export).

Importing this package quiets MindSpore's own log before MindSpore is imported: it reads GLOG_v
once, at import, and by default warns about every backend plugin this install cannot load, lines a
user of a script has no use for. Every entry point imports `src` before `mindspore`
(tests/runtime/test_quiet.py checks it); a GLOG_v the user set is kept.
"""
import os

os.environ.setdefault("GLOG_v", "3")  # 3 = errors only
