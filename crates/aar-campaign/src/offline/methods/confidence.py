"""Confidence-weighted weak labels, through a training plan.

The weak teacher's hard labels, each row weighted by the teacher's confidence
|p(1) - p(0)| ** power; rows whose confidence is under `floor` are left out (weight 0).
A row the teacher is unsure of is more likely wrong, and a wrong row teaches the student
the teacher's mistake. Knobs (config.json beside this file): power, floor.
"""

import json
import os
import subprocess
import tempfile

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "config.json")) as f:
    config = json.load(f)
power = float(config.get("power", 1.0))
floor = float(config.get("floor", 0.0))

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="confidence-")

features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy"))

confidence = np.abs(weak[:, 1] - weak[:, 0])
weights = confidence**power
weights[confidence < floor] = 0.0
if weights.sum() <= 0:
    weights[:] = 1.0  # nothing left: fall back to vanilla rather than fail
hard = (weak[:, 1] > weak[:, 0]).astype(np.int64)
np.save(os.path.join(work, "targets.npy"), np.eye(2, dtype=np.float32)[hard])
np.save(os.path.join(work, "weights.npy"), weights.astype(np.float32))
with open(os.path.join(work, "plan.json"), "w") as f:
    json.dump({"targets": "targets.npy", "weights": "weights.npy"}, f)

subprocess.run(
    ["aar", "run-method", "--task", task, "--plan", os.path.join(work, "plan.json"),
     "--seed", seed, "--splits", splits, "--out", output],
    check=True,
)
