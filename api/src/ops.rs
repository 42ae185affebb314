//! The API's vocabulary: every operation a client may ask of the host, as one [`Request`]
//! enum, and the one table ([`ROUTES`]) that gives each operation its HTTP method, its
//! `/v1/...` path, the object it acts on and the permission it needs.
//!
//! Both ends use the same table: the client turns a request into a method, path, query and
//! JSON body ([`Request::to_http`]); the daemon turns them back ([`Request::from_http`]). A
//! unit test round-trips every operation, so the two cannot drift apart.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use virtwasm_host::bindings::types::{Device, PoolDef, ShutdownModes, VolumeDef};
use virtwasm_host::devices::DeviceSelector;
use virtwasm_host::tuning::Scope;
use virtwasm_host::xml::Extras;
use virtwasm_host::{Error, ErrorKind, Result};

/// One operation with its arguments. `key` is a name, uuid or (for domains) id, as virsh
/// accepts; the host resolves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)] // each variant mirrors the host method of the same name
pub enum Request {
    NodeInfo,
    Capabilities,
    DriverVersion,
    ListPlugins,
    ListDomains,
    Domain {
        key: String,
    },
    DomainInfo {
        key: String,
    },
    DomainStats {
        key: String,
    },
    InterfaceAddresses {
        key: String,
        #[serde(default)]
        source: String,
    },
    DomainXml {
        key: String,
        #[serde(default, deserialize_with = "lenient_bool")]
        inactive: bool,
    },
    DefineXml {
        xml: String,
        #[serde(default)]
        validate: bool,
    },
    CreateXml {
        xml: String,
        #[serde(default)]
        validate: bool,
        #[serde(default)]
        paused: bool,
    },
    Undefine {
        key: String,
        #[serde(default, deserialize_with = "lenient_bool")]
        snapshots: bool,
        #[serde(default, deserialize_with = "lenient_bool")]
        managed_save: bool,
    },
    Start {
        key: String,
        #[serde(default)]
        paused: bool,
    },
    Shutdown {
        key: String,
        #[serde(default, with = "modes_wire")]
        modes: Option<ShutdownModes>,
    },
    Reboot {
        key: String,
        #[serde(default, with = "modes_wire")]
        modes: Option<ShutdownModes>,
    },
    Reset {
        key: String,
    },
    Destroy {
        key: String,
        #[serde(default)]
        graceful: bool,
    },
    Suspend {
        key: String,
    },
    Resume {
        key: String,
    },
    SetAutostart {
        key: String,
        on: bool,
    },
    VcpuCount {
        key: String,
    },
    SetVcpus {
        key: String,
        count: u32,
        #[serde(default)]
        scope: Option<Scope>,
        #[serde(default)]
        maximum: bool,
    },
    SetMemory {
        key: String,
        kib: u64,
        #[serde(default)]
        scope: Option<Scope>,
    },
    SetMaxMemory {
        key: String,
        kib: u64,
        #[serde(default)]
        scope: Option<Scope>,
    },
    AttachDevice {
        key: String,
        device: Device,
        #[serde(default)]
        scope: Option<Scope>,
    },
    DetachDevice {
        key: String,
        selector: DeviceSelector,
        #[serde(default)]
        scope: Option<Scope>,
    },
    SnapshotCreate {
        key: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
    },
    Snapshots {
        key: String,
    },
    SnapshotRevert {
        key: String,
        name: String,
    },
    SnapshotDelete {
        key: String,
        name: String,
    },
    Save {
        key: String,
        path: String,
    },
    Restore {
        path: String,
        #[serde(default)]
        paused: bool,
    },
    ManagedSave {
        key: String,
    },
    ManagedSaveRemove {
        key: String,
    },
    ListPools,
    Pool {
        key: String,
    },
    PoolXml {
        key: String,
    },
    PoolDefineXml {
        xml: String,
        #[serde(default)]
        validate: bool,
    },
    PoolDefine {
        def: PoolDef,
        #[serde(default)]
        extras: Extras,
    },
    PoolCreate {
        def: PoolDef,
        #[serde(default)]
        extras: Extras,
        /// Build the pool's storage before starting it (virsh's `--build`).
        #[serde(default)]
        build: bool,
    },
    PoolBuild {
        key: String,
        #[serde(default)]
        overwrite: bool,
    },
    PoolStart {
        key: String,
    },
    PoolDestroy {
        key: String,
    },
    PoolDelete {
        key: String,
    },
    PoolUndefine {
        key: String,
    },
    PoolRefresh {
        key: String,
    },
    PoolSetAutostart {
        key: String,
        on: bool,
    },
    ListVolumes {
        pool: String,
    },
    Volume {
        key: String,
        #[serde(default)]
        pool: Option<String>,
    },
    VolCreate {
        pool: String,
        vol: VolumeDef,
    },
    VolCreateXml {
        pool: String,
        xml: String,
        #[serde(default)]
        validate: bool,
    },
    VolClone {
        key: String,
        name: String,
        #[serde(default)]
        pool: Option<String>,
    },
    VolDelete {
        key: String,
        #[serde(default)]
        pool: Option<String>,
    },
    VolResize {
        key: String,
        #[serde(default)]
        pool: Option<String>,
        capacity: u64,
        #[serde(default)]
        allow_shrink: bool,
    },
    VolWipe {
        key: String,
        #[serde(default)]
        pool: Option<String>,
    },
    VolInfo {
        key: String,
        #[serde(default)]
        pool: Option<String>,
    },
    VolXml {
        key: String,
        #[serde(default)]
        pool: Option<String>,
    },
    ListNetworks,
    Network {
        key: String,
    },
    NetworkXml {
        key: String,
        #[serde(default, deserialize_with = "lenient_bool")]
        inactive: bool,
    },
    NetworkDefineXml {
        xml: String,
        #[serde(default)]
        validate: bool,
    },
    NetworkCreateXml {
        xml: String,
        #[serde(default)]
        validate: bool,
    },
    NetworkStart {
        key: String,
    },
    NetworkDestroy {
        key: String,
    },
    NetworkUndefine {
        key: String,
    },
    NetworkSetAutostart {
        key: String,
        on: bool,
    },
    NetworkUpdate {
        key: String,
        command: String,
        section: String,
        xml: String,
        #[serde(default)]
        parent_index: usize,
        #[serde(default)]
        live: bool,
        #[serde(default)]
        config: bool,
    },
    NetworkDhcpLeases {
        key: String,
    },
    Migrate {
        key: String,
        /// The destination daemon's URI (`qemu+tls://host/system`).
        dest: String,
        /// Only the definition, even for a running domain.
        #[serde(default)]
        offline: bool,
        /// A cap on the stream, MiB/s (virsh's `--bandwidth`).
        #[serde(default)]
        bandwidth_mib: Option<u64>,
    },
    MigratePrepare {
        xml: String,
        listen: String,
    },
    MigrateFinish {
        key: String,
        success: bool,
    },
}

/// `shutdown-modes` is a WIT `flags` type, which the bindings do not derive serde for: on the
/// wire it is a list of mode names (`["acpi", "agent"]`) or one comma-separated string.
mod modes_wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use virtwasm_host::bindings::types::ShutdownModes;

    const NAMES: &[(&str, ShutdownModes)] = &[
        ("acpi", ShutdownModes::ACPI),
        ("agent", ShutdownModes::AGENT),
        ("initctl", ShutdownModes::INITCTL),
        ("signal", ShutdownModes::SIGNAL),
        ("paravirt", ShutdownModes::PARAVIRT),
    ];

    pub fn serialize<S: Serializer>(m: &Option<ShutdownModes>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            None => s.serialize_none(),
            Some(m) => NAMES
                .iter()
                .filter(|(_, f)| m.contains(*f))
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ShutdownModes>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            List(Vec<String>),
            Text(String),
        }
        let names: Vec<String> = match Option::<Given>::deserialize(d)? {
            None => return Ok(None),
            Some(Given::List(l)) => l,
            Some(Given::Text(t)) => t.split(',').map(str::to_string).collect(),
        };
        let mut modes = ShutdownModes::empty();
        for n in names.iter().filter(|n| !n.is_empty()) {
            let flag = NAMES.iter().find(|(k, _)| k == n).map(|(_, f)| *f).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown shutdown mode '{n}' (expected acpi, agent, initctl, signal or paravirt)"
                ))
            })?;
            modes |= flag;
        }
        Ok(Some(modes))
    }
}

/// Query values arrive as text (`?inactive=true`); JSON bodies carry booleans.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(t) => match t.as_str() {
            "true" | "1" | "yes" | "" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "expected true or false, got '{other}'"
            ))),
        },
    }
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Reads; arguments in the query string.
    Get,
    /// Changes and actions; arguments in a JSON body.
    Post,
    /// Removals; arguments in the query string.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
    /// Whether arguments travel in the query string rather than a body.
    fn uses_query(self) -> bool {
        !matches!(self, Method::Post)
    }
}

/// The kind of object an operation acts on, for access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// The host itself (node info, capabilities, plugins).
    Node,
    /// A domain.
    Domain,
    /// A storage pool.
    Pool,
    /// A storage volume.
    Volume,
    /// A network.
    Network,
}

/// Permissions, with libvirt's ACL names (`domain:start`, `storage_pool:delete`, ...) so
/// rules read as libvirt's polkit rules do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read an object's attributes and state.
    Getattr,
    /// Read an object's full definition (XML).
    Read,
    /// List objects.
    Search,
    /// Change a definition (define, edit, attach, set memory, autostart).
    Write,
    /// Start (and create, restore).
    Start,
    /// Stop abruptly (destroy).
    Stop,
    /// Ask the guest to shut down or reboot.
    InitControl,
    /// Reset the virtual hardware.
    Reset,
    /// Pause and resume.
    Suspend,
    /// Save the running state to a file.
    Save,
    /// Take, revert and delete snapshots.
    Snapshot,
    /// Remove an object or its storage.
    Delete,
    /// Migrate to another host.
    Migrate,
    /// Attach to a console or other character device (a guest's shell: admins only).
    OpenDevice,
}

impl Permission {
    /// Every permission, for role tables and documentation.
    pub const ALL: &[Permission] = &[
        Permission::Getattr,
        Permission::Read,
        Permission::Search,
        Permission::Write,
        Permission::Start,
        Permission::Stop,
        Permission::InitControl,
        Permission::Reset,
        Permission::Suspend,
        Permission::Save,
        Permission::Snapshot,
        Permission::Delete,
        Permission::Migrate,
        Permission::OpenDevice,
    ];

    /// Its name (`getattr`, `init_control`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Permission::Getattr => "getattr",
            Permission::Read => "read",
            Permission::Search => "search",
            Permission::Write => "write",
            Permission::Start => "start",
            Permission::Stop => "stop",
            Permission::InitControl => "init_control",
            Permission::Reset => "reset",
            Permission::Suspend => "suspend",
            Permission::Save => "save",
            Permission::Snapshot => "snapshot",
            Permission::Delete => "delete",
            Permission::Migrate => "migrate",
            Permission::OpenDevice => "open_device",
        }
    }

    /// Whether the permission only reads (what a read-only socket or role allows).
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Permission::Getattr | Permission::Read | Permission::Search
        )
    }
}

/// Where an operation lives on the wire and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The operation's tag in [`Request`] (`start`, `pool-build`).
    pub op: &'static str,
    /// The HTTP method.
    pub method: Method,
    /// The path, with `{field}` for arguments carried in the path.
    pub path: &'static str,
    /// The object it acts on.
    pub object: ObjectKind,
    /// The permission it needs on that object.
    pub permission: Permission,
}

const fn route(
    op: &'static str,
    method: Method,
    path: &'static str,
    object: ObjectKind,
    permission: Permission,
) -> Route {
    Route {
        op,
        method,
        path,
        object,
        permission,
    }
}

use Method::{Delete as DELETE, Get as GET, Post as POST};
use ObjectKind::{Domain as D, Network as N, Node as H, Pool as P, Volume as V};
use Permission as Pm;

/// Every operation's route. Whatever runs a definition the client wrote (create, restore,
/// a pool or network created from XML, an incoming migration) needs `write`, not just
/// `start`: the definition decides which host files and devices the backend opens, as
/// libvirt requires `domain:write` there too.
///
/// Literal segments are matched before `{field}` segments, so
/// `/v1/domains/restore` is an action, not a domain named `restore`.
pub const ROUTES: &[Route] = &[
    route("node-info", GET, "/v1/node", H, Pm::Getattr),
    route("capabilities", GET, "/v1/node/capabilities", H, Pm::Read),
    route("driver-version", GET, "/v1/node/version", H, Pm::Getattr),
    route("list-plugins", GET, "/v1/plugins", H, Pm::Search),
    route("list-domains", GET, "/v1/domains", D, Pm::Search),
    route("define-xml", POST, "/v1/domains", D, Pm::Write),
    route("create-xml", POST, "/v1/domains/create", D, Pm::Write),
    route("restore", POST, "/v1/domains/restore", D, Pm::Write),
    route("domain", GET, "/v1/domains/{key}", D, Pm::Getattr),
    route("undefine", DELETE, "/v1/domains/{key}", D, Pm::Delete),
    route("domain-info", GET, "/v1/domains/{key}/info", D, Pm::Getattr),
    route(
        "domain-stats",
        GET,
        "/v1/domains/{key}/stats",
        D,
        Pm::Getattr,
    ),
    route(
        "interface-addresses",
        GET,
        "/v1/domains/{key}/interfaces",
        D,
        Pm::Getattr,
    ),
    route("domain-xml", GET, "/v1/domains/{key}/xml", D, Pm::Read),
    route("start", POST, "/v1/domains/{key}/start", D, Pm::Start),
    route(
        "shutdown",
        POST,
        "/v1/domains/{key}/shutdown",
        D,
        Pm::InitControl,
    ),
    route(
        "reboot",
        POST,
        "/v1/domains/{key}/reboot",
        D,
        Pm::InitControl,
    ),
    route("reset", POST, "/v1/domains/{key}/reset", D, Pm::Reset),
    route("destroy", POST, "/v1/domains/{key}/destroy", D, Pm::Stop),
    route("suspend", POST, "/v1/domains/{key}/suspend", D, Pm::Suspend),
    route("resume", POST, "/v1/domains/{key}/resume", D, Pm::Suspend),
    route(
        "set-autostart",
        POST,
        "/v1/domains/{key}/autostart",
        D,
        Pm::Write,
    ),
    route("vcpu-count", GET, "/v1/domains/{key}/vcpus", D, Pm::Getattr),
    route("set-vcpus", POST, "/v1/domains/{key}/vcpus", D, Pm::Write),
    route("set-memory", POST, "/v1/domains/{key}/memory", D, Pm::Write),
    route(
        "set-max-memory",
        POST,
        "/v1/domains/{key}/max-memory",
        D,
        Pm::Write,
    ),
    route(
        "attach-device",
        POST,
        "/v1/domains/{key}/devices",
        D,
        Pm::Write,
    ),
    route(
        "detach-device",
        POST,
        "/v1/domains/{key}/devices/detach",
        D,
        Pm::Write,
    ),
    route(
        "snapshots",
        GET,
        "/v1/domains/{key}/snapshots",
        D,
        Pm::Getattr,
    ),
    route(
        "snapshot-create",
        POST,
        "/v1/domains/{key}/snapshots",
        D,
        Pm::Snapshot,
    ),
    route(
        "snapshot-revert",
        POST,
        "/v1/domains/{key}/snapshots/{name}/revert",
        D,
        Pm::Snapshot,
    ),
    route(
        "snapshot-delete",
        DELETE,
        "/v1/domains/{key}/snapshots/{name}",
        D,
        Pm::Snapshot,
    ),
    route("save", POST, "/v1/domains/{key}/save", D, Pm::Save),
    route(
        "managed-save",
        POST,
        "/v1/domains/{key}/managed-save",
        D,
        Pm::Save,
    ),
    route(
        "managed-save-remove",
        DELETE,
        "/v1/domains/{key}/managed-save",
        D,
        Pm::Save,
    ),
    route("list-pools", GET, "/v1/pools", P, Pm::Search),
    route("pool-define-xml", POST, "/v1/pools", P, Pm::Write),
    route("pool-define", POST, "/v1/pools/define", P, Pm::Write),
    route("pool-create", POST, "/v1/pools/create", P, Pm::Write),
    route("pool", GET, "/v1/pools/{key}", P, Pm::Getattr),
    route("pool-undefine", DELETE, "/v1/pools/{key}", P, Pm::Delete),
    route("pool-xml", GET, "/v1/pools/{key}/xml", P, Pm::Read),
    route("pool-build", POST, "/v1/pools/{key}/build", P, Pm::Write),
    route("pool-start", POST, "/v1/pools/{key}/start", P, Pm::Start),
    route("pool-destroy", POST, "/v1/pools/{key}/destroy", P, Pm::Stop),
    route("pool-delete", POST, "/v1/pools/{key}/delete", P, Pm::Delete),
    route(
        "pool-refresh",
        POST,
        "/v1/pools/{key}/refresh",
        P,
        Pm::Write,
    ),
    route(
        "pool-set-autostart",
        POST,
        "/v1/pools/{key}/autostart",
        P,
        Pm::Write,
    ),
    route(
        "list-volumes",
        GET,
        "/v1/pools/{pool}/volumes",
        P,
        Pm::Search,
    ),
    route("vol-create", POST, "/v1/pools/{pool}/volumes", P, Pm::Write),
    route(
        "vol-create-xml",
        POST,
        "/v1/pools/{pool}/volumes/xml",
        P,
        Pm::Write,
    ),
    route("volume", GET, "/v1/volumes/{key}", V, Pm::Getattr),
    route("vol-delete", DELETE, "/v1/volumes/{key}", V, Pm::Delete),
    route("vol-info", GET, "/v1/volumes/{key}/info", V, Pm::Getattr),
    route("vol-xml", GET, "/v1/volumes/{key}/xml", V, Pm::Read),
    route("vol-clone", POST, "/v1/volumes/{key}/clone", V, Pm::Write),
    route("vol-resize", POST, "/v1/volumes/{key}/resize", V, Pm::Write),
    route("vol-wipe", POST, "/v1/volumes/{key}/wipe", V, Pm::Write),
    route("list-networks", GET, "/v1/networks", N, Pm::Search),
    route("network-define-xml", POST, "/v1/networks", N, Pm::Write),
    route(
        "network-create-xml",
        POST,
        "/v1/networks/create",
        N,
        Pm::Write,
    ),
    route("network", GET, "/v1/networks/{key}", N, Pm::Getattr),
    route(
        "network-undefine",
        DELETE,
        "/v1/networks/{key}",
        N,
        Pm::Delete,
    ),
    route("network-xml", GET, "/v1/networks/{key}/xml", N, Pm::Read),
    route(
        "network-start",
        POST,
        "/v1/networks/{key}/start",
        N,
        Pm::Start,
    ),
    route(
        "network-destroy",
        POST,
        "/v1/networks/{key}/destroy",
        N,
        Pm::Stop,
    ),
    route(
        "network-set-autostart",
        POST,
        "/v1/networks/{key}/autostart",
        N,
        Pm::Write,
    ),
    route(
        "network-update",
        POST,
        "/v1/networks/{key}/update",
        N,
        Pm::Write,
    ),
    route("migrate", POST, "/v1/domains/{key}/migrate", D, Pm::Migrate),
    route("migrate-prepare", POST, "/v1/migrations", D, Pm::Write),
    route(
        "migrate-finish",
        POST,
        "/v1/domains/{key}/migrate-finish",
        D,
        Pm::Migrate,
    ),
    route(
        "network-dhcp-leases",
        GET,
        "/v1/networks/{key}/leases",
        N,
        Pm::Getattr,
    ),
];

/// Characters escaped in a path segment or query value: everything but unreserved ones.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Operations that can take long (a guest booting or saving, bytes copied): the daemon runs
/// them as operations a client can watch, wait for, and have answered asynchronously.
/// Operations the host answers from its own records, with no driver call, when reads do not
/// refresh from the driver first (as in the daemon, whose poller keeps records current): a
/// front end may answer them without moving to a thread that may block.
pub const FROM_RECORDS: &[&str] = &["list-domains", "domain", "list-networks"];

/// Operations that are long work (see the daemon's operations).
pub const LONG: &[&str] = &[
    "start",
    "shutdown",
    "reboot",
    "create-xml",
    "save",
    "restore",
    "managed-save",
    "snapshot-create",
    "snapshot-revert",
    "pool-build",
    "vol-clone",
    "vol-wipe",
    "migrate",
    "migrate-prepare",
    "migrate-finish",
];

/// Percent-encodes `text` for a path segment or query value.
pub fn escape(text: &str) -> String {
    utf8_percent_encode(text, ESCAPE).to_string()
}

/// A request on the wire, before HTTP framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    /// The method.
    pub method: Method,
    /// The path with its arguments escaped.
    pub path: String,
    /// The query string (without `?`), possibly empty.
    pub query: String,
    /// The JSON body, for POST.
    pub body: Option<Vec<u8>>,
}

impl WireRequest {
    /// Path and query as one request target.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

fn bad_request(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

/// The route of operation `op`, a name the `Request` encoding gives.
fn route_named(op: &str) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.op == op)
        .expect("every operation has a route (checked by a unit test)")
}

impl Request {
    /// The operation's tag (`start`, `pool-build`).
    pub fn op(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m
                .get("op")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        }
    }

    /// The operation's route.
    pub fn route(&self) -> &'static Route {
        route_named(&self.op())
    }

    /// Whether the operation changes anything.
    pub fn is_read_only(&self) -> bool {
        self.route().permission.is_read_only()
    }

    /// The method, path, query and body that carry this request.
    pub fn to_http(&self) -> Result<WireRequest> {
        let mut fields = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(Error::internal(format!(
                    "request encoded as {other}, not an object"
                )));
            }
            Err(e) => return Err(Error::internal(format!("cannot encode request: {e}"))),
        };
        // The operation's name is in the encoding already: no second one to find the route.
        let route = match fields.remove("op") {
            Some(Value::String(op)) => route_named(&op),
            _ => self.route(),
        };
        let mut path = String::new();
        for seg in route.path.split('/').skip(1) {
            path.push('/');
            match placeholder(seg) {
                Some(name) => {
                    let value = fields.remove(name).and_then(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    });
                    let value = value.ok_or_else(|| {
                        Error::internal(format!("'{}' lacks its path field '{name}'", route.op))
                    })?;
                    if value.is_empty() {
                        return Err(Error::invalid(format!("empty {name} in '{}'", route.op)));
                    }
                    path.extend(utf8_percent_encode(&value, ESCAPE));
                }
                None => path.push_str(seg),
            }
        }
        if route.method.uses_query() {
            let mut query = Vec::new();
            for (k, v) in fields {
                let text = match v {
                    Value::Null | Value::Bool(false) => continue,
                    Value::Bool(true) => "true".to_string(),
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(Error::internal(format!(
                            "'{}' cannot carry {k}={other} in a query",
                            route.op
                        )));
                    }
                };
                query.push(format!("{k}={}", utf8_percent_encode(&text, ESCAPE)));
            }
            Ok(WireRequest {
                method: route.method,
                path,
                query: query.join("&"),
                body: None,
            })
        } else {
            let body = serde_json::to_vec(&Value::Object(fields))
                .map_err(|e| Error::internal(format!("cannot encode request body: {e}")))?;
            Ok(WireRequest {
                method: route.method,
                path,
                query: String::new(),
                body: Some(body),
            })
        }
    }

    /// Reads a request from its method, path, query and body; errors say what was wrong
    /// (an unknown path, a method the path does not take, a field of the wrong type).
    pub fn from_http(
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<(Request, &'static Route)> {
        let (route, captures) = find_route(method, path)?;
        Self::from_parts(method, path, query, body, route, captures)
    }

    /// The route `method` and `path` reach, if any (without reading a body).
    pub fn route_of(method: &str, path: &str) -> Option<&'static Route> {
        find_route(method, path).ok().map(|(r, _)| r)
    }

    fn from_parts(
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        route: &'static Route,
        captures: BTreeMap<&'static str, String>,
    ) -> Result<(Request, &'static Route)> {
        let mut fields = Map::new();
        if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => fields = m,
                Ok(_) => {
                    return Err(bad_request(format!(
                        "the body of {method} {path} must be a JSON object"
                    )));
                }
                Err(e) => {
                    return Err(bad_request(format!(
                        "the body of {method} {path} is not valid JSON: {e}"
                    )));
                }
            }
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = unescape(k)?;
            let v = unescape(v)?;
            if fields.insert(k.clone(), Value::String(v)).is_some() {
                return Err(bad_request(format!(
                    "'{k}' is given twice in {method} {path}"
                )));
            }
        }
        for (name, value) in captures {
            if let Some(other) = fields.get(name)
                && other != &Value::String(value.clone())
            {
                return Err(bad_request(format!(
                    "'{name}' in the body ({other}) contradicts the path ('{value}')"
                )));
            }
            fields.insert(name.to_string(), Value::String(value));
        }
        fields.insert("op".into(), Value::String(route.op.into()));
        let req = serde_json::from_value::<Request>(Value::Object(fields))
            .map_err(|e| bad_request(format!("invalid arguments for {method} {path}: {e}")))?;
        Ok((req, route))
    }
}

fn placeholder(seg: &str) -> Option<&str> {
    seg.strip_prefix('{')?.strip_suffix('}')
}

/// The raw (still escaped) value of `name` in a query string.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Percent-decodes a path segment or query value (the inverse of [`escape`]); refuses
/// what is not UTF-8 once decoded.
pub fn unescape(text: &str) -> Result<String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad_request(format!("'{text}' is not UTF-8 after percent-decoding")))
}

/// The routes, those with more literal segments first (a literal wins over a placeholder),
/// sorted once.
fn routes_by_specificity() -> &'static [&'static Route] {
    static SORTED: std::sync::OnceLock<Vec<&'static Route>> = std::sync::OnceLock::new();
    SORTED.get_or_init(|| {
        let mut v: Vec<&'static Route> = ROUTES.iter().collect();
        v.sort_by_key(|r| r.path.matches('{').count());
        v
    })
}

/// The route `method` and `path` reach and the path's placeholders; errors name an unknown
/// path, or the methods the path does take.
fn find_route(
    method: &str,
    path: &str,
) -> Result<(&'static Route, BTreeMap<&'static str, String>)> {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut allowed = Vec::new();
    for r in routes_by_specificity() {
        let Some(captures) = match_path(r.path, &segs)? else {
            continue;
        };
        if r.method.as_str() == method {
            return Ok((r, captures));
        }
        if !allowed.contains(&r.method.as_str()) {
            allowed.push(r.method.as_str());
        }
    }
    if allowed.is_empty() {
        return Err(Error::not_found(format!(
            "no API endpoint at '{path}' (see /v1/openapi.json for the endpoints)"
        )));
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "method {method} is not allowed on '{path}' (allowed: {})",
            allowed.join(", ")
        ),
    ))
}

/// Matches `segs` against a route's pattern, returning the decoded placeholder values.
fn match_path(
    pattern: &'static str,
    segs: &[&str],
) -> Result<Option<BTreeMap<&'static str, String>>> {
    let pat: Vec<&'static str> = pattern.split('/').skip(1).collect();
    if pat.len() != segs.len() {
        return Ok(None);
    }
    let mut captures = BTreeMap::new();
    for (p, s) in pat.iter().zip(segs) {
        match placeholder(p) {
            Some(name) if !s.is_empty() => {
                captures.insert(name, unescape(s)?);
            }
            Some(_) => return Ok(None),
            None if p == s => {}
            None => return Ok(None),
        }
    }
    Ok(Some(captures))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request of every operation, with arguments that need escaping.
    fn samples() -> Vec<Request> {
        let key = || "vm 1/ä?&".to_string();
        vec![
            Request::NodeInfo,
            Request::Capabilities,
            Request::DriverVersion,
            Request::ListPlugins,
            Request::ListDomains,
            Request::Domain { key: key() },
            Request::DomainInfo { key: key() },
            Request::DomainStats { key: key() },
            Request::InterfaceAddresses {
                key: key(),
                source: "lease".into(),
            },
            Request::DomainXml {
                key: key(),
                inactive: true,
            },
            Request::DefineXml {
                xml: "<domain/>".into(),
                validate: true,
            },
            Request::CreateXml {
                xml: "<domain/>".into(),
                validate: false,
                paused: true,
            },
            Request::Undefine {
                key: key(),
                snapshots: true,
                managed_save: false,
            },
            Request::Start {
                key: key(),
                paused: true,
            },
            Request::Shutdown {
                key: key(),
                modes: Some(ShutdownModes::ACPI | ShutdownModes::AGENT),
            },
            Request::Reboot {
                key: key(),
                modes: None,
            },
            Request::Reset { key: key() },
            Request::Destroy {
                key: key(),
                graceful: true,
            },
            Request::Suspend { key: key() },
            Request::Resume { key: key() },
            Request::SetAutostart {
                key: key(),
                on: true,
            },
            Request::VcpuCount { key: key() },
            Request::SetVcpus {
                key: key(),
                count: 2,
                scope: Some(Scope {
                    live: true,
                    config: false,
                }),
                maximum: false,
            },
            Request::SetMemory {
                key: key(),
                kib: 1024,
                scope: None,
            },
            Request::SetMaxMemory {
                key: key(),
                kib: 2048,
                scope: None,
            },
            Request::DetachDevice {
                key: key(),
                selector: DeviceSelector::Disk("vdb".into()),
                scope: None,
            },
            Request::SnapshotCreate {
                key: key(),
                name: Some("s1".into()),
                description: None,
            },
            Request::Snapshots { key: key() },
            Request::SnapshotRevert {
                key: key(),
                name: "s 1".into(),
            },
            Request::SnapshotDelete {
                key: key(),
                name: "s/1".into(),
            },
            Request::Save {
                key: key(),
                path: "/tmp/x".into(),
            },
            Request::Restore {
                path: "/tmp/x".into(),
                paused: false,
            },
            Request::ManagedSave { key: key() },
            Request::ManagedSaveRemove { key: key() },
            Request::ListPools,
            Request::Pool { key: key() },
            Request::PoolXml { key: key() },
            Request::PoolDefineXml {
                xml: "<pool/>".into(),
                validate: false,
            },
            Request::PoolBuild {
                key: key(),
                overwrite: true,
            },
            Request::PoolStart { key: key() },
            Request::PoolDestroy { key: key() },
            Request::PoolDelete { key: key() },
            Request::PoolUndefine { key: key() },
            Request::PoolRefresh { key: key() },
            Request::PoolSetAutostart {
                key: key(),
                on: false,
            },
            Request::ListVolumes { pool: key() },
            Request::Volume {
                key: "/var/lib/x.img".into(),
                pool: Some("default".into()),
            },
            Request::VolCreateXml {
                pool: key(),
                xml: "<volume/>".into(),
                validate: false,
            },
            Request::VolClone {
                key: key(),
                name: "b".into(),
                pool: None,
            },
            Request::VolDelete {
                key: key(),
                pool: None,
            },
            Request::VolResize {
                key: key(),
                pool: None,
                capacity: 1 << 30,
                allow_shrink: true,
            },
            Request::VolWipe {
                key: key(),
                pool: Some("p".into()),
            },
            Request::VolInfo {
                key: key(),
                pool: None,
            },
            Request::VolXml {
                key: key(),
                pool: None,
            },
            Request::ListNetworks,
            Request::Network { key: key() },
            Request::NetworkXml {
                key: key(),
                inactive: false,
            },
            Request::NetworkDefineXml {
                xml: "<network/>".into(),
                validate: false,
            },
            Request::NetworkCreateXml {
                xml: "<network/>".into(),
                validate: true,
            },
            Request::NetworkStart { key: key() },
            Request::NetworkDestroy { key: key() },
            Request::NetworkUndefine { key: key() },
            Request::NetworkSetAutostart {
                key: key(),
                on: true,
            },
            Request::NetworkUpdate {
                key: key(),
                command: "add".into(),
                section: "ip-dhcp-host".into(),
                xml: "<host/>".into(),
                parent_index: 0,
                live: true,
                config: false,
            },
            Request::NetworkDhcpLeases { key: key() },
            Request::Migrate {
                key: key(),
                dest: "qemu+tls://h/system".into(),
                offline: false,
                bandwidth_mib: Some(10),
            },
            Request::MigratePrepare {
                xml: "<domain/>".into(),
                listen: "127.0.0.1".into(),
            },
            Request::MigrateFinish {
                key: key(),
                success: true,
            },
        ]
    }

    #[test]
    fn operations_answered_from_records_are_reads_of_known_routes() {
        for op in FROM_RECORDS {
            let route = ROUTES.iter().find(|r| r.op == *op).expect(op);
            assert_eq!(route.method.as_str(), "GET", "{op}");
            assert!(!LONG.contains(op), "{op}");
        }
        assert_eq!(
            Request::route_of("GET", "/v1/domains").unwrap().op,
            "list-domains"
        );
        assert_eq!(
            Request::route_of("GET", "/v1/domains/web").unwrap().op,
            "domain"
        );
        // A literal segment wins over a placeholder, as in from_http.
        assert_eq!(
            Request::route_of("GET", "/v1/domains/web/xml").unwrap().op,
            "domain-xml"
        );
        assert!(Request::route_of("GET", "/v1/nothing").is_none());
        assert!(Request::route_of("PUT", "/v1/domains").is_none());
    }

    #[test]
    fn every_operation_round_trips_through_its_route() {
        let samples = samples();
        for req in &samples {
            let wire = req.to_http().unwrap();
            let body = wire.body.clone().unwrap_or_default();
            let (back, route) =
                Request::from_http(wire.method.as_str(), &wire.path, &wire.query, &body)
                    .unwrap_or_else(|e| panic!("{req:?} via {wire:?}: {}", e.message));
            assert_eq!(&back, req, "through {wire:?}");
            assert_eq!(route.op, req.op());
        }
    }

    #[test]
    fn every_route_is_an_operation_and_unique() {
        for (i, r) in ROUTES.iter().enumerate() {
            for other in &ROUTES[i + 1..] {
                assert!(r.op != other.op, "{} routed twice", r.op);
                assert!(
                    !(r.method == other.method && r.path == other.path),
                    "{} and {} share {} {}",
                    r.op,
                    other.op,
                    r.method.as_str(),
                    r.path
                );
            }
            // An operation the enum does not know fails to deserialize with its tag named.
            let probe = serde_json::json!({ "op": r.op });
            if let Err(e) = serde_json::from_value::<Request>(probe) {
                assert!(!e.to_string().contains("unknown variant"), "{}: {e}", r.op);
            }
        }
    }

    #[test]
    fn literal_segments_win_over_names() {
        let (req, _) =
            Request::from_http("POST", "/v1/domains/restore", "", br#"{"path":"/x"}"#).unwrap();
        assert_eq!(
            req,
            Request::Restore {
                path: "/x".into(),
                paused: false
            }
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let e = Request::from_http("GET", "/v1/nothing", "", b"").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(
            e.message.contains("no API endpoint at '/v1/nothing'"),
            "{}",
            e.message
        );

        let e = Request::from_http("PUT", "/v1/domains/vm1/start", "", b"").unwrap_err();
        assert_eq!(
            e.message,
            "method PUT is not allowed on '/v1/domains/vm1/start' (allowed: POST)"
        );

        let e = Request::from_http("POST", "/v1/domains/vm1/start", "", b"{\"pased\":true}")
            .unwrap_err();
        assert!(e.message.contains("unknown field `pased`"), "{}", e.message);

        let e = Request::from_http("POST", "/v1/domains/vm1/start", "", b"[1]").unwrap_err();
        assert_eq!(
            e.message,
            "the body of POST /v1/domains/vm1/start must be a JSON object"
        );

        let e = Request::from_http("POST", "/v1/domains/vm1/start", "", b"{\"key\":\"vm2\"}")
            .unwrap_err();
        assert!(e.message.contains("contradicts the path"), "{}", e.message);

        let e =
            Request::from_http("GET", "/v1/domains/vm1/xml", "inactive=maybe", b"").unwrap_err();
        assert!(
            e.message.contains("expected true or false, got 'maybe'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn curl_style_requests_need_no_body() {
        let (req, route) = Request::from_http("POST", "/v1/domains/vm1/start", "", b"").unwrap();
        assert_eq!(
            req,
            Request::Start {
                key: "vm1".into(),
                paused: false
            }
        );
        assert_eq!(route.permission, Permission::Start);
        let (req, _) = Request::from_http("GET", "/v1/domains/vm1/xml", "inactive", b"").unwrap();
        assert_eq!(
            req,
            Request::DomainXml {
                key: "vm1".into(),
                inactive: true
            }
        );
    }
}
