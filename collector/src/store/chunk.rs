//! Pure codecs for stored samples; no I/O.
//!
//! - A **staged batch**: the (series, value) pairs of one batch, cheap to write, ~9 bytes
//!   per sample. It lives only until its hour is compacted.
//! - A **block**: every series of one host over one hour. A host's series are sampled
//!   together, so the block stores the union of their timestamps once (pco, delta-coded:
//!   jittered 10 s ticks cost ~1 byte each, shared by all series) and per series a bitmap
//!   of the timestamps it has (only when it lacks some) and its values as one column.
//! - A **rollup block**: per series of one host-hour, 5-minute aggregates (f32, or exact
//!   when the series held one value all hour).
//!
//! A column of values is stored as one value when all are equal (sizes, error counters that
//! stay put), else pco-compressed. (Coding whole-number columns as pco integers was tried:
//! on the benchmark's counters and byte gauges it saved nothing over pco's own float modes.)
//!
//! Every format starts with a version byte, so a later format can be read beside this one.

use super::SeriesId;
use super::query::{Agg, BUCKETS_PER_HOUR};
use aftercare_shared::model::UnixMillis;
use pco::ChunkConfig;
use pco::standalone::{simple_compress, simple_decompress};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the data ends early")]
    Truncated,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("unknown column kind {0}")]
    ColumnTag(u8),
    #[error("compressed column: {0}")]
    Pco(String),
    #[error("{0}")]
    Invalid(&'static str),
}

type Result<T> = std::result::Result<T, CodecError>;

const STAGED_V1: u8 = 1;
const BLOCK_V1: u8 = 1;
const ROLLUP_V1: u8 = 1;

const COL_CONST: u8 = 1;
const COL_PCO: u8 = 2;

/// pco's default level; 0–12, higher is smaller and slower.
const PCO_LEVEL: usize = 8;

// ---------------------------------------------------------------- varints and a reader

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8> {
        let (&b, rest) = self.data.split_first().ok_or(CodecError::Truncated)?;
        self.data = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(CodecError::Invalid("varint longer than 64 bits"))
    }

    /// A count that must be plausible for the bytes left, so damaged data cannot make us
    /// allocate gigabytes.
    fn count(&mut self, max: usize) -> Result<usize> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(CodecError::Invalid("count larger than the data can hold"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() {
            return Err(CodecError::Truncated);
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }

    fn f64(&mut self) -> Result<f64> {
        let b = self.bytes(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn version(&mut self, want: u8) -> Result<()> {
        match self.u8()? {
            v if v == want => Ok(()),
            v => Err(CodecError::Version(v)),
        }
    }

    fn end(&self) -> Result<()> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Invalid("trailing bytes"))
        }
    }
}

// ---------------------------------------------------------------- staged batches

/// Append the staged record of one batch. Series ids are delta-coded: a host's series get
/// consecutive ids in the order its agent sends them, so most deltas take one byte.
pub fn encode_staged(pairs: &[(SeriesId, f64)], out: &mut Vec<u8>) {
    out.reserve(2 + pairs.len() * 10);
    out.push(STAGED_V1);
    put_varint(out, pairs.len() as u64);
    let mut prev = 0;
    for &(id, v) in pairs {
        put_varint(out, zigzag(id.wrapping_sub(prev)));
        out.extend_from_slice(&v.to_le_bytes());
        prev = id;
    }
}

/// Call `f` with each (series, value) of a staged record; returns how many.
pub fn decode_staged(data: &[u8], mut f: impl FnMut(SeriesId, f64)) -> Result<usize> {
    let mut r = Reader { data };
    r.version(STAGED_V1)?;
    let n = r.count(data.len() / 9)?;
    let mut prev: i64 = 0;
    for _ in 0..n {
        prev = prev.wrapping_add(unzigzag(r.varint()?));
        f(prev, r.f64()?);
    }
    r.end()?;
    Ok(n)
}

// ---------------------------------------------------------------- columns

fn pco_err(e: pco::errors::PcoError) -> CodecError {
    CodecError::Pco(e.to_string())
}

fn put_pco<T: pco::data_types::Number>(out: &mut Vec<u8>, vals: &[T]) -> Result<()> {
    let config = ChunkConfig::default().with_compression_level(PCO_LEVEL);
    let bytes = simple_compress(vals, &config).map_err(pco_err)?;
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
    Ok(())
}

fn get_pco<T: pco::data_types::Number>(r: &mut Reader, n: usize) -> Result<Vec<T>> {
    let len = r.count(r.data.len())?;
    let vals: Vec<T> = simple_decompress(r.bytes(len)?).map_err(pco_err)?;
    if vals.len() != n {
        return Err(CodecError::Invalid("column length differs from its count"));
    }
    Ok(vals)
}

/// A column of `vals` (non-empty; its length is known to the reader).
fn put_values(out: &mut Vec<u8>, vals: &[f64]) -> Result<()> {
    let first = vals[0].to_bits();
    if vals.iter().all(|v| v.to_bits() == first) {
        out.push(COL_CONST);
        out.extend_from_slice(&vals[0].to_le_bytes());
    } else {
        out.push(COL_PCO);
        put_pco(out, vals)?;
    }
    Ok(())
}

/// A column not yet decoded, so that readers pay only for the series they want.
#[derive(Debug, Clone, Copy)]
enum Column<'a> {
    Const(f64),
    Pco(&'a [u8]),
}

impl<'a> Column<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Column<'a>> {
        match r.u8()? {
            COL_CONST => Ok(Column::Const(r.f64()?)),
            COL_PCO => {
                let len = r.count(r.data.len())?;
                Ok(Column::Pco(r.bytes(len)?))
            }
            t => Err(CodecError::ColumnTag(t)),
        }
    }

    fn values(&self, n: usize) -> Result<Vec<f64>> {
        let vals = match *self {
            Column::Const(v) => vec![v; n],
            Column::Pco(b) => simple_decompress::<f64>(b).map_err(pco_err)?,
        };
        if vals.len() != n {
            return Err(CodecError::Invalid("column length differs from its count"));
        }
        Ok(vals)
    }
}

fn get_values(r: &mut Reader, n: usize) -> Result<Vec<f64>> {
    Column::read(r)?.values(n)
}

// ---------------------------------------------------------------- blocks

/// The points of one series in a block: sorted by time, one per timestamp, at least one.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSeries {
    pub id: SeriesId,
    pub points: Vec<(UnixMillis, f64)>,
}

/// Encode one host-hour. `series` must be sorted by id (unique) and each series' points
/// sorted by time, unique and non-empty; anything else is refused.
pub fn encode_block(series: &[BlockSeries]) -> Result<Vec<u8>> {
    for w in series.windows(2) {
        if w[0].id >= w[1].id {
            return Err(CodecError::Invalid("block series not sorted by id"));
        }
    }
    for s in series {
        if s.points.is_empty() {
            return Err(CodecError::Invalid("block series without points"));
        }
        if s.points.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(CodecError::Invalid("block points not sorted by time"));
        }
    }
    let ts = timestamp_union(series);
    let mut out = Vec::with_capacity(64 + ts.len() + series.len() * (16 + ts.len()));
    out.push(BLOCK_V1);
    put_varint(&mut out, ts.len() as u64);
    if !ts.is_empty() {
        put_pco(&mut out, &ts)?;
    }
    put_varint(&mut out, series.len() as u64);
    let mut prev = 0;
    let mut vals = Vec::with_capacity(ts.len());
    for s in series {
        put_varint(&mut out, zigzag(s.id.wrapping_sub(prev)));
        prev = s.id;
        if s.points.len() == ts.len() {
            out.push(0);
        } else {
            out.push(1);
            let mut bits = vec![0u8; ts.len().div_ceil(8)];
            let mut j = 0;
            for (i, &t) in ts.iter().enumerate() {
                if j < s.points.len() && s.points[j].0 == t {
                    bits[i / 8] |= 1 << (i % 8);
                    j += 1;
                }
            }
            out.extend_from_slice(&bits);
        }
        vals.clear();
        vals.extend(s.points.iter().map(|p| p.1));
        put_values(&mut out, &vals)?;
    }
    Ok(out)
}

/// Sorted union of the series' timestamps. Usually every series has the same ones, which is
/// checked in one pass before merging anything.
fn timestamp_union(series: &[BlockSeries]) -> Vec<UnixMillis> {
    let Some(longest) = series.iter().max_by_key(|s| s.points.len()) else {
        return Vec::new();
    };
    let mut ts: Vec<UnixMillis> = longest.points.iter().map(|p| p.0).collect();
    let mut merged = Vec::new();
    for s in series {
        let same = s.points.len() == ts.len() && s.points.iter().zip(&ts).all(|(p, t)| p.0 == *t);
        if same {
            continue;
        }
        merged.clear();
        let (mut i, mut j) = (0, 0);
        while i < ts.len() || j < s.points.len() {
            let a = ts.get(i).copied().unwrap_or(i64::MAX);
            let b = s.points.get(j).map_or(i64::MAX, |p| p.0);
            merged.push(a.min(b));
            i += usize::from(a <= b);
            j += usize::from(b <= a);
        }
        std::mem::swap(&mut ts, &mut merged);
    }
    ts
}

/// One series' entry in a parsed block, values still compressed.
#[derive(Debug, Clone, Copy)]
pub struct BlockEntry<'a> {
    pub id: SeriesId,
    present: Option<&'a [u8]>,
    n: usize,
    col: Column<'a>,
}

/// A parsed block: timestamps decoded, values decoded on demand per series.
#[derive(Debug)]
pub struct BlockReader<'a> {
    ts: Vec<UnixMillis>,
    entries: Vec<BlockEntry<'a>>,
}

impl<'a> BlockReader<'a> {
    pub fn parse(data: &'a [u8]) -> Result<BlockReader<'a>> {
        let mut r = Reader { data };
        r.version(BLOCK_V1)?;
        // Every timestamp costs at least a bit of some series' bitmap or a value.
        let n_ts = r.count(data.len() * 8)?;
        let ts: Vec<UnixMillis> = if n_ts == 0 {
            Vec::new()
        } else {
            get_pco(&mut r, n_ts)?
        };
        if ts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CodecError::Invalid("block timestamps not increasing"));
        }
        let n_series = r.count(r.data.len())?;
        let mut entries = Vec::with_capacity(n_series);
        let mut prev: i64 = 0;
        for _ in 0..n_series {
            prev = prev.wrapping_add(unzigzag(r.varint()?));
            let (present, n) = match r.u8()? {
                0 => (None, n_ts),
                1 => {
                    let bits = r.bytes(n_ts.div_ceil(8))?;
                    if n_ts % 8 != 0 && bits[bits.len() - 1] >> (n_ts % 8) != 0 {
                        return Err(CodecError::Invalid("presence bits past the timestamps"));
                    }
                    let n = bits.iter().map(|b| b.count_ones() as usize).sum();
                    (Some(bits), n)
                }
                _ => return Err(CodecError::Invalid("unknown presence flag")),
            };
            let col = Column::read(&mut r)?;
            entries.push(BlockEntry {
                id: prev,
                present,
                n,
                col,
            });
        }
        r.end()?;
        Ok(BlockReader { ts, entries })
    }

    pub fn timestamps(&self) -> &[UnixMillis] {
        &self.ts
    }

    pub fn entries(&self) -> &[BlockEntry<'a>] {
        &self.entries
    }

    /// Decode one series' points.
    pub fn points(&self, e: &BlockEntry) -> Result<Vec<(UnixMillis, f64)>> {
        let vals = e.col.values(e.n)?;
        Ok(match e.present {
            None => self.ts.iter().copied().zip(vals).collect(),
            Some(bits) => self
                .ts
                .iter()
                .enumerate()
                .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
                .map(|(_, &t)| t)
                .zip(vals)
                .collect(),
        })
    }

    /// Decode every series.
    pub fn decode_all(&self) -> Result<Vec<BlockSeries>> {
        self.entries
            .iter()
            .map(|e| {
                Ok(BlockSeries {
                    id: e.id,
                    points: self.points(e)?,
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------- rollups

/// The 5-minute aggregates of one series over one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSeries {
    pub id: SeriesId,
    pub buckets: [Option<Agg>; BUCKETS_PER_HOUR],
}

/// Is this series steady over the hour: every bucket min = max = the same value, with a
/// sum that `value * count` gives back exactly? Such series (sizes, idle error counters,
/// boot time) are stored as one exact value.
fn steady_value(s: &RollupSeries) -> Option<f64> {
    let mut aggs = s.buckets.iter().flatten();
    let v = aggs.next()?.min;
    s.buckets
        .iter()
        .flatten()
        .all(|a| {
            a.min.to_bits() == v.to_bits()
                && a.max.to_bits() == v.to_bits()
                && a.sum.to_bits() == (v * a.count as f64).to_bits()
        })
        .then_some(v)
}

/// Encode the rollups of one host-hour, series sorted by id.
///
/// Layout: the series ids; the bucket counts of every series (0 for an empty bucket); a
/// bitmap of the steady series and their exact values; then min, max and sum of the other
/// series' non-empty buckets as f32 columns. Rollups feed charts, reports and forecasts, for
/// which f32's 7 significant digits are plenty, and they halve the size: noisy values (CPU,
/// counter rates) cost bytes per mantissa bit. Columns run across all series, so pco's
/// per-column overhead is paid a few times per block rather than per series.
pub fn encode_rollups(series: &[RollupSeries]) -> Result<Vec<u8>> {
    if series.windows(2).any(|w| w[0].id >= w[1].id) {
        return Err(CodecError::Invalid("rollup series not sorted by id"));
    }
    let mut out = vec![ROLLUP_V1];
    put_varint(&mut out, series.len() as u64);
    let mut prev = 0;
    for s in series {
        put_varint(&mut out, zigzag(s.id.wrapping_sub(prev)));
        prev = s.id;
    }
    if series.is_empty() {
        return Ok(out);
    }
    let counts: Vec<f64> = series
        .iter()
        .flat_map(|s| s.buckets.iter().map(|b| b.map_or(0.0, |a| a.count as f64)))
        .collect();
    put_values(&mut out, &counts)?;
    let mut bits = vec![0u8; series.len().div_ceil(8)];
    let mut steady = Vec::new();
    let mut varying: Vec<&Agg> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        match steady_value(s) {
            Some(v) => {
                bits[i / 8] |= 1 << (i % 8);
                steady.push(v);
            }
            None => varying.extend(s.buckets.iter().flatten()),
        }
    }
    out.extend_from_slice(&bits);
    if !steady.is_empty() {
        put_values(&mut out, &steady)?;
    }
    if !varying.is_empty() {
        for field in [|a: &Agg| a.min, |a: &Agg| a.max, |a: &Agg| a.sum] {
            let col: Vec<f32> = varying.iter().map(|a| field(a) as f32).collect();
            put_f32s(&mut out, &col)?;
        }
    }
    Ok(out)
}

/// A column of f32 (non-empty): one value when all are equal, else pco.
fn put_f32s(out: &mut Vec<u8>, vals: &[f32]) -> Result<()> {
    let first = vals[0].to_bits();
    if vals.iter().all(|v| v.to_bits() == first) {
        out.push(COL_CONST);
        out.extend_from_slice(&vals[0].to_le_bytes());
        Ok(())
    } else {
        out.push(COL_PCO);
        put_pco(out, vals)
    }
}

fn get_f32s(r: &mut Reader, n: usize) -> Result<Vec<f32>> {
    match r.u8()? {
        COL_CONST => {
            let b = r.bytes(4)?;
            Ok(vec![f32::from_le_bytes(b.try_into().expect("4 bytes")); n])
        }
        COL_PCO => get_pco(r, n),
        t => Err(CodecError::ColumnTag(t)),
    }
}

pub fn decode_rollups(data: &[u8]) -> Result<Vec<RollupSeries>> {
    let mut r = Reader { data };
    r.version(ROLLUP_V1)?;
    let n = r.count(data.len())?;
    let mut out = Vec::with_capacity(n);
    let mut prev: i64 = 0;
    for _ in 0..n {
        prev = prev.wrapping_add(unzigzag(r.varint()?));
        out.push(RollupSeries {
            id: prev,
            buckets: [None; BUCKETS_PER_HOUR],
        });
    }
    if n == 0 {
        r.end()?;
        return Ok(out);
    }
    let counts = get_values(&mut r, n * BUCKETS_PER_HOUR)?;
    if counts.iter().any(|&c| !(c >= 0.0 && c.fract() == 0.0)) {
        return Err(CodecError::Invalid("bucket count is not a whole number"));
    }
    let bits = r.bytes(n.div_ceil(8))?;
    let is_steady = |i: usize| bits[i / 8] & (1 << (i % 8)) != 0;
    let n_steady = (0..n).filter(|&i| is_steady(i)).count();
    let steady = if n_steady > 0 {
        get_values(&mut r, n_steady)?
    } else {
        Vec::new()
    };
    let n_varying = counts
        .chunks(BUCKETS_PER_HOUR)
        .enumerate()
        .filter(|(i, _)| !is_steady(*i))
        .map(|(_, c)| c.iter().filter(|&&c| c > 0.0).count())
        .sum();
    let (min, max, sum) = if n_varying > 0 {
        (
            get_f32s(&mut r, n_varying)?,
            get_f32s(&mut r, n_varying)?,
            get_f32s(&mut r, n_varying)?,
        )
    } else {
        Default::default()
    };
    let (mut k, mut j) = (0, 0);
    for (i, s) in out.iter_mut().enumerate() {
        let steady_v = is_steady(i).then(|| {
            j += 1;
            steady[j - 1]
        });
        for (b, &c) in s
            .buckets
            .iter_mut()
            .zip(&counts[i * BUCKETS_PER_HOUR..(i + 1) * BUCKETS_PER_HOUR])
        {
            if c == 0.0 {
                continue;
            }
            *b = Some(match steady_v {
                Some(v) => Agg {
                    count: c as u64,
                    min: v,
                    max: v,
                    sum: v * c,
                },
                None => {
                    k += 1;
                    Agg {
                        count: c as u64,
                        min: f64::from(min[k - 1]),
                        max: f64::from(max[k - 1]),
                        sum: f64::from(sum[k - 1]),
                    }
                }
            });
        }
    }
    r.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn staged_round_trip() {
        let pairs = vec![
            (7, 1.5),
            (8, -0.0),
            (9, f64::MAX),
            (3, 1e-300),
            (1 << 40, 2.0),
        ];
        let mut buf = Vec::new();
        encode_staged(&pairs, &mut buf);
        let mut got = Vec::new();
        assert_eq!(decode_staged(&buf, |id, v| got.push((id, v))).unwrap(), 5);
        assert_eq!(
            got.iter().map(|p| (p.0, p.1.to_bits())).collect::<Vec<_>>(),
            pairs
                .iter()
                .map(|p| (p.0, p.1.to_bits()))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            decode_staged(&buf[..buf.len() - 1], |_, _| ()),
            Err(CodecError::Truncated)
        );
        assert_eq!(decode_staged(&[9], |_, _| ()), Err(CodecError::Version(9)));
    }

    #[test]
    fn columns_pick_their_form() {
        for (vals, tag) in [
            (vec![4.0; 50], COL_CONST),
            ((0..50).map(|i| (i * 4096) as f64).collect(), COL_PCO),
            (vec![0.0, -0.0], COL_PCO),
            (vec![f64::NAN, 1.0, f64::INFINITY], COL_PCO),
            (vec![1e300, 1.0], COL_PCO),
        ] {
            let mut out = Vec::new();
            put_values(&mut out, &vals).unwrap();
            assert_eq!(out[0], tag, "{vals:?}");
            let back = get_values(&mut Reader { data: &out }, vals.len()).unwrap();
            assert_eq!(
                back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn block_with_gaps_and_bad_input() {
        let a = BlockSeries {
            id: 3,
            points: vec![(10, 1.0), (20, 2.0), (30, 3.0)],
        };
        let b = BlockSeries {
            id: 5,
            points: vec![(15, 7.0), (30, 7.0)],
        };
        let enc = encode_block(&[a.clone(), b.clone()]).unwrap();
        let r = BlockReader::parse(&enc).unwrap();
        assert_eq!(r.timestamps(), &[10, 15, 20, 30]);
        assert_eq!(r.decode_all().unwrap(), vec![a.clone(), b.clone()]);
        assert!(encode_block(&[b.clone(), a.clone()]).is_err());
        let unsorted = BlockSeries {
            id: 1,
            points: vec![(2, 0.0), (1, 0.0)],
        };
        assert!(encode_block(&[unsorted]).is_err());
        assert!(BlockReader::parse(&enc[..enc.len() - 3]).is_err());
        let empty = encode_block(&[]).unwrap();
        assert!(BlockReader::parse(&empty).unwrap().entries().is_empty());
    }

    #[test]
    fn rollups_round_trip() {
        let mut buckets = [None; BUCKETS_PER_HOUR];
        buckets[0] = Some(Agg {
            count: 30,
            min: 1.0,
            max: 9.5,
            sum: 100.25,
        });
        buckets[11] = Some(Agg::of(-3.0));
        let mut steady = [None; BUCKETS_PER_HOUR];
        steady[3] = Some(Agg {
            count: 30,
            min: 1.7e12 + 0.1,
            max: 1.7e12 + 0.1,
            sum: (1.7e12 + 0.1) * 30.0,
        });
        steady[4] = steady[3];
        let rs = vec![
            RollupSeries { id: 4, buckets },
            RollupSeries {
                id: 9,
                buckets: [None; BUCKETS_PER_HOUR],
            },
            RollupSeries {
                id: 12,
                buckets: steady,
            },
        ];
        let enc = encode_rollups(&rs).unwrap();
        // f32 holds these values exactly; the steady series is kept exact in f64.
        assert_eq!(decode_rollups(&enc).unwrap(), rs);
        let mut fine = rs.clone();
        fine[0].buckets[0].as_mut().unwrap().sum = 100.123456789;
        let back = decode_rollups(&encode_rollups(&fine).unwrap()).unwrap();
        let got = back[0].buckets[0].unwrap().sum;
        assert!((got - 100.123456789).abs() < 1e-5 && got != 100.123456789);
        assert!(decode_rollups(&enc[..enc.len() - 1]).is_err());
        assert_eq!(
            decode_rollups(&encode_rollups(&[]).unwrap()).unwrap(),
            vec![]
        );
    }

    /// A host-hour: series with jittered 10 s timestamps, some missing ticks, NaN-free
    /// values of every magnitude (or whole numbers, or constants).
    fn arb_block() -> impl Strategy<Value = Vec<BlockSeries>> {
        let ticks = prop::collection::vec(0i64..2_000, 1..60);
        let series = (
            1i64..1_000_000,
            prop::collection::vec(any::<bool>(), 60),
            prop::collection::vec(
                prop_oneof![
                    any::<f64>().prop_filter("NaN-free", |v| !v.is_nan()),
                    (-1e12f64..1e12).prop_map(f64::round),
                    Just(42.0),
                ],
                60,
            ),
        );
        (ticks, prop::collection::vec(series, 0..8)).prop_map(|(jitter, series)| {
            let ts: Vec<i64> = jitter
                .iter()
                .enumerate()
                .map(|(i, j)| 1_700_000_000_000 + i as i64 * 10_000 + j)
                .collect();
            let mut out: Vec<BlockSeries> = series
                .into_iter()
                .map(|(id, keep, vals)| BlockSeries {
                    id,
                    points: ts
                        .iter()
                        .zip(keep.iter().chain(std::iter::repeat(&true)))
                        .zip(vals)
                        .filter(|((_, k), _)| **k)
                        .map(|((t, _), v)| (*t, v))
                        .collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            out.sort_by_key(|s| s.id);
            out.dedup_by_key(|s| s.id);
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn block_round_trip(block in arb_block()) {
            let enc = encode_block(&block).unwrap();
            let back = BlockReader::parse(&enc).unwrap().decode_all().unwrap();
            prop_assert_eq!(back.len(), block.len());
            for (a, b) in back.iter().zip(&block) {
                prop_assert_eq!(a.id, b.id);
                let bits = |s: &BlockSeries| s.points.iter().map(|p| (p.0, p.1.to_bits())).collect::<Vec<_>>();
                prop_assert_eq!(bits(a), bits(b));
            }
        }

        #[test]
        fn damaged_blocks_error_not_panic(block in arb_block(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
            let mut enc = encode_block(&block).unwrap();
            let i = cut.index(enc.len());
            enc[i] ^= flip | 1;
            if let Ok(r) = BlockReader::parse(&enc) {
                let _ = r.decode_all();
            }
            let _ = BlockReader::parse(&enc[..i]);
        }
    }
}
