//! The audit log: what left this host, written where the customer can read it
//! (`aftercare-agent audit`) and check it (`aftercare-agent audit verify`).
//!
//! File `<state_dir>/audit.log`, one entry per line, append-only:
//!
//! ```text
//! 2026-11-22T04:00:00Z sent scope=metrics hour=2026-11-22T03:00:00Z records=360 bytes=1843200 collector=collector.example.com:7443 prev=5f1c… hash=9ab0…
//! 2026-11-22T04:02:11Z consent-granted scope=logs by="Ann Li" until=2027-04-01T00:00:00Z prev=9ab0… hash=03de…
//! ```
//!
//! Chain: `hash` is the first 128 bits (32 hex) of SHA-256 over everything before ` hash=`,
//! which includes `prev=`, the hash of the entry before (zeros for the first). So an edited
//! byte breaks that line's hash, and a deleted or moved line breaks the next line's `prev`.
//! What the chain cannot show: the last lines cut off, or the whole file rewritten with
//! fresh hashes by someone who can write it; anchoring the head hash elsewhere (e.g. with
//! the collector) would, and is not done yet.
//!
//! Writes: each append opens the file with O_APPEND, takes an exclusive `flock` (the agent and
//! a CLI command may both write), reads the last entry's hash from the file itself (so no
//! cached state can fork the chain), writes its lines in one `write`, and `fdatasync`s before
//! returning: entries are few (a handful per hour), so durability is worth the sync.
//!
//! Crashes: a write cut short leaves a last line without `\n` ("torn"). `verify` reports it
//! as torn, not as tampering. The next append first ends that fragment with `\n` and chains
//! to the last whole entry, so the fragment is skipped; `verify` then accepts it as a torn
//! fragment because the entry after it chains past it (had it ever been a whole entry, the
//! next `prev` would name it).

use aftercare_shared::consent::Scope;
use aftercare_shared::model::UnixMillis;
use aftercare_shared::time_fmt::rfc3339;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "audit.log";
const HASH_HEX: usize = 32;
const GENESIS: &str = "00000000000000000000000000000000";
const HOUR_MS: UnixMillis = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Something worth recording. Written as `<kind> key=value …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Records and bytes of one scope sent to one collector during the hour starting `hour`.
    Sent {
        hour: UnixMillis,
        scope: Scope,
        collector: String,
        records: u64,
        bytes: u64,
    },
    ConsentGranted {
        scope: Scope,
        by: String,
        until: Option<UnixMillis>,
    },
    ConsentRevoked {
        scope: Scope,
    },
    ConsentExpired {
        scope: Scope,
    },
    /// How often a redaction rule fired during the hour starting `hour`.
    Redacted {
        hour: UnixMillis,
        rule: String,
        count: u64,
    },
    /// Data the spool gave up (full, or its scope revoked).
    SpoolDropped {
        scope: Scope,
        records: u64,
        bytes: u64,
        reason: String,
    },
    /// A remote diagnostic was asked for, and ran or was refused: which probe with which
    /// arguments, who at the support company asked (from which finding), what came of it
    /// and how many bytes of output left the host.
    Diagnostic {
        probe: String,
        /// `name=value …`, or `-` for none.
        args: String,
        requested_by: String,
        finding: Option<i64>,
        /// `done exit=0`, `refused: no consent`, `timeout after 1000 ms`, `failed: …`.
        outcome: String,
        output_bytes: u64,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Sent { .. } => "sent",
            Event::ConsentGranted { .. } => "consent-granted",
            Event::ConsentRevoked { .. } => "consent-revoked",
            Event::ConsentExpired { .. } => "consent-expired",
            Event::Redacted { .. } => "redacted",
            Event::SpoolDropped { .. } => "spool-dropped",
            Event::Diagnostic { .. } => "diagnostic",
        }
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Event::Sent {
                hour,
                scope,
                collector,
                records,
                bytes,
            } => vec![
                ("scope", scope.to_string()),
                ("hour", rfc3339(*hour)),
                ("records", records.to_string()),
                ("bytes", bytes.to_string()),
                ("collector", collector.clone()),
            ],
            Event::ConsentGranted { scope, by, until } => vec![
                ("scope", scope.to_string()),
                ("by", by.clone()),
                ("until", until.map(rfc3339).unwrap_or_else(|| "-".into())),
            ],
            Event::ConsentRevoked { scope } | Event::ConsentExpired { scope } => {
                vec![("scope", scope.to_string())]
            }
            Event::Redacted { hour, rule, count } => vec![
                ("rule", rule.clone()),
                ("hour", rfc3339(*hour)),
                ("count", count.to_string()),
            ],
            Event::SpoolDropped {
                scope,
                records,
                bytes,
                reason,
            } => vec![
                ("scope", scope.to_string()),
                ("records", records.to_string()),
                ("bytes", bytes.to_string()),
                ("reason", reason.clone()),
            ],
            Event::Diagnostic {
                probe,
                args,
                requested_by,
                finding,
                outcome,
                output_bytes,
            } => vec![
                ("probe", probe.clone()),
                ("args", args.clone()),
                ("requested_by", requested_by.clone()),
                (
                    "finding",
                    finding.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                ),
                ("outcome", outcome.clone()),
                ("output_bytes", output_bytes.to_string()),
            ],
        }
    }
}

/// One entry read back. Fields are kept as text so entries written by a newer agent still
/// read and verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    pub at: UnixMillis,
    pub kind: String,
    pub fields: Fields,
    pub hash: String,
}

impl Entry {
    /// `key=value …` as written (values quoted where needed).
    pub fn details(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            if !s.is_empty() {
                s.push(' ');
            }
            push_field(&mut s, k, v);
        }
        s
    }
}

/// The line for `event` at `at` following an entry whose hash is `prev` (no `\n`).
pub fn format_line(at: UnixMillis, event: &Event, prev: &str) -> String {
    let mut body = format!("{} {}", rfc3339(at), event.kind());
    for (k, v) in event.fields() {
        body.push(' ');
        push_field(&mut body, k, &v);
    }
    let _ = write!(body, " prev={prev}");
    let hash = digest(&body);
    format!("{body} hash={hash}")
}

fn push_field(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '\\' || c == '=' || c.is_control());
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn digest(body: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let mut hex = String::with_capacity(HASH_HEX);
    for b in &d.as_ref()[..HASH_HEX / 2] {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

fn is_hash(s: &str) -> bool {
    s.len() == HASH_HEX && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a line is, as far as the chain is concerned.
enum Line {
    /// Not shaped like an entry (torn, damaged, blank).
    NotEntry,
    /// Shaped like one, but its content does not give its hash.
    BadHash,
    Entry {
        prev: String,
        entry: Entry,
    },
}

fn parse_line(line_no: usize, raw: &[u8]) -> Line {
    let Ok(line) = std::str::from_utf8(raw) else {
        return Line::NotEntry;
    };
    let Some((body, hash)) = line.rsplit_once(" hash=") else {
        return Line::NotEntry;
    };
    let Some((head, prev)) = body.rsplit_once(" prev=") else {
        return Line::NotEntry;
    };
    if !is_hash(hash) || !is_hash(prev) {
        return Line::NotEntry;
    }
    if digest(body) != hash {
        return Line::BadHash;
    }
    // The hash matched, so this is what the agent wrote; it parses unless the format changed.
    match parse_head(head) {
        Some((at, kind, fields)) => Line::Entry {
            prev: prev.to_string(),
            entry: Entry {
                line: line_no,
                at,
                kind,
                fields,
                hash: hash.to_string(),
            },
        },
        None => Line::NotEntry,
    }
}

/// `key=value` pairs in written order.
type Fields = Vec<(String, String)>;

fn parse_head(head: &str) -> Option<(UnixMillis, String, Fields)> {
    let (ts, rest) = head.split_once(' ')?;
    let at = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(aftercare_shared::time_fmt::from_offset)?;
    let (kind, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i + 1,
                    '\\' => match chars.next()?.1 {
                        'n' => v.push('\n'),
                        'u' => {
                            let tail = &q[i + 2..];
                            let close = tail.find('}')?;
                            let code = u32::from_str_radix(tail.get(1..close)?, 16).ok()?;
                            v.push(char::from_u32(code)?);
                            for _ in 0..=close {
                                chars.next();
                            }
                        }
                        c => v.push(c),
                    },
                    c => v.push(c),
                }
            };
            (v, &q[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        fields.push((key.to_string(), value));
        rest = next.strip_prefix(' ').unwrap_or(next);
    }
    Some((at, kind.to_string(), fields))
}

/// Why verification stopped. Line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("line {line}: edited: its content does not match its hash")]
    Edited { line: usize },
    #[error(
        "line {line}: not a well-formed entry, and the next entry chains to it: edited or damaged"
    )]
    Damaged { line: usize },
    #[error(
        "line {line}: does not follow the entry before it: an entry is missing or out of order"
    )]
    MissingOrReordered { line: usize },
    #[error(
        "line {line}: torn: the last entry was cut short (the agent stopped mid-write); this is \
         not tampering, and the next entry will start on a fresh line"
    )]
    TornTail { line: usize },
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Entries that verified, up to the first problem.
    pub entries: usize,
    /// Fragments of writes cut short by a crash, which later entries chain past.
    pub torn: Vec<usize>,
    pub problem: Option<Problem>,
}

/// Check a whole audit log's text (pure).
pub fn verify_bytes(text: &[u8]) -> Verified {
    let mut v = Verified::default();
    let mut last = GENESIS.to_string();
    // Lines that are not entries, waiting to see whether the next entry chains past them.
    let mut fragments: Vec<usize> = Vec::new();
    let pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    // `split` yields one empty piece after a final '\n'.
    let n = if text.ends_with(b"\n") || text.is_empty() {
        pieces.len() - 1
    } else {
        pieces.len()
    };
    let unterminated = !text.is_empty() && !text.ends_with(b"\n");
    for (i, raw) in pieces[..n].iter().enumerate() {
        let line_no = i + 1;
        let is_tail = unterminated && i + 1 == n;
        match parse_line(line_no, raw) {
            Line::Entry { prev, entry } => {
                if prev != last {
                    v.problem = Some(match fragments.first() {
                        Some(&f) => Problem::Damaged { line: f },
                        None => Problem::MissingOrReordered { line: line_no },
                    });
                    return v;
                }
                v.torn.append(&mut fragments);
                last = entry.hash;
                v.entries += 1;
            }
            // A cut-short write can never look whole with a wrong hash: the hash is last.
            Line::BadHash => {
                v.problem = Some(Problem::Edited { line: line_no });
                return v;
            }
            Line::NotEntry if is_tail => {
                v.problem = Some(Problem::TornTail { line: line_no });
                return v;
            }
            Line::NotEntry => fragments.push(line_no),
        }
    }
    if let Some(&f) = fragments.first() {
        v.problem = Some(Problem::Damaged { line: f });
    }
    v
}

/// Entries at or after `since`, in file order; lines that are not valid entries are skipped
/// (`verify` is the place that reports them).
pub fn read_bytes(text: &[u8], since: Option<UnixMillis>) -> Vec<Entry> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, raw)| match parse_line(i + 1, raw) {
            Line::Entry { entry, .. } => Some(entry),
            _ => None,
        })
        .filter(|e| since.is_none_or(|s| e.at >= s))
        .collect()
}

/// The hash the next entry must chain to: that of the last whole, valid entry in `text`.
fn last_hash(text: &[u8]) -> Option<String> {
    text.split(|&b| b == b'\n')
        .rev()
        .find_map(|raw| match parse_line(0, raw) {
            Line::Entry { entry, .. } => Some(entry.hash),
            _ => None,
        })
}

/// `<state_dir>/audit.log`.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(state_dir: &Path) -> AuditLog {
        AuditLog {
            path: state_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(std::io::Error) -> AuditError + '_ {
        |source| AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Append `events`, all stamped `at`, durably (see the module's notes on writes).
    pub fn append(&self, at: UnixMillis, events: &[Event]) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let err = self.err();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(&err)?;
        let created = !self.path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(&err)?;
        let _lock = Flock::exclusive(&file).map_err(&err)?;
        let (tail, ends_torn) = read_tail(&file).map_err(&err)?;
        let mut prev = match last_hash(&tail) {
            Some(h) => h,
            // Nothing valid in the tail: the file is new, or (rarely) its tail is one huge
            // damaged line; look at the whole file before starting from the beginning.
            None => last_hash(&std::fs::read(&self.path).map_err(&err)?)
                .unwrap_or_else(|| GENESIS.into()),
        };
        let mut out = String::new();
        if ends_torn {
            out.push('\n');
        }
        for e in events {
            let line = format_line(at, e, &prev);
            prev = line[line.len() - HASH_HEX..].to_string();
            out.push_str(&line);
            out.push('\n');
        }
        (&file).write_all(out.as_bytes()).map_err(&err)?;
        file.sync_data().map_err(&err)?;
        if created {
            // The new directory entry must survive a crash too.
            File::open(dir).and_then(|d| d.sync_all()).map_err(&err)?;
        }
        Ok(())
    }

    /// Entries at or after `since`; an absent file has none.
    pub fn read(&self, since: Option<UnixMillis>) -> Result<Vec<Entry>, AuditError> {
        Ok(read_bytes(&self.bytes()?, since))
    }

    pub fn verify(&self) -> Result<Verified, AuditError> {
        Ok(verify_bytes(&self.bytes()?))
    }

    fn bytes(&self) -> Result<Vec<u8>, AuditError> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.err()(e)),
        }
    }
}

/// The file's last 64 KiB (many entries), and whether it ends without `\n`.
fn read_tail(file: &File) -> std::io::Result<(Vec<u8>, bool)> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(64 * 1024);
    let mut buf = vec![0; (len - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    let torn = buf.last().is_some_and(|&b| b != b'\n');
    if start > 0 {
        // The first line is likely cut by the window; drop it.
        let cut = buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |p| p + 1);
        buf.drain(..cut);
    }
    Ok((buf, torn))
}

/// An exclusive advisory lock, released on drop (and by the kernel if we die).
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> std::io::Result<Flock<'a>> {
        // SAFETY: flock on a file descriptor we own for the lifetime of the guard.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Flock(file))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking cannot harm the descriptor.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Sums sent records and bytes per (scope, collector), and redaction counts per rule, over
/// the current hour, and gives them out as one entry each once the hour is over (pure: time
/// comes in as `now`).
#[derive(Debug, Default)]
pub struct HourlyAggregator {
    hour: Option<UnixMillis>,
    sent: BTreeMap<(Scope, String), (u64, u64)>,
    redacted: BTreeMap<String, u64>,
}

impl HourlyAggregator {
    pub fn new() -> HourlyAggregator {
        HourlyAggregator::default()
    }

    /// Records of `scope` acknowledged by `collector` at `now`. Returns the entries of an
    /// hour that ended before `now`, if any.
    pub fn sent(
        &mut self,
        now: UnixMillis,
        scope: Scope,
        collector: &str,
        records: u64,
        bytes: u64,
    ) -> Vec<Event> {
        let out = self.roll(now);
        let e = self.sent.entry((scope, collector.to_string())).or_default();
        e.0 += records;
        e.1 += bytes;
        out
    }

    /// Redaction counts (from `Redactor::take_counts`) observed at `now`.
    pub fn redacted(&mut self, now: UnixMillis, counts: &[(String, u64)]) -> Vec<Event> {
        let out = self.roll(now);
        for (rule, n) in counts {
            *self.redacted.entry(rule.clone()).or_default() += n;
        }
        out
    }

    /// Call now and then: the entries of an hour that has ended, if any.
    pub fn tick(&mut self, now: UnixMillis) -> Vec<Event> {
        let out = self.roll(now);
        if self.sent.is_empty() && self.redacted.is_empty() {
            self.hour = None;
        }
        out
    }

    /// The current (unfinished) hour's entries, e.g. at shutdown.
    pub fn flush(&mut self) -> Vec<Event> {
        let Some(hour) = self.hour.take() else {
            return Vec::new();
        };
        let mut out: Vec<Event> = std::mem::take(&mut self.sent)
            .into_iter()
            .map(|((scope, collector), (records, bytes))| Event::Sent {
                hour,
                scope,
                collector,
                records,
                bytes,
            })
            .collect();
        out.extend(
            std::mem::take(&mut self.redacted)
                .into_iter()
                .map(|(rule, count)| Event::Redacted { hour, rule, count }),
        );
        out
    }

    fn roll(&mut self, now: UnixMillis) -> Vec<Event> {
        let this_hour = now.div_euclid(HOUR_MS) * HOUR_MS;
        match self.hour {
            Some(h) if h == this_hour => Vec::new(),
            // A clock that stepped back keeps adding to the hour already open.
            Some(h) if h > this_hour => Vec::new(),
            Some(_) => {
                let out = self.flush();
                self.hour = Some(this_hour);
                out
            }
            None => {
                self.hour = Some(this_hour);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests;
