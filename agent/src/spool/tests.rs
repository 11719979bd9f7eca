//! The spool against real files and against a file system in memory with injected faults;
//! a model test runs random append / ack / revoke / crash / full-disk / reopen sequences.

use super::*;
use proptest::prelude::*;
use std::cell::RefCell;
use std::io::Cursor;
use std::rc::Rc;

const M: StreamId = StreamId::Metrics;

#[derive(Default)]
struct Mem {
    files: BTreeMap<String, Vec<u8>>,
    /// Bytes that may still be written before the disk is "full".
    budget: Option<usize>,
}

#[derive(Clone, Default)]
struct MemFs(Rc<RefCell<Mem>>);

struct MemWriter {
    fs: Rc<RefCell<Mem>>,
    name: String,
}

impl Write for MemWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let mut m = self.fs.borrow_mut();
        let n = m.budget.map_or(b.len(), |left| left.min(b.len()));
        if n == 0 && !b.is_empty() {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        if let Some(left) = m.budget.as_mut() {
            *left -= n;
        }
        let f = m.files.get_mut(&self.name).ok_or(io::ErrorKind::NotFound)?;
        f.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Storage for MemFs {
    type Reader = Cursor<Vec<u8>>;
    type Writer = MemWriter;

    fn list(&self) -> io::Result<Vec<(String, u64)>> {
        let m = self.0.borrow();
        Ok(m.files
            .iter()
            .map(|(n, b)| (n.clone(), b.len() as u64))
            .collect())
    }
    fn open_read(&self, name: &str) -> io::Result<Self::Reader> {
        let m = self.0.borrow();
        let f = m.files.get(name).ok_or(io::ErrorKind::NotFound)?;
        Ok(Cursor::new(f.clone()))
    }
    fn open_append(&self, name: &str, create: bool) -> io::Result<MemWriter> {
        let mut m = self.0.borrow_mut();
        match (m.files.contains_key(name), create) {
            (true, true) => return Err(io::ErrorKind::AlreadyExists.into()),
            (false, false) => return Err(io::ErrorKind::NotFound.into()),
            (false, true) => {
                m.files.insert(name.to_string(), Vec::new());
            }
            (true, false) => {}
        }
        Ok(MemWriter {
            fs: self.0.clone(),
            name: name.to_string(),
        })
    }
    fn sync(&self, _: &mut MemWriter) -> io::Result<()> {
        Ok(())
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut m = self.0.borrow_mut();
        let f = m.files.get_mut(name).ok_or(io::ErrorKind::NotFound)?;
        f.truncate(len as usize);
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.0.borrow_mut().files.remove(name);
        Ok(())
    }
    fn read_small(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.borrow().files.get(name).cloned())
    }
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.0
            .borrow_mut()
            .files
            .insert(name.to_string(), bytes.to_vec());
        Ok(())
    }
}

impl MemFs {
    fn segment_names(&self) -> Vec<String> {
        let m = self.0.borrow();
        m.files
            .keys()
            .filter(|n| n.ends_with(".seg"))
            .cloned()
            .collect()
    }
}

fn cfg(max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        segment_bytes,
        fsync: FsyncPolicy::Always,
    }
}

fn all_unsent<S: Storage>(sp: &mut Spool<S>) -> Vec<Record> {
    sp.rewind();
    sp.take_unsent(M, usize::MAX).unwrap()
}

fn seqs(r: &[Record]) -> Vec<u64> {
    r.iter().map(|r| r.seq).collect()
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

use std::path::PathBuf;

#[test]
fn append_send_ack_and_reopen_does_not_resend_acked() {
    let d = tempfile::tempdir().unwrap();
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1024)).unwrap();
    for seq in 1..=20 {
        sp.append(M, seq, 5, &payload(seq, 100)).unwrap();
    }
    assert!(seg_files(d.path()).len() > 1, "rolled over to new segments");
    let first = sp.take_unsent(M, 500).unwrap();
    assert_eq!(seqs(&first), [1, 2, 3, 4, 5]);
    assert_eq!(first[0].payload, payload(1, 100));
    assert_eq!(first[0].count, 5);
    let rest = sp.take_unsent(M, usize::MAX).unwrap();
    assert_eq!(seqs(&rest), (6..=20).collect::<Vec<_>>());
    assert!(sp.take_unsent(M, usize::MAX).unwrap().is_empty());
    let before = seg_files(d.path()).len();
    sp.ack(M, 12);
    assert!(
        seg_files(d.path()).len() < before,
        "fully acked segments deleted"
    );
    drop(sp);

    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1024)).unwrap();
    assert_eq!(sp.acked(M), 12);
    assert_eq!(seqs(&all_unsent(&mut sp)), (13..=20).collect::<Vec<_>>());
    sp.append(M, 21, 1, b"after").unwrap();
    sp.ack(M, 21);
    assert!(!sp.has_unacked(M));
    assert_eq!(
        seg_files(d.path()).len(),
        1,
        "only the active segment stays"
    );
    assert!(all_unsent(&mut sp).is_empty());
}

#[test]
fn flipped_bit_is_skipped_counted_and_the_rest_delivered() {
    let d = tempfile::tempdir().unwrap();
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1 << 20)).unwrap();
    for seq in 1..=3 {
        sp.append(M, seq, 1, &payload(seq, 200)).unwrap();
    }
    drop(sp);
    let f = &seg_files(d.path())[0];
    let mut b = std::fs::read(f).unwrap();
    let rec = format::REC_HEADER + 200;
    b[SEG_HEADER as usize + rec + 100] ^= 0x10; // inside the second record's payload
    std::fs::write(f, &b).unwrap();

    let rep = verify::verify(d.path()).unwrap();
    assert_eq!(rep.damaged_segments(), 1);
    assert_eq!(
        rep.segments[0].damaged,
        [(SEG_HEADER + rec as u64, rec as u64, false)]
    );

    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1 << 20)).unwrap();
    assert_eq!(sp.stats.damaged, 1);
    assert_eq!(seqs(&all_unsent(&mut sp)), [1, 3]);
    sp.append(M, 4, 1, b"more").unwrap();
    assert_eq!(seqs(&all_unsent(&mut sp)), [1, 3, 4]);
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let d = tempfile::tempdir().unwrap();
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1 << 20)).unwrap();
    for seq in 1..=3 {
        sp.append(M, seq, 1, &payload(seq, 50)).unwrap();
    }
    drop(sp);
    let f = &seg_files(d.path())[0];
    let len = std::fs::metadata(f).unwrap().len();
    let whole_two = SEG_HEADER + 2 * (format::REC_HEADER as u64 + 50);
    std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let rep = verify::verify(d.path()).unwrap();
    assert_eq!(
        rep.segments[0].damaged,
        [(whole_two, len - 20 - whole_two, true)]
    );
    assert!(rep.render().contains("torn tail"), "{}", rep.render());

    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1 << 20)).unwrap();
    assert_eq!(std::fs::metadata(f).unwrap().len(), whole_two, "cut");
    assert_eq!(seqs(&all_unsent(&mut sp)), [1, 2]);
    sp.append(M, 4, 1, &payload(4, 50)).unwrap();
    drop(sp);
    assert_eq!(verify::verify(d.path()).unwrap().damaged_segments(), 0);
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1 << 20)).unwrap();
    let got = all_unsent(&mut sp);
    assert_eq!(seqs(&got), [1, 2, 4]);
    assert_eq!(got[2].payload, payload(4, 50));
}

#[test]
fn over_the_bound_drops_oldest_whole_segments_counted_and_persisted() {
    let d = tempfile::tempdir().unwrap();
    // ~10 records of 100 B per segment, 4 segments' worth of room.
    let c = cfg(4 * 1400, 1400);
    let mut sp = Spool::open_dir(d.path(), c).unwrap();
    for seq in 1..=100 {
        sp.append(M, seq, 7, &payload(seq, 100)).unwrap();
        assert!(sp.bytes() <= c.max_bytes, "bound kept at seq {seq}");
    }
    let got = all_unsent(&mut sp);
    let lost = 100 - got.len() as u64;
    assert!(lost > 0);
    assert_eq!(
        seqs(&got),
        ((lost + 1)..=100).collect::<Vec<_>>(),
        "oldest went"
    );
    let owed = sp.owed(Scope::Metrics);
    assert_eq!(owed.dropped_batches, lost);
    assert_eq!(owed.dropped_samples, lost * 7);
    drop(sp);
    let mut sp = Spool::open_dir(d.path(), c).unwrap();
    assert_eq!(
        sp.owed(Scope::Metrics).dropped_batches,
        lost,
        "survives restart"
    );
    assert_eq!(sp.take_owed(Scope::Metrics).dropped_samples, lost * 7);
    assert!(sp.owed(Scope::Metrics).is_empty());
    sp.flush().unwrap();
    drop(sp);
    let sp = Spool::open_dir(d.path(), c).unwrap();
    assert!(sp.owed(Scope::Metrics).is_empty(), "taken once");
}

#[test]
fn partly_acked_segment_dropped_counts_only_the_unacked() {
    let fs = MemFs::default();
    let c = cfg(3 * 1400, 1400);
    let mut sp = Spool::open(fs.clone(), c).unwrap();
    for seq in 1..=5 {
        sp.append(M, seq, 2, &payload(seq, 100)).unwrap();
    }
    sp.ack(M, 3);
    for seq in 6..=40 {
        sp.append(M, seq, 2, &payload(seq, 100)).unwrap();
    }
    let got = all_unsent(&mut sp);
    let first_left = got[0].seq;
    let owed = sp.owed(Scope::Metrics);
    assert_eq!(
        owed.dropped_batches,
        first_left - 4,
        "seqs 4.. were lost, not 1..3"
    );
    assert_eq!(owed.dropped_samples, 2 * (first_left - 4));
}

#[test]
fn revoke_deletes_the_scopes_segments() {
    let d = tempfile::tempdir().unwrap();
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1024)).unwrap();
    for seq in 1..=30 {
        sp.append(M, seq, 1, &payload(seq, 100)).unwrap();
    }
    sp.ack(M, 4);
    assert_eq!(sp.discard_scope(Scope::Logs), 0);
    assert_eq!(sp.discard_scope(Scope::Metrics), 26);
    assert!(seg_files(d.path()).is_empty(), "{:?}", seg_files(d.path()));
    assert!(all_unsent(&mut sp).is_empty());
    assert_eq!(sp.owed(Scope::Metrics).discarded_by_revocation, 26);
    drop(sp);
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1024)).unwrap();
    assert_eq!(sp.owed(Scope::Metrics).discarded_by_revocation, 26);
    assert!(all_unsent(&mut sp).is_empty());
    sp.append(M, 31, 1, b"granted again").unwrap();
    assert_eq!(seqs(&all_unsent(&mut sp)), [31]);
}

#[test]
fn full_disk_is_an_error_counted_as_a_drop_and_appends_recover() {
    let fs = MemFs::default();
    let mut sp = Spool::open(fs.clone(), cfg(1 << 20, 1 << 20)).unwrap();
    sp.append(M, 1, 3, b"one").unwrap();
    for budget in [0, 1, 10, 34] {
        fs.0.borrow_mut().budget = Some(budget);
        assert!(sp.append(M, 2, 3, b"two").is_err(), "budget {budget}");
        fs.0.borrow_mut().budget = None;
    }
    // A new segment cannot even be made on a full disk.
    fs.0.borrow_mut().budget = Some(3);
    sp.discard_scope(Scope::Metrics);
    assert!(sp.append(M, 5, 3, b"x").is_err());
    fs.0.borrow_mut().budget = None;
    assert_eq!(sp.owed(Scope::Metrics).dropped_batches, 5);
    assert_eq!(sp.owed(Scope::Metrics).dropped_samples, 15);
    sp.append(M, 6, 3, b"three").unwrap();
    assert_eq!(seqs(&all_unsent(&mut sp)), [6]);
    drop(sp);
    let mut sp = Spool::open(fs.clone(), cfg(1 << 20, 1 << 20)).unwrap();
    assert_eq!(sp.stats.damaged, 0, "partial writes were cut");
    assert_eq!(seqs(&all_unsent(&mut sp)), [6]);
}

#[test]
fn garbage_and_foreign_files_never_stop_open() {
    let fs = MemFs::default();
    {
        let mut m = fs.0.borrow_mut();
        m.files
            .insert(segment_name(1, 0), b"not a spool at all".to_vec());
        m.files.insert(segment_name(9, 5), vec![0xAC; 100]);
        m.files.insert("README".into(), b"hi".to_vec());
        m.files
            .insert(STATE_FILE.into(), b"\xff\xfe garbage".to_vec());
    }
    let mut sp = Spool::open(fs.clone(), cfg(1 << 20, 1 << 20)).unwrap();
    assert!(all_unsent(&mut sp).is_empty());
    assert_eq!(
        fs.segment_names(),
        Vec::<String>::new(),
        "empty segments removed"
    );
    sp.append(M, 1, 1, b"fine").unwrap();
    assert_eq!(seqs(&all_unsent(&mut sp)), [1]);
}

#[test]
fn state_parsing_tolerates_junk() {
    let (acked, owed) = parse_state(
        "aftercare-spool-state 1\nacked 1 42\nacked x 1\nowed metrics 1 2 3\nowed nope 1 1 1\n",
    );
    assert_eq!(acked, BTreeMap::from([(1, 42)]));
    assert_eq!(owed[0].discarded_by_revocation, 3);
    assert_eq!(parse_state("v0\nacked 1 5\n").0.len(), 0);
    assert_eq!(
        parse_segment_name("001-00000000000000000042.seg"),
        Some((1, 42))
    );
    assert_eq!(parse_segment_name(".state.tmp"), None);
}

#[derive(Debug, Clone)]
enum Op {
    /// Append; with `carry`, the batch carries (and clears) the loss owed so far.
    Append {
        len: usize,
        count: u32,
        carry: bool,
    },
    Take {
        max: usize,
    },
    Rewind,
    /// Acknowledge the k-th unacknowledged record the model knows of (modulo).
    Ack {
        k: usize,
    },
    Revoke,
    /// Killed mid-append: a prefix of a record lands in the newest segment, then reopen.
    Crash {
        cut: usize,
        len: usize,
    },
    /// The disk fills `budget` bytes into an append.
    Full {
        budget: usize,
        len: usize,
    },
    Reopen,
    /// A bit flips at rest in some segment (picked modulo), found at the next open.
    BitFlip {
        file: usize,
        bit: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300, 0u32..50, any::<bool>())
            .prop_map(|(len, count, carry)| Op::Append { len, count, carry }),
        2 => (1usize..2000).prop_map(|max| Op::Take { max }),
        1 => Just(Op::Rewind),
        3 => (0usize..100).prop_map(|k| Op::Ack { k }),
        1 => Just(Op::Revoke),
        1 => (1usize..400, 0usize..300).prop_map(|(cut, len)| Op::Crash { cut, len }),
        1 => (0usize..400, 0usize..300).prop_map(|(budget, len)| Op::Full { budget, len }),
        1 => Just(Op::Reopen),
        1 => (0usize..100, 0usize..100_000).prop_map(|(file, bit)| Op::BitFlip { file, bit }),
    ]
}

#[derive(Default)]
struct Model {
    next_seq: u64,
    acked: u64,
    /// Appended, not acknowledged, not known lost: seq -> (count, payload, carried loss).
    live: BTreeMap<u64, (u32, Vec<u8>, LossReport)>,
    /// Loss the spool must owe now.
    owed: LossReport,
    flipped: bool,
    /// Records lost to a flipped bit: a later flip of the same bit repairs them.
    damaged: BTreeMap<u64, (u32, Vec<u8>, LossReport)>,
}

/// Everything the spool would send from scratch is live in the model, in order, above the
/// last acknowledgement; what the model holds and the spool does not was counted as dropped.
fn check(sp: &mut Spool<MemFs>, m: &mut Model) {
    check_allowing_damage(sp, m, 0)
}

/// As `check`, but up to `damaged` records may have vanished without being counted as
/// dropped (they are counted as damage instead).
fn check_allowing_damage(sp: &mut Spool<MemFs>, m: &mut Model, damaged: usize) {
    let got = all_unsent(sp);
    let mut prev = m.acked;
    for r in &got {
        assert!(r.seq > prev, "order / acked resent: {} after {prev}", r.seq);
        prev = r.seq;
        // Flipping the same bit twice gives the record back, intact (its CRC says so).
        if let Some(d) = m.damaged.remove(&r.seq) {
            m.live.insert(r.seq, d);
        }
        let (count, payload, _) = m.live.get(&r.seq).expect("sent only what is live");
        assert_eq!((&r.count, &r.payload), (count, payload));
    }
    let oldest_kept = got.first().map_or(u64::MAX, |r| r.seq);
    let gone: Vec<u64> = m
        .live
        .keys()
        .filter(|s| !got.iter().any(|r| r.seq == **s))
        .copied()
        .collect();
    if damaged > 0 {
        assert!(
            gone.len() <= damaged,
            "one flip loses at most one record: {gone:?}"
        );
        for s in gone {
            let d = m.live.remove(&s).expect("gone from live");
            m.damaged.insert(s, d);
        }
        return;
    }
    for s in gone {
        assert!(s < oldest_kept, "only the oldest are dropped");
        let (count, _, carried) = m.live.remove(&s).unwrap();
        add_loss(&mut m.owed, &carried);
        m.owed.dropped_batches += 1;
        m.owed.dropped_samples += u64::from(count);
    }
    assert_eq!(
        sp.owed(Scope::Metrics),
        m.owed,
        "dropped are counted, carried owed again"
    );
    assert!(sp.bytes() <= sp.config().max_bytes);
}

fn run_model(ops: Vec<Op>) {
    let fs = MemFs::default();
    let c = cfg(3000, 700);
    let mut sp = Spool::open(fs.clone(), c).unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append { len, count, carry } => {
                m.next_seq += 1;
                let p = payload(m.next_seq, len);
                let carried = if carry {
                    m.owed = LossReport::default();
                    sp.take_owed(Scope::Metrics)
                } else {
                    LossReport::default()
                };
                sp.append_carrying(M, m.next_seq, count, &carried, &p)
                    .unwrap();
                m.live.insert(m.next_seq, (count, p, carried));
            }
            Op::Take { max } => {
                let got = sp.take_unsent(M, max).unwrap();
                assert!(got.iter().all(|r| r.seq > m.acked));
            }
            Op::Rewind => sp.rewind(),
            Op::Ack { k } => {
                if !m.live.is_empty() {
                    let seq = *m.live.keys().nth(k % m.live.len()).unwrap();
                    sp.ack(M, seq);
                    m.acked = seq;
                    m.live.retain(|s, _| *s > seq);
                }
            }
            Op::Revoke => {
                // Anything already dropped is found by `check` first.
                check(&mut sp, &mut m);
                let n = sp.discard_scope(Scope::Metrics);
                assert_eq!(n, m.live.len() as u64);
                for (_, _, carried) in std::mem::take(&mut m.live).into_values() {
                    add_loss(&mut m.owed, &carried);
                }
                m.owed.discarded_by_revocation += n;
            }
            Op::Crash { cut, len } => {
                drop(sp);
                let newest = fs.segment_names().pop();
                if let Some(name) = newest {
                    let mut rec = Vec::new();
                    let (p, none) = (payload(0, len), LossReport::default());
                    let h = format::header(M.code(), 1, 1 << 40, m.next_seq + 1, &p, &none);
                    format::encode(&mut rec, &h, &p, &none);
                    rec.truncate(cut.min(rec.len() - 1));
                    fs.0.borrow_mut().files.get_mut(&name).unwrap().extend(rec);
                }
                sp = Spool::open(fs.clone(), c).unwrap();
                if !m.flipped {
                    assert_eq!(sp.stats.damaged, 0, "a torn tail is cut, not damage");
                }
            }
            Op::Full { budget, len } => {
                m.next_seq += 1;
                fs.0.borrow_mut().budget = Some(budget);
                let r = sp.append(M, m.next_seq, 3, &payload(m.next_seq, len));
                fs.0.borrow_mut().budget = None;
                match r {
                    Ok(()) => {
                        m.live.insert(
                            m.next_seq,
                            (3, payload(m.next_seq, len), LossReport::default()),
                        );
                    }
                    Err(_) => {
                        m.owed.dropped_batches += 1;
                        m.owed.dropped_samples += 3;
                    }
                }
            }
            Op::Reopen => {
                drop(sp);
                sp = Spool::open(fs.clone(), c).unwrap();
            }
            Op::BitFlip { file, bit } => {
                drop(sp);
                let names = fs.segment_names();
                if !names.is_empty() {
                    let mut mem = fs.0.borrow_mut();
                    let f = mem.files.get_mut(&names[file % names.len()]).unwrap();
                    if !f.is_empty() {
                        let bit = bit % (f.len() * 8);
                        f[bit / 8] ^= 1 << (bit % 8);
                        m.flipped = true;
                    }
                }
                sp = Spool::open(fs.clone(), c).unwrap();
                check_allowing_damage(&mut sp, &mut m, 1);
            }
        }
        check(&mut sp, &mut m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn model(ops in proptest::collection::vec(op(), 1..60)) {
        run_model(ops);
    }
}

/// Rough figures for the report: `cargo test -p aftercare-agent --lib spool_throughput --
/// --ignored --nocapture` (set `CARGO_PROFILE_DEV_OPT_LEVEL=z` for the shipped code's speed).
#[test]
#[ignore]
fn spool_throughput() {
    let d = tempfile::tempdir().unwrap();
    let n = 50_000u64;
    let p = vec![0x5Au8; 1024];
    let mut c = SpoolConfig {
        fsync: FsyncPolicy::Never,
        ..SpoolConfig::default()
    };
    let mut sp = Spool::open_dir(d.path(), c).unwrap();
    let t = Instant::now();
    for seq in 1..=n {
        sp.append(M, seq, 10, &p).unwrap();
    }
    sp.flush().unwrap();
    let w = t.elapsed();
    let mb = (n * 1024) as f64 / 1e6;
    println!(
        "append 1 KiB x {n}, fsync never + one flush: {:.0} records/s, {:.0} MB/s",
        n as f64 / w.as_secs_f64(),
        mb / w.as_secs_f64()
    );
    let t = Instant::now();
    let mut got = 0;
    loop {
        let b = sp.take_unsent(M, 64 * 1024).unwrap();
        if b.is_empty() {
            break;
        }
        got += b.len();
    }
    let r = t.elapsed();
    assert_eq!(got as u64, n);
    println!(
        "read back in 64 KiB batches: {:.0} records/s, {:.0} MB/s",
        n as f64 / r.as_secs_f64(),
        mb / r.as_secs_f64()
    );
    let t = Instant::now();
    drop(sp);
    let sp = Spool::open_dir(d.path(), c).unwrap();
    println!(
        "open (scan {} segments, {:.0} MB): {:?}",
        sp.segments(),
        sp.bytes() as f64 / 1e6,
        t.elapsed()
    );
    drop(sp);
    c.fsync = FsyncPolicy::Always;
    let d = tempfile::tempdir().unwrap();
    let mut sp = Spool::open_dir(d.path(), c).unwrap();
    let t = Instant::now();
    for seq in 1..=200 {
        sp.append(M, seq, 10, &p).unwrap();
    }
    println!(
        "append with fsync always: {:.0} records/s",
        200.0 / t.elapsed().as_secs_f64()
    );
}

/// Another stream's chain (a code this build does not know, as after a downgrade): it counts
/// toward the bound and goes first when oldest, and revoking metrics leaves it alone.
#[test]
fn chains_per_stream_share_the_bound_and_revoke_apart() {
    let fs = MemFs::default();
    let other = segment_name(7, 0);
    let mut bytes = SEG_MAGIC.to_vec();
    let none = LossReport::default();
    for id in 0..5 {
        let h = format::header(7, 1, id, id + 1, &[1; 100], &none);
        format::encode(&mut bytes, &h, &[1; 100], &none);
    }
    fs.0.borrow_mut().files.insert(other.clone(), bytes);
    let mut sp = Spool::open(fs.clone(), cfg(2000, 700)).unwrap();
    assert_eq!(sp.segments(), 1);
    sp.append(M, 1, 1, &payload(1, 100)).unwrap();
    assert!(
        fs.segment_names().contains(&segment_name(M.code(), 5)),
        "ids go on"
    );
    sp.discard_scope(Scope::Metrics);
    assert_eq!(
        fs.segment_names(),
        vec![other.clone()],
        "only metrics' chain deleted"
    );
    for seq in 2..=12 {
        sp.append(M, seq, 1, &payload(seq, 100)).unwrap();
    }
    assert!(
        !fs.segment_names().contains(&other),
        "the oldest went first"
    );
    assert_eq!(seqs(&all_unsent(&mut sp)).first(), Some(&2), "metrics kept");
    assert_eq!(sp.owed(Scope::Metrics).dropped_batches, 0);
    assert_eq!(
        sp.stats.dropped, 5,
        "the other stream's loss is still counted"
    );
}

#[test]
fn a_record_sent_from_memory_is_not_read_back_and_order_is_kept() {
    let d = tempfile::tempdir().unwrap();
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1024)).unwrap();
    // Nothing taken yet on this connection: the caller must not send it itself.
    sp.append(M, 1, 1, &payload(1, 100)).unwrap();
    assert!(!sp.take_appended(M));
    assert_eq!(seqs(&sp.take_unsent(M, usize::MAX).unwrap()), [1]);
    // Caught up: the next one goes from memory and is not read back.
    sp.append(M, 2, 1, &payload(2, 100)).unwrap();
    assert!(sp.take_appended(M));
    assert!(sp.take_unsent(M, usize::MAX).unwrap().is_empty());
    // Asked twice, or for another stream: no.
    assert!(!sp.take_appended(M));
    // Two appends before asking: the first is unsent, so neither is taken from memory.
    sp.append(M, 3, 1, &payload(3, 100)).unwrap();
    sp.append(M, 4, 1, &payload(4, 100)).unwrap();
    assert!(!sp.take_appended(M));
    assert_eq!(seqs(&sp.take_unsent(M, usize::MAX).unwrap()), [3, 4]);
    // Across a segment roll (1 KiB segments): read back, then caught up again.
    for seq in 5..=12 {
        sp.append(M, seq, 1, &payload(seq, 100)).unwrap();
        if !sp.take_appended(M) {
            assert_eq!(seqs(&sp.take_unsent(M, usize::MAX).unwrap()), [seq]);
        }
    }
    assert!(sp.take_unsent(M, usize::MAX).unwrap().is_empty());
    // A new connection sends everything unacknowledged again, from disk.
    sp.rewind();
    sp.append(M, 13, 1, &payload(13, 100)).unwrap();
    assert!(!sp.take_appended(M));
    assert_eq!(seqs(&all_unsent(&mut sp)), (1..=13).collect::<Vec<_>>());
}

#[test]
fn acknowledgement_marks_are_saved_lazily_loss_and_flush_at_once() {
    let d = tempfile::tempdir().unwrap();
    let c = SpoolConfig {
        fsync: FsyncPolicy::Every(Duration::from_millis(1)),
        ..cfg(1 << 20, 1024)
    };
    let mut sp = Spool::open_dir(d.path(), c).unwrap();
    for seq in 1..=3 {
        sp.append(M, seq, 1, &payload(seq, 100)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    sp.ack(M, 2);
    sp.tick().unwrap();
    drop(sp);
    // Not saved yet: a crash here sends 1 and 2 again (the collector knows them).
    let mut sp = Spool::open_dir(d.path(), c).unwrap();
    assert_eq!(sp.acked(M), 0);
    sp.ack(M, 2);
    sp.flush().unwrap();
    drop(sp);
    let mut sp = Spool::open_dir(d.path(), c).unwrap();
    assert_eq!(sp.acked(M), 2);
    assert_eq!(seqs(&all_unsent(&mut sp)), [3]);
}

#[test]
fn renumbering_rewrites_unacknowledged_records_in_order() {
    let d = tempfile::tempdir().unwrap();
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1024)).unwrap();
    for seq in 1..=12 {
        sp.append(M, seq, 2, &payload(seq, 100)).unwrap();
    }
    sp.ack(M, 4);
    let mut next = 1000;
    let moved = sp
        .renumber(M, |p| {
            next += 1;
            let mut p = p.to_vec();
            p.push(b'!');
            (next, p)
        })
        .unwrap();
    assert_eq!(moved, 8);
    let want: Vec<u64> = (1001..=1008).collect();
    let got = all_unsent(&mut sp);
    assert_eq!(seqs(&got), want);
    assert_eq!(got[0].payload, [payload(5, 100), b"!".to_vec()].concat());
    assert!(got.iter().all(|r| r.count == 2));
    drop(sp);
    let mut sp = Spool::open_dir(d.path(), cfg(1 << 20, 1024)).unwrap();
    assert_eq!(
        seqs(&all_unsent(&mut sp)),
        want,
        "the old numbers are gone for good"
    );
}
