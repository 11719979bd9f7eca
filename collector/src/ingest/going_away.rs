//! What a stopping collector tells its agents: come back, each at a random moment within a
//! window sized so that the collector (or the next one) takes them back at
//! `ingest.return_rate` a second. Without it every agent returns the moment the port
//! answers again, most are turned away for want of a handshake place, and each refused
//! attempt costs both sides a key exchange and the agent a session ticket.

use aftercare_shared::protocol::{MAX_RETURN_WINDOW, shutdown_reason};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GoingAway {
    rate: u32,
    /// Fixed once per shutdown, when it begins (or at its first close), while every agent
    /// still counts, and given to all: connections closed later see fewer connected.
    window: Arc<OnceLock<Duration>>,
}

impl GoingAway {
    pub fn new(rate: u32) -> Self {
        GoingAway {
            rate: rate.max(1),
            window: Arc::default(),
        }
    }

    /// Fix the window for this shutdown from the agents connected when it began (called
    /// as it begins: connections that end sooner no longer count).
    pub fn fix(&self, connected: u64) {
        let _ = self.window.set(window_for(connected, self.rate));
    }

    /// The close reason for this shutdown; `connected` agents being connected now is the
    /// count if [`GoingAway::fix`] was not called first.
    pub fn reason(&self, connected: u64) -> String {
        let window = *self.window.get_or_init(|| window_for(connected, self.rate));
        shutdown_reason(window)
    }
}

/// `connected` agents taken back at `rate` a second: the window their returns are spread over.
pub fn window_for(connected: u64, rate: u32) -> Duration {
    let ms = connected.saturating_mul(1000) / u64::from(rate.max(1));
    Duration::from_millis(ms).min(MAX_RETURN_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aftercare_shared::protocol::return_window;

    #[test]
    fn the_window_grows_with_the_fleet_and_is_the_same_for_every_agent() {
        assert_eq!(window_for(0, 1000), Duration::ZERO);
        assert_eq!(window_for(1, 1000), Duration::from_millis(1));
        assert_eq!(window_for(10_000, 1000), Duration::from_secs(10));
        assert_eq!(window_for(10_000, 0), MAX_RETURN_WINDOW);
        assert_eq!(window_for(u64::MAX, 1), MAX_RETURN_WINDOW);
        let g = GoingAway::new(1000);
        let first = g.reason(5000);
        assert_eq!(
            return_window(first.as_bytes()),
            Some(Duration::from_secs(5))
        );
        // Agents closed later see fewer connected; they are told the same window.
        assert_eq!(g.reason(10), first);
        assert_eq!(g.clone().reason(1), first);
        // Fixed when the shutdown began, whatever the count at the first close.
        let g = GoingAway::new(1000);
        g.fix(2000);
        g.fix(3);
        assert_eq!(
            return_window(g.reason(0).as_bytes()),
            Some(Duration::from_secs(2))
        );
    }
}
