//! Writes a preset's frozen student features (from the feature cache) and labels as `.npy`
//! files, for offline analysis of configurations: `cargo run --release -p aar-testbed
//! --example dump_features -- PRESET_OR_FILE AAR_HOME WORK_DIR OUT_DIR`.

use std::io::Write;
use std::path::{Path, PathBuf};

use aar_tasks::{LabeledTask, Split};
use aar_testbed::features::{FrozenExtractor, constant_choice, row_text};
use aar_testbed::{Preset, RunOptions};

fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) -> std::io::Result<()> {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let pad = 64 - (10 + header.len() + 1) % 64;
    let mut file = std::fs::File::create(path)?;
    file.write_all(b"\x93NUMPY\x01\x00")?;
    file.write_all(&((header.len() + pad + 1) as u16).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    file.write_all(&vec![b' '; pad])?;
    file.write_all(b"\n")?;
    for v in data {
        file.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    aar_engine::device::best_device();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [preset, home, work, out] = &args[..] else {
        return Err("usage: dump_features PRESET_OR_FILE AAR_HOME WORK_DIR OUT_DIR".into());
    };
    let preset: Preset = if preset.ends_with(".json") {
        serde_json::from_str(&std::fs::read_to_string(preset)?)?
    } else {
        Preset::named(preset)?
    };
    let mut options = RunOptions::new(&preset, Path::new(home));
    options.work_dir = PathBuf::from(work);
    let extractor =
        FrozenExtractor::load(&preset.strong, &options.assets_dir, &options.feature_cache)?;
    for task in &preset.tasks {
        let labeled = LabeledTask::load(&options.tasks_dir().join(&task.name))?;
        let dir = Path::new(out).join(&task.name);
        std::fs::create_dir_all(&dir)?;
        for split in Split::ALL {
            let Some(file) = labeled.split(split) else {
                continue;
            };
            let drop = labeled
                .split(Split::TrainUnlabel)
                .is_some_and(|f| constant_choice(f.examples()));
            let texts: Vec<String> = file.examples().iter().map(|e| row_text(e, drop)).collect();
            let (m, _) = extractor.features(&texts)?;
            let data: Vec<f32> = (0..m.rows()).flat_map(|i| m.row(i).to_vec()).collect();
            write_npy(
                &dir.join(format!("{}.npy", split.name())),
                m.rows(),
                m.cols(),
                &data,
            )?;
            let labels: Vec<f32> = file
                .labels()
                .unwrap_or_default()
                .iter()
                .map(|l| l.index() as f32)
                .collect();
            write_npy(
                &dir.join(format!("{}_labels.npy", split.name())),
                labels.len(),
                1,
                &labels,
            )?;
            std::fs::write(
                dir.join(format!("{}_texts.json", split.name())),
                serde_json::to_string(&texts)?,
            )?;
        }
        println!("{} -> {}", task.name, dir.display());
    }
    Ok(())
}
