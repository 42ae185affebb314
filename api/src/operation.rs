//! Long work as an operation (Incus's model): an id, a status, progress where the host can
//! measure it, a cancel where stopping is safe, and a wait. Both the daemon (which keeps
//! them) and clients (which show them) use this record.

use serde::{Deserialize, Serialize};
use virtwasm_host::Error;

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Still working.
    Running,
    /// Done; `result` holds the answer.
    Success,
    /// Failed; `error` says why.
    Failure,
    /// Stopped by a cancel.
    Cancelled,
}

/// How far along an operation is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all (0 when unknown).
    pub total: u64,
    /// What is counted (`bytes`).
    pub unit: String,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Its id (a uuid).
    pub id: String,
    /// The API operation (`start`, `vol-upload`).
    pub op: String,
    /// The object it acts on, by name, when it names one.
    pub target: Option<String>,
    /// Where it is.
    pub status: Status,
    /// How far along, where measurable.
    pub progress: Option<Progress>,
    /// Whether a cancel can stop it now (a plugin call in progress cannot be interrupted
    /// safely; copying bytes can).
    pub may_cancel: bool,
    /// Who started it.
    pub client: String,
    /// Milliseconds since the Unix epoch when it started.
    pub created_ms: u64,
    /// Milliseconds it ran, once finished.
    pub elapsed_ms: Option<u64>,
    /// The answer, on success.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<Error>,
}
