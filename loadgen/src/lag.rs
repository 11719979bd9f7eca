//! How late a runtime runs: a task sleeps [`TICK`] over and over and records by how much each
//! wake-up came late. Under a storm the simulated agents share the two cores with the
//! collector; when their runtime falls seconds behind, they answer late, their RTT estimates
//! grow and their retransmissions wait long, and the figures measure the simulation as much
//! as the collector. This says which side was behind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(10);
/// A second whose latest wake-up was later than this counts as a behind second.
pub const BEHIND: Duration = Duration::from_millis(100);

/// The latest wake-up of each second since the probe started, oldest first.
#[derive(Clone, Default)]
pub struct Lag {
    seconds: Arc<Mutex<Vec<(Instant, Duration)>>>,
}

/// What the probe saw over a stretch of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LagSummary {
    pub max: Duration,
    /// Seconds whose latest wake-up was over [`BEHIND`].
    pub behind: u32,
    pub seconds: u32,
}

impl Lag {
    /// Start the probe on the current runtime; it runs until the runtime stops.
    pub fn start() -> Lag {
        let lag = Lag::default();
        let seconds = lag.seconds.clone();
        tokio::spawn(async move {
            let mut window = (Instant::now(), Duration::ZERO);
            loop {
                let t = Instant::now();
                tokio::time::sleep(TICK).await;
                let late = t.elapsed().saturating_sub(TICK);
                window.1 = window.1.max(late);
                if window.0.elapsed() >= Duration::from_secs(1) {
                    seconds.lock().expect("lag list").push(window);
                    window = (Instant::now(), Duration::ZERO);
                }
            }
        });
        lag
    }

    /// The seconds that began at or after `from`.
    pub fn since(&self, from: Instant) -> LagSummary {
        summarize(
            self.seconds
                .lock()
                .expect("lag list")
                .iter()
                .filter(|(t, _)| *t >= from)
                .map(|(_, late)| *late),
        )
    }
}

fn summarize(lates: impl Iterator<Item = Duration>) -> LagSummary {
    lates.fold(LagSummary::default(), |mut s, late| {
        s.max = s.max.max(late);
        s.behind += u32::from(late > BEHIND);
        s.seconds += 1;
        s
    })
}

impl std::fmt::Display for LagSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "up to {} ms late, {} of {} s over {} ms",
            self.max.as_millis(),
            self.behind,
            self.seconds,
            BEHIND.as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_the_seconds_behind_and_keeps_the_worst() {
        let ms = Duration::from_millis;
        let s = summarize([ms(3), ms(250), ms(40), ms(1200)].into_iter());
        assert_eq!(
            s,
            LagSummary {
                max: ms(1200),
                behind: 2,
                seconds: 4
            }
        );
        assert_eq!(s.to_string(), "up to 1200 ms late, 2 of 4 s over 100 ms");
        assert_eq!(summarize(std::iter::empty()), LagSummary::default());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_kept_busy_is_seen_behind() {
        let t0 = Instant::now();
        let lag = Lag::start();
        // Let the probe tick, then block the only thread for longer than BEHIND.
        tokio::time::sleep(Duration::from_millis(30)).await;
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let s = lag.since(t0);
        assert!(s.seconds >= 1, "{s:?}");
        assert!(s.max >= Duration::from_millis(250), "{s:?}");
        assert_eq!(s.behind, 1, "{s:?}");
    }
}
