//! Remote setup in minutes (Incus's trust tokens): an admin asks for a one-time token; a new
//! client redeems it over TLS, pinning the server's certificate by the fingerprint the token
//! carries, and gets a client certificate signed by the daemon's CA plus an access rule for
//! that certificate's fingerprint with the token's role. Tokens and trusted clients live in
//! one file in the daemon's state, written atomically.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use virtwasm_host::{Error, ErrorKind, Result};

use crate::config::{Role, Rule};

/// A pending token (its secret is kept only as a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The client name the certificate will carry (CN).
    pub name: String,
    /// The role the client gets.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// When it stops working, ms since the epoch.
    pub expires_ms: u64,
}

/// A client admitted by a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Its name (the certificate's CN).
    pub name: String,
    /// Its certificate's fingerprint (`sha256:HEX`).
    pub fingerprint: String,
    /// Its role.
    pub role: Role,
    /// When it joined, ms since the epoch.
    pub added_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    tokens: Vec<Token>,
    clients: Vec<Client>,
    /// Fingerprints of removed clients: refused at the handshake from then on, even where
    /// the allow-list would let any certificate of the CA in.
    #[serde(default)]
    revoked: Vec<String>,
}

/// The trust store.
pub struct Trust {
    path: PathBuf,
    state: Mutex<Stored>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compares two hashes in full, so timing says nothing about how much matched.
fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The token's text: `vwt1.SECRET.FINGERPRINT` (the server certificate's SHA-256, hex).
pub fn format_token(secret: &str, server_fingerprint: &str) -> String {
    format!(
        "vwt1.{secret}.{}",
        server_fingerprint.trim_start_matches("sha256:")
    )
}

impl Trust {
    /// Opens (or starts) the store at `path`.
    pub fn open(path: PathBuf) -> Result<Trust> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(format!("trust store '{}' is damaged: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(Error::io("cannot read trust store", &path, e)),
        };
        Ok(Trust {
            path,
            state: Mutex::new(state),
        })
    }

    fn save(&self, s: &Stored) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        }
        let body = serde_json::to_vec_pretty(s)
            .map_err(|e| Error::internal(format!("cannot encode trust store: {e}")))?;
        virtwasm_host::engine::write_atomically(&self.path, &body)
            .map_err(|e| Error::io("cannot write trust store", &self.path, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("cannot set the mode of", &self.path, e))
    }

    /// Makes a token for `name` with `role`, valid `ttl_secs`; returns the secret.
    pub fn create_token(&self, name: &str, role: Role, ttl_secs: u64) -> Result<(String, Token)> {
        virtwasm_host::domain::validate_object_name("client", name)?;
        let mut bytes = [0u8; 32];
        let mut f = std::fs::File::open("/dev/urandom")
            .map_err(|e| Error::io("cannot open", std::path::Path::new("/dev/urandom"), e))?;
        std::io::Read::read_exact(&mut f, &mut bytes)
            .map_err(|e| Error::io("cannot read", std::path::Path::new("/dev/urandom"), e))?;
        let secret = hex::encode(bytes);
        let token = Token {
            name: name.to_string(),
            role,
            secret_sha256: sha256_hex(&secret),
            expires_ms: now_ms() + ttl_secs.saturating_mul(1000),
        };
        let mut s = self.state.lock().unwrap();
        if s.clients.iter().any(|c| c.name == name) || s.tokens.iter().any(|t| t.name == name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a trusted client or pending token named '{name}' already exists"),
            ));
        }
        let now = now_ms();
        s.tokens.retain(|t| t.expires_ms > now);
        s.tokens.push(token.clone());
        self.save(&s)?;
        Ok((secret, token))
    }

    /// The pending, unexpired token whose secret this is, without spending it (a join
    /// checks the rest of its request first, so a malformed request does not burn it).
    pub fn peek(&self, secret: &str) -> Result<Token> {
        let wanted = sha256_hex(secret);
        let s = self.state.lock().unwrap();
        let now = now_ms();
        s.tokens
            .iter()
            .find(|t| same_hash(&t.secret_sha256, &wanted) && t.expires_ms > now)
            .cloned()
            .ok_or_else(|| {
                Error::denied(
                    "the token is unknown, expired or already used (ask the daemon's admin for a new one: `virtwasm trust token NAME`)",
                )
            })
    }

    /// Spends a token: the pending token whose secret this is, unexpired. One use only.
    pub fn redeem(&self, secret: &str) -> Result<Token> {
        let wanted = sha256_hex(secret);
        let mut s = self.state.lock().unwrap();
        let now = now_ms();
        // Compare every hash in full, so timing says nothing about how much matched.
        let mut found = None;
        for (i, t) in s.tokens.iter().enumerate() {
            if same_hash(&t.secret_sha256, &wanted) {
                found = Some(i);
            }
        }
        let Some(i) = found else {
            return Err(Error::denied(
                "the token is unknown or already used (ask the daemon's admin for a new one: `virtwasm trust token NAME`)",
            ));
        };
        let token = s.tokens.remove(i);
        self.save(&s)?;
        if token.expires_ms <= now {
            return Err(Error::denied(format!(
                "the token for '{}' expired; ask for a new one",
                token.name
            )));
        }
        Ok(token)
    }

    /// Records a client admitted by `token` with its certificate's fingerprint.
    pub fn add_client(&self, token: &Token, fingerprint: &str) -> Result<Client> {
        let client = Client {
            name: token.name.clone(),
            fingerprint: fingerprint.to_string(),
            role: token.role,
            added_ms: now_ms(),
        };
        let mut s = self.state.lock().unwrap();
        s.clients.push(client.clone());
        self.save(&s)?;
        Ok(client)
    }

    /// Removes a trusted client by name or fingerprint.
    pub fn remove_client(&self, key: &str) -> Result<Client> {
        let mut s = self.state.lock().unwrap();
        let i = s
            .clients
            .iter()
            .position(|c| c.name == key || c.fingerprint.eq_ignore_ascii_case(key))
            .ok_or_else(|| Error::not_found(format!("no trusted client '{key}'")))?;
        let c = s.clients.remove(i);
        s.revoked.push(c.fingerprint.clone());
        self.save(&s)?;
        Ok(c)
    }

    /// Trusted clients and pending tokens (without secrets).
    pub fn list(&self) -> (Vec<Client>, Vec<Token>) {
        let s = self.state.lock().unwrap();
        let now = now_ms();
        (
            s.clients.clone(),
            s.tokens
                .iter()
                .filter(|t| t.expires_ms > now)
                .cloned()
                .collect(),
        )
    }

    /// The access rules trusted clients bring: their fingerprint, their role.
    pub fn rules(&self) -> Vec<Rule> {
        self.state
            .lock()
            .unwrap()
            .clients
            .iter()
            .map(|c| Rule {
                identity: c.fingerprint.clone(),
                role: c.role,
                objects: "*".into(),
                deny: Vec::new(),
                files: None,
            })
            .collect()
    }

    /// Whether a certificate was revoked (its client removed).
    pub fn revoked(&self, fingerprint: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .revoked
            .iter()
            .any(|f| f.eq_ignore_ascii_case(fingerprint))
    }

    /// Whether a certificate fingerprint belongs to a trusted client (past the allow-list).
    pub fn knows(&self, fingerprint: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .clients
            .iter()
            .any(|c| c.fingerprint.eq_ignore_ascii_case(fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.json");
        let t = Trust::open(path.clone()).unwrap();
        let (secret, _) = t.create_token("laptop", Role::Operator, 60).unwrap();
        assert!(
            !std::fs::read_to_string(&path).unwrap().contains(&secret),
            "only the hash is stored"
        );
        let e = t.create_token("laptop", Role::Admin, 60).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        // A restarted daemon still honours it, once.
        let t = Trust::open(path.clone()).unwrap();
        let tok = t.redeem(&secret).unwrap();
        assert_eq!((tok.name.as_str(), tok.role), ("laptop", Role::Operator));
        let e = t.redeem(&secret).unwrap_err();
        assert!(
            e.message.contains("unknown or already used"),
            "{}",
            e.message
        );
        t.add_client(&tok, &format!("sha256:{}", "cd".repeat(32)))
            .unwrap();
        let t = Trust::open(path).unwrap();
        assert_eq!(t.rules()[0].role, Role::Operator);
        assert!(t.knows(&format!("sha256:{}", "CD".repeat(32))));
        t.remove_client("laptop").unwrap();
        assert!(t.rules().is_empty());
        assert!(t.revoked(&format!("sha256:{}", "cd".repeat(32))));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = Trust::open(dir.path().join("trust.json")).unwrap();
        let (secret, _) = t.create_token("old", Role::ReadOnly, 0).unwrap();
        let e = t.redeem(&secret).unwrap_err();
        assert!(e.message.contains("expired"), "{}", e.message);
        assert!(t.redeem("nonsense").is_err());
    }
}
