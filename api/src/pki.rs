//! `virtwasm pki`: one call each for a CA, a server and a client certificate, written in the
//! layout [`crate::tls`] reads (libvirt's, so `DIR/cacert.pem`, `DIR/servercert.pem`,
//! `DIR/private/serverkey.pem`, ...). Enough for a private deployment without `certtool` or
//! `openssl`; a site with its own CA drops its files into the same places instead.
//!
//! It also carries the library half of joining by trust token: a new client makes a key and a
//! request ([`new_client_request`]), the daemon signs it with its CA ([`sign_client_request`]),
//! and the client stores the result ([`write_client_files`]) where [`crate::tls`] finds it. The
//! private key never leaves the client.
//!
//! Keys are ECDSA P-256. Every file is written atomically, so an interrupted run leaves the
//! old file or the whole new one, and a key is never readable by group or others, even for an
//! instant, because its temporary file is created 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use virtwasm_host::{Error, ErrorKind, Result};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::time::ASN1Time;

/// The CA certificate, relative to a PKI directory.
pub const CA_CERT: &str = "cacert.pem";
/// The CA's private key, relative to a PKI directory.
pub const CA_KEY: &str = "private/cakey.pem";
/// The daemon's certificate, relative to a PKI directory.
pub const SERVER_CERT: &str = "servercert.pem";
/// The daemon's private key, relative to a PKI directory.
pub const SERVER_KEY: &str = "private/serverkey.pem";
/// A client's certificate, relative to a PKI directory.
pub const CLIENT_CERT: &str = "clientcert.pem";
/// A client's private key as `virtwasm pki client` writes it, relative to a PKI directory.
pub const CLIENT_KEY: &str = "private/clientkey.pem";
/// A client's private key in libvirt's `pkipath=` layout, next to its certificate: where
/// [`write_client_files`] puts it, since a joined client's directory holds no CA key to keep
/// apart from.
pub const CLIENT_KEY_FLAT: &str = "clientkey.pem";

/// The organisation every subject carries, so `tls_allowed_dn_list` patterns such as
/// `O=virtwasm,CN=*` select this PKI's clients.
const ORGANIZATION: &str = "virtwasm";
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const LEAF_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 60 * 60);
/// Certificates start an hour in the past so that a peer whose clock runs a little behind
/// does not reject a certificate made a minute ago as "not yet valid".
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Creates a self-signed CA: `DIR/cacert.pem` and `DIR/private/cakey.pem`, subject
/// `O=virtwasm,CN=<common_name>`, valid for 10 years. Returns the certificate's path.
///
/// Replacing a CA (`force`) orphans every certificate it signed: servers and clients need
/// new ones from the new CA.
pub fn create_ca(dir: &Path, common_name: &str, force: bool) -> Result<PathBuf> {
    let common_name = non_empty(common_name, "CA name")?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    refuse_existing(&[&cert_path, &key_path], force)?;
    prepare_dirs(dir)?;

    let key = generate_key()?;
    let now = ASN1Time::now().to_datetime();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(random_serial()?);
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::failed(format!("cannot sign the CA certificate: {e}")))?;

    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, force)?;
    Ok(cert_path)
}

/// Creates the daemon's certificate, signed by `DIR`'s CA: `DIR/servercert.pem` and
/// `DIR/private/serverkey.pem`. Each host name becomes a subject alternative name (an IP
/// address an IP one), since that is what clients check; the first is also the CN.
/// Returns the certificate's path.
pub fn create_server(dir: &Path, hostnames: &[String], force: bool) -> Result<PathBuf> {
    let names: Vec<&str> = hostnames
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .collect();
    let Some(first) = names.first() else {
        return Err(Error::invalid(
            "a server certificate needs at least one host name or IP address",
        ));
    };
    let mut sans = Vec::new();
    for name in &names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            // Clients check the name with the same rules rustls applies, so refuse here what
            // no client could ever match.
            Err(_) => match rustls::pki_types::DnsName::try_from(*name) {
                Ok(_) => SanType::DnsName((*name).try_into().map_err(|e| {
                    Error::invalid(format!("host name '{name}' cannot be encoded: {e}"))
                })?),
                Err(_) => {
                    return Err(Error::invalid(format!(
                        "'{name}' is neither a valid DNS host name nor an IP address"
                    )));
                }
            },
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let mut params = leaf_params(first, ExtendedKeyUsagePurpose::ServerAuth)?;
    params.subject_alt_names = sans;
    issue(
        dir,
        params,
        &dir.join(SERVER_CERT),
        &dir.join(SERVER_KEY),
        force,
    )
}

/// Creates a client certificate, signed by `DIR`'s CA: `DIR/clientcert.pem` and
/// `DIR/private/clientkey.pem`, subject `O=virtwasm,CN=<common_name>` (the DN a daemon's
/// `tls_allowed_dn_list` matches). Returns the certificate's path.
pub fn create_client(dir: &Path, common_name: &str, force: bool) -> Result<PathBuf> {
    let common_name = non_empty(common_name, "client name")?;
    let params = leaf_params(common_name, ExtendedKeyUsagePurpose::ClientAuth)?;
    issue(
        dir,
        params,
        &dir.join(CLIENT_CERT),
        &dir.join(CLIENT_KEY),
        force,
    )
}

/// A new client key pair and a request for a certificate for it, subject
/// `O=virtwasm,CN=<common_name>`, both PEM: `(key_pem, csr_pem)`.
///
/// The joining client sends only the request, so its private key never crosses the network;
/// the key is PKCS#8, which [`crate::tls`] and [`write_client_files`] read.
pub fn new_client_request(common_name: &str) -> Result<(String, String)> {
    let common_name = non_empty(common_name, "client name")?;
    let key = generate_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name);
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| Error::failed(format!("cannot make a certificate signing request: {e}")))?;
    Ok((key.serialize_pem(), csr))
}

/// Signs a client's certificate signing request with the CA in `dir` (`DIR/cacert.pem` and
/// `DIR/private/cakey.pem`) and returns the certificate, PEM.
///
/// Only the request's public key is used, and only once its signature shows the requester
/// holds the matching private key. Everything else is decided here, whatever the request
/// asked for: subject `O=virtwasm,CN=<common_name>` (the name the admin gave the token, which
/// is what `tls_allowed_dn_list` will match), no alternative names, extended key usage
/// clientAuth alone, not a CA, valid for 2 years but never past the CA.
pub fn sign_client_request(dir: &Path, csr_pem: &str, common_name: &str) -> Result<String> {
    let common_name = non_empty(common_name, "client name")?;
    let csr_der = csr_from_pem(csr_pem)?;
    // Verifies the request's signature (rcgen's x509-parser feature) as well as parsing it.
    let requested = CertificateSigningRequestParams::from_der(&csr_der).map_err(|e| {
        let why = match e {
            rcgen::Error::CouldNotParseCertificationRequest => {
                "it is not a well-formed PKCS#10 request".to_string()
            }
            rcgen::Error::InvalidCertificationRequestSignature => {
                "its signature does not verify: it was altered, or not signed with the key it \
                 carries"
                    .to_string()
            }
            rcgen::Error::UnsupportedExtension => {
                "it asks for an extension virtwasm does not support (make it with \
                 `virtwasm trust add`)"
                    .to_string()
            }
            other => other.to_string(),
        };
        Error::invalid(format!(
            "the certificate signing request was refused: {why}"
        ))
    })?;
    let ca = load_ca(dir)?;

    let mut params = leaf_params(common_name, ExtendedKeyUsagePurpose::ClientAuth)?;
    set_leaf_validity(&mut params, &ca);
    let cert = CertificateSigningRequestParams {
        params,
        public_key: requested.public_key,
    }
    .signed_by(&ca.issuer)
    .map_err(|e| {
        Error::failed(format!(
            "cannot sign the client certificate with the CA in '{}': {e}",
            dir.display()
        ))
    })?;

    // rcgen takes the key's algorithm from the request's signature algorithm; a key of one
    // type signed with another's algorithm (a P-384 key with ecdsa-with-SHA256, say) would
    // come out as a certificate for a key nobody holds. Refuse rather than issue that.
    use x509_parser::prelude::FromDer;
    let (_, csr) = X509CertificationRequest::from_der(&csr_der).map_err(|e| {
        Error::invalid(format!(
            "the certificate signing request was refused: it is not a well-formed PKCS#10 \
             request: {e}"
        ))
    })?;
    let (_, issued) = x509_parser::parse_x509_certificate(cert.der())
        .map_err(|e| Error::internal(format!("the certificate just signed does not parse: {e}")))?;
    if issued.public_key().raw != csr.certification_request_info.subject_pki.raw {
        return Err(Error::invalid(
            "the certificate signing request was refused: its key type does not match its \
             signature algorithm, which virtwasm does not support",
        ));
    }
    Ok(cert.pem())
}

/// The DER of the one request in `pem`, or an error saying what the text holds instead (the
/// usual mistakes being a certificate or, worse, the private key).
fn csr_from_pem(pem: &str) -> Result<CertificateSigningRequestDer<'static>> {
    let refused = |why: &str| {
        Error::invalid(format!(
            "the certificate signing request was refused: {why}: expected a PEM certificate \
             signing request (-----BEGIN CERTIFICATE REQUEST-----)"
        ))
    };
    let items = rustls_pemfile::read_all(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| refused(&format!("it is not valid PEM ({e})")))?;
    let mut csrs = Vec::new();
    let (mut certs, mut keys) = (0, 0);
    for item in items {
        match item {
            rustls_pemfile::Item::Csr(c) => csrs.push(c),
            rustls_pemfile::Item::X509Certificate(_) => certs += 1,
            rustls_pemfile::Item::Pkcs1Key(_)
            | rustls_pemfile::Item::Pkcs8Key(_)
            | rustls_pemfile::Item::Sec1Key(_) => keys += 1,
            _ => {}
        }
    }
    match csrs.len() {
        1 => Ok(csrs.remove(0)),
        0 if keys > 0 => Err(refused(
            "it holds a private key, which must never be sent (send the request instead)",
        )),
        0 if certs > 0 => Err(refused("it holds a certificate, not a request")),
        0 => Err(refused("it holds no certificate signing request")),
        n => Err(refused(&format!("it holds {n} requests, not one"))),
    }
}

/// Stores a joined client's files in `dir` in libvirt's `pkipath=` layout, where
/// `tls::PkiPaths::client(Some(dir))` finds them: `DIR/cacert.pem`, `DIR/clientcert.pem` and
/// `DIR/clientkey.pem` (0600).
///
/// The three are checked before anything is written (the key belongs to the certificate, the
/// certificate is a client certificate from that CA), so a bad answer from a daemon leaves no
/// unusable files behind. Existing files are kept unless `force`, as for the other `pki`
/// commands. A `DIR` that does not exist is created 0700; an existing one keeps its mode.
pub fn write_client_files(
    dir: &Path,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    force: bool,
) -> Result<()> {
    check_client_files(ca_pem, cert_pem, key_pem)?;
    let ca_path = dir.join(CA_CERT);
    let cert_path = dir.join(CLIENT_CERT);
    let key_path = dir.join(CLIENT_KEY_FLAT);
    refuse_existing(&[&ca_path, &cert_path, &key_path], force)?;
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("cannot create PKI directory", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot set the mode of", dir, e))?;
    }
    write_file(&key_path, key_pem.as_bytes(), 0o600, force)?;
    write_file(&ca_path, ca_pem.as_bytes(), 0o644, force)?;
    write_file(&cert_path, cert_pem.as_bytes(), 0o644, force)
}

fn check_client_files(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
    let certs = |pem: &str, what: &str| -> Result<Vec<CertificateDer<'static>>> {
        let certs = rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(format!("the {what} is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid(format!(
                "the {what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            )));
        }
        Ok(certs)
    };
    let ca = certs(ca_pem, "CA certificate")?;
    let chain = certs(cert_pem, "client certificate")?;
    let mut keys = rustls_pemfile::read_all(&mut key_pem.as_bytes())
        .filter_map(|item| match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(k)) => Some(Ok(PrivateKeyDer::from(k))),
            Ok(rustls_pemfile::Item::Pkcs1Key(k)) => Some(Ok(PrivateKeyDer::from(k))),
            Ok(rustls_pemfile::Item::Sec1Key(k)) => Some(Ok(PrivateKeyDer::from(k))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("the client private key is not valid PEM: {e}")))?;
    if keys.len() != 1 {
        return Err(Error::invalid(format!(
            "the client private key holds {} PEM private keys: expected exactly one",
            keys.len()
        )));
    }
    let key = keys.remove(0);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            Error::invalid("the client certificate does not belong to the client private key")
        }
        e => Error::invalid(format!("the client private key cannot be used: {e}")),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for der in ca {
        roots.add(der).map_err(|e| {
            Error::invalid(format!(
                "the CA certificate cannot be used as a trust anchor: {e}"
            ))
        })?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::internal(format!("cannot build a verifier: {e}")))?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
        .map_err(|e| {
            Error::invalid(format!(
                "the client certificate does not verify against the CA certificate: {e}"
            ))
        })?;
    Ok(())
}

/// The SHA-256 fingerprint of the first certificate in a PEM file, as `sha256:` and lowercase
/// hex of its DER: what a trust token pins the daemon's certificate by, in the same form
/// [`crate::tls::peer_cert`] reports.
pub fn fingerprint_of_pem_file(path: &Path) -> Result<String> {
    let pem = fs::read(path).map_err(|e| Error::io("cannot read certificate", path, e))?;
    fingerprint_of_pem(&pem, &format!("'{}'", path.display()))
}

/// SHA-256 fingerprint (`sha256:HEX`) of the first certificate in `pem`; `what` names it in
/// errors.
pub fn fingerprint_of_pem(pem: &[u8], what: &str) -> Result<String> {
    let der = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .transpose()
        .map_err(|e| Error::invalid(format!("{what} is not valid PEM: {e}")))?
        .ok_or_else(|| {
            Error::invalid(format!(
                "{what} holds no certificate: expected a PEM certificate"
            ))
        })?;
    Ok(crate::tls::fingerprint(&der))
}

fn non_empty<'a>(value: &'a str, what: &str) -> Result<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(format!("the {what} must not be empty")));
    }
    Ok(value)
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(common_name: &str, purpose: ExtendedKeyUsagePurpose) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name);
    // An explicit CA:FALSE, as libvirt checks for, so a leaf can never sign certificates.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Signs `params` with `dir`'s CA and writes the new key and certificate.
fn issue(
    dir: &Path,
    mut params: CertificateParams,
    cert_path: &Path,
    key_path: &Path,
    force: bool,
) -> Result<PathBuf> {
    let ca = load_ca(dir)?;
    refuse_existing(&[cert_path, key_path], force)?;
    prepare_dirs(dir)?;

    set_leaf_validity(&mut params, &ca);
    let key = generate_key()?;
    let cert = params.signed_by(&key, &ca.issuer).map_err(|e| {
        Error::failed(format!(
            "cannot sign '{}' with the CA in '{}': {e}",
            cert_path.display(),
            dir.display()
        ))
    })?;
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644, force)?;
    Ok(cert_path.to_path_buf())
}

fn set_leaf_validity(params: &mut CertificateParams, ca: &Ca) {
    let now = ASN1Time::now().to_datetime();
    params.not_before = now - BACKDATE;
    // A leaf outliving its CA would only fail later with a less obvious error.
    params.not_after = (now + LEAF_LIFETIME).min(ca.not_after.to_datetime());
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    not_after: ASN1Time,
}

/// Loads `dir`'s CA as an issuer. The issuer's name is copied from the certificate with each
/// attribute's string type kept, because verifiers compare the issuer name of a leaf with the
/// CA's subject byte for byte; its key identifier is copied too, so the leaves' authority key
/// identifier matches a CA made elsewhere.
fn load_ca(dir: &Path) -> Result<Ca> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let pem = match fs::read(&cert_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "no CA in '{}' (no '{}'): run `virtwasm pki ca --dir {}` first",
                dir.display(),
                cert_path.display(),
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io("cannot read CA certificate", &cert_path, e)),
    };
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .and_then(|c| c.ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "'{}' holds no certificate: expected a PEM CA certificate",
                cert_path.display()
            ))
        })?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
        Error::invalid(format!(
            "'{}' is not a valid X.509 certificate: {e}",
            cert_path.display()
        ))
    })?;
    if !cert.is_ca() {
        return Err(Error::invalid(format!(
            "'{}' is not a CA certificate (its basic constraints do not allow signing)",
            cert_path.display()
        )));
    }
    let not_after = cert.validity().not_after;
    if not_after <= ASN1Time::now() {
        return Err(Error::invalid(format!(
            "the CA certificate '{}' expired on {}: create a new CA with `virtwasm pki ca --dir {} --force`",
            cert_path.display(),
            cert.validity().not_after,
            dir.display()
        )));
    }

    crate::tls::check_key_mode(&key_path)?;
    let key_pem = match fs::read_to_string(&key_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "the CA in '{}' has no private key: expected it at '{}'",
                dir.display(),
                key_path.display()
            )));
        }
        Err(e) => return Err(Error::io("cannot read CA private key", &key_path, e)),
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| {
        Error::invalid(format!(
            "'{}' is not a usable CA private key (expected a PKCS#8 PEM key): {e}",
            key_path.display()
        ))
    })?;
    if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.public_key().raw {
        return Err(Error::invalid(format!(
            "CA private key '{}' does not match CA certificate '{}'",
            key_path.display(),
            cert_path.display()
        )));
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = issuer_name(&cert).map_err(|why| {
        Error::invalid(format!(
            "cannot sign with the CA certificate '{}': its subject {why}",
            cert_path.display()
        ))
    })?;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method =
        match cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
                _ => None,
            }) {
            Some(id) => KeyIdMethod::PreSpecified(id.to_vec()),
            None => KeyIdMethod::Sha256,
        };
    Ok(Ca {
        issuer: Issuer::new(params, key),
        not_after,
    })
}

/// The certificate's subject as rcgen's name, each attribute keeping its ASN.1 string type.
fn issuer_name(cert: &X509Certificate<'_>) -> std::result::Result<DistinguishedName, String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for rdn in cert.subject().iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err("has a multi-valued RDN, which rcgen cannot reproduce".into());
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or("has an attribute type too large to encode")?
            .collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err(format!("repeats attribute {}", attr.attr_type()));
        }
        let data = attr.attr_value().data;
        let text = || std::str::from_utf8(data).map_err(|_| "has a malformed string".to_string());
        let bad = |e: rcgen::Error| format!("has an attribute that cannot be re-encoded: {e}");
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(bad)?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(bad)?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(bad)?),
            Tag::BmpString => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(bad)?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(data.to_vec()).map_err(bad)?,
            ),
            t => return Err(format!("has an attribute of unsupported type {t}")),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

fn generate_key() -> Result<KeyPair> {
    KeyPair::generate().map_err(|e| Error::failed(format!("cannot generate a private key: {e}")))
}

/// A random positive 128-bit serial: RFC 5280 wants serials unique per CA, and rcgen's
/// default (a hash of the public key) would repeat if a key were ever reused.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::failed("cannot get random bytes for a certificate serial number"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Refuses before anything is written, so a refused run leaves no half-made pair behind.
fn refuse_existing(paths: &[&Path], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for path in paths {
        if fs::symlink_metadata(path).is_ok() {
            return Err(exists(path));
        }
    }
    Ok(())
}

fn exists(path: &Path) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "'{}' already exists: pass --force to replace it",
            path.display()
        ),
    )
}

/// Creates `dir` and `dir/private`, the latter 0700 whatever the umask.
fn prepare_dirs(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::io("cannot create PKI directory", dir, e))?;
    let private = dir.join("private");
    match fs::DirBuilder::new().mode(0o700).create(&private) {
        Ok(()) => fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot set the mode of", &private, e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && private.is_dir() => Ok(()),
        Err(e) => Err(Error::io(
            "cannot create private key directory",
            &private,
            e,
        )),
    }
}

/// Writes `bytes` to `path` with `mode`: a temporary file in the same directory, fsync, then
/// a rename (`force`) or a hard link, which fails rather than replace a file that appeared
/// since [`refuse_existing`] looked.
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        // The name matches the host's temporary files, which its sweeper cleans up.
        let tmp = dir.join(format!(".{base}.tmp-{}-{attempt}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(Error::io("cannot create a temporary file in", dir, e)),
        }
    };
    let written = file
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|_| file.write_all(bytes))
        .and_then(|_| file.sync_all());
    drop(file);
    let placed = written.and_then(|_| {
        if force {
            return fs::rename(&tmp, path);
        }
        match fs::hard_link(&tmp, path) {
            Ok(()) => fs::remove_file(&tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
            // A file system without hard links: refuse_existing has checked already.
            Err(_) => fs::rename(&tmp, path),
        }
    });
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(exists(path));
        }
        return Err(Error::io("cannot write", path, e));
    }
    if let Err(e) = virtwasm_host::engine::sync_dir(dir) {
        tracing::warn!(
            "{} was written, but syncing {} failed: {e}",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use x509_parser::extensions::GeneralName;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn parse(path: &Path) -> Vec<u8> {
        let pem = fs::read(path).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn roots(dir: &Path) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(parse(&dir.join(CA_CERT)).into()).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn ca_server_and_client_chain_and_carry_the_right_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let ca = create_ca(&dir, "Test CA", false).unwrap();
        assert_eq!(ca, dir.join("cacert.pem"));
        let hosts = vec!["host1.example".to_string(), "127.0.0.1".to_string()];
        let server = create_server(&dir, &hosts, false).unwrap();
        assert_eq!(server, dir.join("servercert.pem"));
        let client = create_client(&dir, "client1", false).unwrap();
        assert_eq!(client, dir.join("clientcert.pem"));

        let ca_der = parse(&ca);
        let (_, ca_x) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(ca_x.subject().to_string(), "O=virtwasm, CN=Test CA");
        let bc = ca_x.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let life = ca_x.validity().not_after.timestamp() - ca_x.validity().not_before.timestamp();
        assert!((life - (10 * 365 * 86400 + 3600)).abs() < 60, "{life}");

        let server_der = parse(&server);
        let (_, sx) = x509_parser::parse_x509_certificate(&server_der).unwrap();
        assert_eq!(sx.subject().to_string(), "O=virtwasm, CN=host1.example");
        assert_eq!(sx.issuer(), ca_x.subject());
        assert!(!sx.is_ca());
        let san = sx.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![
                GeneralName::DNSName("host1.example"),
                GeneralName::IPAddress(&[127, 0, 0, 1]),
            ]
        );
        let eku = sx.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let life = sx.validity().not_after.timestamp() - sx.validity().not_before.timestamp();
        assert!((life - (2 * 365 * 86400 + 3600)).abs() < 60, "{life}");

        let client_der = parse(&client);
        let (_, cx) = x509_parser::parse_x509_certificate(&client_der).unwrap();
        assert_eq!(cx.subject().to_string(), "O=virtwasm, CN=client1");
        assert_eq!(cx.issuer(), ca_x.subject());
        let eku = cx.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_ne!(sx.raw_serial(), cx.raw_serial(), "serials are random");

        // Both leaves verify against the CA the way the TLS stack will check them.
        use rustls::client::danger::ServerCertVerifier;
        let now = rustls::pki_types::UnixTime::now();
        let sv =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&dir), provider())
                .build()
                .unwrap();
        for name in ["host1.example", "127.0.0.1"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            sv.verify_server_cert(&server_der.clone().into(), &[], &name, &[], now)
                .unwrap();
        }
        let cv =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&dir), provider())
                .build()
                .unwrap();
        cv.verify_client_cert(&client_der.into(), &[], now).unwrap();
    }

    #[test]
    fn files_get_private_modes_and_a_client_writes_only_its_pair() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create_ca(dir, "CA", false).unwrap();
        assert_eq!(mode(&dir.join("private")), 0o700);
        assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
        assert_eq!(mode(&dir.join(CA_CERT)), 0o644);
        let listing = |d: &Path| {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        create_client(dir, "me", false).unwrap();
        assert_eq!(listing(dir), ["cacert.pem", "clientcert.pem", "private"]);
        assert_eq!(
            listing(&dir.join("private")),
            ["cakey.pem", "clientkey.pem"]
        );
        assert_eq!(mode(&dir.join(CLIENT_KEY)), 0o600);
        assert_eq!(mode(&dir.join(CLIENT_CERT)), 0o644);
        create_server(dir, &["localhost".into()], false).unwrap();
        assert_eq!(mode(&dir.join(SERVER_KEY)), 0o600);
        assert_eq!(mode(&dir.join(SERVER_CERT)), 0o644);
    }

    #[test]
    fn existing_files_are_kept_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create_ca(dir, "CA", false).unwrap();
        let e = create_ca(dir, "CA", false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert!(e.message.contains(&dir.join(CA_CERT).display().to_string()));
        assert!(e.message.contains("--force"), "{}", e.message);

        create_client(dir, "me", false).unwrap();
        let before = fs::read(dir.join(CLIENT_CERT)).unwrap();
        let key_before = fs::read(dir.join(CLIENT_KEY)).unwrap();
        let e = create_client(dir, "me", false).unwrap_err();
        assert!(e.message.contains("clientcert.pem"), "{}", e.message);
        assert_eq!(fs::read(dir.join(CLIENT_CERT)).unwrap(), before);
        assert_eq!(fs::read(dir.join(CLIENT_KEY)).unwrap(), key_before);

        // Only the key left behind still counts as existing.
        fs::remove_file(dir.join(CLIENT_CERT)).unwrap();
        let e = create_client(dir, "me", false).unwrap_err();
        assert!(e.message.contains("clientkey.pem"), "{}", e.message);

        create_client(dir, "me", true).unwrap();
        assert_ne!(fs::read(dir.join(CLIENT_KEY)).unwrap(), key_before);
        create_ca(dir, "CA2", true).unwrap();
        let leftovers: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .chain(fs::read_dir(dir.join("private")).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn leaves_need_a_ca_and_valid_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let e = create_client(dir, "me", false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(
            e.message
                .starts_with(&format!("no CA in '{}'", dir.display())),
            "{}",
            e.message
        );
        assert!(e.message.contains("virtwasm pki ca"), "{}", e.message);
        assert!(!dir.join(CLIENT_CERT).exists());

        create_ca(dir, "CA", false).unwrap();
        let e = create_server(dir, &[], false).unwrap_err();
        assert!(
            e.message.contains("at least one host name"),
            "{}",
            e.message
        );
        let e = create_server(dir, &["bad name!".into()], false).unwrap_err();
        assert!(e.message.contains("'bad name!'"), "{}", e.message);
        let e = create_client(dir, " ", false).unwrap_err();
        assert!(e.message.contains("must not be empty"), "{}", e.message);
    }

    #[test]
    fn a_ca_key_that_does_not_match_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        create_ca(&a, "A", false).unwrap();
        create_ca(&b, "B", false).unwrap();
        fs::copy(b.join(CA_KEY), a.join(CA_KEY)).unwrap();
        let e = create_client(&a, "me", false).unwrap_err();
        assert!(e.message.contains("does not match"), "{}", e.message);
        assert!(e.message.contains("cakey.pem"), "{}", e.message);
    }

    #[test]
    fn a_ca_made_elsewhere_with_printable_strings_still_chains() {
        // openssl and certtool encode names as PrintableString; a leaf's issuer must repeat
        // the CA's subject byte for byte, or verifiers cannot find its issuer.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString("GB".try_into().unwrap()),
        );
        dn.push(
            DnType::CommonName,
            DnValue::PrintableString("Site CA".try_into().unwrap()),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.key_identifier_method = KeyIdMethod::PreSpecified(vec![1, 2, 3, 4]);
        let ca = params.self_signed(&key).unwrap();
        prepare_dirs(dir).unwrap();
        write_file(&dir.join(CA_CERT), ca.pem().as_bytes(), 0o644, false).unwrap();
        write_file(
            &dir.join(CA_KEY),
            key.serialize_pem().as_bytes(),
            0o600,
            false,
        )
        .unwrap();

        let client = create_client(dir, "c", false).unwrap();
        let der = parse(&client);
        let (_, cx) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, cax) = x509_parser::parse_x509_certificate(ca.der()).unwrap();
        assert_eq!(cx.issuer().as_raw(), cax.subject().as_raw());
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
            .build()
            .unwrap()
            .verify_client_cert(&der.into(), &[], rustls::pki_types::UnixTime::now())
            .unwrap();
    }

    #[test]
    fn leaves_do_not_outlive_their_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject("short-lived");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let now = ASN1Time::now().to_datetime();
        params.not_before = now - DAY;
        params.not_after = now + DAY * 30;
        let ca = params.self_signed(&key).unwrap();
        prepare_dirs(dir).unwrap();
        write_file(&dir.join(CA_CERT), ca.pem().as_bytes(), 0o644, false).unwrap();
        write_file(
            &dir.join(CA_KEY),
            key.serialize_pem().as_bytes(),
            0o600,
            false,
        )
        .unwrap();
        let der = parse(&create_client(dir, "c", false).unwrap());
        let (_, cx) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, cax) = x509_parser::parse_x509_certificate(ca.der()).unwrap();
        assert_eq!(cx.validity().not_after, cax.validity().not_after);
    }

    /// PEM text for `der`: the tests need to re-encode a request after altering its bytes.
    fn pem_encode(label: &str, der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
            let v = (byte(0) << 16) | (byte(1) << 8) | byte(2);
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(char::from(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    fn csr_der(pem: &str) -> Vec<u8> {
        match rustls_pemfile::read_one(&mut pem.as_bytes()).unwrap() {
            Some(rustls_pemfile::Item::Csr(c)) => c.to_vec(),
            other => panic!("not a CSR: {other:?}"),
        }
    }

    fn pem_cert_der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_client_request_is_signed_by_the_ca_for_the_key_it_carries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create_ca(dir, "Test CA", false).unwrap();
        let (key_pem, csr_pem) = new_client_request("laptop").unwrap();
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let der = csr_der(&csr_pem);
        let (_, csr) =
            <X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
        assert_eq!(
            csr.certification_request_info.subject.to_string(),
            "O=virtwasm, CN=laptop"
        );

        let cert_pem = sign_client_request(dir, &csr_pem, "laptop").unwrap();
        let der = pem_cert_der(&cert_pem);
        let (_, cx) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = parse(&dir.join(CA_CERT));
        let (_, cax) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cx.subject().to_string(), "O=virtwasm, CN=laptop");
        assert_eq!(cx.issuer().as_raw(), cax.subject().as_raw());
        cx.verify_signature(Some(cax.public_key()))
            .expect("signed by the CA's key");
        assert!(!cx.is_ca());
        assert!(
            cx.basic_constraints().unwrap().is_some(),
            "an explicit CA:FALSE"
        );
        let eku = cx.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !eku.any);
        let life = cx.validity().not_after.timestamp() - cx.validity().not_before.timestamp();
        assert!((life - (2 * 365 * 86400 + 3600)).abs() < 60, "{life}");
        let key = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&key),
            cx.public_key().raw,
            "the certificate is for the requester's key"
        );
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
            .build()
            .unwrap()
            .verify_client_cert(&der.into(), &[], rustls::pki_types::UnixTime::now())
            .unwrap();
    }

    #[test]
    fn a_request_gets_the_tokens_name_and_nothing_else_it_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create_ca(dir, "Test CA", false).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "elsewhere");
        dn.push(DnType::CommonName, "admin");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();

        let cert_pem = sign_client_request(dir, &csr_pem, "laptop").unwrap();
        let der = pem_cert_der(&cert_pem);
        let (_, cx) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cx.subject().to_string(), "O=virtwasm, CN=laptop");
        assert!(!cx.is_ca());
        assert!(cx.subject_alternative_name().unwrap().is_none());
        let ku = cx.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        let eku = cx.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&key),
            cx.public_key().raw
        );
    }

    #[test]
    fn altered_or_malformed_requests_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create_ca(dir, "Test CA", false).unwrap();
        let (key_pem, csr_pem) = new_client_request("laptop").unwrap();

        // The same request with its name changed after signing.
        let mut der = csr_der(&csr_pem);
        let at = der.windows(6).position(|w| w == b"laptop").unwrap();
        der[at..at + 6].copy_from_slice(b"lapTOP");
        let e = sign_client_request(dir, &pem_encode("CERTIFICATE REQUEST", &der), "laptop")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.contains("signature does not verify"),
            "{}",
            e.message
        );

        // Its signature bytes flipped.
        let mut der = csr_der(&csr_pem);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let e = sign_client_request(dir, &pem_encode("CERTIFICATE REQUEST", &der), "laptop")
            .unwrap_err();
        assert!(
            e.message.contains("signature does not verify"),
            "{}",
            e.message
        );

        // Cut short.
        let der = csr_der(&csr_pem);
        let e = sign_client_request(
            dir,
            &pem_encode("CERTIFICATE REQUEST", &der[..der.len() / 2]),
            "laptop",
        )
        .unwrap_err();
        assert!(e.message.contains("not a well-formed"), "{}", e.message);

        let e = sign_client_request(dir, "hello", "laptop").unwrap_err();
        assert!(
            e.message.contains("no certificate signing request")
                && e.message.contains("BEGIN CERTIFICATE REQUEST"),
            "{}",
            e.message
        );
        let e = sign_client_request(dir, &key_pem, "laptop").unwrap_err();
        assert!(e.message.contains("private key"), "{}", e.message);
        let ca_pem = fs::read_to_string(dir.join(CA_CERT)).unwrap();
        let e = sign_client_request(dir, &ca_pem, "laptop").unwrap_err();
        assert!(e.message.contains("holds a certificate"), "{}", e.message);
        let e = sign_client_request(dir, &csr_pem, " ").unwrap_err();
        assert!(e.message.contains("must not be empty"), "{}", e.message);

        let empty = tempfile::tempdir().unwrap();
        let e = sign_client_request(empty.path(), &csr_pem, "laptop").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("run `virtwasm pki ca"), "{}", e.message);
    }

    #[test]
    fn client_files_are_written_privately_where_tls_looks() {
        let tmp = tempfile::tempdir().unwrap();
        let server = tmp.path().join("server");
        create_ca(&server, "Test CA", false).unwrap();
        let ca_pem = fs::read_to_string(server.join(CA_CERT)).unwrap();
        let (key_pem, csr_pem) = new_client_request("laptop").unwrap();
        let cert_pem = sign_client_request(&server, &csr_pem, "laptop").unwrap();

        let dir = tmp.path().join("home/.pki/virtwasm");
        write_client_files(&dir, &ca_pem, &cert_pem, &key_pem, false).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CLIENT_KEY_FLAT)), 0o600);
        assert_eq!(mode(&dir.join(CLIENT_CERT)), 0o644);
        assert_eq!(mode(&dir.join(CA_CERT)), 0o644);
        assert_eq!(fs::read_to_string(dir.join(CLIENT_CERT)).unwrap(), cert_pem);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["cacert.pem", "clientcert.pem", "clientkey.pem"]);

        let paths = crate::tls::PkiPaths::client(Some(&dir));
        assert_eq!(paths.key, dir.join("clientkey.pem"));
        assert_eq!(paths.cert, dir.join("clientcert.pem"));
        assert_eq!(paths.ca_cert, dir.join("cacert.pem"));
        crate::tls::client_config(&paths, crate::tls::TlsVersions::default()).unwrap();

        // An existing directory keeps its mode.
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        write_client_files(&shared, &ca_pem, &cert_pem, &key_pem, false).unwrap();
        assert_eq!(mode(&shared), 0o755);
        assert_eq!(mode(&shared.join(CLIENT_KEY_FLAT)), 0o600);
    }

    #[test]
    fn client_files_are_not_overwritten_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let server = tmp.path().join("server");
        create_ca(&server, "Test CA", false).unwrap();
        let ca_pem = fs::read_to_string(server.join(CA_CERT)).unwrap();
        let (key1, csr1) = new_client_request("one").unwrap();
        let cert1 = sign_client_request(&server, &csr1, "one").unwrap();
        let (key2, csr2) = new_client_request("two").unwrap();
        let cert2 = sign_client_request(&server, &csr2, "two").unwrap();
        let dir = tmp.path().join("client");
        write_client_files(&dir, &ca_pem, &cert1, &key1, false).unwrap();

        let e = write_client_files(&dir, &ca_pem, &cert2, &key2, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert!(
            e.message.contains(&dir.display().to_string()),
            "{}",
            e.message
        );
        assert!(e.message.contains("--force"), "{}", e.message);
        assert_eq!(fs::read_to_string(dir.join(CLIENT_CERT)).unwrap(), cert1);
        assert_eq!(fs::read_to_string(dir.join(CLIENT_KEY_FLAT)).unwrap(), key1);

        // Any one of the three left behind counts.
        fs::remove_file(dir.join(CA_CERT)).unwrap();
        fs::remove_file(dir.join(CLIENT_CERT)).unwrap();
        let e = write_client_files(&dir, &ca_pem, &cert2, &key2, false).unwrap_err();
        assert!(e.message.contains("clientkey.pem"), "{}", e.message);
        assert!(!dir.join(CA_CERT).exists(), "nothing written when refused");

        write_client_files(&dir, &ca_pem, &cert2, &key2, true).unwrap();
        assert_eq!(fs::read_to_string(dir.join(CLIENT_CERT)).unwrap(), cert2);
        assert_eq!(fs::read_to_string(dir.join(CLIENT_KEY_FLAT)).unwrap(), key2);
        assert_eq!(mode(&dir.join(CLIENT_KEY_FLAT)), 0o600);
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn client_files_that_do_not_fit_together_are_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let server = tmp.path().join("server");
        create_ca(&server, "Test CA", false).unwrap();
        let other = tmp.path().join("other");
        create_ca(&other, "Other CA", false).unwrap();
        let ca_pem = fs::read_to_string(server.join(CA_CERT)).unwrap();
        let (key1, csr1) = new_client_request("one").unwrap();
        let cert1 = sign_client_request(&server, &csr1, "one").unwrap();
        let (key2, _) = new_client_request("two").unwrap();
        let foreign = sign_client_request(&other, &csr1, "one").unwrap();
        let dir = tmp.path().join("client");

        let e = write_client_files(&dir, &ca_pem, &cert1, &key2, false).unwrap_err();
        assert!(e.message.contains("does not belong"), "{}", e.message);
        let e = write_client_files(&dir, &ca_pem, &foreign, &key1, false).unwrap_err();
        assert!(
            e.message.contains("does not verify against the CA"),
            "{}",
            e.message
        );
        let e = write_client_files(&dir, &ca_pem, &key1, &key1, false).unwrap_err();
        assert!(
            e.message.contains("client certificate holds no"),
            "{}",
            e.message
        );
        let e = write_client_files(&dir, &ca_pem, &cert1, &cert1, false).unwrap_err();
        assert!(e.message.contains("0 PEM private keys"), "{}", e.message);
        let e = write_client_files(&dir, "", &cert1, &key1, false).unwrap_err();
        assert!(
            e.message.contains("CA certificate holds no"),
            "{}",
            e.message
        );
        // A server certificate is no client certificate.
        create_server(&server, &["localhost".into()], false).unwrap();
        let server_pem = fs::read_to_string(server.join(SERVER_CERT)).unwrap();
        let server_key = fs::read_to_string(server.join(SERVER_KEY)).unwrap();
        let e = write_client_files(&dir, &ca_pem, &server_pem, &server_key, false).unwrap_err();
        assert!(e.message.contains("does not verify"), "{}", e.message);
        assert!(!dir.exists(), "nothing was written");
    }

    #[test]
    fn fingerprints_are_of_the_first_certificate_in_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ca = create_ca(dir, "Test CA", false).unwrap();
        let der = parse(&ca);
        let fp = fingerprint_of_pem_file(&ca).unwrap();
        assert_eq!(fp, crate::tls::peer_cert(&der).unwrap().fingerprint);
        assert_eq!(fp.len(), "sha256:".len() + 64);
        assert_eq!(fp, fp.to_lowercase());

        let bundle = dir.join("bundle.pem");
        let server = create_server(dir, &["localhost".into()], false).unwrap();
        let mut text = fs::read_to_string(&server).unwrap();
        text.push_str(&fs::read_to_string(&ca).unwrap());
        fs::write(&bundle, text).unwrap();
        assert_eq!(
            fingerprint_of_pem_file(&bundle).unwrap(),
            fingerprint_of_pem_file(&server).unwrap()
        );
        assert_ne!(fingerprint_of_pem_file(&bundle).unwrap(), fp);

        let e = fingerprint_of_pem_file(&dir.join(CA_KEY)).unwrap_err();
        assert!(e.message.contains("holds no certificate"), "{}", e.message);
        let e = fingerprint_of_pem_file(&dir.join("missing.pem")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("missing.pem"), "{}", e.message);
    }
}
