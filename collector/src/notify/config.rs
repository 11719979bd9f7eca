//! `[[webhooks]]` in collector.toml: where notifications go, in which form, for which
//! customers, levels and events.

use serde::Deserialize;
use std::time::Duration;

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"event": .., "at": .., "finding": {..}}` for any HTTP receiver.
    #[default]
    Json,
    /// DingTalk (钉钉) group robot, markdown message; `secret` for its "加签" signing.
    Dingtalk,
    /// WeCom (企业微信) group robot, markdown message (the key is in the URL).
    Wecom,
    /// Feishu / Lark (飞书) custom bot, text message; `secret` for its signature check.
    Feishu,
}

/// Which changes of a finding are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    Reopened,
    AtRisk,
    Breached,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shown in logs and counts.
    pub name: String,
    /// `http://` or `https://` (robots: the URL with its access token or key).
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// Signing secret of a DingTalk or Feishu robot.
    #[serde(default)]
    pub secret: Option<String>,
    /// Only findings of these customers; empty: every customer.
    #[serde(default)]
    pub customers: Vec<String>,
    /// Only these levels (`"L1"`..`"L4"`); empty: every level.
    #[serde(default)]
    pub levels: Vec<String>,
    /// Only these events; empty: all of them.
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// How long one attempt may take.
    #[serde(
        default = "default_timeout",
        with = "aftercare_shared::config::duration"
    )]
    pub timeout: Duration,
    /// Attempts per message before it is counted as a dead letter.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one, up to 5 min.
    #[serde(
        default = "default_retry_base",
        with = "aftercare_shared::config::duration"
    )]
    pub retry_base: Duration,
    /// Messages waiting (for a receiver that is down) before new ones become dead letters.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_attempts() -> u32 {
    6
}
fn default_retry_base() -> Duration {
    Duration::from_secs(2)
}
fn default_queue() -> usize {
    1000
}

/// Longest wait between two attempts.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

impl WebhookConfig {
    /// Checks one entry; `at` names it in errors (`webhooks[2] 'oncall'`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err(format!("{at}: name must not be empty"));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "{at}: url '{}' must start with http:// or https://",
                self.url
            ));
        }
        if self.secret.is_some() && matches!(self.format, Format::Json | Format::Wecom) {
            return Err(format!(
                "{at}: secret is used only by the dingtalk and feishu formats (a WeCom robot's key is in its url)"
            ));
        }
        for l in &self.levels {
            if level_number(l).is_none() {
                return Err(format!(
                    "{at}: levels: '{l}' is not a level: use L1, L2, L3 or L4"
                ));
            }
        }
        if !(1..=20).contains(&self.attempts) {
            return Err(format!(
                "{at}: attempts = {} must be 1 to 20",
                self.attempts
            ));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(120) {
            return Err(format!("{at}: timeout must be 100ms to 2m"));
        }
        if self.retry_base < Duration::from_millis(10) || self.retry_base > MAX_RETRY_WAIT {
            return Err(format!("{at}: retry_base must be 10ms to 5m"));
        }
        if self.queue == 0 {
            return Err(format!("{at}: queue must be at least 1"));
        }
        Ok(())
    }

    /// Does this webhook want `event` about a finding of `customer` at `level` (1..=4)?
    pub fn wants(&self, customer: &str, level: u8, event: EventKind) -> bool {
        (self.customers.is_empty() || self.customers.iter().any(|c| c == customer))
            && (self.levels.is_empty()
                || self.levels.iter().any(|l| level_number(l) == Some(level)))
            && (self.events.is_empty() || self.events.contains(&event))
    }

    /// The wait before attempt `n + 1` after `n` failed ones (n >= 1).
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 1u32 << failed.saturating_sub(1).min(16);
        self.retry_base.saturating_mul(factor).min(MAX_RETRY_WAIT)
    }
}

/// `"L2"` (or `"l2"`) -> 2.
pub fn level_number(s: &str) -> Option<u8> {
    match s.trim().to_ascii_uppercase().as_str() {
        "L1" => Some(1),
        "L2" => Some(2),
        "L3" => Some(3),
        "L4" => Some(4),
        _ => None,
    }
}

/// Check a whole list: each entry, and that names are unique.
pub fn validate_all(hooks: &[WebhookConfig]) -> Result<(), String> {
    for (i, h) in hooks.iter().enumerate() {
        let at = format!("webhooks[{i}] '{}'", h.name);
        h.validate(&at)?;
        if hooks[..i].iter().any(|o| o.name == h.name) {
            return Err(format!("{at}: the name is used twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(extra: &str) -> Result<WebhookConfig, String> {
        let w: WebhookConfig =
            toml::from_str(&format!("name = \"ops\"\nurl = \"https://h/x\"\n{extra}"))
                .map_err(|e| e.to_string())?;
        w.validate("webhooks[0] 'ops'")?;
        Ok(w)
    }

    #[test]
    fn defaults_routing_and_backoff() {
        let w = hook("").unwrap();
        assert_eq!(w.format, Format::Json);
        assert!(w.wants("acme", 3, EventKind::Resolved));
        let w = hook("customers = [\"acme\"]\nlevels = [\"L1\", \"l2\"]\nevents = [\"opened\", \"breached\"]").unwrap();
        assert!(w.wants("acme", 2, EventKind::Opened));
        assert!(!w.wants("other", 2, EventKind::Opened));
        assert!(!w.wants("acme", 3, EventKind::Opened));
        assert!(!w.wants("acme", 1, EventKind::Resolved));
        let w = hook("retry_base = \"1s\"").unwrap();
        assert_eq!(w.backoff(1), Duration::from_secs(1));
        assert_eq!(w.backoff(3), Duration::from_secs(4));
        assert_eq!(w.backoff(30), MAX_RETRY_WAIT);
    }

    #[test]
    fn bad_entries_are_named() {
        for (extra, want) in [
            ("levels = [\"P1\"]", "'P1' is not a level"),
            ("format = \"wecom\"\nsecret = \"s\"", "secret is used only"),
            ("attempts = 0", "attempts = 0"),
            ("timeout = \"1h\"", "timeout must be"),
            ("format = \"slack\"", "unknown variant"),
            ("colour = 1", "unknown field"),
        ] {
            let e = hook(extra).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e: WebhookConfig = toml::from_str("name = \"x\"\nurl = \"ftp://h\"").unwrap();
        assert!(
            e.validate("webhooks[1] 'x'")
                .unwrap_err()
                .contains("webhooks[1] 'x': url")
        );
        let two = vec![hook("").unwrap(), hook("").unwrap()];
        assert!(validate_all(&two).unwrap_err().contains("used twice"));
    }
}
