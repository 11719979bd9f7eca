//! What the store keeps of a report: a row per report asked for, with its progress while it
//! is made and its data (the `Report` as JSON, zstd-compressed) once done.

use aftercare_shared::model::UnixMillis;
use serde::Serialize;

/// A report to make.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReport {
    pub customer: String,
    pub from: UnixMillis,
    pub to: UnixMillis,
    pub label: String,
    pub lang: String,
    pub time_zone: String,
    /// The quarter's own report, made by the scheduler: the store keeps one per customer
    /// and period, however many collectors ask.
    pub scheduled: bool,
    pub requested_by: String,
    pub created_at: UnixMillis,
}

/// How a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "running" => Some(Status::Running),
            "done" => Some(Status::Done),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub id: i64,
    pub customer: String,
    pub from: UnixMillis,
    pub to: UnixMillis,
    pub label: String,
    pub lang: String,
    pub time_zone: String,
    pub scheduled: bool,
    pub status: Status,
    /// Percent, while running.
    pub progress: u8,
    /// Why it failed.
    pub message: String,
    pub requested_by: String,
    pub created_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    /// The report's JSON, when asked for and done.
    pub data: Option<Vec<u8>>,
}
