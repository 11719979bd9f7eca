//! What the run loop keeps about batches between the spool and the collector. Pure.
//!
//! - The spool record's payload is an envelope: `u32 LE` length of a note, the note, then the
//!   frame exactly as it goes on the wire. The note stays on this host: for a log batch it
//!   is the tailer's positions just past the batch's lines (a checkpoint, see
//!   `logs::checkpoint`), so the newest record in the spool says where reading resumes after
//!   a kill -9, atomically with the lines themselves. Metrics batches carry an empty note.
//! - [`InFlight`]: per stream, the batches written on the current link and not yet
//!   acknowledged, in order, with what the audit log and the checkpoint need once they are.

use aftercare_shared::protocol::StreamId;
use std::collections::VecDeque;

/// The spool payload for `frame` with `note`.
pub fn wrap(note: &[u8], frame: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + note.len() + frame.len());
    v.extend_from_slice(&(note.len() as u32).to_le_bytes());
    v.extend_from_slice(note);
    v.extend_from_slice(frame);
    v
}

/// (note, frame) of a spool payload; `None` if it is too short to be one (damage the CRC
/// missed cannot be excluded, and must not panic the agent).
pub fn split(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let note = payload.get(4..4usize.checked_add(n)?)?;
    Some((note, &payload[4 + n..]))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub seq: u64,
    /// Records (samples or log records) in the batch.
    pub count: u32,
    /// Bytes on the wire.
    pub bytes: usize,
    pub note: Vec<u8>,
}

/// Batches on the wire awaiting acknowledgement, per stream, oldest first.
#[derive(Debug, Default)]
pub struct InFlight {
    streams: [VecDeque<Sent>; 2],
    bytes: usize,
}

fn idx(stream: StreamId) -> usize {
    match stream {
        StreamId::Metrics => 0,
        StreamId::Logs => 1,
    }
}

impl InFlight {
    pub fn push(&mut self, stream: StreamId, s: Sent) {
        self.bytes += s.bytes;
        self.streams[idx(stream)].push_back(s);
    }

    /// Bytes awaiting acknowledgement: the window the sender keeps under its limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.streams.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `seq` of `stream` is acknowledged, and so (acks being in order) is all before it.
    pub fn ack(&mut self, stream: StreamId, seq: u64) -> Vec<Sent> {
        let q = &mut self.streams[idx(stream)];
        let mut done = Vec::new();
        while q.front().is_some_and(|s| s.seq <= seq) {
            let s = q.pop_front().expect("checked");
            self.bytes -= s.bytes;
            done.push(s);
        }
        done
    }

    /// The link is gone: whatever was in flight is sent again on the next one.
    pub fn clear(&mut self) {
        self.streams.iter_mut().for_each(VecDeque::clear);
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_short_input() {
        let p = wrap(b"note", b"frame");
        assert_eq!(split(&p), Some((&b"note"[..], &b"frame"[..])));
        assert_eq!(split(&wrap(b"", b"f")), Some((&b""[..], &b"f"[..])));
        assert_eq!(split(&[1, 0]), None);
        assert_eq!(split(&[9, 0, 0, 0, 1]), None);
        assert_eq!(split(&[255, 255, 255, 255]), None);
    }

    #[test]
    fn acks_settle_in_order_per_stream() {
        let mut f = InFlight::default();
        let s = |seq, bytes| Sent {
            seq,
            count: 1,
            bytes,
            note: vec![],
        };
        f.push(StreamId::Metrics, s(1, 10));
        f.push(StreamId::Logs, s(2, 100));
        f.push(StreamId::Logs, s(5, 100));
        f.push(StreamId::Metrics, s(3, 10));
        assert_eq!((f.len(), f.bytes()), (4, 220));
        let done: Vec<u64> = f.ack(StreamId::Logs, 2).iter().map(|s| s.seq).collect();
        assert_eq!(done, vec![2]);
        assert!(f.ack(StreamId::Logs, 1).is_empty());
        let done: Vec<u64> = f.ack(StreamId::Metrics, 9).iter().map(|s| s.seq).collect();
        assert_eq!(done, vec![1, 3]);
        assert_eq!((f.len(), f.bytes()), (1, 100));
        f.clear();
        assert!(f.is_empty() && f.bytes() == 0);
    }
}
