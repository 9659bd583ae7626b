"""Neighbourhood relabelling: each row's target is the weak teacher's majority vote among its
k nearest neighbours in the student's own feature space.

What it does. The student's frozen features of train_unlabel are standardised (as the head
does) and L2-normalised; for every row the k most cosine-similar other rows vote with the weak
teacher's hard labels, and the row is relabelled by the vote (KNN_SOFT=1: the vote share as a
soft target). Optionally (KNN_SELF=1) the row's own weak label counts as one more vote. One
training plan on the relabelled rows, the task's head.

Why. The weak teacher's errors come from its own (bag-of-words or embedding-layer) view of
the text, so among texts the student sees as alike they are closer to independent than its
right answers are: a vote over the student's neighbours averages them out before training,
where vanilla leaves the head to average them inside a heavily regularised linear fit. It
is label propagation with the strong model's geometry (a classic noisy-label fix).

Knobs (environment, or config.json beside this file, which may also use the short lowercase
names without the prefix, e.g. "rounds"; environment wins):
  KNN_K      neighbours (default 30)
  KNN_SOFT   1: vote share as soft targets; 0: majority vote as hard targets (default 0)
  KNN_SELF   1: the row's own weak label votes too (default 0)
  HEAD_LR    the student head's learning rate (default: the task's own)
"""

import json
import os
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = {}
if os.path.exists(os.path.join(HERE, "config.json")):
    with open(os.path.join(HERE, "config.json")) as f:
        CONFIG = json.load(f)


PREFIXES = ("KNN",)


def knob(name, default, choices=None):
    """A knob from the environment (NAME), else config.json (NAME, or its short lowercase
    name without the family prefix, e.g. "rounds"), else the default. Numbers from a config
    may stand for string choices by their index in `choices`."""
    short = name.split("_", 1)[1].lower() if name.split("_", 1)[0] in PREFIXES else name.lower()
    value = os.environ.get(name, CONFIG.get(name, CONFIG.get(short, default)))
    if choices and not isinstance(value, str):
        return choices[int(value)]
    if isinstance(default, int):
        return int(float(value))
    return type(default)(value)


K = knob("KNN_K", 30)
SOFT = knob("KNN_SOFT", 0)
SELF = knob("KNN_SELF", 0)
HEAD_LR = knob("HEAD_LR", 0.0)

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="knn-relabel-")

features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--splits", splits, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy")).astype(np.float64)
x = np.load(os.path.join(features, "train_unlabel.npy")).astype(np.float64)
hard = (weak[:, 1] > weak[:, 0]).astype(np.float64)

x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
k = max(1, min(K, len(x) - 1))
votes = np.empty(len(x))
for start in range(0, len(x), 1024):  # blocks keep the similarity matrix small
    sim = x[start:start + 1024] @ x.T
    for i in range(sim.shape[0]):
        sim[i, start + i] = -np.inf
    nearest = np.argpartition(-sim, k, axis=1)[:, :k]
    votes[start:start + 1024] = hard[nearest].sum(axis=1)
share = (votes + hard * SELF) / (k + SELF)
p1 = share if SOFT else np.where(share == 0.5, hard, (share > 0.5).astype(np.float64))

np.save(os.path.join(work, "targets.npy"), np.stack([1 - p1, p1], axis=1).astype(np.float32))
plan = {"targets": "targets.npy", "loss": "cross_entropy"}
if HEAD_LR > 0:
    with open(os.path.join(task, "testbed.json")) as f:
        plan["head"] = dict(json.load(f)["strong"]["head"], learning_rate=HEAD_LR)
with open(os.path.join(work, "plan.json"), "w") as f:
    json.dump(plan, f)
raw = os.path.join(work, "predictions.json")
subprocess.run(["aar", "run-method", "--task", task, "--plan", os.path.join(work, "plan.json"),
                "--seed", seed, "--splits", splits, "--out", raw], check=True)
with open(raw) as f:
    result = json.load(f)
with open(output, "w") as f:
    json.dump({"splits": result["splits"]}, f)
