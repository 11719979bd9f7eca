//! What both backends do the same way, with no SQL: the writer's series cache, log blob
//! codecs, loss arithmetic, merging a host-hour's points into its block and rollups, and
//! the folds and filters readers apply to decoded blobs.

use super::chunk::{self, BlockReader, BlockSeries, RollupSeries};
use super::query::{self, Agg};
use super::{
    Bucket, CompactStats, HOUR_MS, LogFilter, ROLLUP_STEP_MS, Resolution, SeriesId, StoreError,
};
use aftercare_shared::logblock::{self, RecordRef, Unpacker};
use aftercare_shared::model::{LogRecord, LossReport, MetricKind, UnixMillis};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The `codec` of a `logs` row: how its records were turned into its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogCodec {
    /// bincode (standard configuration) of `Vec<LogRecord>`, as schema 2 wrote every row.
    Bincode = 0,
    /// The same, compressed with zstd, as schema 3 wrote every row.
    BincodeZstd = 1,
    /// A log block (`aftercare_shared::logblock`): what agents send since protocol
    /// version 2, stored as it came; batches from older agents are made into one.
    Block = 2,
}

/// A stored log blob decompresses to at most this: its batch arrived in one frame.
pub(super) const MAX_LOG_BLOB: usize = aftercare_shared::codec::MAX_FRAME_LIMIT;

/// A row's records as a plain block, whatever its codec: borrowed from the unpacker for
/// blocks, built for the older codecs.
pub(super) fn row_plain<'u>(
    codec: i64,
    data: &[u8],
    unpacker: &'u mut Option<Unpacker>,
) -> Result<std::borrow::Cow<'u, [u8]>, String> {
    let records: Vec<LogRecord> = if codec == LogCodec::Block as i64 {
        let u = match unpacker {
            Some(u) => u,
            None => unpacker.insert(Unpacker::new().map_err(|e| e.to_string())?),
        };
        return u
            .unpack(data, MAX_LOG_BLOB)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|e| e.to_string());
    } else if codec == LogCodec::Bincode as i64 {
        decode_bincode(data)?
    } else if codec == LogCodec::BincodeZstd as i64 {
        let plain = zstd::bulk::decompress(data, MAX_LOG_BLOB).map_err(|e| format!("zstd: {e}"))?;
        decode_bincode(&plain)?
    } else {
        return Err(format!("unknown codec {codec}"));
    };
    Ok(std::borrow::Cow::Owned(logblock::from_records(&records)))
}

pub(super) fn decode_bincode(bytes: &[u8]) -> Result<Vec<LogRecord>, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(records, _)| records)
        .map_err(|e| e.to_string())
}

pub(super) fn kind_from(s: &str) -> Option<MetricKind> {
    match s {
        "gauge" => Some(MetricKind::Gauge),
        "counter" => Some(MetricKind::Counter),
        _ => None,
    }
}

/// Unambiguous key of (name, labels): the name's length, the name, the labels.
pub(super) fn series_key(key: &mut Vec<u8>, name: &str, labels: &str) {
    key.clear();
    key.extend_from_slice(&(name.len() as u32).to_le_bytes());
    key.extend_from_slice(name.as_bytes());
    key.extend_from_slice(labels.as_bytes());
}

/// What a host's totals hold beyond its per-scope parts: loss reported before the store
/// counted per scope. Saturated totals may leave less than the parts; never below zero.
pub(super) fn unattributed_loss<'a>(
    total: &LossReport,
    parts: impl Iterator<Item = &'a LossReport>,
) -> LossReport {
    let mut sum = LossReport::default();
    for p in parts {
        add_loss(&mut sum, p);
    }
    LossReport {
        dropped_batches: total.dropped_batches.saturating_sub(sum.dropped_batches),
        dropped_samples: total.dropped_samples.saturating_sub(sum.dropped_samples),
        discarded_by_revocation: total
            .discarded_by_revocation
            .saturating_sub(sum.discarded_by_revocation),
    }
}

/// Add `b` to `a`; totals saturate rather than wrap.
pub(super) fn add_loss(a: &mut LossReport, b: &LossReport) {
    a.dropped_batches = a.dropped_batches.saturating_add(b.dropped_batches);
    a.dropped_samples = a.dropped_samples.saturating_add(b.dropped_samples);
    a.discarded_by_revocation = a
        .discarded_by_revocation
        .saturating_add(b.discarded_by_revocation);
}

/// Database integers are i64; counts beyond that saturate.
pub(super) fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What a row callback of a backend's blob reader can fail with.
pub(super) enum RowError {
    /// The row's blob does not decode; reported as damage naming the row.
    Codec(chunk::CodecError),
    Store(StoreError),
}

impl From<chunk::CodecError> for RowError {
    fn from(e: chunk::CodecError) -> Self {
        RowError::Codec(e)
    }
}

impl From<StoreError> for RowError {
    fn from(e: StoreError) -> Self {
        RowError::Store(e)
    }
}

/// Which log batches a backend's log reader decodes.
#[derive(Clone, Copy)]
pub(super) enum LogRows {
    /// Every batch whose time range meets the window.
    Overlapping,
    /// Only those that also reach outside it (the rest are counted without decoding).
    Straddling,
    /// Every batch whose time range meets the window, the newest (by `ts_max`) first.
    NewestFirst,
}

/// A series as readers see it.
pub(super) struct SeriesRow {
    pub id: SeriesId,
    pub name: String,
    pub labels: String,
    pub kind: MetricKind,
}

/// A host's series as the writer knows them.
#[derive(Default)]
pub(super) struct HostSeries {
    /// By [`series_key`].
    pub by_key: HashMap<Arc<[u8]>, (SeriesId, MetricKind)>,
    /// The series of the host's last batch, in order. An agent sends the same series in the
    /// same order every time, so a lookup is usually one comparison rather than a hash.
    pub last: Vec<(Arc<[u8]>, SeriesId, MetricKind)>,
}

/// Every update of a group failed with the transaction's commit: one error each, naming
/// the database and why.
pub(super) fn group_failed<T>(
    n: usize,
    path: &str,
    doing: &'static str,
    why: &str,
) -> Vec<Result<T, StoreError>> {
    (0..n)
        .map(|_| {
            Err(StoreError::Backend {
                path: path.to_string(),
                doing,
                source: why.into(),
            })
        })
        .collect()
}

/// The series ids of one batch's samples, creating series (or updating their kind) as
/// needed; `pairs` gets (series, value) in sample order.
pub(super) fn batch_series<E>(
    hs: &mut HostSeries,
    upsert: &mut impl FnMut(&str, &str, MetricKind) -> Result<SeriesId, E>,
    samples: &[aftercare_shared::model::Sample],
    key: &mut Vec<u8>,
    pairs: &mut Vec<(SeriesId, f64)>,
) -> Result<(), E> {
    pairs.clear();
    let mut same_layout = hs.last.len() == samples.len();
    for (i, s) in samples.iter().enumerate() {
        series_key(key, &s.name, &s.labels);
        if let Some((k, id, kind)) = hs.last.get(i)
            && **k == **key
            && *kind == s.kind
        {
            pairs.push((*id, s.value));
            continue;
        }
        same_layout = false;
        let id = match hs.by_key.get(key.as_slice()) {
            Some(&(id, kind)) if kind == s.kind => id,
            _ => {
                let id = upsert(&s.name, &s.labels, s.kind)?;
                hs.by_key.insert(key.as_slice().into(), (id, s.kind));
                id
            }
        };
        pairs.push((id, s.value));
    }
    if !same_layout {
        hs.last.clear();
        for s in samples {
            series_key(key, &s.name, &s.labels);
            if let Some((k, &(id, kind))) = hs.by_key.get_key_value(key.as_slice()) {
                hs.last.push((k.clone(), id, kind));
            }
        }
    }
    Ok(())
}

/// One host-hour after compaction: its block, its rollups, and each series' newest point.
pub(super) struct MergedHour {
    pub block: Vec<u8>,
    pub rollups: Vec<u8>,
    pub samples: u64,
    pub newest: Vec<(SeriesId, UnixMillis, f64)>,
}

/// Merge `acc` (staged points in write order; left empty) into the hour's `existing` block:
/// on equal timestamps the staged value wins. Errors name what does not decode.
pub(super) fn merge_hour(
    hour: UnixMillis,
    existing: Option<&[u8]>,
    acc: &mut BTreeMap<SeriesId, Vec<(UnixMillis, f64)>>,
    kinds: &HashMap<SeriesId, MetricKind>,
    stats: &mut CompactStats,
) -> Result<MergedHour, chunk::CodecError> {
    let mut series: BTreeMap<SeriesId, Vec<(UnixMillis, f64)>> = BTreeMap::new();
    if let Some(data) = existing {
        for s in BlockReader::parse(data)?.decode_all()? {
            series.insert(s.id, s.points);
        }
        stats.blocks_merged += 1;
    }
    // Older block first, staged after it: on equal timestamps the staged value wins.
    for (id, pts) in std::mem::take(acc) {
        series.entry(id).or_default().extend(pts);
    }
    let mut block = Vec::with_capacity(series.len());
    let mut rollups = Vec::with_capacity(series.len());
    let mut newest = Vec::with_capacity(series.len());
    for (id, mut points) in series {
        stats.duplicates += query::sort_dedup_last_wins(&mut points) as u64;
        let kind = kinds.get(&id).copied().unwrap_or(MetricKind::Gauge);
        rollups.push(RollupSeries {
            id,
            buckets: query::hour_buckets(hour, kind, &points),
        });
        if let Some(&(t, v)) = points.last() {
            newest.push((id, t, v));
        }
        block.push(BlockSeries { id, points });
    }
    let samples: u64 = block.iter().map(|s| s.points.len() as u64).sum();
    stats.blocks_written += 1;
    Ok(MergedHour {
        block: chunk::encode_block(&block)?,
        rollups: chunk::encode_rollups(&rollups)?,
        samples,
        newest,
    })
}

/// A host-hour's 5-minute rollups folded into one hourly aggregate per series (bucket 0),
/// as retention keeps them past the 5-minute tier.
pub(super) fn fold_to_hour(data: &[u8]) -> Result<Vec<u8>, chunk::CodecError> {
    let mut series = chunk::decode_rollups(data)?;
    for s in &mut series {
        let mut all = s.buckets.iter().flatten();
        let merged = all.next().map(|first| {
            let mut a = *first;
            all.for_each(|b| a.merge(b));
            a
        });
        s.buckets = Default::default();
        s.buckets[0] = merged;
    }
    chunk::encode_rollups(&series)
}

/// The window of rollup rows a read needs: an hour row holds buckets up to an hour after
/// its start.
pub(super) fn rollup_rows(since: UnixMillis, until: UnixMillis) -> (UnixMillis, UnixMillis) {
    (since.saturating_sub(HOUR_MS), until)
}

/// Gathers the buckets of the selected series from a host's rollup rows.
pub(super) struct RollupReader {
    index: HashMap<SeriesId, usize>,
    pub buckets: Vec<Vec<Bucket>>,
    resolution: Resolution,
    since: UnixMillis,
    until: UnixMillis,
}

impl RollupReader {
    pub fn new(
        series: &[SeriesRow],
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Self {
        RollupReader {
            index: series.iter().enumerate().map(|(i, s)| (s.id, i)).collect(),
            buckets: vec![Vec::new(); series.len()],
            resolution,
            since,
            until,
        }
    }

    /// Take one row (the hour it starts, its blob).
    pub fn row(&mut self, hour: UnixMillis, data: &[u8]) -> Result<(), chunk::CodecError> {
        let bucket = |start: UnixMillis, a: &Agg| Bucket {
            start,
            count: a.count,
            min: a.min,
            max: a.max,
            sum: a.sum,
        };
        for rs in chunk::decode_rollups(data)? {
            let Some(&i) = self.index.get(&rs.id) else {
                continue;
            };
            match self.resolution {
                Resolution::FiveMinutes => {
                    for (k, a) in rs.buckets.iter().enumerate() {
                        let start = hour + k as i64 * ROLLUP_STEP_MS;
                        if let Some(a) = a
                            && start >= self.since
                            && start < self.until
                        {
                            self.buckets[i].push(bucket(start, a));
                        }
                    }
                }
                Resolution::Hour => {
                    let mut all = rs.buckets.iter().flatten();
                    if let Some(first) = all.next()
                        && hour >= self.since
                        && hour < self.until
                    {
                        let mut a = *first;
                        all.for_each(|b| a.merge(b));
                        self.buckets[i].push(bucket(hour, &a));
                    }
                }
            }
        }
        Ok(())
    }

    /// The series with at least one bucket.
    pub fn finish(self, series: Vec<SeriesRow>) -> Vec<super::SeriesRollups> {
        series
            .into_iter()
            .zip(self.buckets)
            .filter(|(_, b)| !b.is_empty())
            .map(|(s, b)| super::SeriesRollups {
                name: s.name,
                labels: s.labels,
                kind: s.kind,
                buckets: b,
            })
            .collect()
    }
}

/// Visit the records of one decoded log row that match `filter`'s time, severity and
/// pattern. `worst` is the filter's least severe level.
pub(super) fn matching_records(
    codec: i64,
    data: &[u8],
    filter: &LogFilter,
    worst: u8,
    unpacker: &mut Option<Unpacker>,
    mut f: impl FnMut(&logblock::BlockReader<'_>, &RecordRef<'_>),
) -> Result<(), String> {
    let plain = row_plain(codec, data, unpacker)?;
    let mut block = logblock::BlockReader::new(&plain).map_err(|e| e.to_string())?;
    while let Some(r) = block.next_record() {
        let r = r.map_err(|e| e.to_string())?;
        let t = r.time();
        if t >= filter.since
            && t < filter.until
            && r.severity.level() <= worst
            && filter.grep.as_ref().is_none_or(|re| re.is_match(r.line))
        {
            f(&block, &r);
        }
    }
    Ok(())
}

/// Keeps the newest `limit` records (0: all) of what a log read visits, oldest first by the
/// time each line states; lines read together keep their order (row id, then place).
pub(super) struct LogKeeper {
    kept: BTreeMap<(UnixMillis, i64, u32), LogRecord>,
    place: (i64, u32),
    limit: usize,
    oldest_kept: Option<UnixMillis>,
}

impl LogKeeper {
    pub fn new(limit: usize) -> Self {
        LogKeeper {
            kept: BTreeMap::new(),
            place: (0, 0),
            limit,
            oldest_kept: None,
        }
    }

    /// Rows should come newest first (by `ts_max`) when there is a limit.
    pub fn rows(&self) -> LogRows {
        if self.limit == 0 {
            LogRows::Overlapping
        } else {
            LogRows::NewestFirst
        }
    }

    pub fn keep(&mut self, id: i64, b: &logblock::BlockReader<'_>, r: &RecordRef<'_>) {
        self.place = if self.place.0 == id {
            (id, self.place.1 + 1)
        } else {
            (id, 0)
        };
        let key = (r.time(), id, self.place.1);
        let limit = self.limit;
        if limit > 0
            && self.kept.len() >= limit
            && self.kept.first_key_value().is_some_and(|(k, _)| *k > key)
        {
            return;
        }
        self.kept.insert(key, b.to_owned(r));
        if limit > 0 && self.kept.len() > limit {
            self.kept.pop_first();
        }
        if limit > 0 && self.kept.len() == limit {
            self.oldest_kept = self.kept.first_key_value().map(|(k, _)| k.0);
        }
    }

    /// Whether a row whose newest line is at `ts_max` can still change the answer: once
    /// `limit` records are kept and the oldest of them is newer than anything the next row
    /// holds, no further row can.
    pub fn go_on(&self, ts_max: UnixMillis) -> bool {
        self.oldest_kept.is_none_or(|oldest| oldest <= ts_max)
    }

    pub fn finish(self) -> Vec<LogRecord> {
        self.kept.into_values().collect()
    }
}

/// A `hosts` row as both backends read it.
pub(super) struct HostRow {
    pub id: super::HostId,
    pub customer: String,
    pub host: String,
    pub first_seen: UnixMillis,
    pub last_seen: Option<UnixMillis>,
    pub agent_version: String,
    pub facts: String,
    pub consent: String,
    pub interval_ms: i64,
    pub connected: bool,
    /// dropped batches, dropped samples, discarded by revocation
    pub totals: [i64; 3],
    pub cert_expires: Option<UnixMillis>,
}

/// A host's status from its row and its loss by scope (taken out of `by_scope`). A JSON
/// column that does not parse is named in the error: (`what`, why).
pub(super) fn host_status(
    r: HostRow,
    by_scope: &mut HashMap<super::HostId, BTreeMap<String, LossReport>>,
    now: UnixMillis,
) -> Result<super::HostStatus, (String, serde_json::Error)> {
    let what = |field: &str| format!("{field} of host {}/{}", r.customer, r.host);
    let facts = serde_json::from_str(&r.facts).map_err(|e| (what("facts"), e))?;
    let consent = serde_json::from_str(&r.consent).map_err(|e| (what("consent record"), e))?;
    let total = LossReport {
        dropped_batches: r.totals[0] as u64,
        dropped_samples: r.totals[1] as u64,
        discarded_by_revocation: r.totals[2] as u64,
    };
    let mut loss = by_scope.remove(&r.id).unwrap_or_default();
    let unattributed = unattributed_loss(&total, loss.values());
    if !unattributed.is_empty() {
        loss.insert(super::UNATTRIBUTED.to_string(), unattributed);
    }
    let interval_ms = r.interval_ms.max(0) as u64;
    Ok(super::HostStatus {
        cert_expires: r.cert_expires,
        first_seen: r.first_seen,
        last_seen: r.last_seen,
        agent_version: r.agent_version,
        facts,
        consent,
        connected: r.connected,
        interval_ms,
        online: r.connected
            && r.last_seen.is_some_and(|t| {
                now - t <= super::ONLINE_INTERVALS.saturating_mul(interval_ms as i64)
            }),
        id: r.id,
        dropped_batches: total.dropped_batches,
        dropped_samples: total.dropped_samples,
        discarded_by_revocation: total.discarded_by_revocation,
        loss,
        customer: r.customer,
        host: r.host,
    })
}

/// Gathers the points of the selected series in a window: blocks first, then staged rows
/// in write order, so that the value written last wins.
pub(super) struct PointsReader {
    index: HashMap<SeriesId, usize>,
    points: Vec<Vec<(UnixMillis, f64)>>,
    since: UnixMillis,
    until: UnixMillis,
}

impl PointsReader {
    pub fn new(series: &[SeriesRow], since: UnixMillis, until: UnixMillis) -> Self {
        PointsReader {
            index: series.iter().enumerate().map(|(i, s)| (s.id, i)).collect(),
            points: vec![Vec::new(); series.len()],
            since,
            until,
        }
    }

    pub fn block(&mut self, data: &[u8]) -> Result<(), chunk::CodecError> {
        let block = BlockReader::parse(data)?;
        for e in block.entries() {
            if let Some(&i) = self.index.get(&e.id) {
                let (since, until) = (self.since, self.until);
                let pts = block.points(e)?;
                self.points[i].extend(pts.into_iter().filter(|p| p.0 >= since && p.0 < until));
            }
        }
        Ok(())
    }

    pub fn staged(&mut self, ts: UnixMillis, data: &[u8]) -> Result<(), chunk::CodecError> {
        let Self { index, points, .. } = self;
        chunk::decode_staged(data, |id, v| {
            if let Some(&i) = index.get(&id) {
                points[i].push((ts, v));
            }
        })?;
        Ok(())
    }

    pub fn finish(self, series: Vec<SeriesRow>) -> Vec<super::SeriesPoints> {
        series
            .into_iter()
            .zip(self.points)
            .filter(|(_, p)| !p.is_empty())
            .map(|(s, mut p)| {
                query::sort_dedup_last_wins(&mut p);
                super::SeriesPoints {
                    name: s.name,
                    labels: s.labels,
                    kind: s.kind,
                    points: p,
                }
            })
            .collect()
    }
}

/// The newest value of each series: the compacted one from the series row, then staged
/// rows newest first until every series has been seen there.
pub(super) struct LatestReader {
    index: HashMap<SeriesId, usize>,
    newest: Vec<Option<(UnixMillis, f64)>>,
    from_staging: Vec<bool>,
    left: usize,
}

impl LatestReader {
    pub fn new(series: &[SeriesRow]) -> Self {
        LatestReader {
            index: series.iter().enumerate().map(|(i, s)| (s.id, i)).collect(),
            newest: vec![None; series.len()],
            from_staging: vec![false; series.len()],
            left: series.len(),
        }
    }

    /// A series row's newest compacted point.
    pub fn compacted(&mut self, id: SeriesId, point: Option<(UnixMillis, f64)>) {
        if let (Some(p), Some(&i)) = (point, self.index.get(&id)) {
            self.newest[i] = Some(p);
        }
    }

    /// One staged row (newest first); whether older rows can still matter.
    pub fn staged(&mut self, ts: UnixMillis, data: &[u8]) -> Result<bool, chunk::CodecError> {
        let Self {
            index,
            newest,
            from_staging,
            left,
        } = self;
        chunk::decode_staged(data, |id, v| {
            if let Some(&i) = index.get(&id)
                && !from_staging[i]
            {
                from_staging[i] = true;
                *left -= 1;
                if newest[i].is_none_or(|(t, _)| t <= ts) {
                    newest[i] = Some((ts, v));
                }
            }
        })?;
        Ok(*left > 0)
    }

    pub fn finish(self, series: Vec<SeriesRow>) -> Vec<super::Latest> {
        series
            .into_iter()
            .zip(self.newest)
            .filter_map(|(s, n)| {
                n.map(|(ts, value)| super::Latest {
                    name: s.name,
                    labels: s.labels,
                    kind: s.kind,
                    ts,
                    value,
                })
            })
            .collect()
    }
}

/// Log records counted by source and severity, sorted by source, then the most severe
/// first.
#[derive(Default)]
pub(super) struct SourceCounts(BTreeMap<(String, aftercare_shared::model::Severity), u64>);

impl SourceCounts {
    pub fn add(&mut self, b: &logblock::BlockReader<'_>, r: &RecordRef<'_>) {
        let source = b.files().get(r.file as usize).map_or("", |f| f.0);
        match self.0.get_mut(&(source.to_string(), r.severity)) {
            Some(n) => *n += 1,
            None => {
                self.0.insert((source.to_string(), r.severity), 1);
            }
        }
    }

    pub fn finish(self) -> Vec<super::LogCount> {
        self.0
            .into_iter()
            .map(|((source, severity), count)| super::LogCount {
                source,
                severity,
                count,
            })
            .collect()
    }
}
