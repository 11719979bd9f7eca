//! Bytes on disk: the segment header, the record header, CRC-32C, and a scanner that walks a
//! segment, skipping damaged bytes and finding the next whole record after them. No file
//! system here: the scanner reads any `Read + Seek`.

use aftercare_shared::model::LossReport;
use std::io::{self, Read, Seek, SeekFrom};

/// First bytes of every segment file; the last byte is the format version.
pub const SEG_MAGIC: [u8; 8] = *b"ACSPOOL\x01";
pub const SEG_HEADER: u64 = SEG_MAGIC.len() as u64;
/// First two bytes of every record, so that a scan after damage can find the next record.
pub const REC_MAGIC: [u8; 2] = [0xAC, 0x5B];
pub const REC_HEADER: usize = 32;
/// A payload longer than this is taken for a damaged length field (frames are far smaller:
/// the codec's cap is checked before a frame is built).
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// Flag: the record's body ends with the loss report its batch carries (3 x u64 LE:
/// dropped batches, dropped samples, discarded by revocation), so that the loss is owed
/// again if the record is dropped unsent.
pub const FLAG_CARRIES_LOSS: u8 = 1;
pub const LOSS_TRAILER: u32 = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecHeader {
    /// `StreamId::code()`: a new stream needs no format change.
    pub stream: u8,
    pub flags: u8,
    /// Length of the body: the payload, and the loss trailer if flagged.
    pub len: u32,
    /// Samples or lines in the payload, for loss accounting.
    pub count: u32,
    /// Record id: grows by one per record across all streams of the spool.
    pub id: u64,
    /// The batch's sequence number on its stream (what the collector acknowledges).
    pub seq: u64,
}

impl RecHeader {
    pub fn total(&self) -> u64 {
        REC_HEADER as u64 + u64::from(self.len)
    }
}

/// The header of a record holding `payload` and, if it is not empty, `carried`.
pub fn header(
    stream: u8,
    count: u32,
    id: u64,
    seq: u64,
    payload: &[u8],
    carried: &LossReport,
) -> RecHeader {
    let flags = if carried.is_empty() {
        0
    } else {
        FLAG_CARRIES_LOSS
    };
    let trailer = if flags == 0 { 0 } else { LOSS_TRAILER };
    RecHeader {
        stream,
        flags,
        len: payload.len() as u32 + trailer,
        count,
        id,
        seq,
    }
}

/// Append one record (header, payload, loss trailer if flagged) to `out`.
pub fn encode(out: &mut Vec<u8>, h: &RecHeader, payload: &[u8], carried: &LossReport) {
    let start = out.len();
    out.extend_from_slice(&REC_MAGIC);
    out.push(h.stream);
    out.push(h.flags);
    out.extend_from_slice(&h.len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled below
    out.extend_from_slice(&h.count.to_le_bytes());
    out.extend_from_slice(&h.id.to_le_bytes());
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(payload);
    if h.flags & FLAG_CARRIES_LOSS != 0 {
        for v in [
            carried.dropped_batches,
            carried.dropped_samples,
            carried.discarded_by_revocation,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    debug_assert_eq!(out.len() - start, REC_HEADER + h.len as usize);
    let (head, body) = out[start..].split_at(REC_HEADER);
    let crc = record_crc(head, body);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC covers every byte of the record except the CRC field itself.
fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&header[..8]);
    let c = crc32c::crc32c_append(c, &header[12..REC_HEADER]);
    crc32c::crc32c_append(c, payload)
}

/// Parse a header; `None` if it cannot be one (wrong magic, flags, absurd length).
pub fn decode_header(b: &[u8; REC_HEADER]) -> Option<(RecHeader, u32)> {
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let flags = b[3];
    let min_len = if flags == FLAG_CARRIES_LOSS {
        LOSS_TRAILER
    } else {
        0
    };
    if b[..2] != REC_MAGIC
        || flags & !FLAG_CARRIES_LOSS != 0
        || b[2] == 0
        || !(min_len..=MAX_PAYLOAD + LOSS_TRAILER).contains(&u32_at(4))
    {
        return None;
    }
    let h = RecHeader {
        stream: b[2],
        flags,
        len: u32_at(4),
        count: u32_at(12),
        id: u64_at(16),
        seq: u64_at(24),
    };
    Some((h, u32_at(8)))
}

/// Split a record's body into its payload and the loss report it carries.
pub fn split_body<'a>(h: &RecHeader, body: &'a [u8]) -> (&'a [u8], LossReport) {
    if h.flags & FLAG_CARRIES_LOSS == 0 || body.len() < LOSS_TRAILER as usize {
        return (body, LossReport::default());
    }
    let (payload, t) = body.split_at(body.len() - LOSS_TRAILER as usize);
    let at = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().expect("8 bytes"));
    (
        payload,
        LossReport {
            dropped_batches: at(0),
            dropped_samples: at(8),
            discarded_by_revocation: at(16),
        },
    )
}

/// CRC-32C (Castagnoli); the crate uses the CPU's CRC instruction where there is one: the
/// spool moves every log line twice (append, send), so a table loop would cost more than
/// the rest of the spool.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// What a scan found at one place in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A whole record; its body is in `Scanner::body()`.
    Record { offset: u64, header: RecHeader },
    /// Bytes that hold no whole record: a bit flip, or a write cut short. `to_end` says the
    /// damage runs to the end of the segment (a torn tail, after a crash mid-write).
    Damaged { offset: u64, len: u64, to_end: bool },
}

/// Walks the records of one segment from `pos` to `end`, reading sequentially.
pub struct Scanner {
    pos: u64,
    end: u64,
    buf: Vec<u8>,
}

impl Scanner {
    pub fn new(pos: u64, end: u64) -> Self {
        Scanner {
            pos,
            end,
            buf: Vec::new(),
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn body(&self) -> &[u8] {
        &self.buf
    }

    /// The next record or damaged range; `r` must be positioned at `self.pos()`.
    pub fn next<R: Read + Seek>(&mut self, r: &mut R) -> io::Result<Option<Item>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let offset = self.pos;
        if let Some(header) = self.try_record(r, offset)? {
            self.pos = offset + header.total();
            return Ok(Some(Item::Record { offset, header }));
        }
        let next = self.find_next(r, offset + 1)?;
        r.seek(SeekFrom::Start(next))?;
        self.pos = next;
        Ok(Some(Item::Damaged {
            offset,
            len: next - offset,
            to_end: next == self.end,
        }))
    }

    /// A whole, intact record at `at` (the reader is there), or `None`.
    fn try_record<R: Read>(&mut self, r: &mut R, at: u64) -> io::Result<Option<RecHeader>> {
        if self.end - at < REC_HEADER as u64 {
            return Ok(None);
        }
        let mut hb = [0u8; REC_HEADER];
        r.read_exact(&mut hb)?;
        let Some((h, crc)) = decode_header(&hb) else {
            return Ok(None);
        };
        if h.total() > self.end - at {
            return Ok(None);
        }
        self.buf.clear();
        self.buf.resize(h.len as usize, 0);
        r.read_exact(&mut self.buf)?;
        Ok((record_crc(&hb, &self.buf) == crc).then_some(h))
    }

    /// The offset of the first intact record at or after `from`, or the end.
    fn find_next<R: Read + Seek>(&mut self, r: &mut R, from: u64) -> io::Result<u64> {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut base = from;
        while base + 1 < self.end {
            r.seek(SeekFrom::Start(base))?;
            let n = ((self.end - base) as usize).min(chunk.len());
            r.read_exact(&mut chunk[..n])?;
            for i in 0..n.saturating_sub(1) {
                if chunk[i..i + 2] == REC_MAGIC {
                    let at = base + i as u64;
                    r.seek(SeekFrom::Start(at))?;
                    if self.try_record(r, at)?.is_some() {
                        return Ok(at);
                    }
                }
            }
            // Overlap by one byte so a magic split across chunks is still found.
            base += (n as u64).saturating_sub(1).max(1);
        }
        Ok(self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn rec(id: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let none = LossReport::default();
        encode(
            &mut v,
            &header(1, 3, id, 100 + id, payload, &none),
            payload,
            &none,
        );
        v
    }

    #[test]
    fn carried_loss_round_trips() {
        let l = LossReport {
            dropped_batches: 1,
            dropped_samples: 2,
            discarded_by_revocation: 3,
        };
        let mut v = Vec::new();
        let h = header(1, 3, 9, 10, b"frame", &l);
        encode(&mut v, &h, b"frame", &l);
        let mut r = Cursor::new(&v);
        let mut s = Scanner::new(0, v.len() as u64);
        assert!(
            matches!(s.next(&mut r).unwrap(), Some(Item::Record { header, .. }) if header == h)
        );
        assert_eq!(split_body(&h, s.body()), (&b"frame"[..], l));
    }

    fn scan(bytes: &[u8]) -> Vec<Item> {
        let mut r = Cursor::new(bytes);
        let mut s = Scanner::new(0, bytes.len() as u64);
        let mut out = Vec::new();
        while let Some(i) = s.next(&mut r).unwrap() {
            out.push(i);
        }
        out
    }

    fn ids(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Record { header, .. } => Some(header.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn crc32c_known_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn round_trip() {
        let mut b = rec(1, b"hello");
        b.extend(rec(2, b""));
        b.extend(rec(3, &[7; 1000]));
        let items = scan(&b);
        assert_eq!(ids(&items), [1, 2, 3]);
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn every_flipped_bit_is_detected_and_the_rest_still_read() {
        let a = rec(1, b"first record");
        let b = rec(2, b"second record");
        let c = rec(3, b"third record");
        let whole = [a.clone(), b.clone(), c].concat();
        for bit in 0..b.len() * 8 {
            let mut d = whole.clone();
            d[a.len() + bit / 8] ^= 1 << (bit % 8);
            let items = scan(&d);
            assert_eq!(ids(&items), [1, 3], "bit {bit}");
            assert!(
                items.contains(&Item::Damaged {
                    offset: a.len() as u64,
                    len: b.len() as u64,
                    to_end: false
                }),
                "bit {bit}: {items:?}"
            );
        }
    }

    #[test]
    fn torn_tail_at_every_byte() {
        let a = rec(1, b"kept");
        let b = rec(2, b"cut short by a crash");
        for cut in 1..b.len() {
            let d = [a.clone(), b[..cut].to_vec()].concat();
            let items = scan(&d);
            assert_eq!(ids(&items), [1]);
            assert_eq!(
                items[1],
                Item::Damaged {
                    offset: a.len() as u64,
                    len: cut as u64,
                    to_end: true
                }
            );
        }
    }

    #[test]
    fn garbage_between_records_is_skipped() {
        let mut d = rec(1, b"x");
        d.extend_from_slice(&[0xAC, 0x5B, 1, 0, 9, 9, 9, 9]);
        d.extend(vec![0xAC; 70_000]); // longer than one search chunk
        d.extend(rec(2, b"y"));
        let items = scan(&d);
        assert_eq!(ids(&items), [1, 2]);
        assert_eq!(items.len(), 3);
    }
}
