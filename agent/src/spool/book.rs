//! The spool's bookkeeping, without I/O: what each segment holds, what is acknowledged, which
//! segments may be deleted and which one goes first when the spool is over its bound.

use aftercare_shared::model::LossReport;
use std::collections::BTreeMap;

/// What the spool remembers of one segment file; the records themselves stay on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegMeta {
    /// Stream code: each stream has its own chain of segments.
    pub stream: u8,
    /// Id of the first record (also the file's name).
    pub first_id: u64,
    pub last_id: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Intact records and their samples/lines.
    pub records: u64,
    pub samples: u64,
    /// File length, segment header included.
    pub bytes: u64,
    /// Sum of the loss reports its records carry (owed again if they are dropped unsent).
    pub carried: LossReport,
}

/// How much of a segment is not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unacked {
    Nothing,
    /// Every record: `(records, samples)`.
    All(u64, u64),
    /// Some records are acknowledged and some not: only reading the segment tells how many.
    Part,
}

#[derive(Debug, Default, Clone)]
pub struct Book {
    /// Every segment of every stream, oldest (lowest first id) first.
    segs: Vec<SegMeta>,
    /// Per stream code, the highest sequence number the collector acknowledged.
    acked: BTreeMap<u8, u64>,
}

impl Book {
    pub fn new(mut segs: Vec<SegMeta>, acked: BTreeMap<u8, u64>) -> Self {
        segs.sort_by_key(|s| s.first_id);
        Book { segs, acked }
    }

    pub fn segments(&self) -> &[SegMeta] {
        &self.segs
    }

    pub fn acked(&self, stream: u8) -> u64 {
        self.acked.get(&stream).copied().unwrap_or(0)
    }

    pub fn acked_all(&self) -> &BTreeMap<u8, u64> {
        &self.acked
    }

    pub fn bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.bytes).sum()
    }

    pub fn next_id(&self) -> u64 {
        self.segs.iter().map(|s| s.last_id + 1).max().unwrap_or(0)
    }

    /// The segment of `stream` that appends go to (its newest).
    pub fn active(&self, stream: u8) -> Option<&SegMeta> {
        self.segs.iter().rev().find(|s| s.stream == stream)
    }

    pub fn active_mut(&mut self, stream: u8) -> Option<&mut SegMeta> {
        self.segs.iter_mut().rev().find(|s| s.stream == stream)
    }

    pub fn add(&mut self, seg: SegMeta) {
        debug_assert!(self.segs.last().is_none_or(|l| l.first_id < seg.first_id));
        self.segs.push(seg);
    }

    pub fn remove(&mut self, first_id: u64) -> Option<SegMeta> {
        let i = self.segs.iter().position(|s| s.first_id == first_id)?;
        Some(self.segs.remove(i))
    }

    pub fn unacked(&self, s: &SegMeta) -> Unacked {
        let acked = self.acked(s.stream);
        if s.records == 0 || s.last_seq <= acked {
            Unacked::Nothing
        } else if s.first_seq > acked {
            Unacked::All(s.records, s.samples)
        } else {
            Unacked::Part
        }
    }

    /// Whether `stream` has records not yet acknowledged.
    pub fn has_unacked(&self, stream: u8) -> bool {
        self.segs
            .iter()
            .any(|s| s.stream == stream && self.unacked(s) != Unacked::Nothing)
    }

    /// Acknowledgements come in order per stream: everything up to `seq` is done. Returns
    /// whether anything moved.
    pub fn ack(&mut self, stream: u8, seq: u64) -> bool {
        let a = self.acked.entry(stream).or_insert(0);
        let moved = seq > *a;
        *a = (*a).max(seq);
        moved
    }

    /// Segments whose every record is acknowledged, except each stream's newest, which
    /// appends still go to (deleting it would make a file per batch).
    pub fn deletable(&self) -> Vec<u64> {
        self.segs
            .iter()
            .filter(|s| self.unacked(s) == Unacked::Nothing)
            .filter(|s| self.active(s.stream).map(|a| a.first_id) != Some(s.first_id))
            .map(|s| s.first_id)
            .collect()
    }

    /// The segment to drop before a record of `incoming` bytes can be added without passing
    /// `max_bytes`: the oldest of all, whatever its stream. Only whole segments are dropped.
    pub fn to_drop(&self, incoming: u64, max_bytes: u64) -> Option<SegMeta> {
        (self.bytes() + incoming > max_bytes)
            .then(|| self.segs.first().copied())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(stream: u8, first_id: u64, seqs: (u64, u64), bytes: u64) -> SegMeta {
        SegMeta {
            stream,
            first_id,
            last_id: first_id + (seqs.1 - seqs.0),
            first_seq: seqs.0,
            last_seq: seqs.1,
            records: seqs.1 - seqs.0 + 1,
            samples: 10 * (seqs.1 - seqs.0 + 1),
            bytes,
            carried: LossReport::default(),
        }
    }

    #[test]
    fn unacked_table() {
        let s = seg(1, 0, (10, 19), 100);
        for (acked, want) in [
            (0, Unacked::All(10, 100)),
            (9, Unacked::All(10, 100)),
            (10, Unacked::Part),
            (18, Unacked::Part),
            (19, Unacked::Nothing),
            (500, Unacked::Nothing),
        ] {
            let b = Book::new(vec![s], BTreeMap::from([(1, acked)]));
            assert_eq!(b.unacked(&s), want, "acked {acked}");
        }
        let empty = SegMeta { records: 0, ..s };
        assert_eq!(Book::default().unacked(&empty), Unacked::Nothing);
    }

    #[test]
    fn deletable_keeps_each_streams_newest() {
        // (acked per stream, expected deletable first ids)
        let segs = vec![
            seg(1, 0, (1, 5), 10),
            seg(2, 5, (1, 3), 10),
            seg(1, 8, (6, 9), 10),
            seg(2, 12, (4, 4), 10),
        ];
        for (acked, want) in [
            (vec![], vec![]),
            (vec![(1, 5)], vec![0]),
            (vec![(1, 9), (2, 4)], vec![0, 5]),
            (vec![(1, 4), (2, 3)], vec![5]),
            (vec![(3, 100)], vec![]),
        ] {
            let b = Book::new(segs.clone(), acked.iter().copied().collect());
            assert_eq!(b.deletable(), want, "acked {acked:?}");
        }
    }

    #[test]
    fn drop_oldest_across_streams_only_when_over_the_bound() {
        let b = Book::new(
            vec![seg(2, 5, (1, 3), 40), seg(1, 0, (1, 5), 50)],
            BTreeMap::new(),
        );
        assert_eq!(b.bytes(), 90);
        assert_eq!(b.to_drop(10, 100), None);
        assert_eq!(b.to_drop(11, 100).map(|s| s.first_id), Some(0));
        assert_eq!(Book::default().to_drop(1000, 10), None);
        assert_eq!(b.next_id(), 8);
        assert_eq!(b.active(1).map(|s| s.first_id), Some(0));
    }

    #[test]
    fn acks_only_move_forward() {
        let mut b = Book::default();
        assert!(b.ack(1, 7));
        assert!(!b.ack(1, 3));
        assert_eq!(b.acked(1), 7);
        assert_eq!(b.acked(2), 0);
        b.add(seg(1, 0, (5, 9), 10));
        assert!(b.has_unacked(1));
        b.ack(1, 9);
        assert!(!b.has_unacked(1));
    }
}
