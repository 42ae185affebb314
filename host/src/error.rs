//! The host's error type: one kind a caller can act on, and a message naming the real cause.

use crate::bindings::types;

/// What went wrong, in terms a caller can act on. Mirrors the WIT `error-kind`, plus the
/// failures only the host can see (a plugin that trapped, a malformed manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The driver does not implement the verb.
    Unsupported,
    /// Malformed or out-of-range input.
    InvalidArgument,
    /// No such object.
    NotFound,
    /// The object's state forbids the operation.
    InvalidState,
    /// Name or uuid taken.
    AlreadyExists,
    /// Not granted (plugin capability, read-only connection).
    PermissionDenied,
    /// A backend tool or system call failed.
    OperationFailed,
    /// Out of time (a plugin's deadline, a job lock).
    Timeout,
    /// A plugin trapped, panicked or ran out of memory.
    PluginCrashed,
    /// A plugin could not be loaded (manifest, version, imports).
    PluginLoad,
    /// A bug.
    Internal,
}

/// An error with its kind and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct Error {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The human message, naming the cause.
    pub message: String,
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// [`ErrorKind::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// [`ErrorKind::InvalidState`] with libvirt's wording.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidState, message)
    }
    /// [`ErrorKind::OperationFailed`].
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OperationFailed, message)
    }
    /// [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// [`ErrorKind::PermissionDenied`].
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
    /// Wraps an I/O error with what was being done to which path.
    pub fn io(what: &str, path: &std::path::Path, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::OperationFailed,
        };
        Self::new(kind, format!("{what} '{}': {err}", path.display()))
    }
}

impl From<types::Error> for Error {
    fn from(e: types::Error) -> Self {
        let kind = match e.kind {
            types::ErrorKind::Unsupported => ErrorKind::Unsupported,
            types::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            types::ErrorKind::NotFound => ErrorKind::NotFound,
            types::ErrorKind::InvalidState => ErrorKind::InvalidState,
            types::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            types::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            types::ErrorKind::OperationFailed => ErrorKind::OperationFailed,
            types::ErrorKind::Timeout => ErrorKind::Timeout,
            types::ErrorKind::Internal => ErrorKind::Internal,
        };
        // libvirt's prefix for the error's class, so driver errors read as libvirt's do.
        let prefix = match kind {
            ErrorKind::Internal => "internal error: ",
            ErrorKind::InvalidState => "Requested operation is not valid: ",
            ErrorKind::InvalidArgument => "invalid argument: ",
            ErrorKind::OperationFailed => "operation failed: ",
            _ => "",
        };
        let message = if e.message.starts_with(prefix) {
            e.message
        } else {
            format!("{prefix}{}", e.message)
        };
        Error { kind, message }
    }
}

/// Builds the WIT error a host capability returns to a plugin.
pub(crate) fn wit_error(kind: types::ErrorKind, message: impl Into<String>) -> types::Error {
    types::Error {
        kind,
        message: message.into(),
    }
}
