//! A pair task end to end with the real MiniLM: a synthetic goal_step_wikihow source where
//! the right step names a thing that belongs with the goal's object (a dog's leash) and the
//! wrong ones things of other objects. Read as one text, a bag of words cannot tell them
//! apart (every word appears in right and wrong rows alike, no row shares a word between
//! goal and step); read as a pair, MiniLM can, and its zero-shot cosine prior alone labels
//! the rows.

use aar_testbed::{BaselineTable, Preset, RunOptions, run_baselines};
use serde_json::{Value, json};

use crate::aar_home;

/// An object and a thing that belongs with it: the right step names the second, never the
/// first, so no word is shared between a goal and its right step.
const OBJECTS: [(&str, &str); 40] = [
    ("dog", "leash"),
    ("cat", "litter box"),
    ("horse", "saddle"),
    ("parrot", "birdseed"),
    ("goldfish", "fish flakes"),
    ("rabbit", "carrots"),
    ("guitar", "strings"),
    ("piano", "keys"),
    ("violin", "bow"),
    ("drum kit", "drumsticks"),
    ("bicycle", "chain"),
    ("car", "engine oil"),
    ("motorcycle", "helmet"),
    ("sailboat", "mast"),
    ("laptop", "keyboard"),
    ("phone", "charger"),
    ("printer", "ink cartridge"),
    ("camera", "lens"),
    ("rose bush", "thorns"),
    ("tomato plant", "stakes"),
    ("lawn", "mower"),
    ("roof", "shingles"),
    ("fireplace", "chimney"),
    ("swimming pool", "chlorine"),
    ("aquarium", "filter"),
    ("beehive", "honeycomb"),
    ("chicken", "eggs"),
    ("cow", "milk"),
    ("sheep", "wool"),
    ("tent", "poles"),
    ("bed", "mattress"),
    ("oven", "baking tray"),
    ("kettle", "boiling water"),
    ("bathtub", "drain"),
    ("window", "glass pane"),
    ("shoes", "laces"),
    ("umbrella", "rain"),
    ("coffee machine", "beans"),
    ("garden hose", "nozzle"),
    ("computer", "mouse"),
];

/// `(quoted text, option template)` per example, `{x}` the object and `{y}` what belongs
/// with it: options fill the template with the right `{y}` and three others.
fn source(role: &str, templates: &[(&str, &str)]) -> Value {
    let mut examples = Vec::new();
    for (t, (quoted, option)) in templates.iter().enumerate() {
        for (i, (object, belongs)) in OBJECTS.iter().enumerate() {
            let fill =
                |template: &str, x: &str, y: &str| template.replace("{x}", x).replace("{y}", y);
            let mut scores = serde_json::Map::new();
            scores.insert(fill(option, object, belongs), json!(1));
            for k in 1..=3 {
                let (other, other_belongs) = OBJECTS[(i + 7 * k + t) % OBJECTS.len()];
                scores.insert(fill(option, other, other_belongs), json!(0));
            }
            examples.push(json!({
                "input": format!("The most reasonable {role} of '{}' is ", fill(quoted, object, belongs)),
                "target_scores": scores,
            }));
        }
    }
    json!({ "examples": examples })
}

#[test]
fn a_pair_learner_reads_what_one_pooled_text_cannot() {
    let home = aar_home();
    let work = tempfile::tempdir().unwrap();
    let assets = work.path().join("assets");
    let data = assets.join("data/bigbench/goal_step_wikihow");
    for (dir, value) in [
        (
            "step_inference",
            source(
                "step",
                &[
                    ("Take care of a {x}", "Check the {y} every morning"),
                    ("Clean a {x}", "Wipe the {y} with a damp cloth"),
                    ("Buy a {x}", "Ask the shop about the {y}"),
                ],
            ),
        ),
        (
            "goal_inference",
            source("goal", &[("Photograph the {y} in daylight", "Sell a {x}")]),
        ),
    ] {
        std::fs::create_dir_all(data.join(dir)).unwrap();
        std::fs::write(data.join(dir).join("task.json"), value.to_string()).unwrap();
    }
    std::os::unix::fs::symlink(home.join("assets/models"), assets.join("models")).unwrap();

    // The cpu preset's (held-out) goal-step task at a size the synthetic source fills (120
    // groups), with the preset's bag of words as its weak teacher instead of MiniLM's
    // embedding layer.
    let mut preset = Preset::named("cpu").unwrap();
    let mut task = preset
        .held_out
        .iter()
        .find(|t| t.name == "goalstep")
        .unwrap()
        .clone();
    task.weak = None;
    task.sizes = aar_testbed::preset::Sizes {
        train_label: 60,
        train_unlabel: 100,
        test: 40,
        test_private: 40,
        transfer: 40,
    };
    preset.name = "pairs".into();
    preset.tasks = vec![task.clone()];
    preset.seeds = vec![0, 1, 2];
    assert!(preset.strong_for(&task).reads_pairs());

    let mut options = RunOptions::new(&preset, &home);
    options.assets_dir = assets.clone();
    options.work_dir = work.path().join("pairs");
    options.feature_cache = work.path().join("features");
    run_baselines(&preset, &options).unwrap();
    let table = BaselineTable::read(&options.results_dir(), &preset.seeds).unwrap();
    eprintln!("{table}");
    // 40-row test sets: thresholds leave room for their sampling error (about 0.08).
    for split in ["test", "test_private"] {
        let (weak, ceiling) = table.tasks[0].baseline(split).unwrap();
        assert!(
            weak.mean < 0.65,
            "{split}: a bag of words over goal and step together should be near chance, got {weak:?}"
        );
        assert!(
            ceiling.mean > weak.mean + 0.15,
            "{split}: the pair student on gold labels {ceiling:?} vs the bag of words {weak:?}"
        );
        let zero_shot = table.tasks[0]
            .method("ue_zeroshot")
            .unwrap()
            .split(split)
            .unwrap();
        assert!(
            zero_shot.accuracy.mean > 0.75,
            "{split}: the pair cosine prior with one right row per group, no labels: {:?}",
            zero_shot.accuracy
        );
    }
}
