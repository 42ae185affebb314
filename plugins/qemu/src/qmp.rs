//! A QMP client over the host's unix-socket capability: the greeting, capability
//! negotiation, one command at a time, and the events that arrive in between.

use serde_json::{Value, json};
use virtwasm_sdk::host::unix_socket::{self, Connection};
use virtwasm_sdk::types::{Error, ErrorKind};
use virtwasm_sdk::{VerbResult, error};

/// An open, negotiated monitor connection.
pub struct Qmp {
    conn: Connection,
    buf: Vec<u8>,
    /// Events seen while waiting for answers, oldest first.
    pub events: Vec<Value>,
}

/// How long one answer may take (QMP answers in well under a millisecond; a loaded machine
/// and a paused guest are slower, never this slow).
const ANSWER_MS: u32 = 10_000;

impl Qmp {
    /// Connects to the monitor at `path`, waiting up to `wait_ms` for QEMU to listen, and
    /// negotiates capabilities.
    pub fn connect(path: &str, wait_ms: u32) -> VerbResult<Qmp> {
        let conn = unix_socket::connect(path, wait_ms)?;
        let mut q = Qmp {
            conn,
            buf: Vec::new(),
            events: Vec::new(),
        };
        let greeting = q.read_message(ANSWER_MS)?;
        if greeting.get("QMP").is_none() {
            return Err(error(
                ErrorKind::OperationFailed,
                format!("the monitor at {path} did not greet as QMP: {greeting}"),
            ));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// Runs `command` with `arguments`; returns its `return` value, or QEMU's error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> VerbResult<Value> {
        self.execute_within(command, arguments, ANSWER_MS)
    }

    /// [`execute`](Self::execute) for a command that takes as long as the guest's memory
    /// (`savevm`, `loadvm`): waits up to `answer_ms` for the answer.
    pub fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        answer_ms: u32,
    ) -> VerbResult<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        self.conn.send(&line)?;
        loop {
            let m = self.read_message(answer_ms)?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let class = e.get("class").and_then(Value::as_str).unwrap_or("Error");
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("");
                return Err(error(
                    ErrorKind::OperationFailed,
                    format!("QEMU refused '{command}': {desc} ({class})"),
                ));
            }
            if m.get("event").is_some() {
                self.events.push(m);
            }
        }
    }

    /// Waits up to `timeout_ms` for an event named `name` for which `matches` holds (one seen
    /// while waiting for an answer counts too). Waiting happens in the host (socket reads),
    /// so it does not use up the plugin's time budget.
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout_ms: u32,
        matches: impl Fn(&Value) -> bool,
    ) -> VerbResult<Option<Value>> {
        let is = |e: &Value| e.get("event").and_then(Value::as_str) == Some(name) && matches(e);
        if let Some(i) = self.events.iter().position(is) {
            return Ok(Some(self.events.remove(i)));
        }
        let mut left = timeout_ms;
        while left > 0 {
            let step = left.min(200);
            left -= step;
            if let Some(m) = self.read_message_within(step)?
                && m.get("event").is_some()
            {
                if is(&m) {
                    return Ok(Some(m));
                }
                self.events.push(m);
            }
        }
        Ok(None)
    }

    fn read_message(&mut self, answer_ms: u32) -> VerbResult<Value> {
        let mut waited = 0;
        loop {
            if let Some(m) = self.read_message_within(500)? {
                return Ok(m);
            }
            waited += 500;
            if waited >= answer_ms {
                return Err(error(
                    ErrorKind::Timeout,
                    format!(
                        "QEMU's monitor did not answer within {} s",
                        answer_ms / 1000
                    ),
                ));
            }
        }
    }

    /// One message if a whole line arrives within `ms`.
    fn read_message_within(&mut self, ms: u32) -> VerbResult<Option<Value>> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                return serde_json::from_str(text.trim()).map(Some).map_err(|e| {
                    error(
                        ErrorKind::OperationFailed,
                        format!("QEMU's monitor sent something that is not JSON ({e}): {text}"),
                    )
                });
            }
            let chunk = match self.conn.recv(65536, ms) {
                Ok(c) => c,
                Err(Error {
                    kind: ErrorKind::Timeout,
                    ..
                }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Err(error(
                    ErrorKind::OperationFailed,
                    "QEMU closed its monitor connection",
                ));
            }
            self.buf.extend_from_slice(&chunk);
        }
    }
}
