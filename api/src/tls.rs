//! TLS for the daemon and its clients: mutual TLS against one private CA, with libvirt's
//! certificate layout so that existing PKI habits (and `certtool` recipes) carry over.
//!
//! Both sides present a certificate and trust only the CA in `cacert.pem`, never the system
//! roots: the CA is what says who may manage this host. Building a configuration checks what
//! would otherwise surface as an opaque handshake failure on the first connection (a missing
//! file, a key that is world-readable or belongs to another certificate, a certificate from
//! another CA or past its dates) and names the file at fault, as libvirt does at start-up.
//!
//! Two exceptions serve joining by trust token, where a new client has no certificate yet:
//! the daemon may let a client without a certificate finish the handshake
//! ([`server_config_with`]), and that client then trusts the daemon by the fingerprint the
//! token carries instead of by a CA ([`pinned_client_config`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
};
use sha2::{Digest, Sha256};
use virtwasm_host::{Error, Result};
use x509_parser::x509::X509Name;

use crate::pki;

/// root's PKI directory: the daemon's, and root's as a client.
const SYSTEM_DIR: &str = "/etc/pki/virtwasm";
/// The only application protocol spoken over these connections.
const ALPN: &[u8] = b"http/1.1";

/// Where one side's CA certificate, own certificate and private key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiPaths {
    /// The CA that peers' certificates must chain to.
    pub ca_cert: PathBuf,
    /// This side's certificate (leaf first, then any intermediates).
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

impl PkiPaths {
    /// The daemon's files: `DIR/cacert.pem`, `DIR/servercert.pem` and
    /// `DIR/private/serverkey.pem`, `DIR` defaulting to `/etc/pki/virtwasm`.
    pub fn server(dir: Option<&Path>) -> PkiPaths {
        let dir = dir.unwrap_or(Path::new(SYSTEM_DIR));
        PkiPaths {
            ca_cert: dir.join(pki::CA_CERT),
            cert: dir.join(pki::SERVER_CERT),
            key: dir.join(pki::SERVER_KEY),
        }
    }

    /// A client's files. root uses `/etc/pki/virtwasm/{cacert,clientcert}.pem` and
    /// `private/clientkey.pem`; another user `~/.pki/virtwasm/{cacert,clientcert,clientkey}.pem`.
    /// An explicit `DIR` (libvirt's `pkipath=`) holds the key as `DIR/clientkey.pem` or
    /// `DIR/private/clientkey.pem`, whichever exists.
    ///
    /// A user's default directory accepts `private/clientkey.pem` too, since that is where
    /// `virtwasm pki client` writes the key.
    pub fn client(dir: Option<&Path>) -> PkiPaths {
        if dir.is_none() && is_root() {
            let dir = Path::new(SYSTEM_DIR);
            return PkiPaths {
                ca_cert: dir.join(pki::CA_CERT),
                cert: dir.join(pki::CLIENT_CERT),
                key: dir.join(pki::CLIENT_KEY),
            };
        }
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(default_dir);
        let flat = dir.join(pki::CLIENT_KEY_FLAT);
        let private = dir.join(pki::CLIENT_KEY);
        let key = if !flat.exists() && private.exists() {
            private
        } else {
            flat
        };
        PkiPaths {
            ca_cert: dir.join(pki::CA_CERT),
            cert: dir.join(pki::CLIENT_CERT),
            key,
        }
    }
}

/// The PKI directory of the current user: `/etc/pki/virtwasm` for root, `~/.pki/virtwasm`
/// otherwise (where `virtwasm pki` writes by default and a client looks).
pub fn default_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from(SYSTEM_DIR);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".pki/virtwasm")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Which TLS versions to speak: 1.3 only by default; 1.2 only when configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.3 alone.
    #[default]
    Tls13Only,
    /// TLS 1.3, and 1.2 for peers that cannot do better.
    Tls12AndUp,
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_AND_UP: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

impl TlsVersions {
    fn list(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            TlsVersions::Tls13Only => TLS13_ONLY,
            TlsVersions::Tls12AndUp => TLS12_AND_UP,
        }
    }
}

/// The daemon's TLS configuration: presents `paths.cert`, and requires every client to
/// present a certificate chaining to `paths.ca_cert`.
pub fn server_config(paths: &PkiPaths, versions: TlsVersions) -> Result<Arc<rustls::ServerConfig>> {
    server_config_with(paths, versions, false)
}

/// The daemon's TLS configuration, optionally letting a client without a certificate complete
/// the handshake (`allow_anonymous`), so that a client joining by trust token can reach the
/// daemon before it has a certificate.
///
/// Anonymous clients are only let through the handshake: the daemon must find
/// `peer_certificates()` empty on such a connection and allow it nothing but the join request.
/// A client that does present a certificate is verified exactly as by [`server_config`], so
/// one from another CA is still refused during the handshake rather than treated as anonymous.
pub fn server_config_with(
    paths: &PkiPaths,
    versions: TlsVersions,
    allow_anonymous: bool,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let loaded = load(paths, Side::Server, &provider)?;
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(loaded.roots.clone(), provider.clone());
    if allow_anonymous {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| {
        Error::invalid(format!(
            "cannot verify clients against CA certificate '{}': {e}",
            paths.ca_cert.display()
        ))
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.list())
        .map_err(|e| Error::internal(format!("TLS versions {versions:?}: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(loaded.chain, loaded.key)
        .map_err(|e| identity_error(paths, e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A client's TLS configuration: trusts only `paths.ca_cert` (not the system roots) and
/// presents `paths.cert`.
pub fn client_config(paths: &PkiPaths, versions: TlsVersions) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let loaded = load(paths, Side::Client, &provider)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.list())
        .map_err(|e| Error::internal(format!("TLS versions {versions:?}: {e}")))?
        .with_root_certificates(loaded.roots)
        .with_client_auth_cert(loaded.chain, loaded.key)
        .map_err(|e| identity_error(paths, e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for joining by trust token: it presents no certificate (the client
/// has none yet) and trusts exactly one server certificate, the one whose SHA-256 fingerprint
/// (`sha256:HEX`, as [`peer_cert`] and [`pki::fingerprint_of_pem_file`] give it) the token
/// carries, whoever issued it and whatever names it holds.
///
/// The pin replaces the CA and name checks, not the handshake's: the server must still prove,
/// by its signature, that it holds that certificate's key. Dates are not checked either, since
/// the pin names one certificate exactly and a daemon refuses to start with an expired one.
/// TLS 1.3 only: a client new enough to join has no reason to speak anything older.
pub fn pinned_client_config(fingerprint: &str) -> Result<Arc<rustls::ClientConfig>> {
    let pin = parse_fingerprint(fingerprint)?;
    let provider = provider();
    let verifier = PinnedServerCert {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS13_ONLY)
        .map_err(|e| Error::internal(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// `sha256:` and the lowercase hex SHA-256 of a certificate's DER.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

fn parse_fingerprint(fingerprint: &str) -> Result<[u8; 32]> {
    let text = fingerprint.trim();
    let mut pin = [0u8; 32];
    let parsed = match (text.get(..7), text.get(7..)) {
        (Some(prefix), Some(hex_part)) if prefix.eq_ignore_ascii_case("sha256:") => {
            hex::decode_to_slice(hex_part, &mut pin).is_ok()
        }
        _ => false,
    };
    if !parsed {
        return Err(Error::invalid(format!(
            "'{fingerprint}' is not a certificate fingerprint: expected 'sha256:' and 64 hex digits"
        )));
    }
    Ok(pin)
}

/// Trusts the one end-entity certificate whose SHA-256 is `pin`, and checks handshake
/// signatures against it as rustls's own verifier would.
#[derive(Debug)]
struct PinnedServerCert {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

/// Why a pinned handshake failed, in words that survive rustls's error formatting (which
/// prints the debug form of a custom certificate error).
struct FingerprintMismatch {
    expected: [u8; 32],
    presented: [u8; 32],
}

impl std::fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server certificate fingerprint mismatch: the token pins sha256:{} but the server \
             presented sha256:{}",
            hex::encode(self.expected),
            hex::encode(self.presented)
        )
    }
}

impl std::fmt::Debug for FingerprintMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for FingerprintMismatch {}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let presented: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(FingerprintMismatch {
                expected: self.pin,
                presented,
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The identity a verified peer certificate carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerCert {
    /// The subject DN as libvirt's `tls_allowed_dn_list` sees it, e.g.
    /// `C=GB,O=virtwasm,CN=client1`.
    pub subject: String,
    /// `sha256:` and the lowercase hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
}

/// The subject and fingerprint of a peer's (DER) certificate. The subject lists the RDNs in
/// certificate order, comma-separated, with the short names C, ST, L, O, OU and CN (other
/// attributes by dotted OID) and RFC 4514 escaping of the values.
pub fn peer_cert(der: &[u8]) -> Result<PeerCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::invalid(format!("peer certificate is not valid X.509: {e}")))?;
    Ok(PeerCert {
        subject: dn_string(cert.subject()),
        fingerprint: fingerprint(der),
    })
}

/// Whether `subject` matches `pattern` as an entry of libvirt's `tls_allowed_dn_list`: a
/// whole-string glob where `*` matches any run of characters and `?` exactly one.
pub fn dn_matches(pattern: &str, subject: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = subject.chars().collect();
    let (mut pi, mut si) = (0, 0);
    // The last `*` seen and the subject position it currently stands for, to retry from
    // when a literal stops matching: linear backtracking, never exponential.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A missing key passes: the read that follows reports it along with which file it is.
pub(crate) fn check_key_mode(path: &Path) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("cannot inspect private key", path, e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::denied(format!(
            "private key '{}' is accessible by group or others (mode {mode:04o}), which is \
             too open: run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

struct Loaded {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Reads and checks one side's three files.
fn load(paths: &PkiPaths, side: Side, provider: &Arc<CryptoProvider>) -> Result<Loaded> {
    let layout_dir = paths
        .ca_cert
        .parent()
        .unwrap_or(Path::new("."))
        .display()
        .to_string();
    let create = format!("`virtwasm pki {} --dir {layout_dir}`", side.name());
    let ca_hint = format!(
        "copy the CA's cacert.pem there, or create a CA with `virtwasm pki ca --dir {layout_dir}`"
    );

    let ca_certs = load_certs(&paths.ca_cert, "CA certificate", &ca_hint)?;
    let mut roots = RootCertStore::empty();
    for der in &ca_certs {
        roots.add(der.clone()).map_err(|e| {
            Error::invalid(format!(
                "CA certificate '{}' cannot be used as a trust anchor: {e}",
                paths.ca_cert.display()
            ))
        })?;
    }
    let roots = Arc::new(roots);

    let what = format!("{} certificate", side.name());
    let chain = load_certs(&paths.cert, &what, &format!("create one with {create}"))?;
    let key_what = format!("{} private key", side.name());
    check_key_mode(&paths.key)?;
    let key = load_key(&paths.key, &key_what, &format!("create one with {create}"))?;

    match CertifiedKey::from_der(chain.clone(), key.clone_key(), provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(Error::invalid(format!(
                "private key '{}' does not match certificate '{}'",
                paths.key.display(),
                paths.cert.display()
            )));
        }
        Err(e) => return Err(identity_error(paths, e)),
    }

    // A bundle may hold an old CA next to its successor during a rollover; only a file
    // without any usable CA is refused.
    let dated: Vec<Result<()>> = ca_certs
        .iter()
        .map(|c| check_dates(&paths.ca_cert, "CA certificate", c))
        .collect();
    if !dated.iter().any(Result::is_ok) {
        dated.into_iter().next().expect("at least one CA")?;
    }
    check_dates(&paths.cert, &what, &chain[0])?;
    check_chain(
        paths,
        side,
        &chain,
        &ca_certs,
        roots.clone(),
        provider,
        &create,
    )?;
    Ok(Loaded { roots, chain, key })
}

fn identity_error(paths: &PkiPaths, e: rustls::Error) -> Error {
    Error::invalid(format!(
        "cannot use certificate '{}' with private key '{}': {e}",
        paths.cert.display(),
        paths.key.display()
    ))
}

fn missing(path: &Path, what: &str, hint: &str) -> Error {
    Error::not_found(format!("no {what} at '{}': {hint}", path.display()))
}

fn read_pem(path: &Path, what: &str, hint: &str) -> Result<(Vec<u8>, Vec<rustls_pemfile::Item>)> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(missing(path, what, hint));
        }
        Err(e) => return Err(Error::io(&format!("cannot read {what}"), path, e)),
    };
    let items = rustls_pemfile::read_all(&mut bytes.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::invalid(format!("{what} '{}' is not valid PEM: {e}", path.display()))
        })?;
    Ok((bytes, items))
}

fn is_key(item: &rustls_pemfile::Item) -> bool {
    matches!(
        item,
        rustls_pemfile::Item::Pkcs1Key(_)
            | rustls_pemfile::Item::Pkcs8Key(_)
            | rustls_pemfile::Item::Sec1Key(_)
    )
}

fn load_certs(path: &Path, what: &str, hint: &str) -> Result<Vec<CertificateDer<'static>>> {
    let (_, items) = read_pem(path, what, hint)?;
    let has_key = items.iter().any(is_key);
    let certs: Vec<_> = items
        .into_iter()
        .filter_map(|i| match i {
            rustls_pemfile::Item::X509Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        let found = if has_key {
            "holds a private key, not a certificate"
        } else {
            "holds no certificate"
        };
        return Err(Error::invalid(format!(
            "{what} file '{}' {found}: expected a PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_key(path: &Path, what: &str, hint: &str) -> Result<PrivateKeyDer<'static>> {
    let (bytes, items) = read_pem(path, what, hint)?;
    let mut keys = Vec::new();
    let mut has_cert = false;
    for item in items {
        match item {
            rustls_pemfile::Item::Pkcs1Key(k) => keys.push(PrivateKeyDer::from(k)),
            rustls_pemfile::Item::Pkcs8Key(k) => keys.push(PrivateKeyDer::from(k)),
            rustls_pemfile::Item::Sec1Key(k) => keys.push(PrivateKeyDer::from(k)),
            rustls_pemfile::Item::X509Certificate(_) => has_cert = true,
            _ => {}
        }
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => {
            let found = if bytes
                .windows(b"ENCRYPTED PRIVATE KEY".len())
                .any(|w| w == b"ENCRYPTED PRIVATE KEY")
            {
                "is encrypted, and virtwasm cannot prompt for a passphrase (its file mode is \
                 what protects it)"
            } else if has_cert {
                "holds a certificate, not a private key"
            } else {
                "holds no private key"
            };
            Err(Error::invalid(format!(
                "{what} file '{}' {found}: expected an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)",
                path.display()
            )))
        }
        n => Err(Error::invalid(format!(
            "{what} file '{}' holds {n} private keys: expected exactly one",
            path.display()
        ))),
    }
}

/// Refuses a certificate outside its validity period, with its dates, rather than let every
/// handshake fail with a bare "certificate expired".
fn check_dates(path: &Path, what: &str, der: &CertificateDer<'_>) -> Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        Error::invalid(format!(
            "{what} '{}' is not valid X.509: {e}",
            path.display()
        ))
    })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(Error::invalid(format!(
            "{what} '{}' expired on {}",
            path.display(),
            validity.not_after
        )));
    }
    if now < validity.not_before {
        return Err(Error::invalid(format!(
            "{what} '{}' is not valid before {} (is the clock right?)",
            path.display(),
            validity.not_before
        )));
    }
    Ok(())
}

/// Verifies this side's own certificate against the CA it will verify peers with, as libvirt
/// does at start-up: a certificate from another CA (the usual mistake after re-creating a
/// CA) would otherwise only show up as the peer's "unknown issuer".
fn check_chain(
    paths: &PkiPaths,
    side: Side,
    chain: &[CertificateDer<'static>],
    ca_certs: &[CertificateDer<'static>],
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    create: &str,
) -> Result<()> {
    let now = UnixTime::now();
    let verified = match side {
        Side::Server => {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::internal(format!("cannot build a verifier: {e}")))?;
            // Only the chain matters here; which names clients use is theirs to check.
            let name = ServerName::try_from("localhost").expect("a valid DNS name");
            match verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], now) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(()),
                other => other.map(|_| ()),
            }
        }
        Side::Client => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::internal(format!("cannot build a verifier: {e}")))?;
            verifier
                .verify_client_cert(&chain[0], &chain[1..], now)
                .map(|_| ())
        }
    };
    let Err(e) = verified else {
        return Ok(());
    };
    let cert = paths.cert.display();
    let ca = paths.ca_cert.display();
    let subject_of = |der: &CertificateDer<'_>| {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| (dn_string(c.subject()), dn_string(c.issuer())))
            .unwrap_or_default()
    };
    let reason = match &e {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            let (_, issuer) = subject_of(&chain[0]);
            let cas: Vec<String> = ca_certs.iter().map(|c| subject_of(c).0).collect();
            let why = if cas.contains(&issuer) {
                format!(
                    "its issuer has the CA's name '{issuer}' but not its key, so the CA was \
                     probably re-created after it was issued"
                )
            } else {
                format!(
                    "it was issued by '{issuer}', not by the CA '{}'",
                    cas.join("', '")
                )
            };
            format!("{why}; issue a new one with {create} or install the CA that signed it")
        }
        rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => format!(
            "it is not for TLS {0} authentication (its extended key usage lacks {0}Auth)",
            side.name()
        ),
        other => other.to_string(),
    };
    Err(Error::invalid(format!(
        "{} certificate '{cert}' does not verify against CA certificate '{ca}': {reason}",
        side.name()
    )))
}

/// A DN in certificate order as `tls_allowed_dn_list` patterns are written.
fn dn_string(name: &X509Name<'_>) -> String {
    name.iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let short = match oid.as_str() {
                        "2.5.4.6" => "C",
                        "2.5.4.8" => "ST",
                        "2.5.4.7" => "L",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "2.5.4.3" => "CN",
                        other => other,
                    };
                    format!("{short}={}", attr_value(attr))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An attribute's value, RFC 4514-escaped; a value that is not a string prints as `#` and
/// the hex of its DER, as RFC 4514 prescribes.
fn attr_value(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> String {
    use x509_parser::der_parser::asn1_rs::{Tag, ToDer};
    let value = attr.attr_value();
    let text = match value.header.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = value
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => value
            .data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Tag::T61String => std::str::from_utf8(value.data).ok().map(str::to_string),
        _ => attr.as_str().ok().map(str::to_string),
    };
    match text {
        Some(t) => escape_rfc4514(&t),
        None => format!("#{}", hex::encode(value.to_der_vec().unwrap_or_default())),
    }
}

fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use virtwasm_host::ErrorKind;

    /// A CA with a server and a client certificate in one directory.
    fn pki_dir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        pki::create_ca(dir, "Test CA", false).unwrap();
        pki::create_server(dir, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
        pki::create_client(dir, "client1", false).unwrap();
        tmp
    }

    fn client_paths(dir: &Path) -> PkiPaths {
        PkiPaths::client(Some(dir))
    }

    /// What the server saw (the client's certificate if any, the ALPN protocol) and what the
    /// client read, or each side's error.
    type Exchange = (
        std::result::Result<(Option<Vec<u8>>, Option<Vec<u8>>), String>,
        std::result::Result<Vec<u8>, String>,
    );

    async fn exchange(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Exchange {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let conn = tls.get_ref().1;
            let peer = conn.peer_certificates().map(|c| c[0].to_vec());
            let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
            tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            Ok((peer, alpn))
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let read = async {
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
            Ok(buf)
        }
        .await;
        (served.await.unwrap(), read)
    }

    fn hand_made_client(
        ca: &Path,
        identity: &Path,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in load_certs(&ca.join(pki::CA_CERT), "CA", "").unwrap() {
            roots.add(c).unwrap();
        }
        let chain = load_certs(&identity.join(pki::CLIENT_CERT), "cert", "").unwrap();
        let key = load_key(&identity.join(pki::CLIENT_KEY), "key", "").unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    #[tokio::test]
    async fn mutual_tls_handshake_succeeds_and_identifies_the_client() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let server = server_config(&PkiPaths::server(Some(dir)), TlsVersions::Tls13Only).unwrap();
        let client = client_config(&client_paths(dir), TlsVersions::Tls13Only).unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let (served, read) = exchange(server.clone(), client.clone(), name).await;
            let (peer, alpn) = served.unwrap();
            assert_eq!(read.unwrap(), b"hello");
            assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
            let id = peer_cert(&peer.unwrap()).unwrap();
            assert_eq!(id.subject, "O=virtwasm,CN=client1");
            let pem = fs::read(dir.join(pki::CLIENT_CERT)).unwrap();
            let der = rustls_pemfile::certs(&mut pem.as_slice())
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(id, peer_cert(&der).unwrap());
        }
    }

    #[tokio::test]
    async fn a_client_certificate_from_another_ca_is_rejected() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let other = tempfile::tempdir().unwrap();
        pki::create_ca(other.path(), "Other CA", false).unwrap();
        pki::create_client(other.path(), "intruder", false).unwrap();
        let server = server_config(&PkiPaths::server(Some(dir)), TlsVersions::Tls13Only).unwrap();
        // Trusts the real server, presents a certificate the server's CA never signed.
        let client = hand_made_client(dir, other.path(), &[&rustls::version::TLS13]);
        let (served, read) = exchange(server, client, "localhost").await;
        let e = served.unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        assert!(read.is_err(), "{read:?}");

        // client_config itself refuses that mix, naming both files.
        let paths = PkiPaths {
            ca_cert: dir.join(pki::CA_CERT),
            cert: other.path().join(pki::CLIENT_CERT),
            key: other.path().join(pki::CLIENT_KEY),
        };
        let e = client_config(&paths, TlsVersions::Tls13Only).unwrap_err();
        assert!(
            e.message.contains("issued by 'O=virtwasm,CN=Other CA'"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains(&paths.cert.display().to_string()),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn tls12_only_clients_need_tls12_configured() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let client12 = hand_made_client(dir, dir, &[&rustls::version::TLS12]);
        let strict = server_config(&PkiPaths::server(Some(dir)), TlsVersions::Tls13Only).unwrap();
        let (served, read) = exchange(strict, client12.clone(), "localhost").await;
        assert!(
            served.unwrap_err().contains("Tls12NotOffered"),
            "the server refuses for the version"
        );
        assert!(read.unwrap_err().contains("ProtocolVersion"));

        let lenient = server_config(&PkiPaths::server(Some(dir)), TlsVersions::Tls12AndUp).unwrap();
        let (served, read) = exchange(lenient, client12, "localhost").await;
        served.unwrap();
        assert_eq!(read.unwrap(), b"hello");
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let tmp = pki_dir();
        let key = tmp.path().join(pki::SERVER_KEY);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let e =
            server_config(&PkiPaths::server(Some(tmp.path())), TlsVersions::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(
            e.message.contains(&key.display().to_string()),
            "{}",
            e.message
        );
        assert!(e.message.contains("0644"), "{}", e.message);
    }

    #[test]
    fn missing_files_are_named_with_their_role() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let paths = PkiPaths::server(Some(dir));
        let e = server_config(&paths, TlsVersions::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("CA certificate"), "{}", e.message);
        assert!(
            e.message.contains(&paths.ca_cert.display().to_string()),
            "{}",
            e.message
        );
        assert!(e.message.contains("virtwasm pki ca"), "{}", e.message);

        pki::create_ca(dir, "CA", false).unwrap();
        let e = server_config(&paths, TlsVersions::default()).unwrap_err();
        assert!(
            e.message.starts_with(&format!(
                "no server certificate at '{}'",
                paths.cert.display()
            )),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("`virtwasm pki server --dir"),
            "{}",
            e.message
        );

        pki::create_client(dir, "c", false).unwrap();
        fs::remove_file(dir.join(pki::CLIENT_KEY)).unwrap();
        let e = client_config(&PkiPaths::client(Some(dir)), TlsVersions::default()).unwrap_err();
        assert!(
            e.message.contains("no client private key at"),
            "{}",
            e.message
        );
        assert!(e.message.contains("clientkey.pem"), "{}", e.message);
    }

    #[test]
    fn wrong_contents_are_explained() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let mut paths = PkiPaths::server(Some(dir));

        // A key that belongs to another certificate.
        paths.key = dir.join(pki::CLIENT_KEY);
        let e = server_config(&paths, TlsVersions::default()).unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "private key '{}' does not match certificate '{}'",
                paths.key.display(),
                paths.cert.display()
            )
        );

        // The key where the certificate should be, and the other way round.
        let paths = PkiPaths {
            ca_cert: dir.join(pki::CA_CERT),
            cert: dir.join(pki::SERVER_KEY),
            key: dir.join(pki::SERVER_KEY),
        };
        let e = server_config(&paths, TlsVersions::default()).unwrap_err();
        assert!(
            e.message.contains("holds a private key, not a certificate")
                && e.message.contains("expected a PEM certificate"),
            "{}",
            e.message
        );
        let copy = dir.join("private/certcopy.pem");
        fs::copy(dir.join(pki::SERVER_CERT), &copy).unwrap();
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).unwrap();
        let paths = PkiPaths {
            ca_cert: dir.join(pki::CA_CERT),
            cert: dir.join(pki::SERVER_CERT),
            key: copy,
        };
        let e = server_config(&paths, TlsVersions::default()).unwrap_err();
        assert!(
            e.message.contains("holds a certificate, not a private key"),
            "{}",
            e.message
        );

        // A client certificate used as the server's.
        let paths = PkiPaths {
            ca_cert: dir.join(pki::CA_CERT),
            cert: dir.join(pki::CLIENT_CERT),
            key: dir.join(pki::CLIENT_KEY),
        };
        let e = server_config(&paths, TlsVersions::default()).unwrap_err();
        assert!(e.message.contains("lacks serverAuth"), "{}", e.message);
    }

    #[test]
    fn a_re_created_ca_is_recognised() {
        let tmp = pki_dir();
        let dir = tmp.path();
        pki::create_ca(dir, "Test CA", true).unwrap();
        let e = server_config(&PkiPaths::server(Some(dir)), TlsVersions::default()).unwrap_err();
        assert!(e.message.contains("re-created"), "{}", e.message);
        assert!(
            e.message
                .contains(&format!("`virtwasm pki server --dir {}`", dir.display())),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_expired_certificate_is_refused_with_its_date() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca.clone(), &ca_key);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.not_before = rcgen::date_time_ymd(2001, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2002, 1, 1);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        fs::create_dir(dir.join("private")).unwrap();
        fs::write(dir.join(pki::CA_CERT), ca_cert.pem()).unwrap();
        fs::write(dir.join(pki::SERVER_CERT), cert.pem()).unwrap();
        let key_path = dir.join(pki::SERVER_KEY);
        fs::write(&key_path, key.serialize_pem()).unwrap();
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = server_config(&PkiPaths::server(Some(dir)), TlsVersions::default()).unwrap_err();
        assert!(
            e.message.contains("servercert.pem' expired on") && e.message.contains("2002"),
            "{}",
            e.message
        );
    }

    #[test]
    fn layouts_follow_libvirt() {
        let p = PkiPaths::server(None);
        assert_eq!(p.ca_cert, Path::new("/etc/pki/virtwasm/cacert.pem"));
        assert_eq!(p.cert, Path::new("/etc/pki/virtwasm/servercert.pem"));
        assert_eq!(p.key, Path::new("/etc/pki/virtwasm/private/serverkey.pem"));

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let p = PkiPaths::client(Some(dir));
        assert_eq!(p.ca_cert, dir.join("cacert.pem"));
        assert_eq!(p.cert, dir.join("clientcert.pem"));
        assert_eq!(
            p.key,
            dir.join("clientkey.pem"),
            "libvirt's name by default"
        );
        fs::create_dir(dir.join("private")).unwrap();
        fs::write(dir.join("private/clientkey.pem"), "").unwrap();
        assert_eq!(
            PkiPaths::client(Some(dir)).key,
            dir.join("private/clientkey.pem")
        );
        fs::write(dir.join("clientkey.pem"), "").unwrap();
        assert_eq!(PkiPaths::client(Some(dir)).key, dir.join("clientkey.pem"));

        let p = PkiPaths::client(None);
        if is_root() {
            assert_eq!(p.key, Path::new("/etc/pki/virtwasm/private/clientkey.pem"));
        } else {
            assert!(p.ca_cert.ends_with(".pki/virtwasm/cacert.pem"), "{p:?}");
        }
    }

    #[test]
    fn peer_subject_and_fingerprint_formats() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "GB");
        dn.push(rcgen::DnType::StateOrProvinceName, "London");
        dn.push(rcgen::DnType::LocalityName, "London");
        dn.push(rcgen::DnType::OrganizationName, "Red Hat, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, "virt");
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "42");
        dn.push(rcgen::DnType::CommonName, "client1");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let id = peer_cert(cert.der()).unwrap();
        assert_eq!(
            id.subject,
            "C=GB,ST=London,L=London,O=Red Hat\\, Inc.,OU=virt,2.5.4.5=42,CN=client1"
        );
        let hex_part = id.fingerprint.strip_prefix("sha256:").unwrap();
        assert_eq!(hex_part.len(), 64);
        assert!(
            hex_part
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_eq!(hex_part, hex::encode(Sha256::digest(cert.der())));

        assert!(peer_cert(b"not a certificate").is_err());
        assert_eq!(escape_rfc4514("#a b "), "\\#a b\\ ");
    }

    #[test]
    fn dn_patterns_glob_the_whole_subject() {
        let dn = "C=GB,O=virtwasm,CN=client1";
        assert!(dn_matches(dn, dn));
        assert!(dn_matches("*", dn));
        assert!(dn_matches("C=GB,O=virtwasm,CN=*", dn));
        assert!(dn_matches("C=GB,*,CN=client?", dn));
        assert!(dn_matches("*CN=client1", dn));
        assert!(dn_matches("C=GB*O=*CN=*1", dn));
        assert!(!dn_matches("C=GB,O=virtwasm,CN=client", dn), "whole string");
        assert!(
            !dn_matches("O=virtwasm,CN=client1", dn),
            "anchored at the start"
        );
        assert!(!dn_matches("C=GB,O=virtwasm,CN=client1?", dn));
        assert!(!dn_matches("C=US,*", dn));
        assert!(!dn_matches("", dn));
        assert!(dn_matches("", ""));
        assert!(dn_matches("**", ""));
        assert!(dn_matches("CN=é?", "CN=éx"), "characters, not bytes");
        assert!(!dn_matches(&"*a".repeat(20), &"a".repeat(19)), "no blow-up");
    }

    fn server_fingerprint(dir: &Path) -> String {
        pki::fingerprint_of_pem_file(&dir.join(pki::SERVER_CERT)).unwrap()
    }

    #[tokio::test]
    async fn a_pinned_client_without_a_certificate_joins_an_anonymous_server() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let paths = PkiPaths::server(Some(dir));
        let server = server_config_with(&paths, TlsVersions::Tls13Only, true).unwrap();
        let pin = server_fingerprint(dir);
        // Neither the name nor the case of the pin matters: the fingerprint alone identifies.
        for (pin, name) in [
            (pin.clone(), "localhost"),
            (pin.to_uppercase(), "not-in-the-certificate.example"),
            (pin.clone(), "127.0.0.1"),
        ] {
            let client = pinned_client_config(&pin).unwrap();
            let (served, read) = exchange(server.clone(), client, name).await;
            let (peer, alpn) = served.unwrap();
            assert_eq!(peer, None, "the server sees no client certificate");
            assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
            assert_eq!(read.unwrap(), b"hello");
        }

        // The same server still identifies a client that has its certificate.
        let client = client_config(&client_paths(dir), TlsVersions::Tls13Only).unwrap();
        let (served, read) = exchange(server, client, "localhost").await;
        let (peer, _) = served.unwrap();
        assert_eq!(
            peer_cert(&peer.unwrap()).unwrap().subject,
            "O=virtwasm,CN=client1"
        );
        assert_eq!(read.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn a_pinned_client_refuses_a_server_with_another_fingerprint() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let server =
            server_config_with(&PkiPaths::server(Some(dir)), TlsVersions::Tls13Only, true).unwrap();
        // A certificate from the right CA, with the right name, is still not the pinned one.
        let other = tempfile::tempdir().unwrap();
        pki::create_ca(other.path(), "Test CA", false).unwrap();
        pki::create_server(other.path(), &["localhost".into()], false).unwrap();
        for pin in [
            pki::fingerprint_of_pem_file(&dir.join(pki::CA_CERT)).unwrap(),
            pki::fingerprint_of_pem_file(&dir.join(pki::CLIENT_CERT)).unwrap(),
            server_fingerprint(other.path()),
        ] {
            let client = pinned_client_config(&pin).unwrap();
            let (served, read) = exchange(server.clone(), client, "localhost").await;
            let e = read.unwrap_err();
            assert!(e.contains("fingerprint mismatch"), "{e}");
            assert!(e.contains(&pin), "names the pin: {e}");
            assert!(e.contains(&server_fingerprint(dir)), "and what it got: {e}");
            assert!(served.is_err(), "{served:?}");
        }
    }

    #[tokio::test]
    async fn without_allow_anonymous_a_client_needs_a_certificate() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let pin = server_fingerprint(dir);
        for server in [
            server_config(&PkiPaths::server(Some(dir)), TlsVersions::Tls13Only).unwrap(),
            server_config_with(&PkiPaths::server(Some(dir)), TlsVersions::Tls13Only, false)
                .unwrap(),
        ] {
            let client = pinned_client_config(&pin).unwrap();
            let (served, read) = exchange(server, client, "localhost").await;
            let e = served.unwrap_err();
            assert!(e.contains("peer sent no certificates"), "{e}");
            assert!(read.is_err(), "{read:?}");
        }
    }

    #[tokio::test]
    async fn an_anonymous_server_still_refuses_a_certificate_from_another_ca() {
        let tmp = pki_dir();
        let dir = tmp.path();
        let other = tempfile::tempdir().unwrap();
        pki::create_ca(other.path(), "Other CA", false).unwrap();
        pki::create_client(other.path(), "intruder", false).unwrap();
        let server =
            server_config_with(&PkiPaths::server(Some(dir)), TlsVersions::Tls12AndUp, true)
                .unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = hand_made_client(dir, other.path(), &[version]);
            let (served, read) = exchange(server.clone(), client, "localhost").await;
            let e = served.unwrap_err();
            assert!(e.contains("UnknownIssuer"), "{e}");
            assert!(read.is_err(), "{read:?}");
        }
    }

    #[tokio::test]
    async fn a_client_joined_by_token_then_connects_with_its_certificate() {
        let tmp = pki_dir();
        let server_dir = tmp.path();
        let paths = PkiPaths::server(Some(server_dir));
        let anonymous = server_config_with(&paths, TlsVersions::Tls13Only, true).unwrap();
        let pin = server_fingerprint(server_dir);
        let (served, _) =
            exchange(anonymous, pinned_client_config(&pin).unwrap(), "localhost").await;
        assert_eq!(served.unwrap().0, None);

        // What the join endpoint does with the request, and the client with the answer.
        let (key_pem, csr_pem) = pki::new_client_request("ignored").unwrap();
        let cert_pem = pki::sign_client_request(server_dir, &csr_pem, "laptop").unwrap();
        let ca_pem = fs::read_to_string(server_dir.join(pki::CA_CERT)).unwrap();
        let home = tempfile::tempdir().unwrap();
        let client_dir = home.path().join(".pki/virtwasm");
        pki::write_client_files(&client_dir, &ca_pem, &cert_pem, &key_pem, false).unwrap();

        let client =
            client_config(&PkiPaths::client(Some(&client_dir)), TlsVersions::Tls13Only).unwrap();
        let strict = server_config(&paths, TlsVersions::Tls13Only).unwrap();
        let (served, read) = exchange(strict, client, "localhost").await;
        let (peer, _) = served.unwrap();
        let id = peer_cert(&peer.unwrap()).unwrap();
        assert_eq!(id.subject, "O=virtwasm,CN=laptop");
        assert_eq!(
            id.fingerprint,
            pki::fingerprint_of_pem_file(&client_dir.join(pki::CLIENT_CERT)).unwrap()
        );
        assert_eq!(read.unwrap(), b"hello");
    }

    #[test]
    fn malformed_pins_are_refused() {
        let good = format!("sha256:{}", "ab".repeat(32));
        pinned_client_config(&good).unwrap();
        pinned_client_config(&format!(" SHA256:{} ", "AB".repeat(32))).unwrap();
        for bad in [
            "",
            "sha256:",
            &"ab".repeat(32),
            &format!("sha1:{}", "ab".repeat(32)),
            &format!("sha256:{}", "ab".repeat(31)),
            &format!("sha256:{}", "ab".repeat(33)),
            &format!("sha256:{}zz", "ab".repeat(31)),
            "sha256:é",
        ] {
            let e = pinned_client_config(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains("64 hex digits"), "{}", e.message);
        }
    }
}
