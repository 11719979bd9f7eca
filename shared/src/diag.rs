//! Remote diagnosis: the messages of a diagnostic stream and the rules both sides apply to
//! a probe's arguments and output.
//!
//! The collector opens a new bidirectional stream on an agent's connection per diagnostic,
//! sends one framed [`DiagRequest`] and finishes its side; the agent answers one framed
//! [`DiagResponse`] and finishes. The agent decides everything: consent (`diagnostics`
//! scope in force now), its own allow-list, and the arguments, which must match what the
//! probe declares ([`validate_args`]). A value is never spliced into a string nor given to
//! a shell: a probe's argv holds a declared value only as a whole element
//! ([`substitute`]).

use serde::{Deserialize, Serialize};

/// One diagnostic asked of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagRequest {
    /// The collector's id for it (its row), echoed in the answer.
    pub id: i64,
    pub probe: String,
    /// Name and value of each argument, as the engineer gave them.
    pub args: Vec<(String, String)>,
    /// The engineer's token name, for the customer's audit log.
    pub requested_by: String,
    /// The finding it was run from, if any.
    pub finding: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagResponse {
    pub id: i64,
    pub outcome: DiagOutcome,
    /// stdout and stderr (or the built-in probe's text), at most the probe's cap plus the
    /// line saying where it was cut.
    pub output: serde_bytes::ByteBuf,
    pub truncated: bool,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiagOutcome {
    /// The probe ran to its end; `None` when a built-in probe ran without a process, or the
    /// process ended by a signal.
    Done {
        exit_code: Option<i32>,
    },
    Refused(Refusal),
    /// Killed at its time limit.
    TimedOut {
        after_ms: u64,
    },
    /// It could not run (e.g. the program is missing).
    Failed(String),
}

/// Why an agent did not run a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    NoConsent,
    NotAllowed,
    UnknownProbe,
    BadArgument { name: String, why: String },
}

impl Refusal {
    /// What the engineer sees, exactly.
    pub fn message(&self) -> String {
        match self {
            Refusal::NoConsent => "refused: no consent".into(),
            Refusal::NotAllowed => "refused: not allowed".into(),
            Refusal::UnknownProbe => "refused: unknown probe".into(),
            Refusal::BadArgument { name, why } => format!("refused: bad argument {name}: {why}"),
        }
    }
}

/// What a host offers, as advertised after Welcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub name: String,
    pub description: String,
    pub args: Vec<ArgSpec>,
    pub timeout_ms: u64,
    pub max_output: u64,
}

/// One argument a probe declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    /// Used when the argument is not given; without one it is required.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgKind {
    /// A decimal integer in `min..=max`.
    Integer { min: i64, max: i64 },
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A conservative name: `[A-Za-z0-9_.@:-]{1,64}`, not starting with `-` or `.`, without
    /// `..`: a unit, an interface, a log source; never a path or an option.
    Name,
}

/// The longest value of any kind.
const MAX_VALUE: usize = 256;
const MAX_NAME: usize = 64;

/// Check `given` against `specs`: every name declared and given once, every value of its
/// kind; missing ones take their default. Returns the values in declared order.
pub fn validate_args(
    specs: &[ArgSpec],
    given: &[(String, String)],
) -> Result<Vec<(String, String)>, Refusal> {
    let bad = |name: &str, why: &str| Refusal::BadArgument {
        name: printable(name),
        why: why.to_string(),
    };
    for (i, (name, _)) in given.iter().enumerate() {
        if !specs.iter().any(|s| &s.name == name) {
            return Err(bad(name, "not an argument of this probe"));
        }
        if given[..i].iter().any(|(n, _)| n == name) {
            return Err(bad(name, "given twice"));
        }
    }
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let value = match given.iter().find(|(n, _)| n == &spec.name) {
            Some((_, v)) => v.clone(),
            None => match &spec.default {
                Some(d) => d.clone(),
                None => return Err(bad(&spec.name, "required")),
            },
        };
        check_value(&spec.kind, &value).map_err(|why| bad(&spec.name, &why))?;
        out.push((spec.name.clone(), value));
    }
    Ok(out)
}

/// Why `value` is not of `kind`, if it is not.
pub fn check_value(kind: &ArgKind, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE {
        return Err(format!("longer than {MAX_VALUE} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err("contains a control character (newline, NUL...)".into());
    }
    match kind {
        ArgKind::Integer { min, max } => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            let n = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<i64>().ok())
                .flatten()
                .ok_or_else(|| format!("'{value}' is not a whole number"))?;
            if !(*min..=*max).contains(&n) {
                return Err(format!("{n} is outside {min}..{max}"));
            }
            Ok(())
        }
        ArgKind::Choice(choices) => {
            if choices.iter().any(|c| c == value) {
                Ok(())
            } else {
                Err(format!("must be one of {}", choices.join(", ")))
            }
        }
        ArgKind::Name => check_name(value),
    }
}

/// The rule of [`ArgKind::Name`].
pub fn check_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.@:-".contains(*c)))
    {
        return Err(format!(
            "'{}' is not allowed in a name (letters, digits and _ . @ : - only)",
            c.escape_default()
        ));
    }
    if value.starts_with('-') || value.starts_with('.') {
        return Err("must not start with '-' or '.'".into());
    }
    if value.contains("..") {
        return Err("must not contain '..'".into());
    }
    Ok(())
}

/// An argv element that is a placeholder: exactly `{name}`.
pub fn placeholder(element: &str) -> Option<&str> {
    element.strip_prefix('{')?.strip_suffix('}')
}

/// Whether an argv element looks like it meant to hold a value but is not a whole
/// placeholder (`--unit={unit}`): refused at config time, as values are never spliced.
pub fn spliced(element: &str) -> bool {
    placeholder(element).is_none() && (element.contains('{') || element.contains('}'))
}

/// The argv to run: each `{name}` element replaced whole by its validated value.
pub fn substitute(argv: &[String], values: &[(String, String)]) -> Result<Vec<String>, String> {
    argv.iter()
        .map(|e| match placeholder(e) {
            Some(name) => values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("argv names {{{name}}}, which has no value")),
            None => Ok(e.clone()),
        })
        .collect()
}

/// A name as shown back: control characters escaped and cut short, as it may be anything.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_NAME)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().count() > MAX_NAME {
        out.push('…');
    }
    out
}

/// A probe's output held up to its cap. What comes past the cap is dropped and the result
/// says where it was cut.
#[derive(Debug)]
pub struct OutputCap {
    cap: usize,
    buf: Vec<u8>,
    truncated: bool,
}

impl OutputCap {
    pub fn new(cap: usize) -> OutputCap {
        OutputCap {
            cap,
            buf: Vec::new(),
            truncated: false,
        }
    }

    /// Take `bytes`; false once the cap is reached and more came (the caller stops reading
    /// and ends the probe).
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let room = self.cap - self.buf.len();
        if bytes.len() > room {
            self.buf.extend_from_slice(&bytes[..room]);
            self.truncated = true;
            return false;
        }
        self.buf.extend_from_slice(bytes);
        true
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The output, ending with a line that says it was cut when it was.
    pub fn finish(mut self) -> (Vec<u8>, bool) {
        if self.truncated {
            if self.buf.last().is_some_and(|b| *b != b'\n') {
                self.buf.push(b'\n');
            }
            self.buf.extend_from_slice(
                format!(
                    "[output cut at {} bytes: the probe's output cap]\n",
                    self.cap
                )
                .as_bytes(),
            );
        }
        (self.buf, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn spec(name: &str, kind: ArgKind, default: Option<&str>) -> ArgSpec {
        ArgSpec {
            name: name.into(),
            kind,
            default: default.map(Into::into),
        }
    }

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn specs() -> Vec<ArgSpec> {
        vec![
            spec("lines", ArgKind::Integer { min: 1, max: 1000 }, Some("100")),
            spec("source", ArgKind::Name, None),
            spec(
                "state",
                ArgKind::Choice(vec!["listen".into(), "all".into()]),
                Some("listen"),
            ),
        ]
    }

    #[test]
    fn good_arguments_take_defaults_in_declared_order() {
        let v = validate_args(&specs(), &args(&[("source", "nginx"), ("lines", "5")])).unwrap();
        assert_eq!(
            v,
            args(&[("lines", "5"), ("source", "nginx"), ("state", "listen")])
        );
        for ok in [
            "db1",
            "eth0",
            "nginx.service",
            "user@host",
            "a:b",
            "x_y-z",
            "0",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn injected_and_malformed_arguments_are_refused_naming_the_argument() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("source", "; rm -rf /")], "source"),
            (&[("source", "$(id)")], "source"),
            (&[("source", "`id`")], "source"),
            (&[("source", "../../etc/passwd")], "source"),
            (&[("source", "/etc/passwd")], "source"),
            (&[("source", "a..b")], "source"),
            (&[("source", "-rf")], "source"),
            (&[("source", ".hidden")], "source"),
            (&[("source", "a b")], "source"),
            (&[("source", "a\nb")], "source"),
            (&[("source", "a\0b")], "source"),
            (&[("source", "x|y")], "source"),
            (&[("source", "")], "source"),
            (&[("source", &"a".repeat(65))], "source"),
            (&[("source", "ok"), ("lines", "0")], "lines"),
            (&[("source", "ok"), ("lines", "1001")], "lines"),
            (&[("source", "ok"), ("lines", "+5")], "lines"),
            (&[("source", "ok"), ("lines", "5; ls")], "lines"),
            (
                &[("source", "ok"), ("lines", "99999999999999999999")],
                "lines",
            ),
            (&[("source", "ok"), ("state", "LISTEN")], "state"),
            (&[("source", "ok"), ("--exec", "x")], "--exec"),
            (&[("source", "ok"), ("source", "ok")], "source"),
            (&[], "source"), // required
        ];
        for (given, name) in cases {
            match validate_args(&specs(), &args(given)) {
                Err(Refusal::BadArgument { name: n, why }) => {
                    assert_eq!(&n, name, "{given:?}: {why}");
                    assert!(!why.is_empty());
                }
                other => panic!("{given:?} gave {other:?}"),
            }
        }
        let m = validate_args(&specs(), &args(&[("source", "$(id)")]))
            .unwrap_err()
            .message();
        assert!(m.starts_with("refused: bad argument source: "), "{m}");
        // A control character in a name is shown escaped, never raw.
        let Err(Refusal::BadArgument { name, .. }) =
            validate_args(&specs(), &args(&[("a\nb", "1")]))
        else {
            panic!()
        };
        assert_eq!(name, "a\\nb");
    }

    #[test]
    fn placeholders_are_whole_elements_only() {
        let argv: Vec<String> = ["/usr/bin/systemctl", "status", "{unit}", "--lines={n}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(placeholder("{unit}"), Some("unit"));
        assert!(spliced("--lines={n}"));
        assert!(!spliced("{unit}") && !spliced("status"));
        let out = substitute(&argv[..3], &args(&[("unit", "nginx; rm -rf /")])).unwrap();
        // Even a value that got this far stays one argv element; no shell ever sees it.
        assert_eq!(out[2], "nginx; rm -rf /");
        assert_eq!(out.len(), 3);
        assert!(substitute(&argv[..3], &[]).is_err());
    }

    #[test]
    fn output_is_cut_at_the_cap_and_says_so() {
        let mut c = OutputCap::new(10);
        assert!(c.push(b"12345"));
        assert!(c.push(b"12345"));
        assert!(!c.is_truncated());
        assert!(!c.push(b"x"));
        let (out, cut) = c.finish();
        assert!(cut);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("1234512345\n[output cut at 10 bytes"),
            "{text}"
        );

        let mut c = OutputCap::new(4);
        assert!(!c.push(b"abcdefgh"));
        assert_eq!(&c.finish().0[..5], b"abcd\n");

        let mut c = OutputCap::new(100);
        c.push(b"short\n");
        assert_eq!(c.finish(), (b"short\n".to_vec(), false));
    }

    #[test]
    fn probes_are_a_new_last_variant_so_older_messages_keep_their_bytes() {
        use crate::protocol::AgentMsg;
        let msg = AgentMsg::Probes(vec![ProbeInfo {
            name: "log-tail".into(),
            description: "d".into(),
            args: vec![spec(
                "lines",
                ArgKind::Integer { min: 1, max: 9 },
                Some("5"),
            )],
            timeout_ms: 10_000,
            max_output: 65536,
        }]);
        let f = codec::to_frame(&msg, 1 << 20).unwrap();
        // Header (4 length bytes, 1 flags byte), then the variant index: Hello 0, Batch 1,
        // ConsentUpdate 2, Probes 3.
        assert_eq!(f[5], 3);
        assert_eq!(
            codec::decode::<AgentMsg>(&f, 1 << 20).unwrap(),
            codec::Decoded::Frame(msg, f.len())
        );
        let old = codec::to_frame(&AgentMsg::ConsentUpdate(Default::default()), 1 << 20).unwrap();
        assert_eq!(old[5], 2);
    }

    #[test]
    fn messages_travel_as_frames() {
        let req = DiagRequest {
            id: 7,
            probe: "log-tail".into(),
            args: args(&[("source", "nginx"), ("lines", "20")]),
            requested_by: "eng".into(),
            finding: Some(12),
        };
        let f = codec::to_frame(&req, 1 << 20).unwrap();
        assert_eq!(
            codec::decode::<DiagRequest>(&f, 1 << 20).unwrap(),
            codec::Decoded::Frame(req, f.len())
        );
        for outcome in [
            DiagOutcome::Done { exit_code: Some(0) },
            DiagOutcome::Refused(Refusal::BadArgument {
                name: "n".into(),
                why: "w".into(),
            }),
            DiagOutcome::TimedOut { after_ms: 1000 },
            DiagOutcome::Failed("missing".into()),
        ] {
            let resp = DiagResponse {
                id: 7,
                outcome,
                output: serde_bytes::ByteBuf::from(b"out".to_vec()),
                truncated: true,
                elapsed_ms: 3,
            };
            let f = codec::to_frame(&resp, 1 << 20).unwrap();
            assert_eq!(
                codec::decode::<DiagResponse>(&f, 1 << 20).unwrap(),
                codec::Decoded::Frame(resp, f.len())
            );
        }
    }
}
