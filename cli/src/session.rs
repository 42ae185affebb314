//! One run of the CLI: the connection (opened on first use, so `help` and `plugin-list` work
//! without a driver) and the output streams.

use std::io::Write;

use virtwasm_host::{Connection, Host, HostConfig};

use crate::commands::Failure;

/// Options that apply to every command of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The URI to connect to.
    pub uri: String,
    /// Refuse changes.
    pub readonly: bool,
    /// `-q`: no table headers, no blank line after each command.
    pub quiet: bool,
    /// Extra plugin directories.
    pub plugin_dirs: Vec<std::path::PathBuf>,
}

/// The state of a run.
pub struct Session {
    /// The run's options.
    pub settings: Settings,
    host: Option<Host>,
    conn: Option<Connection>,
    out: std::io::Stdout,
}

impl Session {
    /// A session that has not connected yet.
    pub fn new(settings: Settings) -> Session {
        Session {
            settings,
            host: None,
            conn: None,
            out: std::io::stdout(),
        }
    }

    /// The host, built on first use.
    pub fn host(&mut self) -> Result<&Host, Failure> {
        if self.host.is_none() {
            let bundled = virtwasm_bundle::BUNDLED
                .iter()
                .map(|b| virtwasm_host::BundledPlugin {
                    manifest: b.manifest,
                    wasm: b.wasm,
                    sha256: b.sha256,
                })
                .collect();
            let mut config = HostConfig::for_current_user(bundled);
            config
                .plugin_dirs
                .extend(self.settings.plugin_dirs.iter().cloned());
            let host = Host::new(config).map_err(|e| Failure(vec![e.message]))?;
            self.host = Some(host);
        }
        Ok(self.host.as_ref().expect("just built"))
    }

    /// The connection, opened on first use.
    pub fn conn(&mut self) -> Result<&Connection, Failure> {
        if self.conn.is_none() {
            let uri = self.settings.uri.clone();
            let readonly = self.settings.readonly;
            let host = self.host()?;
            let conn = host.open(&uri, readonly).map_err(|e| {
                Failure(vec![
                    "failed to connect to the hypervisor".into(),
                    e.message,
                ])
            })?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("just opened"))
    }

    /// Writes to standard output.
    pub fn print(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
    }

    /// Writes a confirmation line, which `-q` suppresses (virsh's `vshPrintExtra`).
    pub fn extra(&mut self, text: &str) {
        if !self.settings.quiet {
            self.print(text);
        }
    }

    /// Writes `value` as pretty JSON and a newline.
    pub fn print_json(&mut self, value: &impl serde::Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::msg(format!("cannot encode JSON: {e}")))?;
        self.print(&text);
        self.print("\n");
        Ok(())
    }

    /// Flushes standard output (before an error goes to standard error, to keep order).
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}
