//! Joining the lines of one record (a stack trace) before it is sent. Pure: time comes in.
//!
//! One [`Combiner`] per followed file. A line that starts a record (by the source's
//! [`MultilineStart`] rule) sends the record pending before it; other lines join the
//! pending one. A record is also sent when no line came for `timeout` (the last trace of a
//! burst), when it would grow past `max_bytes` (what follows becomes a record of its own,
//! nothing is dropped), and before a piece of an over-long line, which passes alone.
//!
//! A record's `end` is its last line's: acknowledging the record acknowledges every line
//! in it, and lines still pending are never acknowledged, so a restart reads them again.

use super::config::MultilineStart;
use super::severity::starts_with_timestamp;
use super::tailer::Line;
use std::time::{Duration, Instant};

pub struct Combiner {
    /// `None`: every line is a record of its own.
    rule: Option<MultilineStart>,
    max_bytes: usize,
    timeout: Duration,
    pending: Option<(Line, Instant)>,
    /// Lines in the pending record.
    lines: u32,
}

/// A record: one line, or several joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: Line,
    pub lines: u32,
}

impl Combiner {
    pub fn new(rule: Option<MultilineStart>, max_bytes: usize, timeout: Duration) -> Self {
        Combiner {
            rule,
            max_bytes,
            timeout,
            pending: None,
            lines: 0,
        }
    }

    fn starts_record(&self, bytes: &[u8]) -> bool {
        match self.rule {
            None => true,
            Some(MultilineStart::Timestamp) => starts_with_timestamp(bytes),
            Some(MultilineStart::NotIndented) => !matches!(bytes.first(), Some(b' ' | b'\t')),
        }
    }

    /// Take in the next line of this file; returns the record it completed, if any.
    pub fn push(&mut self, now: Instant, line: Line) -> Vec<Record> {
        let mut out = Vec::new();
        if line.split || line.continued || self.rule.is_none() {
            out.extend(self.flush());
            out.push(Record { line, lines: 1 });
            return out;
        }
        let joins = match &self.pending {
            Some((p, _)) => {
                !self.starts_record(&line.bytes)
                    && p.file == line.file
                    && p.end == line.offset
                    && p.bytes.len() + 1 + line.bytes.len() <= self.max_bytes
            }
            None => false,
        };
        if joins {
            let (p, at) = self.pending.as_mut().expect("joins implies pending");
            p.bytes.push(b'\n');
            p.bytes.extend_from_slice(&line.bytes);
            p.end = line.end;
            *at = now;
            self.lines += 1;
        } else {
            out.extend(self.flush());
            self.pending = Some((line, now));
            self.lines = 1;
        }
        out
    }

    /// The pending record, if no line came for `timeout`.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Record> {
        match &self.pending {
            Some((_, at)) if now.saturating_duration_since(*at) >= self.timeout => self.flush(),
            _ => None,
        }
    }

    /// When `poll_timeout` will have something, for the driver's timer.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(_, at)| *at + self.timeout)
    }

    /// The pending record now (shutdown, file released).
    pub fn flush(&mut self) -> Option<Record> {
        let (line, _) = self.pending.take()?;
        Some(Record {
            line,
            lines: std::mem::take(&mut self.lines),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Line> {
        let mut offset = 0;
        text.lines()
            .map(|l| {
                let line = Line {
                    file: 1,
                    path: std::path::Path::new("app.log").into(),
                    offset,
                    end: offset + l.len() as u64 + 1,
                    bytes: l.as_bytes().to_vec(),
                    split: false,
                    continued: false,
                };
                offset = line.end;
                line
            })
            .collect()
    }

    fn run(c: &mut Combiner, text: &str) -> Vec<(String, u32, u64)> {
        let now = Instant::now();
        let mut out: Vec<Record> = lines(text)
            .into_iter()
            .flat_map(|l| c.push(now, l))
            .collect();
        out.extend(c.flush());
        out.into_iter()
            .map(|r| {
                (
                    String::from_utf8(r.line.bytes).unwrap(),
                    r.lines,
                    r.line.end,
                )
            })
            .collect()
    }

    const JAVA: &str = "\
2026-11-22 03:50:11,123 ERROR [main] c.e.OrderService - payment failed
java.lang.IllegalStateException: card declined
\tat com.example.OrderService.pay(OrderService.java:42)
\tat com.example.Main.main(Main.java:7)
Caused by: java.io.IOException: timeout
\t... 2 more
2026-11-22 03:50:12,001 INFO  [main] c.e.OrderService - retrying
";

    #[test]
    fn a_java_stack_trace_is_one_record_under_the_timestamp_rule() {
        let mut c = Combiner::new(
            Some(MultilineStart::Timestamp),
            4096,
            Duration::from_secs(1),
        );
        let got = run(&mut c, JAVA);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, 6);
        assert!(got[0].0.starts_with("2026-11-22 03:50:11,123 ERROR"));
        assert!(got[0].0.ends_with("\t... 2 more"));
        let first_six: usize = JAVA.lines().take(6).map(|l| l.len() + 1).sum();
        assert_eq!(
            got[0].2, first_six as u64,
            "acking the record acks its lines"
        );
        assert_eq!(got[1].1, 1);
        let mut c = Combiner::new(None, 4096, Duration::from_secs(1));
        assert_eq!(run(&mut c, JAVA).len(), 7, "no rule: a record per line");
        assert_eq!(c.deadline(), None, "nothing waits");
    }

    #[test]
    fn not_indented_joins_indented_lines_to_the_line_above() {
        let mut c = Combiner::new(
            Some(MultilineStart::NotIndented),
            4096,
            Duration::from_secs(1),
        );
        let got = run(
            &mut c,
            "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    boom()\nNameError: name 'boom' is not defined\n",
        );
        assert_eq!(
            got.iter().map(|g| g.1).collect::<Vec<_>>(),
            [3, 1],
            "the last line of a Python traceback is not indented: that rule splits it off"
        );
    }

    #[test]
    fn size_cap_timeout_and_split_pieces_send_the_pending_record() {
        let mut c = Combiner::new(
            Some(MultilineStart::NotIndented),
            20,
            Duration::from_secs(1),
        );
        let got = run(&mut c, "start\n  aaaaaaaa\n  bbbbbbbb\n");
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [2, 1]);

        let t0 = Instant::now();
        let mut ls = lines("x\n y\n").into_iter();
        assert!(c.push(t0, ls.next().unwrap()).is_empty());
        assert!(c.push(t0, ls.next().unwrap()).is_empty());
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(c.poll_timeout(t0 + Duration::from_millis(999)), None);
        assert_eq!(
            c.poll_timeout(t0 + Duration::from_secs(1)).unwrap().lines,
            2
        );

        let mut piece = lines("p\n").remove(0);
        piece.split = true;
        let mut ls = lines("a\n").into_iter();
        assert!(c.push(t0, ls.next().unwrap()).is_empty());
        let out = c.push(t0, piece);
        assert_eq!(out.len(), 2, "pending first, then the piece alone");
        assert!(out[1].line.split);
    }
}
