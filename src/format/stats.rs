//! Column chunk statistics as bytes, so that the statistics of a column with its own key can be
//! sealed under that column's key instead of sitting in the footer.

use parquet::data_type::{ByteArray, FixedLenByteArray, Int96};
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::file::statistics::{Statistics, ValueStatistics};

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};

const MAX_VALUE: usize = 1 << 20;

/// `pq` with the metadata of every column chunk for which `f(row group, leaf, chunk)` returns a
/// replacement swapped for it (`None` keeps the chunk as it is): how the writer takes statistics
/// out of the footer and the reader puts them back.
pub(crate) fn map_column_chunks(
    pq: ParquetMetaData,
    mut f: impl FnMut(usize, usize, &ColumnChunkMetaData) -> Result<Option<ColumnChunkMetaData>>,
) -> Result<ParquetMetaData> {
    let pq_err = |e: parquet::errors::ParquetError| Error::Parquet(e.to_string());
    let mut builder = pq.into_builder();
    let mut row_groups = builder.take_row_groups();
    for (r, rg) in row_groups.iter_mut().enumerate() {
        let mut b = rg.clone().into_builder();
        let mut cols = b.take_columns();
        for (leaf, col) in cols.iter_mut().enumerate() {
            if let Some(new) = f(r, leaf, col)? {
                *col = new;
            }
        }
        *rg = b.set_column_metadata(cols).build().map_err(pq_err)?;
    }
    Ok(builder.set_row_groups(row_groups).build())
}

/// Encodes statistics: `u8 type || u8 flags || bytes(min) || bytes(max) || u64 nulls || u64 distinct`.
pub fn encode(s: &Statistics) -> Vec<u8> {
    let tag = match s {
        Statistics::Boolean(_) => 0,
        Statistics::Int32(_) => 1,
        Statistics::Int64(_) => 2,
        Statistics::Int96(_) => 3,
        Statistics::Float(_) => 4,
        Statistics::Double(_) => 5,
        Statistics::ByteArray(_) => 6,
        Statistics::FixedLenByteArray(_) => 7,
    };
    let min = s.min_bytes_opt();
    let max = s.max_bytes_opt();
    let flags = (min.is_some() as u8)
        | (max.is_some() as u8) << 1
        | (s.null_count_opt().is_some() as u8) << 2
        | (s.distinct_count_opt().is_some() as u8) << 3
        | (s.is_min_max_deprecated() as u8) << 4
        | (s.min_is_exact() as u8) << 5
        | (s.max_is_exact() as u8) << 6;
    let mut e = Encoder::new();
    e.u8(tag).u8(flags);
    e.bytes(min.unwrap_or_default()).bytes(max.unwrap_or_default());
    e.u64(s.null_count_opt().unwrap_or(0))
        .u64(s.distinct_count_opt().unwrap_or(0));
    e.finish()
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N]> {
    b.try_into()
        .map_err(|_| Error::malformed("statistics", format!("a value of {} bytes, expected {N}", b.len())))
}

/// Decodes statistics written by [`encode`].
pub fn decode(buf: &[u8]) -> Result<Statistics> {
    let mut d = Decoder::new(buf, "statistics");
    let tag = d.u8()?;
    let flags = d.u8()?;
    let min = d.bytes(MAX_VALUE)?;
    let max = d.bytes(MAX_VALUE)?;
    let nulls = d.u64()?;
    let distinct = d.u64()?;
    d.finish()?;
    let min = (flags & 1 != 0).then_some(min);
    let max = (flags & 2 != 0).then_some(max);
    let nulls = (flags & 4 != 0).then_some(nulls);
    let distinct = (flags & 8 != 0).then_some(distinct);
    let deprecated = flags & 16 != 0;
    fn build<T>(
        min: Option<T>,
        max: Option<T>,
        distinct: Option<u64>,
        nulls: Option<u64>,
        dep: bool,
        flags: u8,
    ) -> ValueStatistics<T> {
        ValueStatistics::new(min, max, distinct, nulls, dep)
            .with_min_is_exact(flags & 32 != 0)
            .with_max_is_exact(flags & 64 != 0)
    }
    macro_rules! typed {
        ($variant:ident, $conv:expr) => {{
            let conv = $conv;
            let min = min.map(conv).transpose()?;
            let max = max.map(conv).transpose()?;
            Statistics::$variant(build(min, max, distinct, nulls, deprecated, flags))
        }};
    }
    Ok(match tag {
        0 => typed!(Boolean, |b: &[u8]| Ok::<_, Error>(fixed::<1>(b)?[0] != 0)),
        1 => typed!(Int32, |b: &[u8]| Ok::<_, Error>(i32::from_le_bytes(fixed(b)?))),
        2 => typed!(Int64, |b: &[u8]| Ok::<_, Error>(i64::from_le_bytes(fixed(b)?))),
        3 => typed!(Int96, |b: &[u8]| {
            let a: [u8; 12] = fixed(b)?;
            let w = |i: usize| u32::from_le_bytes(a[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            Ok::<_, Error>(Int96::from(vec![w(0), w(1), w(2)]))
        }),
        4 => typed!(Float, |b: &[u8]| Ok::<_, Error>(f32::from_le_bytes(fixed(b)?))),
        5 => typed!(Double, |b: &[u8]| Ok::<_, Error>(f64::from_le_bytes(fixed(b)?))),
        6 => typed!(ByteArray, |b: &[u8]| Ok::<_, Error>(ByteArray::from(b.to_vec()))),
        7 => typed!(FixedLenByteArray, |b: &[u8]| Ok::<_, Error>(FixedLenByteArray::from(
            ByteArray::from(b.to_vec())
        ))),
        t => return Err(Error::malformed("statistics", format!("unknown physical type {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases = vec![
            Statistics::int32(Some(-3), Some(9), None, Some(2), false),
            Statistics::int64(Some(i64::MIN), None, Some(5), None, false),
            Statistics::boolean(Some(false), Some(true), None, Some(0), false),
            Statistics::double(Some(-0.5), Some(1e300), None, Some(7), false),
            Statistics::float(None, None, None, Some(1), false),
            Statistics::byte_array(
                Some(ByteArray::from("abc")),
                Some(ByteArray::from("zz")),
                None,
                Some(0),
                false,
            ),
            Statistics::int96(
                Some(Int96::from(vec![1, 2, 3])),
                Some(Int96::from(vec![4, 5, 6])),
                None,
                None,
                false,
            ),
            Statistics::fixed_len_byte_array(
                Some(FixedLenByteArray::from(ByteArray::from(vec![1u8, 2]))),
                Some(FixedLenByteArray::from(ByteArray::from(vec![3u8, 4]))),
                None,
                Some(3),
                false,
            ),
        ];
        for s in cases {
            assert_eq!(decode(&encode(&s)).unwrap(), s);
        }
        assert!(decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
