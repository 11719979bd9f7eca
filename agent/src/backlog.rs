//! The in-memory backlog: batches built but not yet acknowledged by the collector.
//!
//! Pure bookkeeping, no I/O. A batch enters when it is built, is (re)sent while a connection
//! is up, and leaves only when the collector acknowledges it (or rejects it for good). When
//! the backlog is over its bounds the oldest batches go first, and what was dropped is
//! counted and carried to the collector in a later batch's `LossReport`, so loss is never
//! silent. If the batch that carried a loss report is itself dropped, its report is owed again.
//! (The disk spool of the next issue replaces the memory bound with a disk bound.)

use aftercare_shared::consent::Scope;
use aftercare_shared::model::LossReport;
use aftercare_shared::protocol::StreamId;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: StreamId,
    pub seq: u64,
    /// The encoded frame, ready to write.
    pub frame: Vec<u8>,
    pub samples: u64,
    /// The loss report this batch carries; owed again if the batch is dropped unsent.
    pub carried: LossReport,
}

#[derive(Debug)]
pub struct Backlog {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_batches: usize,
    max_bytes: usize,
    /// Index of the first entry not yet written on the current connection.
    next_unsent: usize,
    /// Loss not yet handed to a batch.
    owed: LossReport,
    /// Totals since start, for the agent's own log and metrics.
    pub total_dropped: u64,
    pub total_rejected: u64,
}

impl Backlog {
    pub fn new(max_batches: usize, max_bytes: usize) -> Self {
        Backlog {
            entries: VecDeque::new(),
            bytes: 0,
            max_batches: max_batches.max(1),
            max_bytes,
            next_unsent: 0,
            owed: LossReport::default(),
            total_dropped: 0,
            total_rejected: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The loss report for the next batch to carry; it is owed no more from here on.
    pub fn take_owed(&mut self) -> LossReport {
        std::mem::take(&mut self.owed)
    }

    pub fn owed(&self) -> LossReport {
        self.owed
    }

    /// Add a batch, dropping the oldest ones if the bounds are passed.
    pub fn push(&mut self, entry: Entry) {
        self.bytes += entry.frame.len();
        self.entries.push_back(entry);
        while self.entries.len() > self.max_batches
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            let old = self.pop_front();
            self.owe(&old.carried);
            self.owed.dropped_batches += 1;
            self.owed.dropped_samples += old.samples;
            self.total_dropped += 1;
        }
    }

    fn pop_front(&mut self) -> Entry {
        let e = self.entries.pop_front().expect("non-empty");
        self.bytes -= e.frame.len();
        self.next_unsent = self.next_unsent.saturating_sub(1);
        e
    }

    fn owe(&mut self, l: &LossReport) {
        self.owed.dropped_batches += l.dropped_batches;
        self.owed.dropped_samples += l.dropped_samples;
        self.owed.discarded_by_revocation += l.discarded_by_revocation;
    }

    /// Entries not yet written on the current connection; marks them written.
    pub fn take_unsent(&mut self) -> impl Iterator<Item = &Entry> {
        let from = self.next_unsent;
        self.next_unsent = self.entries.len();
        self.entries.range(from..)
    }

    /// Batches written on the current connection and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.next_unsent
    }

    /// A new connection: everything unacknowledged must be written again.
    pub fn rewind(&mut self) {
        self.next_unsent = 0;
    }

    /// The collector acknowledged `seq` of `stream`. Acknowledgements come in order, so
    /// everything of that stream up to `seq` is done.
    pub fn ack(&mut self, stream: StreamId, seq: u64) -> usize {
        self.remove_where(|e| e.stream == stream && e.seq <= seq, false)
    }

    /// The collector refused `seq` for good; it is not resent.
    pub fn reject(&mut self, stream: StreamId, seq: u64) -> usize {
        let n = self.remove_where(|e| e.stream == stream && e.seq == seq, false);
        self.total_rejected += n as u64;
        n
    }

    /// Consent for `scope` was withdrawn: its batches are deleted, not sent.
    pub fn discard_scope(&mut self, scope: Scope) -> usize {
        self.remove_where(|e| e.stream.scope() == scope, true)
    }

    fn remove_where(&mut self, pred: impl Fn(&Entry) -> bool, discarded: bool) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.entries.len() {
            if pred(&self.entries[i]) {
                let e = self.entries.remove(i).expect("index in range");
                self.bytes -= e.frame.len();
                if i < self.next_unsent {
                    self.next_unsent -= 1;
                }
                if discarded {
                    // Its own data is gone by the customer's will; the loss it carried
                    // (of data of other kinds, earlier) is still owed.
                    self.owe(&e.carried);
                    self.owed.discarded_by_revocation += 1;
                }
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Change every entry of `stream` (all of them unacknowledged) in place, e.g. to number
    /// them anew; `f` gets and returns the frame.
    pub fn renumber(&mut self, stream: StreamId, mut f: impl FnMut(&mut Entry)) {
        for e in self.entries.iter_mut().filter(|e| e.stream == stream) {
            let before = e.frame.len();
            f(e);
            self.bytes = self.bytes - before + e.frame.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, size: usize, carried: LossReport) -> Entry {
        Entry {
            stream: StreamId::Metrics,
            seq,
            frame: vec![0; size],
            samples: 10,
            carried,
        }
    }

    #[test]
    fn sends_once_per_connection_and_resends_after_rewind() {
        let mut b = Backlog::new(10, 1 << 20);
        b.push(entry(1, 10, LossReport::default()));
        b.push(entry(2, 10, LossReport::default()));
        assert_eq!(b.take_unsent().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        b.push(entry(3, 10, LossReport::default()));
        assert_eq!(b.take_unsent().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(b.ack(StreamId::Metrics, 2), 2);
        b.rewind();
        assert_eq!(b.take_unsent().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(b.ack(StreamId::Metrics, 3), 1);
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn overflow_drops_oldest_and_owes_the_loss_including_carried_reports() {
        let mut b = Backlog::new(2, 1 << 20);
        let carried = LossReport {
            dropped_batches: 5,
            dropped_samples: 50,
            discarded_by_revocation: 1,
        };
        b.push(entry(1, 10, carried));
        b.push(entry(2, 10, LossReport::default()));
        b.push(entry(3, 10, LossReport::default()));
        assert_eq!(b.len(), 2);
        let owed = b.take_owed();
        assert_eq!(owed.dropped_batches, 6);
        assert_eq!(owed.dropped_samples, 60);
        assert_eq!(owed.discarded_by_revocation, 1);
        assert!(b.take_owed().is_empty(), "handed over once");
        assert_eq!(b.total_dropped, 1);
    }

    #[test]
    fn byte_bound_keeps_at_least_the_newest() {
        let mut b = Backlog::new(100, 25);
        b.push(entry(1, 10, LossReport::default()));
        b.push(entry(2, 10, LossReport::default()));
        b.push(entry(3, 10, LossReport::default()));
        assert_eq!(b.len(), 2);
        b.push(entry(4, 100, LossReport::default()));
        assert_eq!(b.len(), 1, "an oversized newest batch still stays");
    }

    #[test]
    fn sent_marker_survives_drops_and_acks() {
        let mut b = Backlog::new(3, 1 << 20);
        for s in 1..=3 {
            b.push(entry(s, 1, LossReport::default()));
        }
        assert_eq!(b.take_unsent().count(), 3);
        b.push(entry(4, 1, LossReport::default())); // drops 1
        assert_eq!(b.take_unsent().map(|e| e.seq).collect::<Vec<_>>(), [4]);
        b.reject(StreamId::Metrics, 3);
        b.push(entry(5, 1, LossReport::default()));
        assert_eq!(b.take_unsent().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(b.total_rejected, 1);
    }

    #[test]
    fn revocation_discards_and_counts() {
        let mut b = Backlog::new(10, 1 << 20);
        b.push(entry(1, 10, LossReport::default()));
        b.push(entry(2, 10, LossReport::default()));
        assert_eq!(b.discard_scope(Scope::Metrics), 2);
        assert!(b.is_empty());
        assert_eq!(b.owed().discarded_by_revocation, 2);
        assert_eq!(b.discard_scope(Scope::Logs), 0);
    }
}
