//! One run of the CLI: the connection (opened on first use, so `help` and `plugin-list` work
//! without a driver) and the output streams.

use std::io::Write;

use std::sync::Arc;

use virtwasm_api::Client;
use virtwasm_host::{Host, HostConfig};

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
    host: Option<Arc<Host>>,
    conn: Option<Client>,
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

    /// The in-process host, built on first use.
    pub fn host(&mut self) -> Result<&Arc<Host>, Failure> {
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
            // In-process on an embed root: the guests this run starts are recorded there, so
            // the next run (another process) can still control them.
            if let Ok(u) = virtwasm_host::uri::ConnectUri::parse(&self.settings.uri)
                && u.path == "/embed"
                && let Some((_, root)) = u.params.iter().find(|(k, _)| k == "root")
            {
                config.children_dir =
                    Some(std::path::Path::new(root).join("run/virtwasm/children"));
            }
            let host = Host::new(config).map_err(|e| Failure(vec![e.message]))?;
            self.host = Some(Arc::new(host));
        }
        Ok(self.host.as_ref().expect("just built"))
    }

    /// The connection, opened on first use: in-process for local URIs, else to the daemon
    /// the URI names.
    pub fn conn(&mut self) -> Result<&Client, Failure> {
        if self.conn.is_none() {
            let uri = self.settings.uri.clone();
            let readonly = self.settings.readonly;
            let mut host_error = None;
            let conn = Client::connect(&uri, readonly, || match self.host() {
                Ok(h) => Ok(h.clone()),
                Err(f) => {
                    let message = f.0.join(": ");
                    host_error = Some(f);
                    Err(virtwasm_host::Error::internal(message))
                }
            });
            if let Some(f) = host_error {
                return Err(f);
            }
            let mut conn = conn.map_err(|e| {
                Failure(vec![
                    "failed to connect to the hypervisor".into(),
                    e.message,
                ])
            })?;
            // On a terminal, long work through a daemon shows a progress bar (stderr only:
            // the output scripts read stays as virsh's).
            if conn.is_remote() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                let mut bar = crate::progress::OperationBar::default();
                conn.watch_operations(move |op| bar.show(op));
            }
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
