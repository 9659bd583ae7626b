"""Group-consistent self-training: one positive per consistency group, relabelled by the student.

What it does. Tasks whose rows come in consistency groups with exactly one right row each
(goalstep: a goal with its right step and one wrong step) give a constraint the weak teacher
ignores. Round 0 relabels train_unlabel by the weak teacher's argmax within each group (the
teacher ranks the two steps better than it thresholds them). Each later round trains the
student on the current labels, reads its p(label 1) on train_unlabel back and relabels by its
argmax within each group, mixed with the weak group labels by GROUP_BETA. At prediction time
(GROUP_TEST_FIX=1) every split's group gets exactly one positive: the student's argmax.

Why. The student's features rank pairs much better than its thresholded probability
separates them; argmax within a group removes the threshold (the bias of the weak labels)
and the relabelling rounds replace the teacher's group errors with the student's own better
ranking (self-training with a constraint, so it cannot drift to an unrelated direction).

Tasks whose groups are all singletons have no such structure: the method then trains plain
vanilla (the weak teacher's hard labels) and says so on stderr.

Knobs (environment, or config.json beside this file, which may also use the short lowercase
names without the prefix, e.g. "rounds"; environment wins):
  GROUP_ROUNDS    self-training rounds after round 0 (default 3)
  GROUP_BETA      weight of the weak group labels in each round's targets (default 0.0)
  GROUP_TEST_FIX  1: one positive per group in the predictions (default 1); 0: threshold at 0.5
  HEAD_LR         the student head's learning rate (default: the task's own)
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = {}
if os.path.exists(os.path.join(HERE, "config.json")):
    with open(os.path.join(HERE, "config.json")) as f:
        CONFIG = json.load(f)


PREFIXES = ("GROUP",)


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


ROUNDS = knob("GROUP_ROUNDS", 3)
BETA = knob("GROUP_BETA", 0.0)
TEST_FIX = knob("GROUP_TEST_FIX", 1)
HEAD_LR = knob("HEAD_LR", 0.0)

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="group-consistency-")
split_list = [s for s in splits.split(",") if s]

features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--splits", splits, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy"))
n = weak.shape[0]


def read_groups(split):
    with open(os.path.join(task, f"{split}.jsonl")) as f:
        return [json.loads(line).get("consistency_id") or f"row{i}" for i, line in enumerate(f)]


def group_index(groups):
    index = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return list(index.values())


def group_argmax(p, members):
    """1 for the highest p of each group, 0 for the rest."""
    out = np.zeros(len(p), dtype=np.float32)
    for rows in members:
        out[rows[int(np.argmax(p[rows]))]] = 1.0
    return out


train_groups = group_index(read_groups("train_unlabel"))
grouped = all(len(rows) >= 2 for rows in train_groups)
if not grouped:
    print("group_consistency: no multi-row groups in train_unlabel; training vanilla", file=sys.stderr)

head = None
if HEAD_LR > 0:
    with open(os.path.join(task, "testbed.json")) as f:
        head = dict(json.load(f)["strong"]["head"], learning_rate=HEAD_LR)


def train(targets, predict, out):
    np.save(os.path.join(work, "targets.npy"), np.asarray(targets, dtype=np.float32))
    plan = {"targets": "targets.npy", "loss": "cross_entropy"}
    if head:
        plan["head"] = head
    with open(os.path.join(work, "plan.json"), "w") as f:
        json.dump(plan, f)
    subprocess.run(["aar", "run-method", "--task", task, "--plan", os.path.join(work, "plan.json"),
                    "--seed", seed, "--splits", predict, "--out", out], check=True)
    with open(out) as f:
        return json.load(f)


p_weak = weak[:, 1] / weak.sum(axis=1)
if grouped:
    weak_labels = group_argmax(p_weak, train_groups)
    labels = weak_labels
    for r in range(ROUNDS):
        got = train(labels, "train_unlabel", os.path.join(work, f"round{r}.json"))
        student = np.asarray(got["split_probabilities"]["train_unlabel"], dtype=np.float64)
        labels = BETA * weak_labels + (1.0 - BETA) * group_argmax(student, train_groups)
else:
    labels = (p_weak > 0.5).astype(np.float32)

result = train(labels, splits, os.path.join(work, "final.json"))
if grouped and TEST_FIX:
    for split in split_list:
        members = group_index(read_groups(split))
        if all(len(rows) >= 2 for rows in members):
            p = np.asarray(result["split_probabilities"][split], dtype=np.float64)
            result["splits"][split] = group_argmax(p, members).astype(int).tolist()
with open(output, "w") as f:
    json.dump({"splits": result["splits"]}, f)
