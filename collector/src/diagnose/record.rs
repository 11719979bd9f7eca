//! What the store keeps of a diagnostic: the request, then its result.

use crate::store::HostId;
use aftercare_shared::model::UnixMillis;

/// Stored output is capped whatever an agent sends.
pub const MAX_STORED_OUTPUT: usize = 4 << 20;

/// Where a diagnostic stands. The strings are the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Done,
    Refused,
    Failed,
    Timeout,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Done => "done",
            Status::Refused => "refused",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Offline => "offline",
        }
    }
}

/// A request as first stored (status `pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDiagnostic {
    pub host: HostId,
    pub probe: String,
    pub args: Vec<(String, String)>,
    pub finding: Option<i64>,
    pub requested_by: String,
    pub requested_at: UnixMillis,
}

/// Which collector sends a new request to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The one storing it: it holds the host's connection (or found none and ends it).
    ThisCollector,
    /// Whichever collector sharing the database holds the host's connection: it takes the
    /// request when it next looks.
    Holder,
}

/// A host's connection held by another collector sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    /// That collector, as [`crate::cluster::holder_id`] names it.
    pub via: String,
    /// What the agent advertised there.
    pub probes: Vec<aftercare_shared::diag::ProbeInfo>,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticResult {
    pub status: Status,
    pub finished_at: UnixMillis,
    pub exit_code: Option<i32>,
    pub truncated: bool,
    pub output: Vec<u8>,
    pub message: String,
}

impl DiagnosticResult {
    /// The output as stored (cut at [`MAX_STORED_OUTPUT`]) and whether it is marked cut.
    pub fn stored_output(&self) -> (&[u8], bool) {
        let output = &self.output[..self.output.len().min(MAX_STORED_OUTPUT)];
        (output, self.truncated || output.len() < self.output.len())
    }
}

/// A request's arguments as stored: a JSON object of strings.
pub fn args_json(args: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = args
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The arguments [`args_json`] stored; anything else reads as no arguments.
pub fn args_from_json(json: &str) -> Vec<(String, String)> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A stored diagnostic. `output` is `None` in listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticRow {
    pub id: i64,
    pub host_id: HostId,
    pub customer: String,
    pub host: String,
    pub probe: String,
    pub args: Vec<(String, String)>,
    pub finding: Option<i64>,
    pub requested_by: String,
    pub requested_at: UnixMillis,
    /// One of [`Status::as_str`].
    pub status: String,
    pub finished_at: Option<UnixMillis>,
    pub exit_code: Option<i32>,
    pub truncated: bool,
    pub message: String,
    pub output: Option<Vec<u8>>,
}
