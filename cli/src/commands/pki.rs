//! `virtwasm pki`: the certificates TLS connections need, one command each for the CA, the
//! daemon and a client, written where the daemon and clients look for them.

use std::path::PathBuf;

use virtwasm_api::pki;

use super::{Args, Command, Failure, Outcome, arg, flag, value};
use crate::session::Session;

/// The PKI commands.
pub static COMMANDS: &[Command] = &[Command {
    name: "pki",
    group: "PKI",
    help: "create a CA, or a server or client certificate signed by it, for TLS connections",
    opts: &[
        arg("what", "ca, server or client"),
        value(
            "dir",
            "PKI directory (default /etc/pki/virtwasm as root, else ~/.pki/virtwasm)",
        ),
        value(
            "name",
            "common name of the CA (default \"virtwasm CA\") or client (default $USER)",
        ),
        value(
            "hostname",
            "server host names or IP addresses, comma-separated (default this host's name, localhost, 127.0.0.1)",
        ),
        flag("force", "replace existing files"),
    ],
    run: pki_cmd,
}];

fn pki_cmd(sess: &mut Session, a: &Args) -> Outcome {
    let what = a.req("what");
    let dir = a
        .get("dir")
        .map(PathBuf::from)
        .unwrap_or_else(virtwasm_api::tls::default_dir);
    let force = a.flag("force");
    // An option the kind ignores is refused rather than silently dropped, since the user
    // clearly expected it to end up in the certificate.
    let (cert, key, kind) = match what {
        "ca" => {
            refuse(a, "hostname", what)?;
            let name = a.get("name").unwrap_or("virtwasm CA");
            (pki::create_ca(&dir, name, force)?, pki::CA_KEY, "CA")
        }
        "server" => {
            refuse(a, "name", what)?;
            let hosts = match a.get("hostname") {
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => default_hostnames()?,
            };
            (
                pki::create_server(&dir, &hosts, force)?,
                pki::SERVER_KEY,
                "Server",
            )
        }
        "client" => {
            refuse(a, "hostname", what)?;
            let name = match a.get("name") {
                Some(n) => n.to_string(),
                None => ["USER", "LOGNAME"]
                    .iter()
                    .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
                    .ok_or_else(|| {
                        Failure::msg(
                            "cannot tell the user name ($USER and $LOGNAME are not set): pass --name",
                        )
                    })?,
            };
            (
                pki::create_client(&dir, &name, force)?,
                pki::CLIENT_KEY,
                "Client",
            )
        }
        other => {
            return Err(Failure::msg(format!(
                "unknown certificate kind '{other}': expected ca, server or client"
            )));
        }
    };
    sess.extra(&format!(
        "{kind} certificate written to {} (key {})\n",
        cert.display(),
        dir.join(key).display()
    ));
    Ok(())
}

fn refuse(a: &Args, option: &str, what: &str) -> Result<(), Failure> {
    if a.get(option).is_some() {
        let applies = match option {
            "hostname" => "`pki server`",
            _ => "`pki ca` and `pki client`",
        };
        return Err(Failure::msg(format!(
            "--{option} does not apply to `pki {what}`, only to {applies}"
        )));
    }
    Ok(())
}

/// The names a client on this machine or on the network is likely to connect with.
fn default_hostnames() -> Result<Vec<String>, Failure> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(Failure::msg(format!(
            "cannot get the host name for the server certificate ({}): pass --hostname",
            std::io::Error::last_os_error()
        )));
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let mut names = vec![String::from_utf8_lossy(&buf[..end]).into_owned()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    names.retain(|n| !n.is_empty());
    Ok(names)
}
