//! Redaction: secrets in log lines are masked before a line leaves the host.
//!
//! A [`RuleSet`] is built once at start from the built-in rules plus the customer's
//! `[[redact]]` rules in agent.toml (a bad pattern is refused there, with the rule's name).
//! Each log source owns a [`Redactor`] over the shared rule set: it carries the one piece of
//! state that spans lines (inside a PEM private-key block or not) and counts how often each
//! rule fired, for the audit log.
//!
//! Masked text becomes `[REDACTED:<rule>]` (or a custom rule's `replace_with`); everything
//! else in the line is left byte for byte as it was.
//!
//! Engine: the built-ins are hand-written scanners over bytes (every delimiter they look for
//! is ASCII, so cuts always fall on UTF-8 boundaries); only customer patterns go through
//! `regex-lite`. Measured in a throwaway binary built like `agent-release` (opt-level z, fat
//! LTO), text over a binary without a regex: regex-lite +64 KB, this module with regex-lite
//! +81 KB, `regex` without Unicode or perf features +294 KB, `regex` as usually used
//! +1,040 KB. Text is PSS nearly byte for byte (../shared/PROBES.md), on a 4 MiB cap. The
//! agent itself (`agent-release`, redaction not yet wired in, audit log and CLI in) grew
//! from 2,639,921 to 2,728,833 bytes of text.
//! The price is speed on customer patterns: regex-lite has no literal optimisations, so a
//! pattern with a literal start (`EMP-[0-9]{6}`) is prefiltered here with a substring search
//! and costs next to nothing, while one without (`\b[0-9]{4}…`) costs ~4.5 µs per 200-byte
//! line (`regex`: ~0.5). The built-ins take 0.8–0.95 µs per 200-byte line (release build;
//! `redact_speed` test). regex-lite has no Unicode classes (`\p{..}`); such a pattern is
//! refused at start with regex-lite's message.
//!
//! Built-in rules, in the order they are applied:
//! - `private-key-block`: `-----BEGIN … PRIVATE KEY-----` up to `-----END … PRIVATE KEY-----`.
//!   On one line (e.g. a JSON string with `\n` escapes) only that span is masked. When the
//!   block spans lines, the BEGIN line is masked from the header on, every following line is
//!   replaced by the marker, and the END line is masked up to the end of its footer. A block
//!   with no END stops being masked after [`MAX_KEY_BLOCK_LINES`] lines, so a truncated key
//!   does not silence a log source forever. Counted once per block.
//! - `url-password`: `scheme://user:PASSWORD@host` (the password up to the last `@` of the
//!   authority, so an unescaped `@` in a password is still covered).
//! - `bearer-token`: `Bearer TOKEN` (any case), where TOKEN (RFC 6750 token68) has at least
//!   16 characters, or 8 with a digit, so prose such as "bearer of bad news" or
//!   `token_type=bearer expires_in=3600` is left alone.
//! - `basic-auth`: `Authorization: Basic <base64>` (the base64 is only `user:password`);
//!   the header name must come first.
//! - `jwt`: `eyJ….eyJ….sig` (header and payload are base64url JSON objects).
//! - `aws-key`: AWS access key ids `AKIA`/`ASIA` + 16 of `[0-9A-Z]`, standing alone.
//! - `api-key`, `kv-secret`: `key=value`, `key: value`, `"key":"value"`, `key => value`,
//!   where the key (any case) ends in one of [`API_KEY_WORDS`] / [`SECRET_WORDS`] at a word
//!   boundary (`_`, `-`, `.`, or camelCase): `DB_PASSWORD`, `--password`, `clientSecret`,
//!   `spring.datasource.password`. A quoted value is masked up to its closing quote; an
//!   unquoted one up to whitespace, a quote, `,`, `&` or `;`. The key must be the whole
//!   last word, so counters such as `tokens=5` or `max_tokens=512` and prose such as
//!   `password policy updated` are not touched.
//! - then the customer's rules, in the order written.

use memchr::memmem::Finder;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

/// How every marker starts; a span that already starts so is not masked again.
pub const MARKER_PREFIX: &str = "[REDACTED:";

/// Lines after a BEGIN without END that are still masked (a 16384-bit RSA key is ~200).
pub const MAX_KEY_BLOCK_LINES: u32 = 256;

/// Key endings for `kv-secret`.
pub const SECRET_WORDS: &[&str] = &["password", "passwd", "pwd", "secret", "token"];
/// Key endings for `api-key` (checked before `kv-secret`, so `client_secret` counts here).
pub const API_KEY_WORDS: &[&str] = &[
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "secret_key",
    "client_secret",
    "private_key",
];

/// A customer rule from agent.toml: `[[redact]] name = "employee-id" pattern = "EMP-[0-9]{6}"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    /// Shown in the marker and in the audit log's counts.
    pub name: String,
    /// A regular expression (regex-lite syntax: no Unicode classes).
    pub pattern: String,
    /// Literal text put in place of each match; default `[REDACTED:<name>]`.
    #[serde(default)]
    pub replace_with: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error(
        "redact rule '{name}': pattern '{pattern}' is not a valid regular expression: {reason}"
    )]
    BadPattern {
        name: String,
        pattern: String,
        reason: String,
    },
    #[error(
        "redact rule '{name}': pattern '{pattern}' matches empty text, so it would mask \
         nothing but mark every position; make it match at least one character"
    )]
    MatchesEmpty { name: String, pattern: String },
    #[error("redact rule name '{name}' is not usable: use 1 to 64 letters, digits, '-' or '_'")]
    BadName { name: String },
    #[error("redact rule name '{name}' is used twice or is a built-in rule's name")]
    Duplicate { name: String },
}

/// The built-in rules, applied in [`Builtin::ALL`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    PrivateKeyBlock,
    UrlPassword,
    BearerToken,
    BasicAuth,
    Jwt,
    AwsKey,
    ApiKey,
    KvSecret,
}

impl Builtin {
    pub const ALL: [Builtin; 8] = [
        Builtin::PrivateKeyBlock,
        Builtin::UrlPassword,
        Builtin::BearerToken,
        Builtin::BasicAuth,
        Builtin::Jwt,
        Builtin::AwsKey,
        Builtin::ApiKey,
        Builtin::KvSecret,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::PrivateKeyBlock => "private-key-block",
            Builtin::UrlPassword => "url-password",
            Builtin::BearerToken => "bearer-token",
            Builtin::BasicAuth => "basic-auth",
            Builtin::Jwt => "jwt",
            Builtin::AwsKey => "aws-key",
            Builtin::ApiKey => "api-key",
            Builtin::KvSecret => "kv-secret",
        }
    }

    /// The next span to mask at or after `from`: non-empty, starting at or after `from`.
    /// (Private-key blocks are stateful and handled by the [`Redactor`] itself.)
    fn find(self, b: &[u8], from: usize) -> Option<(usize, usize)> {
        match self {
            Builtin::PrivateKeyBlock => None,
            Builtin::UrlPassword => find_url_password(b, from),
            Builtin::BearerToken => find_bearer(b, from),
            Builtin::BasicAuth => find_basic_auth(b, from),
            Builtin::Jwt => find_jwt(b, from),
            Builtin::AwsKey => find_aws_key(b, from),
            Builtin::ApiKey => find_kv(b, from, API_KEY_WORDS),
            Builtin::KvSecret => find_kv(b, from, SECRET_WORDS),
        }
    }
}

enum Matcher {
    Builtin(Builtin),
    /// With the literal text every match starts with, when the pattern has one: regex-lite
    /// has no literal optimisations, so lines without it skip the regex entirely.
    Custom(regex_lite::Regex, Option<String>),
}

struct Rule {
    name: String,
    replacement: String,
    matcher: Matcher,
}

/// Built-in plus customer rules, compiled once and shared by every log source.
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// The built-ins followed by `custom`; a bad custom rule is refused with its name.
    pub fn new(custom: &[RedactRule]) -> Result<RuleSet, RedactError> {
        let mut rules: Vec<Rule> = Builtin::ALL
            .iter()
            .map(|&b| Rule {
                name: b.name().to_string(),
                replacement: marker(b.name()),
                matcher: Matcher::Builtin(b),
            })
            .collect();
        for c in custom {
            let name_ok = (1..=64).contains(&c.name.len())
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(RedactError::BadName {
                    name: c.name.clone(),
                });
            }
            if rules.iter().any(|r| r.name == c.name) {
                return Err(RedactError::Duplicate {
                    name: c.name.clone(),
                });
            }
            let re = regex_lite::RegexBuilder::new(&c.pattern)
                // A customer pattern runs on every line: keep its compiled form small.
                .size_limit(1 << 20)
                .build()
                .map_err(|e| RedactError::BadPattern {
                    name: c.name.clone(),
                    pattern: c.pattern.clone(),
                    reason: e.to_string(),
                })?;
            if re.is_match("") {
                return Err(RedactError::MatchesEmpty {
                    name: c.name.clone(),
                    pattern: c.pattern.clone(),
                });
            }
            rules.push(Rule {
                name: c.name.clone(),
                replacement: c.replace_with.clone().unwrap_or_else(|| marker(&c.name)),
                matcher: Matcher::Custom(re, literal_prefix(&c.pattern)),
            });
        }
        Ok(RuleSet { rules })
    }

    /// Rule names in the order they are applied.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }
}

/// The literal text every match of `pattern` starts with (`EMP-` for `EMP-[0-9]{6}`), if it
/// plainly has one. Conservative: any alternation, escape, group or flag ends the prefix.
fn literal_prefix(pattern: &str) -> Option<String> {
    if pattern.contains('|') {
        return None;
    }
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if "\\.[]()*+?{}^$#".contains(c) || c.is_whitespace() {
            break;
        }
        match chars.peek() {
            // `ab?`: the `b` is optional, so the prefix is `a`.
            Some('*' | '?' | '{') => break,
            Some('+') => {
                out.push(c);
                break;
            }
            _ => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn marker(name: &str) -> String {
    format!("{MARKER_PREFIX}{name}]")
}

/// One log source's redaction: the rule set, whether we are inside a private-key block, and
/// how often each rule fired since the counts were last taken.
pub struct Redactor {
    rules: Arc<RuleSet>,
    /// `Some(n)`: inside a multi-line private-key block, `n` lines after its BEGIN.
    in_key_block: Option<u32>,
    counts: Vec<u64>,
}

impl Redactor {
    pub fn new(rules: Arc<RuleSet>) -> Redactor {
        let counts = vec![0; rules.rules.len()];
        Redactor {
            rules,
            in_key_block: None,
            counts,
        }
    }

    /// The line with every secret masked; borrowed (no copy) when nothing fired. `line` is one
    /// line without its terminator.
    pub fn redact<'a>(&mut self, line: &'a str) -> Cow<'a, str> {
        self.redact_gated(line, true)
    }

    /// `redact`, optionally without the [`Gate`] (tests compare the two).
    fn redact_gated<'a>(&mut self, line: &'a str, gated: bool) -> Cow<'a, str> {
        let mut cur: Cow<'a, str> = Cow::Borrowed(line);
        // Index 0 is private-key-block (Builtin::ALL order).
        if let Some(masked) = self.key_block(line) {
            cur = Cow::Owned(masked);
        }
        let gate = if gated {
            Gate::of(line.as_bytes())
        } else {
            Gate::ALL
        };
        for (i, rule) in self.rules.rules.iter().enumerate().skip(1) {
            let found = match &rule.matcher {
                Matcher::Builtin(b) if !gate.may_fire(*b) => None,
                Matcher::Builtin(b) => mask_spans(&cur, &rule.replacement, |s, from| {
                    b.find(s.as_bytes(), from)
                }),
                Matcher::Custom(re, prefix) => mask_spans(&cur, &rule.replacement, |s, from| {
                    let start = match prefix {
                        Some(p) => from + s[from..].find(p.as_str())?,
                        None => from,
                    };
                    re.find_at(s, start).map(|m| (m.start(), m.end()))
                }),
            };
            if let Some((masked, n)) = found {
                self.counts[i] += n;
                cur = Cow::Owned(masked);
            }
        }
        cur
    }

    fn key_block(&mut self, line: &str) -> Option<String> {
        let b = line.as_bytes();
        let m = &self.rules.rules[0].replacement;
        if let Some(n) = self.in_key_block {
            if let Some((_, end)) = find_pem_header(b, 0, &PEM_END) {
                self.in_key_block = None;
                return Some(format!("{m}{}", &line[end..]));
            }
            if n >= MAX_KEY_BLOCK_LINES {
                // No END in sight: the key was cut off; stop hiding the rest of the log.
                self.in_key_block = None;
                return None;
            }
            self.in_key_block = Some(n + 1);
            return Some(m.clone());
        }
        let (start, hdr_end) = find_pem_header(b, 0, &PEM_BEGIN)?;
        self.counts[0] += 1;
        match find_pem_header(b, hdr_end, &PEM_END) {
            Some((_, end)) => Some(format!("{}{m}{}", &line[..start], &line[end..])),
            None => {
                self.in_key_block = Some(0);
                Some(format!("{}{m}", &line[..start]))
            }
        }
    }

    /// Times each rule fired since the last [`Redactor::take_counts`], rules that never
    /// fired left out.
    pub fn counts(&self) -> Vec<(&str, u64)> {
        self.rules
            .rules
            .iter()
            .zip(&self.counts)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.name.as_str(), *n))
            .collect()
    }

    /// The counts (as [`Redactor::counts`]), reset to zero: what the audit log records.
    pub fn take_counts(&mut self) -> Vec<(String, u64)> {
        let out = self
            .counts()
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        self.counts.iter_mut().for_each(|n| *n = 0);
        out
    }
}

/// Which of the rules that look for common bytes (`=` and `:` for the key-value rules, `b`
/// for bearer and basic) can fire on a line, found in one scan per family of bytes rather
/// than one per rule: these scans are most of what redaction costs on a line without
/// secrets. Taken on the line as read: a marker put in by an earlier rule never makes a
/// later one fire (no marker holds `bearer ` or `basic `, and a key word is matched on the
/// last word before its separator, which a marker only ever ends).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Gate {
    api_key: bool,
    kv_secret: bool,
    bearer: bool,
    basic: bool,
}

impl Gate {
    const ALL: Gate = Gate {
        api_key: true,
        kv_secret: true,
        bearer: true,
        basic: true,
    };

    fn of(b: &[u8]) -> Gate {
        let mut g = Gate::default();
        for i in memchr::memchr2_iter(b'=', b':', b) {
            g.api_key = g.api_key || kv_value(b, i, API_KEY_WORDS).is_some();
            g.kv_secret = g.kv_secret || kv_value(b, i, SECRET_WORDS).is_some();
            if g.api_key && g.kv_secret {
                break;
            }
        }
        for i in memchr::memchr2_iter(b'b', b'B', b) {
            let Some(w) = b.get(i..i + 6) else { break };
            g.bearer = g.bearer || w.eq_ignore_ascii_case(b"bearer");
            g.basic = g.basic || w.eq_ignore_ascii_case(b"basic ");
        }
        g
    }

    fn may_fire(self, b: Builtin) -> bool {
        match b {
            Builtin::ApiKey => self.api_key,
            Builtin::KvSecret => self.kv_secret,
            Builtin::BearerToken => self.bearer,
            Builtin::BasicAuth => self.basic,
            // One substring search each: their own scan is as cheap as a gate.
            Builtin::PrivateKeyBlock | Builtin::UrlPassword | Builtin::Jwt | Builtin::AwsKey => {
                true
            }
        }
    }
}

/// Replace every span `find` reports with `replacement`; `None` when nothing was found.
fn mask_spans(
    line: &str,
    replacement: &str,
    find: impl Fn(&str, usize) -> Option<(usize, usize)>,
) -> Option<(String, u64)> {
    let mut out: Option<String> = None;
    let (mut last, mut pos, mut n) = (0, 0, 0);
    while pos <= line.len() {
        let Some((s, e)) = find(line, pos) else { break };
        if e == s || line[s..].starts_with(MARKER_PREFIX) {
            // Empty match (a custom pattern such as `\b`) or already masked: step over it.
            pos = e.max(s + line[s..].chars().next().map_or(1, char::len_utf8));
            continue;
        }
        let o = out.get_or_insert_with(|| String::with_capacity(line.len() + 24));
        o.push_str(&line[last..s]);
        o.push_str(replacement);
        n += 1;
        last = e;
        pos = e;
    }
    out.map(|mut o| {
        o.push_str(&line[last..]);
        (o, n)
    })
}

/// `needle` in `b` at or after `from`. Looks for the first byte alone, then compares: much
/// cheaper than comparing a window at every position.
/// memchr's SIMD search with searchers built once: every built-in runs over every line,
/// so the scans, not the rare matches, are what redaction costs (a byte loop per rule
/// made it 1.5 us a line; building a searcher per call, a third of that).
fn find_from(b: &[u8], from: usize, needle: &Finder<'static>) -> Option<usize> {
    needle.find(b.get(from..)?).map(|p| from + p)
}

macro_rules! finder {
    ($name:ident, $lit:literal) => {
        static $name: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new($lit));
    };
}
finder!(PEM_BEGIN, "-----BEGIN ");
finder!(PEM_END, "-----END ");
finder!(DASHES, "-----");
finder!(PRIVATE_KEY, "PRIVATE KEY");
finder!(SCHEME_SEP, "://");
finder!(JWT_START, "eyJ");
finder!(AKIA, "AKIA");
finder!(ASIA, "ASIA");

/// `-----BEGIN <label>-----` (or END) whose label names a private key: (start, end) of it.
fn find_pem_header(b: &[u8], from: usize, open: &Finder<'static>) -> Option<(usize, usize)> {
    let mut pos = from;
    while let Some(s) = find_from(b, pos, open) {
        let label_start = s + open.needle().len();
        if let Some(close) = find_from(b, label_start, &DASHES) {
            let label = &b[label_start..close];
            let plausible = label.len() <= 64
                && label
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b' ');
            if plausible && find_from(label, 0, &PRIVATE_KEY).is_some() {
                return Some((s, close + 5));
            }
        }
        pos = label_start;
    }
    None
}

fn find_url_password(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut pos = from;
    while let Some(k) = find_from(b, pos, &SCHEME_SEP) {
        let start = k + 3;
        let mut end = start;
        while end < b.len()
            && !b[end].is_ascii_whitespace()
            && !matches!(b[end], b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>')
        {
            end += 1;
        }
        let auth = &b[start..end];
        if let Some(at) = auth.iter().rposition(|&c| c == b'@')
            && let Some(colon) = auth[..at].iter().position(|&c| c == b':')
            && colon + 1 < at
        {
            return Some((start + colon + 1, start + at));
        }
        pos = start;
    }
    None
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

fn find_bearer(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 6 < b.len() {
        // Jump to the next b or B.
        i += memchr::memchr2(b'b', b'B', &b[i..b.len() - 6])?;
        if b[i..i + 6].eq_ignore_ascii_case(b"bearer")
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
            && b[i + 6] == b' '
        {
            let mut s = i + 6;
            while s < b.len() && b[s] == b' ' {
                s += 1;
            }
            let mut e = s;
            while e < b.len() && is_token_char(b[e]) {
                e += 1;
            }
            let body = e;
            // `=` only as base64 padding at the end: `bearer expires_in=3600` is not a token.
            while e < b.len() && b[e] == b'=' {
                e += 1;
            }
            let token = &b[s..body];
            if token.len() >= 16 || (token.len() >= 8 && token.iter().any(u8::is_ascii_digit)) {
                return Some((s, e));
            }
            i = e.max(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

fn find_basic_auth(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut pos = from;
    loop {
        let end = b.len().saturating_sub(6);
        let i = memchr::memchr2_iter(b'b', b'B', b.get(pos..end)?)
            .map(|k| pos + k)
            .find(|&i| b[i..i + 6].eq_ignore_ascii_case(b"basic "))?;
        pos = i + 6;
        // The header's name must come first, so prose ("basic usage") is left alone.
        let mut k = i;
        while k > 0 && matches!(b[k - 1], b' ' | b':' | b'=' | b'"' | b'\'') {
            k -= 1;
        }
        if k == i || k < 13 || !b[k - 13..k].eq_ignore_ascii_case(b"authorization") {
            continue;
        }
        let mut s = i + 6;
        while s < b.len() && b[s] == b' ' {
            s += 1;
        }
        let mut e = s;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || matches!(b[e], b'+' | b'/' | b'=')) {
            e += 1;
        }
        if e - s >= 4 {
            return Some((s, e));
        }
    }
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn find_jwt(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let run = |mut i: usize| {
        while i < b.len() && is_b64url(b[i]) {
            i += 1;
        }
        i
    };
    let mut pos = from;
    while let Some(s) = find_from(b, pos, &JWT_START) {
        pos = s + 3;
        if s > 0 && is_b64url(b[s - 1]) {
            continue;
        }
        let h = run(s + 3);
        if h >= b.len() || b[h] != b'.' || !b[h + 1..].starts_with(b"eyJ") {
            continue;
        }
        let p = run(h + 4);
        if p >= b.len() || b[p] != b'.' {
            continue;
        }
        // The signature may be empty (`alg: none`), header and payload may not.
        return Some((s, run(p + 1)));
    }
    None
}

fn find_aws_key(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 20 <= b.len() {
        // Jump to the next AKIA or ASIA.
        let next = |n: &Finder<'static>| find_from(&b[..b.len() - 16], i, n);
        i = match (next(&AKIA), next(&ASIA)) {
            (Some(x), Some(y)) => x.min(y),
            (x, y) => x.or(y)?,
        };
        if b[i] == b'A'
            && (&b[i + 1..i + 4] == b"KIA" || &b[i + 1..i + 4] == b"SIA")
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
            && b[i + 4..i + 20]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && b.get(i + 20).is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            return Some((i, i + 20));
        }
        i += 1;
    }
    None
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// Does `key` end with one of `words` at a word boundary?
fn key_matches(key: &[u8], words: &[&str]) -> bool {
    words.iter().any(|w| {
        let w = w.as_bytes();
        if key.len() < w.len() || !key[key.len() - w.len()..].eq_ignore_ascii_case(w) {
            return false;
        }
        let Some(&before) = key.len().checked_sub(w.len() + 1).map(|i| &key[i]) else {
            return true;
        };
        let first = key[key.len() - w.len()];
        matches!(before, b'_' | b'-' | b'.')
            || (first.is_ascii_uppercase()
                && (before.is_ascii_lowercase() || before.is_ascii_digit()))
    })
}

fn find_kv(b: &[u8], from: usize, words: &[&str]) -> Option<(usize, usize)> {
    memchr::memchr2_iter(b'=', b':', b.get(from..)?).find_map(|i| kv_value(b, from + i, words))
}

/// The value after the separator at `sep`, if the key before it is a secret's.
fn kv_value(b: &[u8], sep: usize, words: &[&str]) -> Option<(usize, usize)> {
    let mut k_end = sep;
    while k_end > 0 && b[k_end - 1] == b' ' {
        k_end -= 1;
    }
    if k_end > 0 && matches!(b[k_end - 1], b'"' | b'\'') {
        k_end -= 1;
    }
    // Every key word ends in d, t, n or y: most separators (`level=`, `12:00`) stop here.
    if k_end == 0 || !matches!(b[k_end - 1] | 0x20, b'd' | b't' | b'n' | b'y') {
        return None;
    }
    let mut k_start = k_end;
    while k_start > 0 && is_key_char(b[k_start - 1]) {
        k_start -= 1;
    }
    if k_start == k_end || !key_matches(&b[k_start..k_end], words) {
        return None;
    }
    let mut v = sep + 1;
    if b[sep] == b'=' && b.get(v) == Some(&b'>') {
        v += 1;
    }
    while v < b.len() && b[v] == b' ' {
        v += 1;
    }
    let (s, mut e) = match b.get(v) {
        Some(&q @ (b'"' | b'\'')) => {
            let mut e = v + 1;
            while e < b.len() && b[e] != q {
                e += if b[e] == b'\\' { 2 } else { 1 };
            }
            (v + 1, e)
        }
        _ => {
            let mut e = v;
            while e < b.len()
                && !b[e].is_ascii_whitespace()
                && !matches!(b[e], b'"' | b'\'' | b',' | b'&' | b';')
            {
                e += 1;
            }
            (v, e)
        }
    };
    e = e.min(b.len());
    (e > s).then_some((s, e))
}

#[cfg(test)]
mod tests;
