"""A method written as code: vanilla weak-to-strong training through a training plan.

Start here. The method reads the student's frozen features and the weak teacher's soft
labels (`aar features`), decides what the student trains on (targets, per-row weights,
loss, head) with numpy, writes that as a training plan, and lets the engine train the
task's student and predict every split asked (`aar run-method --plan`).

It runs the same way in your workspace (`aar method check .`) and in the verifier's
sandbox, where the task copy holds splits you never saw. The method directory is
read-only there: write scratch files under a temporary directory, as below.

Contract (see the workspace's README-aar.md):
  AAR_INPUT   label-free task copy (train_unlabel.jsonl, weak_labels.json, <split>.jsonl)
  AAR_SEED    training seed
  AAR_SPLITS  splits to predict, comma-separated
  AAR_OUTPUT  where to write {"splits": {name: [0/1, ...]}}
"""

import json
import os
import subprocess
import tempfile

import numpy as np

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="method-")

# The student's features of train_unlabel and of every split, the weak soft labels.
features = os.path.join(work, "features")
subprocess.run(
    ["aar", "features", "--task", task, "--splits", splits, "--out", features],
    check=True,
)
weak = np.load(os.path.join(features, "weak_soft.npy"))  # [n, 2]: p(label 0), p(label 1)
train = np.load(os.path.join(features, "train_unlabel.npy"))  # [n, d]
assert weak.shape == (train.shape[0], 2)

# The method. Vanilla: the weak teacher's hard labels, every row weight 1.
# Change this: soft targets, weights by confidence, relabelled rows, a filter (weight 0)...
hard = (weak[:, 1] > weak[:, 0]).astype(np.int64)
targets = np.eye(2, dtype=np.float32)[hard]
weights = np.ones(len(targets), dtype=np.float32)

np.save(os.path.join(work, "targets.npy"), targets)
np.save(os.path.join(work, "weights.npy"), weights)
plan = {"targets": "targets.npy", "weights": "weights.npy", "loss": "cross_entropy"}
with open(os.path.join(work, "plan.json"), "w") as f:
    json.dump(plan, f)

# The engine trains the task's student on the plan and writes the predictions. Add
# train_unlabel to --splits to get the student's own p(label 1) per row back
# ("split_probabilities") for another round (self-training).
subprocess.run(
    ["aar", "run-method", "--task", task, "--plan", os.path.join(work, "plan.json"),
     "--seed", seed, "--splits", splits, "--out", output],
    check=True,
)
