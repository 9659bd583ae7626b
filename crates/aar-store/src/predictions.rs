//! Public predictions stored bit-packed: a 4-byte little-endian row count,
//! then one bit per row, least significant bit first (row `i` is bit `i % 8`
//! of byte `i / 8`). 1,300 predictions take 167 bytes instead of 1,300.

use crate::StoreError;

/// An evaluation on its way into the database: the record and its public
/// predictions (one 0/1 byte per test row), which are stored bit-packed.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationInsert {
    /// The evaluation, under the id the caller chose.
    pub record: crate::EvaluationRecord,
    /// One byte per public test row: 0, or 1 (any non-zero byte is stored as 1).
    pub predictions: Vec<u8>,
}

/// The public predictions of one stored evaluation, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPredictions {
    /// The evaluation's id.
    pub evaluation_id: i64,
    /// When it was stored (Unix ms).
    pub created_at: i64,
    /// One 0/1 byte per public test row, in file order.
    pub predictions: Vec<u8>,
}

/// Packs 0/1 predictions (any non-zero byte counts as 1).
pub fn pack_predictions(predictions: &[u8]) -> Vec<u8> {
    let rows = u32::try_from(predictions.len()).unwrap_or(u32::MAX);
    let mut packed = Vec::with_capacity(4 + predictions.len().div_ceil(8));
    packed.extend_from_slice(&rows.to_le_bytes());
    for chunk in predictions.chunks(8).take(rows.div_ceil(8) as usize) {
        let byte = chunk
            .iter()
            .enumerate()
            .fold(0u8, |byte, (bit, &p)| byte | (u8::from(p != 0) << bit));
        packed.push(byte);
    }
    packed
}

/// Unpacks what [`pack_predictions`] wrote: one 0/1 byte per row.
pub fn unpack_predictions(packed: &[u8]) -> Result<Vec<u8>, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("packed predictions of {} bytes", packed.len()));
    let (count, bits) = packed.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let rows = u32::from_le_bytes(*count) as usize;
    if bits.len() != rows.div_ceil(8) {
        return Err(corrupt());
    }
    Ok((0..rows).map(|i| (bits[i / 8] >> (i % 8)) & 1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_every_length() {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        for rows in 0..=67usize {
            let predictions: Vec<u8> = (0..rows)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 1) as u8
                })
                .collect();
            let packed = pack_predictions(&predictions);
            assert_eq!(packed.len(), 4 + rows.div_ceil(8), "{rows} rows");
            assert_eq!(
                unpack_predictions(&packed).unwrap(),
                predictions,
                "{rows} rows"
            );
        }
        assert_eq!(
            pack_predictions(&[1, 0, 0, 0, 0, 0, 0, 0, 1]),
            [9, 0, 0, 0, 1, 1]
        );
        assert_eq!(pack_predictions(&[0, 7, 0]), [3, 0, 0, 0, 0b010]);
        assert_eq!(pack_predictions(&vec![1; 1300]).len(), 167);
    }

    #[test]
    fn truncated_or_padded_blobs_are_corrupt() {
        let packed = pack_predictions(&[1, 0, 1, 1, 0, 1, 0, 0, 1, 1]);
        assert!(unpack_predictions(&packed[..packed.len() - 1]).is_err());
        let mut padded = packed.clone();
        padded.push(0);
        assert!(unpack_predictions(&padded).is_err());
        assert!(unpack_predictions(&packed[..3]).is_err());
    }
}
