//! The method families the offline researcher writes as code: Python methods over the
//! training-plan API (`aar features` in, `aar run-method --plan` out), each with the
//! knobs it reads from a `config.json` beside it.

use serde_json::{Map, Value, json};

/// One family: a Python method and the values each of its knobs may take (the first
/// is the default).
#[derive(Debug, PartialEq)]
pub struct Family {
    /// Short name (directory names, claims, findings).
    pub name: &'static str,
    /// What it does, for findings.
    pub summary: &'static str,
    /// The method's source (`method.py`).
    pub script: &'static str,
    /// Knob name and its values, the default first.
    pub knobs: &'static [(&'static str, &'static [f64])],
}

/// Every family, vanilla (the reference point) first. Knob values and defaults follow
/// what was measured on the `cpu` preset (`methods/RESULTS.md`).
pub const FAMILIES: &[Family] = &[
    Family {
        name: "vanilla",
        summary: "vanilla W2S through a training plan (the weak teacher's hard labels)",
        script: aar_oversight::template::TEMPLATE_FILES[1].1,
        knobs: &[],
    },
    Family {
        name: "shaping",
        summary: "the weak labels shaped: confidence weights |2p-1|^k, temperature, the \
                  logconf loss, a slower head",
        script: include_str!("methods/weak_target_shaping.py"),
        knobs: &[
            ("head_lr", &[0.001, 0.0]),
            ("k", &[0.0, 1.0, 2.0]),
            ("loss", &[0.0, 1.0]),
            ("temp", &[0.0, 1.0]),
        ],
    },
    Family {
        name: "self_training",
        summary: "bootstrapped self-training: rounds of beta weak + (1 - beta) the student's \
                  own labels, at a threshold keeping the teacher's label balance",
        script: include_str!("methods/self_training.py"),
        knobs: &[
            ("rounds", &[1.0, 3.0]),
            ("beta", &[0.5, 0.0]),
            ("threshold", &[1.0, 0.0]),
            ("head_lr", &[0.0, 0.001]),
        ],
    },
    Family {
        name: "group",
        summary: "group-consistent self-training: one positive per consistency group, \
                  relabelled by the student's ranking within the group",
        script: include_str!("methods/group_consistency.py"),
        knobs: &[
            ("rounds", &[3.0, 1.0]),
            ("test_fix", &[1.0, 0.0]),
            ("beta", &[0.0, 0.3]),
        ],
    },
    Family {
        name: "knn",
        summary: "each row relabelled by the weak teacher's vote among its nearest \
                  neighbours in the student's feature space",
        script: include_str!("methods/knn_relabel.py"),
        knobs: &[("k", &[30.0, 10.0, 50.0]), ("self", &[0.0, 1.0])],
    },
    Family {
        name: "converged",
        summary: "the student's head trained full batch to its optimum (vanilla's mini-batch \
                  head stops wherever it jittered), on the weak labels or on where they agree \
                  with the strong model's zero-shot labels",
        script: include_str!("methods/converged.py"),
        knobs: &[("alpha", &[1.0, 0.5, 0.7]), ("epochs", &[300.0, 100.0])],
    },
    Family {
        name: "elicit",
        summary: "the strong model's own zero-shot labels (no weak label), mixed with the \
                  weak labels (alpha weak + (1 - alpha) elicited)",
        script: include_str!("methods/elicit.py"),
        knobs: &[("alpha", &[0.0, 0.3, 0.5])],
    },
];

/// The family named `name`.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// The order a direction tries the families in (vanilla, the reference, first for all).
pub fn order_for(direction: &str) -> Vec<&'static Family> {
    let names: &[&str] = match direction {
        "data-selection" | "data-reweighting" => &[
            "shaping",
            "converged",
            "knn",
            "self_training",
            "group",
            "elicit",
        ],
        "unsupervised-elicitation" => &[
            "elicit",
            "converged",
            "group",
            "self_training",
            "knn",
            "shaping",
        ],
        "distillation" => &[
            "converged",
            "self_training",
            "shaping",
            "group",
            "knn",
            "elicit",
        ],
        "noisy-channel" => &[
            "knn",
            "converged",
            "shaping",
            "self_training",
            "group",
            "elicit",
        ],
        _ => &[
            "group",
            "converged",
            "self_training",
            "shaping",
            "elicit",
            "knn",
        ],
    };
    std::iter::once("vanilla")
        .chain(names.iter().copied())
        .filter_map(family)
        .collect()
}

impl Family {
    /// The default configuration: each knob at its first value.
    pub fn default_config(&self) -> Value {
        let config: Map<String, Value> = self
            .knobs
            .iter()
            .map(|(name, values)| ((*name).to_owned(), json!(values[0])))
            .collect();
        Value::Object(config)
    }

    /// `config` if it names only this family's knobs, each at one of its values (missing
    /// knobs take their defaults); `None` otherwise.
    pub fn checked_config(&self, config: &Value) -> Option<Value> {
        let given = config.as_object()?;
        let known = |key: &String| self.knobs.iter().any(|(name, _)| name == key);
        if !given.keys().all(known) {
            return None;
        }
        let mut out = self.default_config();
        for (name, values) in self.knobs {
            if let Some(value) = given.get(*name) {
                let value = value.as_f64()?;
                if !values.contains(&value) {
                    return None;
                }
                // As a float, like the defaults: `1` and `1.0` are one configuration.
                out[*name] = json!(value);
            }
        }
        Some(out)
    }

    /// Where `config` sits on the knob grid: each knob's value index, one digit per knob
    /// in [`Family::knobs`] order (a knob has at most ten values); `None` off the grid.
    /// The short, checkable form a researcher's saved state names configurations by.
    pub fn grid_key(&self, config: &Value) -> Option<String> {
        self.knobs
            .iter()
            .map(|(name, values)| {
                let value = config.get(*name)?.as_f64()?;
                let index = values.iter().position(|v| *v == value)?;
                char::from_digit(u32::try_from(index).ok()?, 10)
            })
            .collect()
    }

    /// The configuration at `key` (a [`Family::grid_key`]); `None` for a key of another
    /// length or naming a value the knob does not have.
    pub fn config_at(&self, key: &str) -> Option<Value> {
        if key.chars().count() != self.knobs.len() {
            return None;
        }
        let config = self
            .knobs
            .iter()
            .zip(key.chars())
            .map(|((name, values), digit)| {
                let value = values.get(digit.to_digit(10)? as usize)?;
                Some(((*name).to_owned(), json!(*value)))
            })
            .collect::<Option<Map<String, Value>>>()?;
        Some(Value::Object(config))
    }

    /// `config` with one knob moved to another of its values (`pick` chooses among
    /// indices); `None` for a family without knobs.
    pub fn vary(&self, config: &Value, mut pick: impl FnMut(usize) -> usize) -> Option<Value> {
        if self.knobs.is_empty() {
            return None;
        }
        let (name, values) = self.knobs[pick(self.knobs.len())];
        let current = config[name].as_f64();
        let others: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| Some(*v) != current)
            .collect();
        let mut out = config.clone();
        out[name] = json!(*others.get(pick(others.len().max(1)))?);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_direction_starts_with_vanilla_and_tries_every_family_once() {
        for direction in aar_agents::directions::DIRECTIONS {
            let order = order_for(direction.name);
            assert_eq!(order[0].name, "vanilla");
            let mut names: Vec<_> = order.iter().map(|f| f.name).collect();
            names.sort_unstable();
            let mut all: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
            all.sort_unstable();
            assert_eq!(names, all, "{}", direction.name);
        }
    }

    #[test]
    fn a_variation_changes_exactly_one_knob_within_its_values() {
        let family = family("knn").unwrap();
        let base = family.default_config();
        assert_eq!(base, json!({"k": 30.0, "self": 0.0}));
        for seed in 0..6 {
            let mut n = seed;
            let varied = family
                .vary(&base, |len| {
                    n += 1;
                    n % len
                })
                .unwrap();
            let changed: Vec<_> = family
                .knobs
                .iter()
                .filter(|(k, _)| varied[*k] != base[*k])
                .collect();
            assert_eq!(changed.len(), 1, "{varied}");
            let (k, values) = changed[0];
            assert!(values.contains(&varied[*k].as_f64().unwrap()));
        }
        assert!(
            super::family("vanilla")
                .unwrap()
                .vary(&json!({}), |_| 0)
                .is_none()
        );
    }

    #[test]
    fn grid_keys_name_every_configuration_and_nothing_else() {
        for family in FAMILIES {
            let default = family.default_config();
            let key = family.grid_key(&default).unwrap();
            assert_eq!(key, "0".repeat(family.knobs.len()), "{}", family.name);
            assert_eq!(family.config_at(&key), Some(default), "{}", family.name);
        }
        let knn = family("knn").unwrap();
        let varied = json!({"k": 50.0, "self": 1.0});
        assert_eq!(knn.grid_key(&varied).as_deref(), Some("21"));
        assert_eq!(knn.config_at("21"), Some(varied));
        assert_eq!(knn.grid_key(&json!({"k": 31.0, "self": 0.0})), None);
        for bad in ["", "2", "211", "31", "x1", "٣1"] {
            assert_eq!(knn.config_at(bad), None, "{bad}");
        }
        assert_eq!(
            knn.checked_config(&json!({"k": 10})),
            Some(json!({"k": 10.0, "self": 0.0})),
            "an integer is the same value as its float"
        );
    }

    #[test]
    fn every_script_reads_its_config_and_follows_the_contract() {
        for family in FAMILIES {
            for needle in ["AAR_INPUT", "AAR_OUTPUT", "AAR_SEED", "run-method"] {
                assert!(family.script.contains(needle), "{}: {needle}", family.name);
            }
            if !family.knobs.is_empty() {
                assert!(family.script.contains("config.json"), "{}", family.name);
            }
        }
    }
}
