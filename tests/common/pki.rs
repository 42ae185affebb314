//! A PKI made with `virtwasm pki` and a daemon listening for mutual TLS with it: shared by
//! the TLS tests and the QEMU migration test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::common::{self, Daemon};

/// A PKI made with the CLI: the daemon's directory (CA, server certificate) and one client
/// directory per name, each in libvirt's client layout (cacert.pem, clientcert.pem,
/// clientkey.pem).
pub struct Pki {
    pub server: PathBuf,
    pub home: PathBuf,
}

fn pki_cmd(home: &Path, args: &[&str]) {
    let r = common::virtwasm(home, &[&["pki"], args].concat());
    r.ok();
}

impl Pki {
    pub fn new(home: &Path, dir: &str) -> Pki {
        let server = home.join(dir);
        let s = server.to_str().unwrap();
        pki_cmd(home, &["ca", "--dir", s, "--name", &format!("{dir} CA")]);
        pki_cmd(
            home,
            &["server", "--dir", s, "--hostname", "127.0.0.1,localhost"],
        );
        Pki {
            server,
            home: home.to_path_buf(),
        }
    }

    /// Issues a client certificate for `name` and returns its directory.
    pub fn client(&self, name: &str) -> PathBuf {
        let s = self.server.to_str().unwrap();
        pki_cmd(
            &self.home,
            &["client", "--dir", s, "--name", name, "--force"],
        );
        let dir = self.home.join(format!("client-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.server.join("cacert.pem"), dir.join("cacert.pem")).unwrap();
        std::fs::copy(
            self.server.join("clientcert.pem"),
            dir.join("clientcert.pem"),
        )
        .unwrap();
        std::fs::copy(
            self.server.join("private/clientkey.pem"),
            dir.join("clientkey.pem"),
        )
        .unwrap();
        dir
    }
}

/// A daemon listening for TLS on a free loopback port with `config` as virtwasmd.toml.
pub fn tls_daemon(home: &Path, pki: &Pki, config: &str) -> (Daemon, u16) {
    let etc = home.join("daemon-root/etc/virtwasm");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("virtwasmd.toml"), config).unwrap();
    let d = Daemon::start(
        home,
        &[
            "--listen-tls",
            "127.0.0.1:0",
            "--pki-dir",
            pki.server.to_str().unwrap(),
        ],
    );
    let log = d.log_text();
    let port = log
        .split("tls://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no TLS port in the daemon's log:\n{log}"));
    (d, port)
}
