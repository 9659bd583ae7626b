"""Bootstrapped self-training in two training plans.

Round 1 trains the student on the weak teacher's hard labels and reads back its own
p(label 1) on train_unlabel. Round 2 trains on beta * weak + (1 - beta) * student, the
student's part hard (its argmax) when `hard` is 1: where the strong student disagrees
with the weak teacher, the teacher's label counts less. Knobs (config.json): beta, hard.
"""

import json
import os
import subprocess
import tempfile

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "config.json")) as f:
    config = json.load(f)
beta = float(config.get("beta", 0.5))
hard_student = float(config.get("hard", 1.0)) >= 0.5

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="bootstrap-")


def train(targets, predict, out):
    np.save(os.path.join(work, "targets.npy"), targets.astype(np.float32))
    plan = os.path.join(work, "plan.json")
    with open(plan, "w") as f:
        json.dump({"targets": "targets.npy"}, f)
    subprocess.run(
        ["aar", "run-method", "--task", task, "--plan", plan, "--seed", seed,
         "--splits", predict, "--out", out],
        check=True,
    )
    with open(out) as f:
        return json.load(f)


features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy"))
weak_hard = np.eye(2, dtype=np.float32)[(weak[:, 1] > weak[:, 0]).astype(np.int64)]

first = train(weak_hard, "train_unlabel", os.path.join(work, "round1.json"))
p1 = np.asarray(first["split_probabilities"]["train_unlabel"], dtype=np.float32)
if hard_student:
    student = np.eye(2, dtype=np.float32)[(p1 > 0.5).astype(np.int64)]
else:
    student = np.stack([1.0 - p1, p1], axis=1)
train(beta * weak_hard + (1.0 - beta) * student, splits, output)
