//! What both ends agree on besides the routes: the header naming the driver URI, the error
//! envelope and its HTTP statuses, and the event stream's framing.

use virtwasm_host::{Error, ErrorKind};

/// The header carrying the driver URI the request is for (`test:///default`,
/// `qemu:///system`); without it the daemon uses its configured default.
pub const URI_HEADER: &str = "x-virtwasm-uri";

/// The largest request body the daemon reads: libvirt's limit on one RPC message.
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

/// The HTTP status that carries an error of `kind`.
pub fn status_of(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidArgument => 400,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::Unsupported => 405,
        ErrorKind::AlreadyExists | ErrorKind::InvalidState => 409,
        ErrorKind::Timeout => 504,
        ErrorKind::OperationFailed
        | ErrorKind::PluginCrashed
        | ErrorKind::PluginLoad
        | ErrorKind::Internal => 500,
    }
}

/// The body of an error answer: `{"error": {"kind": "not-found", "message": "..."}}`.
pub fn error_body(e: &Error) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": e })).unwrap_or_default()
}

/// Reads an error answer back; a body that is not the envelope (a proxy's page, a
/// truncated answer) becomes an error quoting the status and the start of the body.
pub fn parse_error(status: u16, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Error,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) => env.error,
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            Error::failed(format!(
                "the daemon answered HTTP {status} without an error description: {text}"
            ))
        }
    }
}

/// One event as a Server-Sent Events frame.
pub fn sse_frame(event: &virtwasm_host::events::Event) -> String {
    let data = serde_json::to_string(event).unwrap_or_default();
    let kind = match event {
        virtwasm_host::events::Event::Domain { .. } => "domain",
        virtwasm_host::events::Event::Pool { .. } => "pool",
        virtwasm_host::events::Event::Network { .. } => "network",
    };
    format!("event: {kind}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_and_foreign_bodies_are_named() {
        let e = Error::not_found("Domain not found: no domain with matching name 'x'");
        let back = parse_error(status_of(e.kind), &error_body(&e));
        assert_eq!(back, e);
        let e = parse_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(
            e.message,
            "the daemon answered HTTP 502 without an error description: <html>Bad Gateway</html>"
        );
    }
}

/// A body whose chunks come from a channel: a volume streamed to or from the daemon, an
/// event stream. With a known length it is sent with a Content-Length.
#[derive(Debug)]
pub struct ChannelBody {
    /// The chunks; the body ends when every sender is gone.
    pub rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    /// The total length, when known.
    pub len: Option<u64>,
}

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.len {
            Some(n) => hyper::body::SizeHint::with_exact(n),
            None => hyper::body::SizeHint::default(),
        }
    }
}

/// The path of a volume's data (`GET` downloads it, `PUT` uploads into it).
pub fn volume_data_path(key: &str, pool: Option<&str>) -> String {
    let mut p = format!("/v1/volumes/{}/data", crate::ops::escape(key));
    if let Some(pool) = pool {
        p.push_str("?pool=");
        p.push_str(&crate::ops::escape(pool));
    }
    p
}

/// The request header asking for an operation instead of waiting (RFC 7240).
pub const PREFER_ASYNC: &str = "respond-async";
