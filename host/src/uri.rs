//! Connection URIs, parsed as libvirt parses them:
//! `driver[+transport]://[user@][host][:port]/path[?param=value&...]`.

use crate::error::{Error, Result};

/// The transports a URI may name after `+`.
pub const TRANSPORTS: &[&str] = &["unix", "tls", "ssh", "tcp", "ext", "libssh", "libssh2"];

/// A parsed connection URI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectUri {
    /// The URI as given.
    pub raw: String,
    /// The driver scheme (`qemu`, `test`, `lxc`, ...).
    pub driver: String,
    /// The transport after `+`, if any.
    pub transport: Option<String>,
    /// `user@` part.
    pub user: Option<String>,
    /// Host name or address.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Path (`/system`, `/session`, `/default`); `/` when empty.
    pub path: String,
    /// Query parameters, decoded, in order.
    pub params: Vec<(String, String)>,
}

impl ConnectUri {
    /// Parses `text`. A URI with a host but no transport is refused: libvirt silently assumes
    /// TLS there, its most reported remote-access trap.
    pub fn parse(text: &str) -> Result<ConnectUri> {
        let url = url::Url::parse(text).map_err(|e| {
            Error::invalid(format!(
                "invalid connection URI '{text}': {e} (expected driver[+transport]://[user@][host][:port]/path, e.g. test:///default or qemu:///system)"
            ))
        })?;
        let (driver, transport) = match url.scheme().split_once('+') {
            Some((d, t)) => (d.to_string(), Some(t.to_string())),
            None => (url.scheme().to_string(), None),
        };
        if driver.is_empty() {
            return Err(Error::invalid(format!(
                "invalid connection URI '{text}': no driver name before '+'"
            )));
        }
        if let Some(t) = &transport
            && !TRANSPORTS.contains(&t.as_str())
        {
            return Err(Error::invalid(format!(
                "invalid connection URI '{text}': unknown transport '{t}' (expected one of {})",
                TRANSPORTS.join(", ")
            )));
        }
        let host = url.host_str().filter(|h| !h.is_empty()).map(str::to_string);
        let user = Some(url.username())
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        if host.is_some() && transport.is_none() {
            let h = host.as_deref().unwrap_or_default();
            let p = url.path();
            return Err(Error::invalid(format!(
                "connection URI '{text}' names host '{h}' but no transport; say which one: {driver}+tls://{h}{p}, {driver}+ssh://user@{h}{p}, {driver}+tcp://{h}{p} (plain TCP, only where the daemon enables it), or {driver}+unix://{p} for this machine"
            )));
        }
        let path = if url.path().is_empty() {
            "/".to_string()
        } else {
            url.path().to_string()
        };
        let params = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(ConnectUri {
            raw: text.to_string(),
            driver,
            transport,
            user,
            host,
            port: url.port(),
            path,
            params,
        })
    }

    /// Whether the URI is served in this process (no transport and no host).
    pub fn is_local(&self) -> bool {
        self.host.is_none() && self.transport.is_none()
    }

    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_remote_forms() {
        let u = ConnectUri::parse("test:///default").unwrap();
        assert_eq!(
            (u.driver.as_str(), u.path.as_str(), u.is_local()),
            ("test", "/default", true)
        );
        let u = ConnectUri::parse("qemu+ssh://root@example.com:2222/system?keyfile=/k&no_verify=1")
            .unwrap();
        assert_eq!(u.transport.as_deref(), Some("ssh"));
        assert_eq!(u.user.as_deref(), Some("root"));
        assert_eq!(u.host.as_deref(), Some("example.com"));
        assert_eq!(u.port, Some(2222));
        assert_eq!(u.param("keyfile"), Some("/k"));
        assert_eq!(u.param("no_verify"), Some("1"));
        let u = ConnectUri::parse("qemu+unix:///system?socket=/run/x.sock").unwrap();
        assert!(!u.is_local());
        assert_eq!(u.param("socket"), Some("/run/x.sock"));
    }

    #[test]
    fn a_host_without_transport_lists_the_transports() {
        let e = ConnectUri::parse("qemu://example.com/system").unwrap_err();
        assert!(e.message.contains("no transport"), "{e}");
        assert!(e.message.contains("qemu+tls://example.com/system"), "{e}");
        assert!(
            e.message.contains("qemu+ssh://user@example.com/system"),
            "{e}"
        );
    }

    #[test]
    fn bad_uris_are_refused_clearly() {
        let e = ConnectUri::parse("qemu+carrier-pigeon:///system").unwrap_err();
        assert!(
            e.message.contains("unknown transport 'carrier-pigeon'"),
            "{e}"
        );
        let e = ConnectUri::parse("not a uri").unwrap_err();
        assert!(e.message.contains("invalid connection URI"), "{e}");
    }
}
