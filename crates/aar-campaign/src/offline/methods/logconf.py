"""The auxiliary-confidence loss (Burns et al., 2023) through a training plan.

The student trains on the weak teacher's hard labels mixed, as training goes on, with its
own hard predictions, so it can overrule the teacher where it is confident. Knobs
(config.json): aux_coef (final weight of the student's own predictions), warmup_frac.
"""

import json
import os
import subprocess
import tempfile

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
config = {}
if os.path.exists(os.path.join(here, "config.json")):
    with open(os.path.join(here, "config.json")) as f:
        config = json.load(f)
aux_coef = float(config.get("aux_coef", 0.5))
warmup_frac = float(config.get("warmup_frac", 0.2))

task = os.environ["AAR_INPUT"]
seed = os.environ.get("AAR_SEED", "0")
splits = os.environ.get("AAR_SPLITS", "test")
output = os.environ["AAR_OUTPUT"]
work = tempfile.mkdtemp(prefix="logconf-")

features = os.path.join(work, "features")
subprocess.run(["aar", "features", "--task", task, "--out", features], check=True)
weak = np.load(os.path.join(features, "weak_soft.npy"))
hard = (weak[:, 1] > weak[:, 0]).astype(np.int64)
np.save(os.path.join(work, "targets.npy"), np.eye(2, dtype=np.float32)[hard])
loss = {"logconf": {"aux_coef": aux_coef, "warmup_frac": warmup_frac}}
with open(os.path.join(work, "plan.json"), "w") as f:
    json.dump({"targets": "targets.npy", "loss": loss}, f)

subprocess.run(
    ["aar", "run-method", "--task", task, "--plan", os.path.join(work, "plan.json"),
     "--seed", seed, "--splits", splits, "--out", output],
    check=True,
)
