//! `virtwasm trust`: remote setup with one-time tokens (Incus's flow). On the daemon's host
//! an admin runs `trust token NAME`; on the new client, `-c DRIVER+tls://HOST/PATH trust add
//! TOKEN` fetches a client certificate signed by the daemon's CA, verifying the daemon by
//! the fingerprint in the token, and the client is trusted with the token's role.

use std::path::PathBuf;

use super::{Args, Command, Failure, Outcome, arg, flag, optional_arg, value};
use crate::session::Session;
use crate::table::Table;

/// The trust commands.
pub static COMMANDS: &[Command] = &[Command {
    name: "trust",
    group: "Remote access",
    help: "issue and redeem trust tokens, list and remove trusted TLS clients",
    opts: &[
        arg("action", "token, add, list or remove"),
        optional_arg(
            "what",
            "token: the client's name; add: the token; remove: a client's name or fingerprint",
        ),
        value("role", "token: read-only, operator (default) or admin"),
        value("ttl", "token: seconds it stays valid (default 3600)"),
        value(
            "dir",
            "add: where to write the certificate (default: the URI's pkipath, else ~/.pki/virtwasm)",
        ),
        flag("force", "add: replace existing certificate files"),
        flag("json", "list: print as JSON"),
    ],
    run: trust,
}];

fn need<'a>(a: &'a Args, what: &str) -> Result<&'a str, Failure> {
    a.get("what")
        .ok_or_else(|| Failure::msg(format!("trust {}: missing {what}", a.req("action"))))
}

fn trust(sess: &mut Session, a: &Args) -> Outcome {
    match a.req("action") {
        "token" => {
            let name = need(a, "the client's name")?;
            let role = a.get("role").unwrap_or("operator");
            let ttl = match a.get("ttl") {
                None => 3600,
                Some(t) => t.parse().map_err(|_| {
                    Failure::msg(format!("invalid ttl '{t}': expected whole seconds"))
                })?,
            };
            let answer = sess.conn()?.trust_token(name, role, ttl)?;
            let token = answer["token"].as_str().unwrap_or_default().to_string();
            sess.print(&format!("{token}\n"));
            sess.extra(&format!(
                "Token for client '{name}' (role {role}), valid for {ttl} s and once; redeem it on the client with:\n  virtwasm -c DRIVER+tls://THIS-HOST/PATH trust add TOKEN\n"
            ));
            Ok(())
        }
        "add" => {
            let token = need(a, "the token")?;
            let uri = sess.settings.uri.clone();
            let dir = match a.get("dir") {
                Some(d) => PathBuf::from(d),
                None => pkipath(&uri).unwrap_or_else(user_dir),
            };
            let answer = virtwasm_api::remote::trust_join(&uri, token, &dir, a.flag("force"))
                .map_err(|e| Failure(vec!["cannot join with the trust token".into(), e.message]))?;
            let name = answer["name"].as_str().unwrap_or_default();
            let role = answer["role"].as_str().unwrap_or_default();
            let with_path = if pkipath(&uri).is_some() {
                uri
            } else {
                let sep = if uri.contains('?') { '&' } else { '?' };
                format!("{uri}{sep}pkipath={}", dir.display())
            };
            sess.extra(&format!(
                "Trusted as '{name}' (role {role}); certificate written to {}\nConnect with: virtwasm -c '{with_path}'\n",
                dir.display()
            ));
            Ok(())
        }
        "list" => {
            let v = sess.conn()?.trust_list()?;
            if a.flag("json") {
                return sess.print_json(&v);
            }
            let mut t = Table::new(&["Name", "Role", "Fingerprint"]);
            for c in v["clients"].as_array().into_iter().flatten() {
                t.row(vec![
                    c["name"].as_str().unwrap_or_default().into(),
                    c["role"].as_str().unwrap_or_default().into(),
                    c["fingerprint"].as_str().unwrap_or_default().into(),
                ]);
            }
            for tok in v["tokens"].as_array().into_iter().flatten() {
                t.row(vec![
                    tok["name"].as_str().unwrap_or_default().into(),
                    tok["role"].as_str().unwrap_or_default().into(),
                    "(token not yet redeemed)".into(),
                ]);
            }
            let quiet = sess.settings.quiet;
            sess.print(&t.render(quiet));
            Ok(())
        }
        "remove" => {
            let key = need(a, "a client's name or fingerprint")?;
            let c = sess.conn()?.trust_remove(key)?;
            sess.extra(&format!(
                "Client '{}' is no longer trusted\n",
                c["name"].as_str().unwrap_or(key)
            ));
            Ok(())
        }
        other => Err(Failure::msg(format!(
            "unknown trust action '{other}' (expected token, add, list or remove)"
        ))),
    }
}

/// The URI's `pkipath` parameter.
fn pkipath(uri: &str) -> Option<PathBuf> {
    virtwasm_host::uri::ConnectUri::parse(uri)
        .ok()?
        .params
        .into_iter()
        .find(|(k, _)| k == "pkipath")
        .map(|(_, v)| PathBuf::from(v))
}

/// `~/.pki/virtwasm`, where a user's client certificates live.
fn user_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".pki/virtwasm")
}
