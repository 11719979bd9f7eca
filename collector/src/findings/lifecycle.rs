//! A finding's life, as pure decisions: what the rules engine's signals and the engineers'
//! actions do to the findings of one (host, rule, subject).
//!
//! - A firing condition with no finding open opens one, or reopens the one resolved most
//!   recently if that was within `reopen_within` (a flapping problem stays one finding,
//!   with its whole history on one timeline).
//! - Firing again while open updates it (last seen, level, evidence); it is never
//!   duplicated.
//! - A cleared condition auto-resolves an open or acknowledged finding.
//! - Engineers acknowledge (stops the respond clock) and resolve with a note (stops the
//!   restore clock); a resolved finding cannot be acknowledged or resolved again.
//!
//! Every change is an [`Event`] for the timeline: when, what, by whom, and a note.

use aftercare_shared::model::UnixMillis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    Acknowledged,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acknowledged => "acknowledged",
            State::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [State::Open, State::Acknowledged, State::Resolved]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What the lifecycle needs to know of a stored finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub id: i64,
    pub state: State,
    pub level: u8,
    pub resolved_at: Option<UnixMillis>,
}

/// From the rules engine, for one (host, rule, subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Firing { at: UnixMillis, level: u8 },
    Cleared { at: UnixMillis },
}

/// What to do with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new finding.
    Open,
    /// The resolved finding `id` comes back.
    Reopen {
        id: i64,
    },
    /// Still firing: refresh last seen and evidence; `level_changed` gets a timeline entry.
    Update {
        id: i64,
        level_changed: bool,
    },
    AutoResolve {
        id: i64,
    },
    Nothing,
}

/// One entry of a finding's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: UnixMillis,
    pub kind: EventKind,
    pub by: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Opened,
    Reopened,
    LevelChanged,
    Acknowledged,
    Resolved,
    AutoResolved,
    AtRisk,
    Breached,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Opened,
        EventKind::Reopened,
        EventKind::LevelChanged,
        EventKind::Acknowledged,
        EventKind::Resolved,
        EventKind::AutoResolved,
        EventKind::AtRisk,
        EventKind::Breached,
    ];

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Reopened => "reopened",
            EventKind::LevelChanged => "level changed",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Resolved => "resolved",
            EventKind::AutoResolved => "auto-resolved",
            EventKind::AtRisk => "SLA at risk",
            EventKind::Breached => "SLA breached",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("finding {id} is already resolved: nothing to {action}")]
    Resolved { id: i64, action: &'static str },
    #[error("finding {id} was already acknowledged by {by}")]
    AlreadyAcknowledged { id: i64, by: String },
    #[error("say who you are: --by NAME")]
    NoName,
}

/// The decision for `signal`, given the key's open finding or else its most recently
/// resolved one (`None`: the key never had one).
pub fn on_signal(current: Option<&Current>, signal: &Signal, reopen_within_ms: i64) -> Decision {
    match (current, signal) {
        (None, Signal::Firing { .. }) => Decision::Open,
        (None, Signal::Cleared { .. }) => Decision::Nothing,
        (Some(c), Signal::Firing { at, level }) => match c.state {
            State::Open | State::Acknowledged => Decision::Update {
                id: c.id,
                level_changed: c.level != *level,
            },
            State::Resolved => match c.resolved_at {
                Some(r) if at.saturating_sub(r) <= reopen_within_ms => {
                    Decision::Reopen { id: c.id }
                }
                _ => Decision::Open,
            },
        },
        (Some(c), Signal::Cleared { .. }) => match c.state {
            State::Open | State::Acknowledged => Decision::AutoResolve { id: c.id },
            State::Resolved => Decision::Nothing,
        },
    }
}

/// An engineer acknowledges: the respond clock stops.
pub fn acknowledge(
    c: &Current,
    acked_by: Option<&str>,
    by: &str,
    at: UnixMillis,
) -> Result<Event, ActionError> {
    let by = name(by)?;
    match c.state {
        State::Resolved => Err(ActionError::Resolved {
            id: c.id,
            action: "acknowledge",
        }),
        State::Acknowledged => Err(ActionError::AlreadyAcknowledged {
            id: c.id,
            by: acked_by.unwrap_or("someone").to_string(),
        }),
        State::Open => Ok(Event {
            at,
            kind: EventKind::Acknowledged,
            by: Some(by),
            note: None,
        }),
    }
}

/// An engineer resolves, saying what was done: both clocks stop.
pub fn resolve(
    c: &Current,
    by: &str,
    note: Option<&str>,
    at: UnixMillis,
) -> Result<Event, ActionError> {
    let by = name(by)?;
    if c.state == State::Resolved {
        return Err(ActionError::Resolved {
            id: c.id,
            action: "resolve",
        });
    }
    Ok(Event {
        at,
        kind: EventKind::Resolved,
        by: Some(by),
        note: note
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from),
    })
}

fn name(by: &str) -> Result<String, ActionError> {
    let by = by.trim();
    if by.is_empty() {
        return Err(ActionError::NoName);
    }
    Ok(by.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn cur(state: State, resolved_at: Option<i64>) -> Current {
        Current {
            id: 9,
            state,
            level: 2,
            resolved_at,
        }
    }

    #[test]
    fn signals_open_update_reopen_and_resolve() {
        use Decision::*;
        let firing = |at, level| Signal::Firing { at, level };
        let cleared = |at| Signal::Cleared { at };
        let table: Vec<(Option<Current>, Signal, Decision)> = vec![
            (None, firing(0, 2), Open),
            (None, cleared(0), Nothing),
            (
                Some(cur(State::Open, None)),
                firing(5, 2),
                Update {
                    id: 9,
                    level_changed: false,
                },
            ),
            (
                Some(cur(State::Acknowledged, None)),
                firing(5, 1),
                Update {
                    id: 9,
                    level_changed: true,
                },
            ),
            (
                Some(cur(State::Open, None)),
                cleared(5),
                AutoResolve { id: 9 },
            ),
            (
                Some(cur(State::Acknowledged, None)),
                cleared(5),
                AutoResolve { id: 9 },
            ),
            (Some(cur(State::Resolved, Some(0))), cleared(5), Nothing),
            // Back within the reopen window: the same finding; later: a new one.
            (
                Some(cur(State::Resolved, Some(10 * HOUR))),
                firing(11 * HOUR, 2),
                Reopen { id: 9 },
            ),
            (
                Some(cur(State::Resolved, Some(10 * HOUR))),
                firing(10 * HOUR + 24 * HOUR, 2),
                Reopen { id: 9 },
            ),
            (
                Some(cur(State::Resolved, Some(10 * HOUR))),
                firing(10 * HOUR + 24 * HOUR + 1, 2),
                Open,
            ),
        ];
        for (c, s, want) in table {
            assert_eq!(on_signal(c.as_ref(), &s, 24 * HOUR), want, "{c:?} {s:?}");
        }
    }

    #[test]
    fn engineers_acknowledge_once_and_resolve_once() {
        let open = cur(State::Open, None);
        let e = acknowledge(&open, None, " ann ", 7).unwrap();
        assert_eq!(
            (e.kind, e.by.as_deref(), e.at),
            (EventKind::Acknowledged, Some("ann"), 7)
        );
        let acked = cur(State::Acknowledged, None);
        assert_eq!(
            acknowledge(&acked, Some("ann"), "bob", 8),
            Err(ActionError::AlreadyAcknowledged {
                id: 9,
                by: "ann".into()
            })
        );
        let e = resolve(&acked, "bob", Some("  replaced the disk "), 9).unwrap();
        assert_eq!(e.note.as_deref(), Some("replaced the disk"));
        let done = cur(State::Resolved, Some(9));
        assert!(matches!(
            resolve(&done, "bob", None, 10),
            Err(ActionError::Resolved { .. })
        ));
        assert!(matches!(
            acknowledge(&done, None, "bob", 10),
            Err(ActionError::Resolved { .. })
        ));
        assert_eq!(resolve(&open, "  ", None, 1), Err(ActionError::NoName));
        assert_eq!(resolve(&open, "x", Some(" "), 1).unwrap().note, None);
        assert_eq!(State::parse("acknowledged"), Some(State::Acknowledged));
    }
}
