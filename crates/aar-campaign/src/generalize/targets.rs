//! Where the gate runs methods: the served tasks of the preset, its held-out tasks and
//! the tasks under the second model pair, each with its own weak and ceiling baselines
//! computed by the testbed on a derived preset (`<preset>-heldout`, `<preset>-pair2`),
//! whose results, task copies and agent copies live apart from the main preset's.

use std::path::PathBuf;
use std::sync::Arc;

use aar_testbed::{BaselineTable, MethodKind, MethodSpec, Preset, RunOptions, run_baselines};
use serde::{Deserialize, Serialize};

use crate::error::{CampaignError, Result};

/// The split every target is scored on: rows no researcher ever had a score on.
pub const SCORED_SPLIT: &str = "test_private";

/// Which part of the gate a target belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetGroup {
    /// A task researchers were served (an entry's own task or another one).
    Served,
    /// A task of `Preset::held_out`: never served to researchers.
    HeldOut,
    /// A served or held-out task under `Preset::second_pair`.
    SecondPair,
}

impl TargetGroup {
    /// The derived preset's name suffix and the target key's prefix.
    fn suffix(self) -> Option<&'static str> {
        match self {
            TargetGroup::Served => None,
            TargetGroup::HeldOut => Some("heldout"),
            TargetGroup::SecondPair => Some("pair2"),
        }
    }
}

/// One task of one (derived) preset, with its baselines.
#[derive(Debug, Clone)]
pub struct Target {
    /// Unique name: the task for served ones, `heldout.<task>`, `pair2.<task>`.
    pub key: String,
    /// The task.
    pub task: String,
    /// The preset whose testbed built it.
    pub preset: String,
    /// Served, held out or second pair.
    pub group: TargetGroup,
    /// The labeled task directory (scored against; never mounted).
    pub labeled: PathBuf,
    /// The label-free agent copy (the weak teacher of the preset's first seed).
    pub agent_copy: PathBuf,
    /// The preset's baseline table.
    pub table: Arc<BaselineTable>,
    /// W and S means on [`SCORED_SPLIT`].
    pub baselines: Option<(f64, f64)>,
}

impl Target {
    /// Why no method is run here, if none is: PGR needs a ceiling above the weak teacher.
    pub fn skipped(&self) -> Option<String> {
        match self.baselines {
            None => Some(format!("no {SCORED_SPLIT} baselines")),
            Some((w, s)) if s <= w => Some(format!(
                "S {s:.3} <= W {w:.3} on {SCORED_SPLIT}: PGR undefined"
            )),
            Some(_) => None,
        }
    }
}

/// The main preset as the campaign built it.
#[derive(Debug, Clone)]
pub struct MainTestbed {
    /// The preset.
    pub preset: Preset,
    /// Its testbed's directories.
    pub options: RunOptions,
    /// Its baselines, served tasks only.
    pub table: BaselineTable,
}

/// `<preset>-heldout`: the held-out tasks with the preset's learners.
pub fn held_out_preset(preset: &Preset) -> Option<Preset> {
    if preset.held_out.is_empty() {
        return None;
    }
    Some(Preset {
        name: format!("{}-heldout", preset.name),
        description: format!("{}'s held-out tasks (never served).", preset.name),
        tasks: preset.held_out.clone(),
        held_out: Vec::new(),
        second_pair: None,
        ..preset.clone()
    })
}

/// `<preset>-pair2`: the served and held-out tasks that name no learners of their own,
/// under the second model pair.
pub fn second_pair_preset(preset: &Preset, served: &[String]) -> Option<Preset> {
    let pair = preset.second_pair.as_ref()?;
    let tasks: Vec<_> = preset
        .tasks
        .iter()
        .filter(|t| served.contains(&t.name))
        .chain(&preset.held_out)
        .filter(|t| t.weak.is_none() && t.strong.is_none())
        .cloned()
        .collect();
    if tasks.is_empty() {
        return None;
    }
    Some(Preset {
        name: format!("{}-pair2", preset.name),
        description: format!("{}'s tasks under its second model pair.", preset.name),
        tasks,
        weak: pair.weak.clone(),
        strong: pair.strong.clone(),
        held_out: Vec::new(),
        second_pair: None,
        ..preset.clone()
    })
}

/// The main options moved to a derived preset's own directory, running only the
/// baselines the gate needs (weak, ceiling and vanilla).
fn derived_options(main: &RunOptions, derived: &Preset) -> RunOptions {
    RunOptions {
        work_dir: main.work_dir.with_file_name(&derived.name),
        tasks: Vec::new(),
        methods: vec![MethodSpec::new(MethodKind::Vanilla)],
        ..main.clone()
    }
}

/// Every target of the gate, building the derived presets' tasks and baselines first
/// (cached by the testbed like the main preset's). Blocking: run it off the runtime.
pub fn build_targets(main: &MainTestbed) -> Result<Vec<Target>> {
    let served: Vec<String> = main.table.tasks.iter().map(|t| t.task.clone()).collect();
    let mut targets = group_targets(
        TargetGroup::Served,
        &main.preset.name,
        &main.options,
        Arc::new(main.table.clone()),
        &served,
    );
    let derived = [
        (TargetGroup::HeldOut, held_out_preset(&main.preset)),
        (
            TargetGroup::SecondPair,
            second_pair_preset(&main.preset, &served),
        ),
    ];
    for (group, preset) in derived {
        let Some(preset) = preset else { continue };
        let options = derived_options(&main.options, &preset);
        let table = derived_baselines(&preset, &options)?;
        let tasks: Vec<String> = preset.tasks.iter().map(|t| t.name.clone()).collect();
        targets.extend(group_targets(
            group,
            &preset.name,
            &options,
            Arc::new(table),
            &tasks,
        ));
    }
    Ok(targets)
}

fn derived_baselines(preset: &Preset, options: &RunOptions) -> Result<BaselineTable> {
    let mut fetch = aar_assets::FetchOptions::new(&options.assets_dir);
    fetch.only = crate::campaign::preset_assets(preset);
    aar_assets::fetch_assets(&fetch)?;
    println!(
        "generalize: baselines of {} (tasks {}; cached after the first run)",
        preset.name,
        preset
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    run_baselines(preset, options)?;
    if options
        .interrupt
        .as_ref()
        .is_some_and(|i| i.load(std::sync::atomic::Ordering::SeqCst))
    {
        return Err(CampaignError::Interrupted);
    }
    Ok(BaselineTable::read_preset(&options.results_dir(), preset)?)
}

fn group_targets(
    group: TargetGroup,
    preset: &str,
    options: &RunOptions,
    table: Arc<BaselineTable>,
    tasks: &[String],
) -> Vec<Target> {
    tasks
        .iter()
        .map(|task| {
            let baselines = table
                .tasks
                .iter()
                .find(|t| &t.task == task)
                .and_then(|t| t.baseline(SCORED_SPLIT))
                .map(|(w, s)| (w.mean, s.mean));
            Target {
                key: match group.suffix() {
                    Some(prefix) => format!("{prefix}.{task}"),
                    None => task.clone(),
                },
                task: task.clone(),
                preset: preset.to_owned(),
                group,
                labeled: options.tasks_dir().join(task),
                agent_copy: options.agent_dir().join(task),
                table: table.clone(),
                baselines,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aar_testbed::preset::{LearnerSpec, ModelPair};

    /// `tiny` plus a task with learners of its own, a held-out task and a second pair.
    fn preset_with_extras() -> Preset {
        let mut preset = Preset::named("tiny").unwrap();
        preset.name = "cpu".into();
        let mut own = preset.tasks[0].clone();
        own.name = "goalstep".into();
        own.weak = Some(preset.weak.clone());
        preset.tasks.push(own);
        let mut held = preset.tasks[0].clone();
        held.name = "sarcasm2".into();
        preset.held_out = vec![held];
        preset.second_pair = Some(ModelPair {
            weak: preset.weak.clone(),
            strong: LearnerSpec::BagOfWords {
                min_count: 1,
                head: aar_testbed::preset::HeadSpec::STUDENT,
            },
        });
        preset
    }

    #[test]
    fn derived_presets_hold_what_the_gate_runs_and_nothing_served_twice() {
        let preset = preset_with_extras();
        let held = held_out_preset(&preset).unwrap();
        assert_eq!(held.name, "cpu-heldout");
        assert_eq!(held.tasks.len(), 1);
        assert_eq!(held.tasks[0].name, "sarcasm2");
        assert!(held.held_out.is_empty() && held.second_pair.is_none());
        let served = vec!["sentiment".to_owned(), "goalstep".to_owned()];
        let pair = second_pair_preset(&preset, &served).unwrap();
        assert_eq!(pair.name, "cpu-pair2");
        // goalstep names its own learners: the pair does not apply to it.
        let names: Vec<&str> = pair.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["sentiment", "sarcasm2"]);
        assert_eq!(&pair.strong, &preset.second_pair.as_ref().unwrap().strong);
        assert!(held_out_preset(&Preset::named("tiny").unwrap()).is_none());
        assert!(second_pair_preset(&Preset::named("tiny").unwrap(), &served).is_none());
    }

    #[test]
    fn derived_results_live_beside_the_main_presets() {
        let preset = preset_with_extras();
        let main = RunOptions::new(&preset, std::path::Path::new("/x/.aar"));
        let pair = second_pair_preset(&preset, &["sentiment".into()]).unwrap();
        let options = derived_options(&main, &pair);
        assert_eq!(options.work_dir, PathBuf::from("/x/.aar/testbed/cpu-pair2"));
        assert_eq!(options.feature_cache, main.feature_cache);
        assert_eq!(options.methods.len(), 1);
    }
}
