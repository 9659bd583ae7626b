//! NumPy `.npy` arrays in and out: the researchers' workbench exchanges features,
//! targets and weights with their own (numpy or torch) code in this format.

use std::io::{BufReader, BufWriter};
use std::path::Path;

use npyz::{DType, WriterBuilder};

use crate::error::{IoContext, Result, TestbedError};

/// Largest array read: 2^28 values (1 GiB of float32) is far beyond any plan's size.
const MAX_VALUES: u64 = 1 << 28;

/// A float array read from an `.npy` file: its shape and its values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape.
    pub shape: Vec<u64>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

fn bad(path: &Path, message: impl Into<String>) -> TestbedError {
    TestbedError::BadInputFile {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Reads a C-order array of float32 or float64 (float64 is narrowed to float32).
pub fn read_f32(path: &Path) -> Result<NpyArray> {
    let file = std::fs::File::open(path).at(path)?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| bad(path, format!("not an .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(
            path,
            "the array is in Fortran order; save it with np.ascontiguousarray",
        ));
    }
    let shape = npy.shape().to_vec();
    if npy.len() > MAX_VALUES {
        return Err(bad(
            path,
            format!("{} values; at most {MAX_VALUES} are read", npy.len()),
        ));
    }
    let dtype = npy.dtype();
    let type_str = match &dtype {
        DType::Plain(type_str) => type_str.to_string(),
        other => format!("{other:?}"),
    };
    let values = match type_str.as_str() {
        "<f4" => npy.into_vec::<f32>().at(path)?,
        "<f8" => npy
            .into_vec::<f64>()
            .at(path)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => {
            return Err(bad(
                path,
                format!("dtype {type_str}: expected float32 or float64 (use .astype('float32'))"),
            ));
        }
    };
    Ok(NpyArray { shape, values })
}

/// Writes a C-order float32 array of `shape`, through a `.partial` file and a rename.
pub fn write_f32(path: &Path, shape: &[u64], values: &[f32]) -> Result<()> {
    let expected: u64 = shape.iter().product();
    if expected != values.len() as u64 {
        return Err(bad(
            path,
            format!(
                "shape {shape:?} holds {expected} values, got {}",
                values.len()
            ),
        ));
    }
    let partial = path.with_extension("npy.partial");
    let file = std::fs::File::create(&partial).at(&partial)?;
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .at(&partial)?;
    writer.extend(values.iter().copied()).at(&partial)?;
    writer.finish().at(&partial)?;
    std::fs::rename(&partial, path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_arrays_round_trip_and_other_dtypes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_f32(&path, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        let back = read_f32(&path).unwrap();
        assert_eq!(back.shape, vec![2, 3]);
        assert_eq!(back.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let err = write_f32(&path, &[2, 2], &[1.0]).unwrap_err().to_string();
        assert!(err.contains("holds 4 values"), "{err}");
        std::fs::write(dir.path().join("b.npy"), b"not numpy").unwrap();
        let err = read_f32(&dir.path().join("b.npy")).unwrap_err().to_string();
        assert!(
            err.contains("b.npy") && err.contains("not an .npy"),
            "{err}"
        );
    }
}
