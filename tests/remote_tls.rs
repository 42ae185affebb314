//! virtwasmd over mutual TLS with certificates made by `virtwasm pki`: a good certificate,
//! none, one from another CA, one off the allow-list, one admitted by its fingerprint, an
//! operator trying an admin call, rules limited to one kind of object,
//! and third-party clients (curl; Python's ssl and http.client) with client certificates.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::path::Path;
use std::process::Command;

use common::{Daemon, Run};
use pki::{Pki, tls_daemon};

fn tls_client(d: &Daemon, port: u16, client: &Path, script: &str) -> Run {
    let uri = format!(
        "test+tls://127.0.0.1:{port}/default?pkipath={}",
        client.display()
    );
    d.client(&uri, script)
}

const ALICE_ADMIN: &str = r#"
[tls]
allowed_dn = ["O=virtwasm,CN=alice", "O=virtwasm,CN=carol"]

[[access.rule]]
identity = "dn:O=virtwasm,CN=alice"
role = "admin"

[[access.rule]]
identity = "dn:*CN=carol"
role = "operator"
"#;

#[test]
fn a_good_certificate_gets_its_role() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path(), "pki");
    let alice = pki.client("alice");
    let (d, port) = tls_daemon(home.path(), &pki, ALICE_ADMIN);
    let r = tls_client(
        &d,
        port,
        &alice,
        "list --all; suspend test; domstate test --reason",
    );
    assert_eq!(
        r.ok(),
        " Id   Name   State\n----------------------\n 1    test   running\n\nDomain 'test' suspended\n\npaused (user)\n\n"
    );
    // The operator may run the lifecycle but not change or delete definitions.
    let carol = pki.client("carol");
    let r = tls_client(&d, port, &carol, "resume test; domstate test");
    assert_eq!(r.ok(), "Domain 'test' resumed\n\nrunning\n\n");
    let r = tls_client(&d, port, &carol, "setmem test 1G --config");
    let e = r.failed();
    assert!(
        e.contains("access denied: dn:O=virtwasm,CN=carol (sha256:")
            && e.contains("(role operator) lacks permission 'domain:write' on domain 'test', which 'set-memory' needs"),
        "{e}"
    );
    assert!(
        d.log_text().contains("lacks permission 'domain:write'"),
        "a denial is logged:\n{}",
        d.log_text()
    );
}

#[test]
fn certificates_off_the_allow_list_or_from_another_ca_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path(), "pki");
    let bob = pki.client("bob");
    let (d, port) = tls_daemon(home.path(), &pki, ALICE_ADMIN);
    // Bob's certificate is from the right CA but not on the allow-list: he is told so
    // rather than cut off without a word.
    let r = tls_client(&d, port, &bob, "list");
    let e = r.failed();
    assert!(
        e.contains("client certificate 'O=virtwasm,CN=bob' (sha256:")
            && e.contains(
                "is not on this daemon's allow-list ([tls] allowed_dn, allowed_fingerprints)"
            ),
        "{e}"
    );

    // A client whose certificate comes from another CA: the daemon refuses the handshake.
    let other = Pki::new(home.path(), "other");
    let mallory = other.client("alice");
    let out = curl(
        &pki.server.join("cacert.pem"),
        Some(&mallory),
        port,
        "/v1/domains",
    );
    assert!(
        !out.status.success(),
        "a foreign client certificate was accepted"
    );
    d.wait_for_log("TLS handshake refused");

    // No client certificate at all: the handshake may finish (to redeem a trust token), but
    // nothing else is served, and the client is told why.
    let out = curl(&pki.server.join("cacert.pem"), None, port, "/v1/domains");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains(r#""kind":"permission-denied""#)
            && body.contains("this TLS connection has no client certificate"),
        "{body}"
    );

    // The CLI without certificates says where it looked.
    let empty = home.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = tls_client(&d, port, &empty, "list");
    assert!(
        r.failed()
            .contains(&format!("{}/cacert.pem", empty.display())),
        "{}",
        r.stderr
    );
}

fn curl(ca: &Path, client: Option<&Path>, port: u16, path: &str) -> std::process::Output {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "--cacert"]).arg(ca);
    if let Some(dir) = client {
        c.arg("--cert")
            .arg(dir.join("clientcert.pem"))
            .arg("--key")
            .arg(dir.join("clientkey.pem"));
    }
    c.arg(format!("https://127.0.0.1:{port}{path}"));
    c.output().expect("run curl")
}

#[test]
fn curl_and_python_are_enough() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path(), "pki");
    let alice = pki.client("alice");
    let (_d, port) = tls_daemon(home.path(), &pki, ALICE_ADMIN);
    let ca = pki.server.join("cacert.pem");

    let out = curl(&ca, Some(&alice), port, "/v1/domains");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "test");

    let script = format!(
        r#"
import http.client, json, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.load_cert_chain({cert:?}, {key:?})
conn = http.client.HTTPSConnection("127.0.0.1", {port}, context=ctx)
conn.request("GET", "/v1")
info = json.loads(conn.getresponse().read())
conn.request("POST", "/v1/domains/test/suspend", body="{{}}", headers={{"Content-Type": "application/json"}})
r = conn.getresponse(); r.read()
conn.request("GET", "/v1/domains/test")
rec = json.loads(conn.getresponse().read())
print(info["client"]["subject"], info["role"], r.status, rec["def"]["name"], conn.sock.version())
"#,
        ca = ca.display().to_string(),
        cert = alice.join("clientcert.pem").display().to_string(),
        key = alice.join("clientkey.pem").display().to_string(),
    );
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("-c")
                .arg("import ssl")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("python3 with ssl");
    let out = Command::new(python)
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "O=virtwasm,CN=alice admin 200 test TLSv1.3\n"
    );
}

#[test]
fn a_trust_token_admits_a_new_client_in_one_command() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path(), "pki");
    let (d, port) = tls_daemon(home.path(), &pki, "");
    // On the daemon's host, an admin (root on the unix socket) issues a token.
    let local = d.uri("test", "/default");
    let r = d.client(&local, "trust token laptop --role operator --ttl 60");
    let token = r.ok().lines().next().unwrap().to_string();
    assert!(token.starts_with("vwt1."), "{}", r.stdout);

    // Anyone without a certificate may connect, but only to redeem a token.
    let out = curl(&pki.server.join("cacert.pem"), None, port, "/v1/domains");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains(
            "this TLS connection has no client certificate: it may only redeem a trust token"
        ),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token whose pinned fingerprint is not the server's is refused at the handshake.
    let dir = home.path().join("laptop-pki");
    let remote = format!(
        "test+tls://127.0.0.1:{port}/default?pkipath={}",
        dir.display()
    );
    let forged = format!(
        "{}.{}",
        &token[..token.rfind('.').unwrap()],
        "ab".repeat(32)
    );
    let r = d.client(&remote, &format!("trust add {forged}"));
    assert!(
        r.failed().contains("the token pins the server certificate"),
        "{}",
        r.stderr
    );

    // On the new client: one command, and it is trusted with the token's role.
    let r = d.client(&remote, &format!("trust add {token}"));
    assert!(
        r.ok().starts_with(&format!(
            "Trusted as 'laptop' (role operator); certificate written to {}\n",
            dir.display()
        )),
        "{}",
        r.stdout
    );
    let r = tls_client(&d, port, &dir, "suspend test; domstate test");
    assert_eq!(r.ok(), "Domain 'test' suspended\n\npaused\n\n");
    let r = tls_client(&d, port, &dir, "setmem test 1G --config");
    assert!(
        r.failed()
            .contains("(role operator) lacks permission 'domain:write'"),
        "{}",
        r.stderr
    );

    // The token worked once.
    let r = d.client(&remote, &format!("trust add {token} --force"));
    assert!(
        r.failed()
            .contains("the token is unknown, expired or already used"),
        "{}",
        r.stderr
    );

    // The admin sees the client, and removing it revokes its certificate.
    let r = d.client(&local, "trust list");
    assert!(
        r.ok().contains("laptop   operator   sha256:"),
        "{}",
        r.stdout
    );
    d.client(&local, "trust remove laptop").ok();
    let r = tls_client(&d, port, &dir, "resume test");
    assert!(
        r.failed()
            .contains("client certificate 'O=virtwasm,CN=laptop' (sha256:")
            && r.stderr.contains("was revoked (`virtwasm trust remove`)"),
        "{}",
        r.stderr
    );
}

#[test]
fn listings_show_only_what_a_client_may_see() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path(), "pki");
    let dave = pki.client("dave");
    let config = r#"
[[access.rule]]
identity = "dn:*CN=dave"
role = "operator"
objects = "web-*"

[[access.rule]]
identity = "dn:*CN=dave"
role = "read-only"
objects = "network:default"

[[access.rule]]
identity = "dn:*CN=dave"
role = "read-only"
deny = ["getattr", "read"]
"#;
    let (d, port) = tls_daemon(home.path(), &pki, config);
    let xml = home.path().join("web.xml");
    std::fs::write(
        &xml,
        "<domain type='test'><name>web-1</name><memory>65536</memory><os><type>hvm</type></os></domain>",
    )
    .unwrap();
    d.client(
        &d.uri("test", "/default"),
        &format!("define {}", xml.display()),
    )
    .ok();
    let r = tls_client(&d, port, &dave, "list --all --name");
    assert_eq!(r.ok(), "web-1\n\n");
    let r = tls_client(&d, port, &dave, "start web-1; domstate web-1; dominfo test");
    assert_eq!(r.stdout, "Domain 'web-1' started\n\nrunning\n\n\n");
    assert!(
        r.stderr
            .contains("lacks permission 'domain:getattr' on domain 'test'"),
        "{}",
        r.stderr
    );
    // A rule limited to one kind: the network 'default' is visible, the pool of the same
    // kind of name ('default-pool') and every other object are not.
    let r = tls_client(
        &d,
        port,
        &dave,
        "net-list --all --name; pool-list --all --name",
    );
    assert_eq!(r.ok(), "default\n\n\n");
}

/// SHA-256 of a PEM certificate's DER bytes, as `sha256:HEX`, computed by Python's `ssl`
/// and `hashlib` (not by virtwasm's own code, which the daemon uses).
fn python_fingerprint(cert: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import ssl,hashlib,sys; print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest())",
        ])
        .arg(cert)
        .output()
        .expect("python3 (Debian: python3; .ci/run installs it)");
    assert!(out.status.success(), "{out:?}");
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn a_fingerprint_on_the_allow_list_admits_a_client_and_can_carry_a_role() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path(), "pki");
    let erin = pki.client("erin");
    let frank = pki.client("frank");
    let erin_fp = python_fingerprint(&erin.join("clientcert.pem"));
    let frank_fp = python_fingerprint(&frank.join("clientcert.pem"));
    // Only alice by name; erin and frank by fingerprint, frank with the operator role.
    let config = format!(
        r#"
[tls]
allowed_dn = ["O=virtwasm,CN=alice"]
allowed_fingerprints = ["{erin_fp}", "{frank_fp}"]

[[access.rule]]
identity = "{frank_fp}"
role = "operator"
"#
    );
    let (d, port) = tls_daemon(home.path(), &pki, &config);
    // Admitted, with the TLS default role (read-only): reads work, a change is refused.
    let r = tls_client(&d, port, &erin, "domstate test; suspend test");
    assert_eq!(r.stdout, "running\n\n\n");
    assert!(
        r.stderr.contains(&format!(
            "access denied: dn:O=virtwasm,CN=erin ({erin_fp}) (role read-only) lacks permission 'domain:suspend' on domain 'test'"
        )),
        "{}",
        r.stderr
    );
    let r = tls_client(
        &d,
        port,
        &frank,
        "suspend test; domstate test --reason; resume test",
    );
    assert_eq!(
        r.ok(),
        "Domain 'test' suspended\n\npaused (user)\n\nDomain 'test' resumed\n\n"
    );
    // A certificate of the same CA whose fingerprint is not listed stays out.
    let grace = pki.client("grace");
    let r = tls_client(&d, port, &grace, "list");
    assert!(
        r.failed().contains("is not on this daemon's allow-list"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_rule_on_volume_names_applies_to_the_volumes_a_client_creates() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path(), "pki");
    let vic = pki.client("vic");
    let config = r#"
[[access.rule]]
identity = "dn:*CN=vic"
role = "admin"
objects = "volume:scratch-*"

[[access.rule]]
identity = "dn:*CN=vic"
role = "admin"
objects = "pool:*"
"#;
    let (d, port) = tls_daemon(home.path(), &pki, config);
    let r = tls_client(
        &d,
        port,
        &vic,
        "vol-create-as default-pool scratch-1 1M; vol-clone scratch-1 scratch-2 --pool default-pool",
    );
    assert_eq!(
        r.ok(),
        "Vol scratch-1 created\n\nVol scratch-2 cloned from scratch-1\n\n"
    );
    // A name outside the rule: refused, for a new volume as for a copy, and nothing is made.
    let r = tls_client(&d, port, &vic, "vol-create-as default-pool other 1M");
    assert!(
        r.failed()
            .contains("lacks permission 'storage_vol:write' on storage volume 'other'"),
        "{}",
        r.stderr
    );
    let r = tls_client(
        &d,
        port,
        &vic,
        "vol-clone scratch-1 other --pool default-pool",
    );
    assert!(
        r.failed()
            .contains("lacks permission 'storage_vol:write' on storage volume 'other'"),
        "{}",
        r.stderr
    );
    let r = d.client(&d.uri("test", "/default"), "vol-list default-pool");
    assert!(!r.ok().contains(" other "), "{}", r.stdout);
}
