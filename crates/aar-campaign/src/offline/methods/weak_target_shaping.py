"""One-round weak-target shaping: confidence weights, sharpened or soft targets, logconf.

What it does. One training plan built from the weak teacher's soft labels p = p(label 1):
  - targets: hard (the teacher's argmax) when SHAPE_TEMP=0, otherwise the teacher's
    probabilities sharpened (SHAPE_TEMP < 1) or softened (> 1) by a temperature;
  - weights: |2p - 1| ** SHAPE_K (0: every row 1), rows the teacher is unsure of count less;
  - loss: cross_entropy, or the reference's logconf (SHAPE_LOSS=logconf), which mixes in the
    student's own hard predictions, thresholded to keep the targets' label share.
  - head: the task's student head, with its learning rate replaced by HEAD_LR if set.

Why. These are the cheapest departures from vanilla: they decide how much of the teacher's
uncertainty reaches the student without a second round. logconf lets the student overrule
the teacher where it is confident (Burns et al. 2023). The task's head trains a strongly
L2-regularised logistic regression with Adam at lr 0.01 for 50 epochs of mini-batches, whose
final weights still jitter from step to step; a smaller HEAD_LR averages that out.

Knobs (environment, or config.json beside this file, which may also use the short lowercase
names without the prefix, e.g. "rounds"; environment wins):
  SHAPE_K      confidence exponent of the weights (default 0: unweighted)
  SHAPE_TEMP   0: hard targets (default); otherwise the temperature of the soft targets
  SHAPE_LOSS   ce | logconf (default ce)
  SHAPE_AUX, SHAPE_WARMUP   logconf's aux_coef and warmup_frac (default 0.5, 0.2)
  HEAD_LR      the student head's learning rate (default: the task's own)
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


PREFIXES = ("SHAPE",)


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


K = knob("SHAPE_K", 0.0)
TEMP = knob("SHAPE_TEMP", 0.0)
LOSS = knob("SHAPE_LOSS", "ce", ("ce", "logconf"))
AUX = knob("SHAPE_AUX", 0.5)
WARMUP = knob("SHAPE_WARMUP", 0.2)
HEAD_LR = knob("HEAD_LR", 0.0)

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="weak-shaping-")

features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--splits", splits, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy")).astype(np.float64)
weak = weak / weak.sum(axis=1, keepdims=True)
p = weak[:, 1]

if TEMP > 0:
    logits = np.log(np.clip(weak, 1e-6, 1.0)) / TEMP
    targets = np.exp(logits - logits.max(axis=1, keepdims=True))
    targets /= targets.sum(axis=1, keepdims=True)
else:
    targets = np.eye(2)[(p > 0.5).astype(int)]
weights = np.abs(2 * p - 1) ** K if K > 0 else np.ones(len(p))
weights = np.maximum(weights, 1e-3)  # no row left out entirely

np.save(os.path.join(work, "targets.npy"), targets.astype(np.float32))
np.save(os.path.join(work, "weights.npy"), weights.astype(np.float32))
plan = {"targets": "targets.npy", "weights": "weights.npy", "loss": "cross_entropy"}
if LOSS == "logconf":
    plan["loss"] = {"logconf": {"aux_coef": AUX, "warmup_frac": WARMUP}}
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
