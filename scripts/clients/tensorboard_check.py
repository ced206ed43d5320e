#!/usr/bin/env python3
"""TensorBoard's own reader on the event files `training` wrote.

Usage: tensorboard_check.py LOGGING_DIR TRAINER_STATE_JSON
Every numeric log_history value must be in the events under HF's tag (`train/<key>`,
`eval/<key>` for `eval_<key>`) at its step, equal in float32.
"""

import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

logdir, state_path = sys.argv[1], sys.argv[2]
acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
acc.Reload()
tags = set(acc.Tags()["scalars"])
history = json.load(open(state_path))["log_history"]
want = {}
for entry in history:
    for k, v in entry.items():
        if k in ("step", "epoch") or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        tag = "eval/" + k[5:] if k.startswith("eval_") else "train/" + k
        want.setdefault(tag, []).append((entry["step"], float(v)))
if set(want) != tags:
    sys.exit(f"FAIL tags: events have {sorted(tags)}, log_history {sorted(want)}")
for tag, points in want.items():
    got = [(e.step, e.value) for e in acc.Scalars(tag)]
    if len(got) != len(points):
        sys.exit(f"FAIL {tag}: {len(got)} points, log_history has {len(points)}")
    for (gs, gv), (ws, wv) in zip(got, points):
        if gs != ws or abs(gv - wv) > 1e-6 * max(1.0, abs(wv)):
            sys.exit(f"FAIL {tag}: ({gs}, {gv}) vs ({ws}, {wv})")
print(f"tensorboard: {len(tags)} tags, {sum(len(p) for p in want.values())} points match")
