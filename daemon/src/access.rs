//! Who a client is, and whether that identity may use a permission on an object.

use virtwasm_api::Permission;
use virtwasm_api::ops::ObjectKind;
use virtwasm_api::tls::{PeerCert, dn_matches};
use virtwasm_host::{Error, Result};

use crate::config::{Access, Role};

/// A connected client's identity, fixed when it connects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Identity {
    /// A unix-socket peer, by its credentials (SO_PEERCRED).
    Unix {
        /// User id.
        uid: u32,
        /// Process id.
        pid: Option<i32>,
    },
    /// A TLS peer, by its verified certificate.
    Cert(PeerCert),
    /// A TLS peer without a certificate: it may only redeem a trust token.
    Anonymous {
        /// Peer address.
        addr: String,
    },
    /// A plain TCP peer: an address, nothing proven.
    Tcp {
        /// Peer address.
        addr: String,
    },
}

impl Identity {
    /// How logs and errors name the client.
    pub fn describe(&self) -> String {
        match self {
            Identity::Unix { uid, pid } => match pid {
                Some(p) => format!("uid:{uid} (pid {p})"),
                None => format!("uid:{uid}"),
            },
            Identity::Cert(c) => format!("dn:{} ({})", c.subject, c.fingerprint),
            Identity::Tcp { addr } => format!("tcp:{addr}"),
            Identity::Anonymous { addr } => format!("anonymous TLS client {addr}"),
        }
    }

    /// A key to count one client's requests across its connections.
    pub fn key(&self) -> String {
        match self {
            Identity::Unix { uid, .. } => format!("uid:{uid}"),
            Identity::Cert(c) => c.fingerprint.clone(),
            Identity::Tcp { addr } | Identity::Anonymous { addr } => {
                // One address, however many source ports.
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                format!("tcp:{host}")
            }
        }
    }

    fn matches(&self, pattern: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        match self {
            Identity::Unix { uid, .. } => {
                pattern
                    .strip_prefix("uid:")
                    .and_then(|n| n.parse::<u32>().ok())
                    == Some(*uid)
            }
            Identity::Cert(c) => {
                if let Some(p) = pattern.strip_prefix("dn:") {
                    dn_matches(p, &c.subject)
                } else if pattern.starts_with("sha256:") {
                    pattern.eq_ignore_ascii_case(&c.fingerprint)
                } else {
                    false
                }
            }
            Identity::Tcp { .. } | Identity::Anonymous { .. } => false,
        }
    }
}

/// The directories a client may name files under when an access rule narrows them: the
/// `files` of the first rule matching `who` that has one (`None`: every allowed directory).
pub fn file_dirs<'a>(access: &'a Access, who: &Identity) -> Option<&'a [std::path::PathBuf]> {
    access
        .rule
        .iter()
        .filter(|r| who.matches(&r.identity))
        .find_map(|r| r.files.as_deref())
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The role that applied.
    pub role: Role,
    /// Whether the permission is in it.
    pub allowed: bool,
}

/// Decides whether `who` may use `permission` on the object `name` of `kind` (`None` for
/// operations that name no existing object: listing, defining, the node).
///
/// Rules are tried in order; the first whose identity matches and whose object pattern
/// matches the object applies (an operation naming no object only matches rules for `*` or
/// `KIND:*`). With no rule: root and the daemon's own user on the unix socket are admins,
/// other unix peers and TLS clients get the configured default role, plain TCP peers
/// read-only.
pub fn decide(
    access: &Access,
    who: &Identity,
    permission: Permission,
    kind: ObjectKind,
    name: Option<&str>,
) -> Grant {
    for rule in &access.rule {
        if !who.matches(&rule.identity) {
            continue;
        }
        let (only, glob) = match split_kind(&rule.objects) {
            Some((k, glob)) => (Some(k), glob),
            None => (None, rule.objects.as_str()),
        };
        let object_ok = only.is_none_or(|k| k == kind)
            && match name {
                Some(n) => dn_matches(glob, n),
                None => glob == "*",
            };
        if !object_ok {
            continue;
        }
        return Grant {
            role: rule.role,
            allowed: rule.role.allows(permission) && !rule.deny.contains(&permission),
        };
    }
    let role = match who {
        Identity::Unix { uid, .. } => {
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if *uid == 0 || *uid == me {
                Role::Admin
            } else {
                access.unix_default_role
            }
        }
        Identity::Cert(_) => access.tls_default_role,
        Identity::Tcp { .. } => Role::ReadOnly,
        Identity::Anonymous { .. } => {
            return Grant {
                role: Role::ReadOnly,
                allowed: false,
            };
        }
    };
    Grant {
        role,
        allowed: role.allows(permission),
    }
}

/// The object kinds a rule's `objects` may start with (`domain:web-*`), each limiting the
/// rule to objects of that kind; a pattern without one applies to every kind.
pub const RULE_KINDS: &[(&str, ObjectKind)] = &[
    ("domain", ObjectKind::Domain),
    ("pool", ObjectKind::Pool),
    ("volume", ObjectKind::Volume),
    ("network", ObjectKind::Network),
];

/// A rule's `objects` split into its kind and glob, when it starts with `KIND:`.
pub fn split_kind(objects: &str) -> Option<(ObjectKind, &str)> {
    RULE_KINDS.iter().find_map(|(word, kind)| {
        objects
            .strip_prefix(word)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|glob| (*kind, glob))
    })
}

/// The error a denial returns, naming the permission (libvirt's `domain:start` style).
pub fn denied(
    who: &Identity,
    role: Role,
    op: &str,
    kind: ObjectKind,
    permission: Permission,
    name: Option<&str>,
) -> Error {
    let object = match (kind, name) {
        (ObjectKind::Node, _) => "the host".to_string(),
        (k, Some(n)) => format!("{} '{n}'", kind_name(k)),
        (k, None) => format!("{}s", kind_name(k)),
    };
    Error::denied(format!(
        "access denied: {} (role {}) lacks permission '{}:{}' on {object}, which '{op}' needs",
        who.describe(),
        role.name(),
        acl_object(kind),
        permission.name(),
    ))
}

fn kind_name(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Node => "host",
        ObjectKind::Domain => "domain",
        ObjectKind::Pool => "storage pool",
        ObjectKind::Volume => "storage volume",
        ObjectKind::Network => "network",
    }
}

/// libvirt's ACL object type names.
fn acl_object(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Node => "connect",
        ObjectKind::Domain => "domain",
        ObjectKind::Pool => "storage_pool",
        ObjectKind::Volume => "storage_vol",
        ObjectKind::Network => "network",
    }
}

/// Checks a request against the socket's read-only flag and the access rules.
pub fn authorize(
    access: &Access,
    who: &Identity,
    readonly_socket: bool,
    op: &str,
    kind: ObjectKind,
    permission: Permission,
    name: Option<&str>,
) -> Result<()> {
    if readonly_socket && !permission.is_read_only() {
        return Err(Error::denied(format!(
            "this connection is read-only: '{op}' needs permission '{}:{}' (use the read-write socket, or connect without -r)",
            acl_object(kind),
            permission.name()
        )));
    }
    let grant = decide(access, who, permission, kind, name);
    if grant.allowed {
        return Ok(());
    }
    let e = denied(who, grant.role, op, kind, permission, name);
    tracing::warn!(client = %who.describe(), op, permission = permission.name(), "{}", e.message);
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule;

    const D: ObjectKind = ObjectKind::Domain;

    fn cert(cn: &str) -> Identity {
        Identity::Cert(PeerCert {
            subject: format!("O=virtwasm,CN={cn}"),
            fingerprint: format!("sha256:{}", "ab".repeat(32)),
        })
    }

    #[test]
    fn rules_apply_in_order_and_by_object() {
        let access = Access {
            rule: vec![
                Rule {
                    identity: "dn:*CN=ops".into(),
                    role: Role::Admin,
                    objects: "web-*".into(),
                    deny: vec![Permission::Delete],
                    files: None,
                },
                Rule {
                    identity: "dn:*CN=ops".into(),
                    role: Role::Operator,
                    objects: "*".into(),
                    deny: vec![],
                    files: None,
                },
            ],
            ..Access::default()
        };
        let ops = cert("ops");
        assert!(decide(&access, &ops, Permission::Write, D, Some("web-1")).allowed);
        assert!(!decide(&access, &ops, Permission::Delete, D, Some("web-1")).allowed);
        assert!(!decide(&access, &ops, Permission::Write, D, Some("db-1")).allowed);
        assert!(decide(&access, &ops, Permission::Start, D, Some("db-1")).allowed);
        // Defining names no object yet: only the `*` rule applies.
        assert!(!decide(&access, &ops, Permission::Write, D, None).allowed);
        // Anyone else: the TLS default, read-only.
        let other = cert("intruder");
        assert_eq!(
            decide(&access, &other, Permission::Start, D, Some("web-1")).role,
            Role::ReadOnly
        );
        assert!(!decide(&access, &other, Permission::Start, D, Some("web-1")).allowed);
    }

    #[test]
    fn the_first_rule_for_an_identity_that_names_files_decides_them() {
        let rule = |identity: &str, files: Option<&[&str]>| Rule {
            identity: identity.into(),
            role: Role::Operator,
            objects: "web-*".into(),
            deny: vec![],
            files: files.map(|f| f.iter().map(std::path::PathBuf::from).collect()),
        };
        let access = Access {
            rule: vec![
                rule("dn:*CN=web", None),
                rule("dn:*CN=web", Some(&["/srv/web"])),
                rule("*", Some(&["/srv/shared"])),
            ],
            ..Access::default()
        };
        let dirs = |who: &Identity| file_dirs(&access, who).map(<[_]>::to_vec);
        assert_eq!(dirs(&cert("web")), Some(vec!["/srv/web".into()]));
        assert_eq!(dirs(&cert("db")), Some(vec!["/srv/shared".into()]));
        assert_eq!(file_dirs(&Access::default(), &cert("web")), None);
    }

    #[test]
    fn a_rule_can_be_limited_to_one_kind_of_object() {
        let access = Access {
            rule: vec![
                Rule {
                    identity: "dn:*CN=storage".into(),
                    role: Role::Admin,
                    objects: "pool:*".into(),
                    deny: vec![],
                    files: None,
                },
                Rule {
                    identity: "dn:*CN=storage".into(),
                    role: Role::Admin,
                    objects: "volume:scratch-*".into(),
                    deny: vec![],
                    files: None,
                },
            ],
            ..Access::default()
        };
        let who = cert("storage");
        let pool = ObjectKind::Pool;
        assert!(decide(&access, &who, Permission::Delete, pool, Some("images")).allowed);
        // `pool:*` also covers defining a pool, which names none yet.
        assert!(decide(&access, &who, Permission::Write, pool, None).allowed);
        // A domain of the same name is another kind: the TLS default (read-only) applies.
        assert!(!decide(&access, &who, Permission::Delete, D, Some("images")).allowed);
        assert!(!decide(&access, &who, Permission::Write, D, None).allowed);
        let vol = ObjectKind::Volume;
        assert!(decide(&access, &who, Permission::Delete, vol, Some("scratch-1")).allowed);
        assert!(!decide(&access, &who, Permission::Delete, vol, Some("base")).allowed);
        assert_eq!(
            split_kind("network:lan-*"),
            Some((ObjectKind::Network, "lan-*"))
        );
        assert_eq!(
            split_kind("web:1"),
            None,
            "only the four kinds are prefixes"
        );
    }

    #[test]
    fn denials_name_the_permission() {
        let e = authorize(
            &Access::default(),
            &cert("bob"),
            false,
            "start",
            ObjectKind::Domain,
            Permission::Start,
            Some("vm1"),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "access denied: dn:O=virtwasm,CN=bob (sha256:{}) (role read-only) lacks permission 'domain:start' on domain 'vm1', which 'start' needs",
                "ab".repeat(32)
            )
        );
        let e = authorize(
            &Access::default(),
            &Identity::Unix { uid: 0, pid: None },
            true,
            "define-xml",
            ObjectKind::Domain,
            Permission::Write,
            None,
        )
        .unwrap_err();
        assert!(
            e.message.starts_with(
                "this connection is read-only: 'define-xml' needs permission 'domain:write'"
            ),
            "{}",
            e.message
        );
    }
}
