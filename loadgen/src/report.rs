//! The table: one row per (scenario, backend), each measure beside its target and the ratio
//! to it (1.00 or more: the target is met).

/// What a measure must reach.
#[derive(Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

pub struct Measure {
    pub what: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub target: Option<Target>,
}

impl Measure {
    pub fn new(what: &'static str, value: f64, unit: &'static str) -> Measure {
        Measure {
            what,
            value,
            unit,
            target: None,
        }
    }

    pub fn target(mut self, t: Target) -> Measure {
        self.target = Some(t);
        self
    }

    /// Value over target where more is better, target over value where less is: either
    /// way, 1.0 or more meets it.
    pub fn ratio(&self) -> Option<f64> {
        Some(match self.target? {
            Target::AtLeast(t) => self.value / t,
            Target::AtMost(t) => t / self.value.max(f64::MIN_POSITIVE),
        })
    }
}

pub struct Row {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub measures: Vec<Measure>,
    /// Lines printed under the table: the run's shape and where the time went.
    pub detail: Vec<String>,
    /// Self-checks that did not hold (exactly-once accounting, everyone connected).
    pub failures: Vec<String>,
}

impl Row {
    pub fn new(scenario: &'static str, backend: &'static str) -> Row {
        Row {
            scenario,
            backend,
            measures: Vec::new(),
            detail: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.failures.push(what);
        }
    }
}

fn number(v: f64, unit: &str) -> String {
    let n = if v.abs() >= 1000.0 {
        crate::common::thousands(v.round() as u64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    match unit {
        "" => n,
        "/s" => format!("{n}/s"),
        u => format!("{n} {u}"),
    }
}

pub fn print(rows: &[Row]) {
    println!();
    println!(
        "{:<10} {:<9} {:<42} {:>14} {:>16} {:>7}  checks",
        "scenario", "backend", "measure", "value", "target", "ratio"
    );
    for r in rows {
        let checks = if r.failures.is_empty() {
            "ok".to_string()
        } else {
            format!("FAILED ({})", r.failures.len())
        };
        for (i, m) in r.measures.iter().enumerate() {
            let target = match m.target {
                Some(Target::AtLeast(t)) => format!(">= {}", number(t, m.unit)),
                Some(Target::AtMost(t)) => format!("<= {}", number(t, m.unit)),
                None => String::new(),
            };
            let ratio = m.ratio().map_or(String::new(), |r| format!("{r:.2}"));
            println!(
                "{:<10} {:<9} {:<42} {:>14} {:>16} {:>7}  {}",
                if i == 0 { r.scenario } else { "" },
                if i == 0 { r.backend } else { "" },
                m.what,
                number(m.value, m.unit),
                target,
                ratio,
                if i == 0 { checks.as_str() } else { "" },
            );
        }
        if r.measures.is_empty() {
            println!(
                "{:<10} {:<9} {:<42} {:>14} {:>16} {:>7}  {checks}",
                r.scenario, r.backend, "-", "", "", ""
            );
        }
    }
    for r in rows {
        println!();
        println!("{} on {}:", r.scenario, r.backend);
        for d in &r.detail {
            println!("  {d}");
        }
        for f in &r.failures {
            println!("  FAILED: {f}");
        }
    }
}
