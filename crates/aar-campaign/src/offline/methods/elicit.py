"""Unsupervised elicitation mixed with the weak labels, in two rounds.

Round 1 asks the strong model itself: the engine's label-free zero-shot method (the
student's own prior, no weak label used) trains a student and reads back its p(label 1)
on train_unlabel. Round 2 trains on alpha * weak + (1 - alpha) * that elicited label:
alpha 0 trusts the strong model's prior alone, larger alphas let the weak teacher
correct it. Knobs (config.json): alpha.
"""

import json
import os
import subprocess
import tempfile

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "config.json")) as f:
    config = json.load(f)
alpha = float(config.get("alpha", 0.0))

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="elicit-")


def run(recipe, path, predict, out):
    subprocess.run(
        ["aar", "run-method", "--task", task, recipe, path, "--seed", seed,
         "--splits", predict, "--out", out],
        check=True,
    )
    with open(out) as f:
        return json.load(f)


spec = os.path.join(work, "zero_shot.json")
with open(spec, "w") as f:
    json.dump({"method": "zero_shot"}, f)
elicited = run("--spec", spec, "train_unlabel", os.path.join(work, "round1.json"))
p1 = np.asarray(elicited["split_probabilities"]["train_unlabel"], dtype=np.float32)
student = np.eye(2, dtype=np.float32)[(p1 > 0.5).astype(np.int64)]

features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy"))
weak_hard = np.eye(2, dtype=np.float32)[(weak[:, 1] > weak[:, 0]).astype(np.int64)]
np.save(os.path.join(work, "targets.npy"), alpha * weak_hard + (1.0 - alpha) * student)
plan = os.path.join(work, "plan.json")
with open(plan, "w") as f:
    json.dump({"targets": "targets.npy"}, f)
run("--plan", plan, splits, output)
