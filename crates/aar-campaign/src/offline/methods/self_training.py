"""Bootstrapped self-training with a label-balance threshold, optionally on logconf.

What it does. Round 1 trains the student on the weak teacher's hard labels (cross-entropy,
or the reference's logconf loss with ST_LOSS=logconf). Each later round reads the student's
own p(label 1) on train_unlabel back (split_probabilities), turns it into hard labels by a
threshold, and trains a fresh student on  beta * weak + (1 - beta) * student  (bootstrapping,
Reed et al. 2015). The threshold is either 0.5 (ST_THRESHOLD=half) or the quantile that keeps
the weak teacher's share of label-1 rows (ST_THRESHOLD=quantile, as logconf does inside a
batch): without it, a student that leans to one label pushes the next round further that way.

Why. The strong student generalises from the weak labels to a smoother decision rule than the
teacher's; training on its own confident predictions replaces rows where the teacher was
noisy. Rounds can drift to a direction unrelated to the task (in a torch emulator of the
head, 3 rounds of pure hard self-training fell below the teacher on sentiment and fever),
hence the weak anchor (beta) and the balanced threshold. Measured defaults: RESULTS.md.

Knobs (environment, or config.json beside this file, which may also use the short lowercase
names without the prefix, e.g. "rounds"; environment wins):
  ST_ROUNDS     rounds after the first (default 1)
  ST_BETA       weight of the weak hard labels in the targets of later rounds (default 0.5)
  ST_SOFT       1: the student's own probabilities instead of its hard labels (default 0)
  ST_THRESHOLD  quantile | half (default quantile)
  ST_AGREE      1: agreement filtering instead of mixing: later rounds train on the weak hard
                labels of the rows where the student agrees with the teacher only (default 0)
  ST_LOSS       ce | logconf: the loss of every round (default ce)
  ST_AUX, ST_WARMUP   logconf's aux_coef and warmup_frac (default 0.5, 0.2)
  HEAD_LR       the student head's learning rate (default: the task's own)
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


PREFIXES = ("ST",)


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


ROUNDS = knob("ST_ROUNDS", 1)
BETA = knob("ST_BETA", 0.5)
SOFT = knob("ST_SOFT", 0)
THRESHOLD = knob("ST_THRESHOLD", "quantile", ("half", "quantile"))
AGREE = knob("ST_AGREE", 0)
LOSS = knob("ST_LOSS", "ce", ("ce", "logconf"))
AUX = knob("ST_AUX", 0.5)
WARMUP = knob("ST_WARMUP", 0.2)
HEAD_LR = knob("HEAD_LR", 0.0)

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="self-training-")

features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--splits", splits, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy"))
weak_hard = (weak[:, 1] > weak[:, 0]).astype(np.float32)

head = None
if HEAD_LR > 0:
    with open(os.path.join(task, "testbed.json")) as f:
        head = dict(json.load(f)["strong"]["head"], learning_rate=HEAD_LR)


def train(targets, predict, out, weights=None):
    np.save(os.path.join(work, "targets.npy"), np.asarray(targets, dtype=np.float32))
    plan = {"targets": "targets.npy", "loss": "cross_entropy"}
    if weights is not None:
        np.save(os.path.join(work, "weights.npy"), np.asarray(weights, dtype=np.float32))
        plan["weights"] = "weights.npy"
    if LOSS == "logconf":
        plan["loss"] = {"logconf": {"aux_coef": AUX, "warmup_frac": WARMUP}}
    if head:
        plan["head"] = head
    with open(os.path.join(work, "plan.json"), "w") as f:
        json.dump(plan, f)
    subprocess.run(["aar", "run-method", "--task", task, "--plan", os.path.join(work, "plan.json"),
                    "--seed", seed, "--splits", predict, "--out", out], check=True)
    with open(out) as f:
        return json.load(f)


targets, weights = weak_hard, None
for r in range(ROUNDS):
    got = train(targets, "train_unlabel", os.path.join(work, f"round{r}.json"), weights)
    student = np.asarray(got["split_probabilities"]["train_unlabel"], dtype=np.float64)
    if SOFT:
        own = student
    elif THRESHOLD == "quantile":
        # Keep the weak teacher's share of label-1 rows.
        cut = np.quantile(student, 1.0 - weak_hard.mean())
        own = (student > cut).astype(np.float64)
    else:
        own = (student > 0.5).astype(np.float64)
    if AGREE:
        targets, weights = weak_hard, (own.round() == weak_hard).astype(np.float32)
    else:
        targets = BETA * weak_hard + (1.0 - BETA) * own

result = train(targets, splits, os.path.join(work, "final.json"), weights)
with open(output, "w") as f:
    json.dump({"splits": result["splits"]}, f)
