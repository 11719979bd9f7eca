use super::*;

const T0: UnixMillis = 1_795_316_400_000; // 2026-11-22T03:00:00Z

fn events() -> Vec<Event> {
    vec![
        Event::ConsentGranted {
            scope: Scope::Metrics,
            by: "Ann \"the admin\" Li".into(),
            until: Some(T0 + 90 * 24 * HOUR_MS),
        },
        Event::Sent {
            hour: T0,
            scope: Scope::Metrics,
            collector: "collector.example.com:7443".into(),
            records: 360,
            bytes: 1_843_200,
        },
        Event::Redacted {
            hour: T0,
            rule: "kv-secret".into(),
            count: 12,
        },
        Event::SpoolDropped {
            scope: Scope::Logs,
            records: 5,
            bytes: 900,
            reason: "scope revoked".into(),
        },
        Event::ConsentRevoked { scope: Scope::Logs },
        Event::Diagnostic {
            probe: "log-tail".into(),
            args: "source=nginx lines=20".into(),
            requested_by: "eng:wang.lei".into(),
            finding: Some(12),
            outcome: "done".into(),
            output_bytes: 1_204,
        },
    ]
}

/// A log with one entry per event, an hour apart.
fn log_text() -> Vec<u8> {
    let mut prev = GENESIS.to_string();
    let mut out = String::new();
    for (i, e) in events().iter().enumerate() {
        let line = format_line(T0 + i as i64 * HOUR_MS, e, &prev);
        prev = line[line.len() - HASH_HEX..].to_string();
        out.push_str(&line);
        out.push('\n');
    }
    out.into_bytes()
}

fn lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect()
}

#[test]
fn lines_are_readable_and_read_back() {
    let text = log_text();
    let s = String::from_utf8(text.clone()).unwrap();
    let first = s.lines().next().unwrap();
    assert!(
        first.starts_with(
            "2026-11-22T03:00:00Z consent-granted scope=metrics by=\"Ann \\\"the admin\\\" Li\" \
             until=2027-02-20T03:00:00Z prev=00000000000000000000000000000000 hash="
        ),
        "{first}"
    );
    assert!(s.contains(
        " sent scope=metrics hour=2026-11-22T03:00:00Z records=360 bytes=1843200 \
         collector=collector.example.com:7443 prev="
    ));
    let entries = read_bytes(&text, None);
    assert_eq!(entries.len(), 6);
    assert_eq!(
        entries[0].fields[1],
        ("by".into(), "Ann \"the admin\" Li".into())
    );
    assert_eq!(
        entries[3].details(),
        "scope=logs records=5 bytes=900 reason=\"scope revoked\""
    );
    assert_eq!(entries[4].line, 5);
}

#[test]
fn odd_values_round_trip() {
    let e = Event::ConsentGranted {
        scope: Scope::Logs,
        by: "a=b\\c\nd\te\u{7}ü 名".into(),
        until: None,
    };
    let line = format_line(T0, &e, GENESIS);
    assert!(!line.contains('\n'));
    let got = read_bytes(line.as_bytes(), None);
    assert_eq!(got[0].fields[1].1, "a=b\\c\nd\te\u{7}ü 名");
    assert_eq!(got[0].fields[2].1, "-");
}

#[test]
fn a_refused_diagnostic_reads_back_as_asked() {
    let e = Event::Diagnostic {
        probe: "unit".into(),
        args: "u=; rm -rf /\n$(id)".into(),
        requested_by: "eng".into(),
        finding: None,
        outcome: "refused: bad argument u: ';' is not allowed".into(),
        output_bytes: 0,
    };
    let line = format_line(T0, &e, GENESIS);
    assert!(!line.contains('\n'), "{line}");
    let got = read_bytes(line.as_bytes(), None);
    assert_eq!(got[0].kind, "diagnostic");
    let f: Vec<(&str, &str)> = got[0]
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        f,
        [
            ("probe", "unit"),
            ("args", "u=; rm -rf /\n$(id)"),
            ("requested_by", "eng"),
            ("finding", "-"),
            ("outcome", "refused: bad argument u: ';' is not allowed"),
            ("output_bytes", "0"),
        ]
    );
}

#[test]
fn intact_chain_verifies() {
    let v = verify_bytes(&log_text());
    assert_eq!(
        v,
        Verified {
            entries: 6,
            torn: vec![],
            problem: None
        }
    );
    assert_eq!(verify_bytes(b"").entries, 0);
    assert!(verify_bytes(b"").problem.is_none());
}

#[test]
fn an_edited_byte_is_found_at_its_line() {
    let text = log_text();
    let mut ls = lines(&text);
    // 360 records -> 960: one digit.
    let pos = ls[1].windows(3).position(|w| w == b"360").unwrap();
    ls[1][pos] = b'9';
    assert_eq!(
        verify_bytes(&join(&ls)).problem,
        Some(Problem::Edited { line: 2 })
    );
    // An edit to the hash itself is found the same way.
    let mut ls = lines(&text);
    let last = ls[3].len() - 1;
    ls[3][last] = if ls[3][last] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        verify_bytes(&join(&ls)).problem,
        Some(Problem::Edited { line: 4 })
    );
}

#[test]
fn deleted_or_reordered_lines_are_found() {
    let ls = lines(&log_text());
    let mut deleted = ls.clone();
    deleted.remove(2);
    let v = verify_bytes(&join(&deleted));
    assert_eq!(v.problem, Some(Problem::MissingOrReordered { line: 3 }));
    assert_eq!(v.entries, 2);

    let first_gone = join(&ls[1..]);
    assert_eq!(
        verify_bytes(&first_gone).problem,
        Some(Problem::MissingOrReordered { line: 1 })
    );

    let mut swapped = ls.clone();
    swapped.swap(1, 2);
    assert_eq!(
        verify_bytes(&join(&swapped)).problem,
        Some(Problem::MissingOrReordered { line: 2 })
    );

    // A line mangled beyond recognition is named, not the innocent line after it.
    let mut mangled = ls.clone();
    mangled[1].truncate(20);
    assert_eq!(
        verify_bytes(&join(&mangled)).problem,
        Some(Problem::Damaged { line: 2 })
    );
}

#[test]
fn a_torn_tail_is_torn_not_tampering() {
    let text = log_text();
    let last_start = text[..text.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    for cut in [last_start + 1, last_start + 30, text.len() - 2] {
        let v = verify_bytes(&text[..cut]);
        assert_eq!(v.problem, Some(Problem::TornTail { line: 6 }), "cut {cut}");
        assert_eq!(v.entries, 5);
    }
    // Cut just before its '\n': the entry is whole and counts.
    let v = verify_bytes(&text[..text.len() - 1]);
    assert_eq!((v.entries, v.problem), (6, None));
}

#[test]
fn append_after_a_torn_write_starts_a_fresh_line() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::new(&d.path().join("state"));
    assert_eq!(log.verify().unwrap(), Verified::default());
    log.append(T0, &events()[..3]).unwrap();
    assert_eq!(log.verify().unwrap().entries, 3);

    // The agent dies half-way through writing an entry.
    let torn = format_line(T0 + HOUR_MS, &events()[3], GENESIS);
    let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
    f.write_all(&torn.as_bytes()[..40]).unwrap();
    drop(f);
    assert_eq!(
        log.verify().unwrap().problem,
        Some(Problem::TornTail { line: 4 })
    );

    log.append(T0 + 2 * HOUR_MS, &events()[3..]).unwrap();
    let v = log.verify().unwrap();
    assert_eq!(
        v,
        Verified {
            entries: 6,
            torn: vec![4],
            problem: None
        }
    );
    let kinds: Vec<String> = log
        .read(None)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "consent-granted",
            "sent",
            "redacted",
            "spool-dropped",
            "consent-revoked",
            "diagnostic"
        ]
    );
}

#[test]
fn since_filters_by_entry_time() {
    let text = log_text();
    let got = read_bytes(&text, Some(T0 + 2 * HOUR_MS));
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].kind, "redacted");
    assert!(read_bytes(&text, Some(T0 + 10 * HOUR_MS)).is_empty());
}

#[test]
fn aggregator_emits_one_entry_per_scope_and_collector_per_hour() {
    let mut a = HourlyAggregator::new();
    let c = "collector.example.com:7443";
    assert!(a.sent(T0 + 5_000, Scope::Metrics, c, 1, 200).is_empty());
    assert!(a.sent(T0 + 15_000, Scope::Metrics, c, 1, 210).is_empty());
    assert!(a.sent(T0 + 20_000, Scope::Logs, c, 40, 8_000).is_empty());
    assert!(
        a.redacted(T0 + 30_000, &[("kv-secret".into(), 2)])
            .is_empty()
    );
    assert!(
        a.redacted(T0 + 40_000, &[("kv-secret".into(), 1), ("jwt".into(), 1)])
            .is_empty()
    );
    assert!(a.tick(T0 + HOUR_MS - 1).is_empty());

    let out = a.sent(T0 + HOUR_MS + 1_000, Scope::Metrics, c, 1, 190);
    assert_eq!(
        out,
        vec![
            Event::Sent {
                hour: T0,
                scope: Scope::Metrics,
                collector: c.into(),
                records: 2,
                bytes: 410
            },
            Event::Sent {
                hour: T0,
                scope: Scope::Logs,
                collector: c.into(),
                records: 40,
                bytes: 8_000
            },
            Event::Redacted {
                hour: T0,
                rule: "jwt".into(),
                count: 1
            },
            Event::Redacted {
                hour: T0,
                rule: "kv-secret".into(),
                count: 3
            },
        ]
    );
    // The next hour's record is its own; a quiet hour emits nothing.
    let out = a.tick(T0 + 3 * HOUR_MS);
    assert_eq!(out.len(), 1);
    assert!(a.tick(T0 + 4 * HOUR_MS).is_empty());
    assert!(a.flush().is_empty());
}

proptest::proptest! {
    /// Any one byte changed, anywhere, is reported (as an edit, damage or a torn tail).
    #[test]
    fn any_changed_byte_is_found(pos in 0usize..10_000, byte in proptest::num::u8::ANY) {
        let mut text = log_text();
        let pos = pos % text.len();
        proptest::prop_assume!(text[pos] != byte);
        text[pos] = byte;
        proptest::prop_assert!(verify_bytes(&text).problem.is_some());
    }

    /// Any line but the last removed is reported (the last: see the module's notes).
    #[test]
    fn any_removed_line_but_the_last_is_found(which in 0usize..5) {
        let mut ls = lines(&log_text());
        ls.remove(which);
        proptest::prop_assert!(verify_bytes(&join(&ls)).problem.is_some());
    }
}
