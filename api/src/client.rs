//! [`Client`]: the host's management API with the same methods wherever the host runs. In
//! process the request goes straight to [`dispatch`](crate::dispatch::dispatch); to a daemon
//! it goes over HTTP. Both paths carry the same [`Request`] and decode the same JSON answer,
//! so a command behaves the same locally and remotely.

use std::path::Path;
use std::sync::mpsc::Receiver;

use serde::de::DeserializeOwned;
use virtwasm_host::bindings::hypervisor::{DriverCapabilities, GuestInterface};
use virtwasm_host::bindings::types::{
    Device, DhcpLease, DomainDef, DomainInfo, NetworkDef, NodeInfo, PoolDef, ShutdownModes,
    VolumeDef, VolumeInfo,
};
use virtwasm_host::devices::DeviceSelector;
use virtwasm_host::domain::DomainSummary;
use virtwasm_host::events::Event;
use virtwasm_host::objects::PoolStatus;
use virtwasm_host::registry::PluginSummary;
use virtwasm_host::state::{DomainRecord, NetworkRecord, PoolRecord, SnapshotRecord};
use virtwasm_host::tuning::{Scope, VcpuCount};
use virtwasm_host::xml::Extras;
use virtwasm_host::{Connection, Error, Host, Result};

use crate::endpoint::{Endpoint, Target, resolve};
use crate::ops::Request;
use crate::remote::Remote;

// One per client, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Via {
    Local(Connection),
    Remote(Remote),
}

/// A connection to a host, in-process or through a daemon.
pub struct Client {
    via: Via,
    uri: String,
    /// Told about each long operation's progress through a daemon (a CLI's progress bar).
    watcher: Option<std::sync::Mutex<Watcher>>,
}

/// What follows long operations (a progress bar).
type Watcher = Box<dyn FnMut(&crate::operation::Operation) + Send>;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("uri", &self.uri).finish()
    }
}

impl Client {
    /// Connects to `uri`: in-process through `host` (built only when needed) for local URIs,
    /// else to the daemon the URI names.
    pub fn connect(
        uri: &str,
        readonly: bool,
        host: impl FnOnce() -> Result<std::sync::Arc<Host>>,
    ) -> Result<Client> {
        let target = resolve(uri, readonly)?;
        Self::connect_to(&target, host)
    }

    /// Connects to a resolved target.
    pub fn connect_to(
        target: &Target,
        host: impl FnOnce() -> Result<std::sync::Arc<Host>>,
    ) -> Result<Client> {
        let via = match target.endpoint {
            Endpoint::InProcess => Via::Local(host()?.open(&target.driver_uri, target.readonly)?),
            _ => Via::Remote(Remote::connect(target)?),
        };
        Ok(Client {
            via,
            uri: target.uri.clone(),
            watcher: None,
        })
    }

    /// A client over an open in-process connection.
    pub fn local(conn: Connection) -> Client {
        Client {
            uri: conn.uri().to_string(),
            via: Via::Local(conn),
            watcher: None,
        }
    }

    /// The URI as given.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The in-process connection, for what only works where the host runs (a console's
    /// socket, a volume transfer through a local file).
    pub fn local_connection(&self) -> Option<&Connection> {
        match &self.via {
            Via::Local(c) => Some(c),
            Via::Remote(_) => None,
        }
    }

    /// Whether a daemon serves this client.
    pub fn is_remote(&self) -> bool {
        matches!(self.via, Via::Remote(_))
    }

    /// Has long operations through a daemon run asynchronously, telling `watch` how each
    /// one is doing until it ends (a progress bar).
    pub fn watch_operations(
        &mut self,
        watch: impl FnMut(&crate::operation::Operation) + Send + 'static,
    ) {
        self.watcher = Some(std::sync::Mutex::new(Box::new(watch)));
    }

    /// Runs `req` and decodes its answer as `T`.
    pub fn call<T: DeserializeOwned>(&self, req: Request) -> Result<T> {
        let op = req.op();
        let value = match (&self.via, &self.watcher) {
            (Via::Local(conn), _) => {
                crate::dispatch::dispatch(conn, req, &crate::dispatch::Context::local())?
            }
            (Via::Remote(remote), Some(w)) if crate::ops::LONG.contains(&op.as_str()) => {
                let mut w = w.lock().unwrap();
                remote.call_watched(&req, &mut |o| (w)(o))?
            }
            (Via::Remote(remote), _) => remote.call(&req)?,
        };
        serde_json::from_value(value)
            .map_err(|e| Error::failed(format!("unexpected answer to '{op}': {e}")))
    }

    /// Every event from now on.
    pub fn events(&self) -> Result<Receiver<Event>> {
        match &self.via {
            Via::Local(conn) => Ok(conn.state().events.subscribe()),
            Via::Remote(remote) => remote.events(),
        }
    }

    /// The daemon's plugins (`None` in-process, where the caller has the registry).
    pub fn list_plugins(&self) -> Result<Option<Vec<PluginSummary>>> {
        match &self.via {
            Via::Local(_) => Ok(None),
            Via::Remote(_) => self.call(Request::ListPlugins).map(Some),
        }
    }

    /// Attaches to a domain's console: the pty or socket itself in-process, an upgraded
    /// connection (`GET /v1/domains/{key}/console`) through a daemon.
    pub fn console(&self, key: &str, device: Option<&str>) -> Result<crate::console::Console> {
        match &self.via {
            Via::Local(c) => crate::console::Console::local(c.console_endpoint(key, device)?),
            Via::Remote(r) => r.console(key, device),
        }
    }

    /// Copies a local file into a volume (`upload`) or a volume into a local file, through
    /// the daemon as a stream when remote. `progress` hears bytes done and total; an error
    /// from it stops the transfer.
    pub fn vol_transfer(
        &self,
        key: &str,
        pool: Option<&str>,
        file: &Path,
        upload: bool,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<u64> {
        match &self.via {
            Via::Local(c) => c.vol_transfer(key, pool, file, upload, progress),
            Via::Remote(r) => r.vol_transfer(key, pool, file, upload, progress),
        }
    }

    /// The daemon's operations, newest first.
    pub fn operations(&self) -> Result<Vec<crate::operation::Operation>> {
        self.raw_json("GET", "/v1/operations")
    }

    /// Waits up to `timeout_secs` for an operation to finish; returns it as it then is.
    pub fn operation_wait(
        &self,
        id: &str,
        timeout_secs: u64,
    ) -> Result<crate::operation::Operation> {
        self.raw_json(
            "GET",
            &format!(
                "/v1/operations/{}/wait?timeout={timeout_secs}",
                crate::ops::escape(id)
            ),
        )
    }

    /// Asks an operation to stop.
    pub fn operation_cancel(&self, id: &str) -> Result<crate::operation::Operation> {
        self.raw_json(
            "DELETE",
            &format!("/v1/operations/{}", crate::ops::escape(id)),
        )
    }

    /// Asks the daemon for a one-time trust token admitting a client `name` with `role`
    /// (`read-only`, `operator`, `admin`) for `ttl_secs`.
    pub fn trust_token(&self, name: &str, role: &str, ttl_secs: u64) -> Result<serde_json::Value> {
        let body = serde_json::json!({ "name": name, "role": role, "ttl_secs": ttl_secs });
        self.raw_json_body("POST", "/v1/trust/tokens", Some(body))
    }

    /// Trusted clients and pending tokens.
    pub fn trust_list(&self) -> Result<serde_json::Value> {
        self.raw_json("GET", "/v1/trust")
    }

    /// Removes a trusted client by name or fingerprint.
    pub fn trust_remove(&self, key: &str) -> Result<serde_json::Value> {
        self.raw_json(
            "DELETE",
            &format!("/v1/trust/clients/{}", crate::ops::escape(key)),
        )
    }

    fn raw_json<T: DeserializeOwned>(&self, method: &str, target: &str) -> Result<T> {
        self.raw_json_body(method, target, None)
    }

    fn raw_json_body<T: DeserializeOwned>(
        &self,
        method: &str,
        target: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let Via::Remote(remote) = &self.via else {
            return Err(Error::new(
                virtwasm_host::ErrorKind::Unsupported,
                format!(
                    "'{target}' is served by virtwasmd; this connection runs the host in-process (operations finish before they return; trust belongs to a daemon's TLS)"
                ),
            ));
        };
        let body = body.map(|b| serde_json::to_vec(&b).unwrap_or_default());
        let (status, body) = remote.send(method, target, body)?;
        if status != 200 {
            return Err(crate::wire::parse_error(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::failed(format!("unexpected answer from {target}: {e}")))
    }

    /// The node's hardware.
    pub fn node_info(&self) -> Result<NodeInfo> {
        self.call(Request::NodeInfo)
    }
    /// The driver's capabilities.
    pub fn capabilities(&self) -> Result<DriverCapabilities> {
        self.call(Request::Capabilities)
    }
    /// The driver's name and version.
    pub fn driver_version(&self) -> Result<(String, String)> {
        self.call(Request::DriverVersion)
    }
    /// Every domain.
    pub fn list_domains(&self) -> Result<Vec<DomainSummary>> {
        self.call(Request::ListDomains)
    }
    /// One domain by name, uuid or id.
    pub fn domain(&self, key: &str) -> Result<DomainRecord> {
        self.call(Request::Domain { key: key.into() })
    }
    /// `dominfo`'s numbers.
    pub fn domain_info(&self, key: &str) -> Result<DomainInfo> {
        self.call(Request::DomainInfo { key: key.into() })
    }
    /// `domstats`' fields.
    pub fn domain_stats(&self, key: &str) -> Result<Vec<(String, String)>> {
        self.call(Request::DomainStats { key: key.into() })
    }
    /// `domifaddr`.
    pub fn interface_addresses(&self, key: &str, source: &str) -> Result<Vec<GuestInterface>> {
        self.call(Request::InterfaceAddresses {
            key: key.into(),
            source: source.into(),
        })
    }
    /// A domain's XML.
    pub fn domain_xml(&self, key: &str, inactive: bool) -> Result<String> {
        self.call(Request::DomainXml {
            key: key.into(),
            inactive,
        })
    }
    /// Defines a domain from XML; `true` when it replaced a definition.
    pub fn define_xml(&self, xml: &str, validate: bool) -> Result<(DomainDef, bool)> {
        self.call(Request::DefineXml {
            xml: xml.into(),
            validate,
        })
    }
    /// Creates and starts a transient domain.
    pub fn create_xml(&self, xml: &str, validate: bool, paused: bool) -> Result<DomainDef> {
        self.call(Request::CreateXml {
            xml: xml.into(),
            validate,
            paused,
        })
    }
    /// Undefines a domain; returns its name.
    pub fn undefine_with(&self, key: &str, snapshots: bool, managed_save: bool) -> Result<String> {
        self.call(Request::Undefine {
            key: key.into(),
            snapshots,
            managed_save,
        })
    }
    /// Starts a domain.
    pub fn start(&self, key: &str, paused: bool) -> Result<()> {
        self.call(Request::Start {
            key: key.into(),
            paused,
        })
    }
    /// Asks the guest to shut down.
    pub fn shutdown(&self, key: &str, modes: ShutdownModes) -> Result<()> {
        self.call(Request::Shutdown {
            key: key.into(),
            modes: Some(modes),
        })
    }
    /// Asks the guest to reboot.
    pub fn reboot(&self, key: &str, modes: ShutdownModes) -> Result<()> {
        self.call(Request::Reboot {
            key: key.into(),
            modes: Some(modes),
        })
    }
    /// Resets the virtual hardware.
    pub fn reset(&self, key: &str) -> Result<()> {
        self.call(Request::Reset { key: key.into() })
    }
    /// Stops a domain at once.
    pub fn destroy(&self, key: &str, graceful: bool) -> Result<()> {
        self.call(Request::Destroy {
            key: key.into(),
            graceful,
        })
    }
    /// Pauses a domain.
    pub fn suspend(&self, key: &str) -> Result<()> {
        self.call(Request::Suspend { key: key.into() })
    }
    /// Resumes a domain.
    pub fn resume(&self, key: &str) -> Result<()> {
        self.call(Request::Resume { key: key.into() })
    }
    /// Marks a domain to start with the host; returns its name.
    pub fn set_autostart(&self, key: &str, on: bool) -> Result<String> {
        self.call(Request::SetAutostart {
            key: key.into(),
            on,
        })
    }
    /// `vcpucount`.
    pub fn vcpu_count(&self, key: &str) -> Result<VcpuCount> {
        self.call(Request::VcpuCount { key: key.into() })
    }
    /// `setvcpus`.
    pub fn set_vcpus(
        &self,
        key: &str,
        count: u32,
        scope: Option<Scope>,
        maximum: bool,
    ) -> Result<()> {
        self.call(Request::SetVcpus {
            key: key.into(),
            count,
            scope,
            maximum,
        })
    }
    /// `setmem`.
    pub fn set_memory(&self, key: &str, kib: u64, scope: Option<Scope>) -> Result<()> {
        self.call(Request::SetMemory {
            key: key.into(),
            kib,
            scope,
        })
    }
    /// `setmaxmem`.
    pub fn set_max_memory(&self, key: &str, kib: u64, scope: Option<Scope>) -> Result<()> {
        self.call(Request::SetMaxMemory {
            key: key.into(),
            kib,
            scope,
        })
    }
    /// Adds a device.
    pub fn attach_device(&self, key: &str, device: Device, scope: Option<Scope>) -> Result<()> {
        self.call(Request::AttachDevice {
            key: key.into(),
            device,
            scope,
        })
    }
    /// Removes a device; returns the one removed.
    pub fn detach_device(
        &self,
        key: &str,
        selector: &DeviceSelector,
        scope: Option<Scope>,
    ) -> Result<Option<Device>> {
        self.call(Request::DetachDevice {
            key: key.into(),
            selector: selector.clone(),
            scope,
        })
    }
    /// Takes a snapshot.
    pub fn snapshot_create(
        &self,
        key: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<virtwasm_host::bindings::types::SnapshotDef> {
        self.call(Request::SnapshotCreate {
            key: key.into(),
            name: name.map(str::to_string),
            description: description.map(str::to_string),
        })
    }
    /// A domain's snapshots and the current one's name.
    pub fn snapshots(&self, key: &str) -> Result<(Vec<SnapshotRecord>, Option<String>)> {
        self.call(Request::Snapshots { key: key.into() })
    }
    /// Reverts to a snapshot.
    pub fn snapshot_revert(&self, key: &str, name: &str) -> Result<()> {
        self.call(Request::SnapshotRevert {
            key: key.into(),
            name: name.into(),
        })
    }
    /// Deletes a snapshot.
    pub fn snapshot_delete(&self, key: &str, name: &str) -> Result<()> {
        self.call(Request::SnapshotDelete {
            key: key.into(),
            name: name.into(),
        })
    }
    /// Saves a running domain to `path` (on the host that runs it) and stops it.
    pub fn save(&self, key: &str, path: &Path) -> Result<()> {
        self.call(Request::Save {
            key: key.into(),
            path: path_text(path)?,
        })
    }
    /// Restores a domain from a save image; returns its name.
    pub fn restore(&self, path: &Path, paused: bool) -> Result<String> {
        self.call(Request::Restore {
            path: path_text(path)?,
            paused,
        })
    }
    /// Managed save; returns the name.
    pub fn managed_save(&self, key: &str) -> Result<String> {
        self.call(Request::ManagedSave { key: key.into() })
    }
    /// Removes a managed-save image; `true` if there was one.
    pub fn managed_save_remove(&self, key: &str) -> Result<bool> {
        self.call(Request::ManagedSaveRemove { key: key.into() })
    }
    /// Every pool.
    pub fn list_pools(&self) -> Result<Vec<PoolStatus>> {
        self.call(Request::ListPools)
    }
    /// One pool.
    pub fn pool(&self, key: &str) -> Result<PoolStatus> {
        self.call(Request::Pool { key: key.into() })
    }
    /// A pool's XML.
    pub fn pool_xml(&self, key: &str) -> Result<String> {
        self.call(Request::PoolXml { key: key.into() })
    }
    /// Defines a pool from XML.
    pub fn pool_define_xml(&self, xml: &str, validate: bool) -> Result<PoolDef> {
        self.call(Request::PoolDefineXml {
            xml: xml.into(),
            validate,
        })
    }
    /// Defines a pool from a model.
    pub fn pool_define(&self, def: PoolDef, extras: Extras) -> Result<PoolDef> {
        self.call(Request::PoolDefine { def, extras })
    }
    /// Creates and starts a transient pool.
    pub fn pool_create(&self, def: PoolDef, extras: Extras, build: bool) -> Result<PoolDef> {
        self.call(Request::PoolCreate { def, extras, build })
    }
    /// Builds a pool; returns its name.
    pub fn pool_build(&self, key: &str, overwrite: bool) -> Result<String> {
        self.call(Request::PoolBuild {
            key: key.into(),
            overwrite,
        })
    }
    /// Starts a pool; returns its name.
    pub fn pool_start(&self, key: &str) -> Result<String> {
        self.call(Request::PoolStart { key: key.into() })
    }
    /// Stops a pool; returns its name.
    pub fn pool_destroy(&self, key: &str) -> Result<String> {
        self.call(Request::PoolDestroy { key: key.into() })
    }
    /// Deletes a pool's storage; returns its name.
    pub fn pool_delete(&self, key: &str) -> Result<String> {
        self.call(Request::PoolDelete { key: key.into() })
    }
    /// Undefines a pool; returns its name.
    pub fn pool_undefine(&self, key: &str) -> Result<String> {
        self.call(Request::PoolUndefine { key: key.into() })
    }
    /// Refreshes a pool's volumes; returns its name.
    pub fn pool_refresh(&self, key: &str) -> Result<String> {
        self.call(Request::PoolRefresh { key: key.into() })
    }
    /// Marks a pool to start with the host; returns its name.
    pub fn pool_set_autostart(&self, key: &str, on: bool) -> Result<String> {
        self.call(Request::PoolSetAutostart {
            key: key.into(),
            on,
        })
    }
    /// A pool's volumes.
    pub fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeDef>> {
        self.call(Request::ListVolumes { pool: pool.into() })
    }
    /// One volume by name (in `pool`), key or path.
    pub fn volume(&self, key: &str, pool: Option<&str>) -> Result<(PoolRecord, VolumeDef)> {
        self.call(Request::Volume {
            key: key.into(),
            pool: pool.map(str::to_string),
        })
    }
    /// Creates a volume from a model.
    pub fn vol_create(&self, pool: &str, vol: VolumeDef) -> Result<VolumeDef> {
        self.call(Request::VolCreate {
            pool: pool.into(),
            vol,
        })
    }
    /// Creates a volume from XML.
    pub fn vol_create_xml(&self, pool: &str, xml: &str, validate: bool) -> Result<VolumeDef> {
        self.call(Request::VolCreateXml {
            pool: pool.into(),
            xml: xml.into(),
            validate,
        })
    }
    /// Clones a volume.
    pub fn vol_clone(&self, key: &str, name: &str, pool: Option<&str>) -> Result<VolumeDef> {
        self.call(Request::VolClone {
            key: key.into(),
            name: name.into(),
            pool: pool.map(str::to_string),
        })
    }
    /// Deletes a volume; returns its name.
    pub fn vol_delete(&self, key: &str, pool: Option<&str>) -> Result<String> {
        self.call(Request::VolDelete {
            key: key.into(),
            pool: pool.map(str::to_string),
        })
    }
    /// Resizes a volume.
    pub fn vol_resize(
        &self,
        key: &str,
        pool: Option<&str>,
        capacity: u64,
        allow_shrink: bool,
    ) -> Result<VolumeDef> {
        self.call(Request::VolResize {
            key: key.into(),
            pool: pool.map(str::to_string),
            capacity,
            allow_shrink,
        })
    }
    /// Wipes a volume; returns its name.
    pub fn vol_wipe(&self, key: &str, pool: Option<&str>) -> Result<String> {
        self.call(Request::VolWipe {
            key: key.into(),
            pool: pool.map(str::to_string),
        })
    }
    /// A volume and its numbers.
    pub fn vol_info(&self, key: &str, pool: Option<&str>) -> Result<(VolumeDef, VolumeInfo)> {
        self.call(Request::VolInfo {
            key: key.into(),
            pool: pool.map(str::to_string),
        })
    }
    /// A volume's XML.
    pub fn vol_xml(&self, key: &str, pool: Option<&str>) -> Result<String> {
        self.call(Request::VolXml {
            key: key.into(),
            pool: pool.map(str::to_string),
        })
    }
    /// Every network.
    pub fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        self.call(Request::ListNetworks)
    }
    /// One network.
    pub fn network(&self, key: &str) -> Result<NetworkRecord> {
        self.call(Request::Network { key: key.into() })
    }
    /// A network's XML.
    pub fn network_xml(&self, key: &str, inactive: bool) -> Result<String> {
        self.call(Request::NetworkXml {
            key: key.into(),
            inactive,
        })
    }
    /// Defines a network from XML.
    pub fn network_define_xml(&self, xml: &str, validate: bool) -> Result<NetworkDef> {
        self.call(Request::NetworkDefineXml {
            xml: xml.into(),
            validate,
        })
    }
    /// Creates and starts a transient network.
    pub fn network_create_xml(&self, xml: &str, validate: bool) -> Result<NetworkDef> {
        self.call(Request::NetworkCreateXml {
            xml: xml.into(),
            validate,
        })
    }
    /// Starts a network; returns its name.
    pub fn network_start(&self, key: &str) -> Result<String> {
        self.call(Request::NetworkStart { key: key.into() })
    }
    /// Stops a network; returns its name.
    pub fn network_destroy(&self, key: &str) -> Result<String> {
        self.call(Request::NetworkDestroy { key: key.into() })
    }
    /// Undefines a network; returns its name.
    pub fn network_undefine(&self, key: &str) -> Result<String> {
        self.call(Request::NetworkUndefine { key: key.into() })
    }
    /// Marks a network to start with the host; returns its name.
    pub fn network_set_autostart(&self, key: &str, on: bool) -> Result<String> {
        self.call(Request::NetworkSetAutostart {
            key: key.into(),
            on,
        })
    }
    /// `net-update`; returns the network's name.
    #[allow(clippy::too_many_arguments)]
    pub fn network_update(
        &self,
        key: &str,
        command: &str,
        section: &str,
        xml: &str,
        parent_index: usize,
        live: bool,
        config: bool,
    ) -> Result<String> {
        self.call(Request::NetworkUpdate {
            key: key.into(),
            command: command.into(),
            section: section.into(),
            xml: xml.into(),
            parent_index,
            live,
            config,
        })
    }
    /// Migrates a domain to the daemon at `dest` (live when it runs, else its definition;
    /// `offline` moves only the definition). Returns the destination's name for it.
    pub fn migrate(
        &self,
        key: &str,
        dest: &str,
        offline: bool,
        bandwidth_mib: Option<u64>,
    ) -> Result<String> {
        self.call(Request::Migrate {
            key: key.into(),
            dest: dest.into(),
            offline,
            bandwidth_mib,
        })
    }

    /// A network's DHCP leases.
    pub fn network_dhcp_leases(&self, key: &str) -> Result<Vec<DhcpLease>> {
        self.call(Request::NetworkDhcpLeases { key: key.into() })
    }
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(format!("path '{}' is not UTF-8", path.display())))
}
