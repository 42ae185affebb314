//! Live migration between two daemons (libvirt's peer-to-peer mode): whoever runs the
//! source's host (its daemon, or an in-process client) contacts the destination daemon,
//! which prepares a paused guest waiting for the stream; the source streams it with
//! progress; then the destination resumes its copy and the source ends its own. On any
//! failure the destination discards its copy and the source keeps running.

use virtwasm_host::{Connection, Error, ErrorKind, Result};

use crate::client::Client;
use crate::dispatch::Context;
use crate::endpoint::{Endpoint, resolve};
use crate::ops::Request;

/// Migrates `key` to the daemon at `dest`; returns the domain's name there.
pub fn migrate(
    conn: &Connection,
    key: &str,
    dest: &str,
    offline: bool,
    bandwidth_mib: Option<u64>,
    ctx: &Context,
) -> Result<String> {
    let target = resolve(dest, false)?;
    let listen = match &target.endpoint {
        Endpoint::InProcess => {
            return Err(Error::invalid(format!(
                "'{dest}' runs in-process; migration needs the destination's daemon (DRIVER+tls://HOST/system, DRIVER+ssh://..., DRIVER+unix:///system?socket=...)"
            )));
        }
        Endpoint::Tls { host, .. } | Endpoint::Tcp { host, .. } | Endpoint::Ssh { host, .. } => {
            host.clone()
        }
        Endpoint::Unix { .. } | Endpoint::TlsPinned { .. } => "127.0.0.1".to_string(),
    };
    let peer = Client::connect_to(&target, || {
        Err(Error::internal(
            "a migration destination is never in-process",
        ))
    })
    .map_err(|e| {
        Error::new(
            e.kind,
            format!("cannot reach the destination {dest}: {}", e.message),
        )
    })?;
    let rec = conn.domain(key)?;
    let name = rec.def.name.clone();
    if offline || !rec.is_active() {
        // The definition only: the destination defines it; the source keeps its own.
        let xml = conn.domain_xml(key, true)?;
        peer.define_xml(&xml, false)?;
        return Ok(name);
    }
    let xml = conn.domain_xml(key, false)?;
    let prepared: serde_json::Value = peer.call(Request::MigratePrepare { xml, listen })?;
    let uri = prepared["uri"]
        .as_str()
        .ok_or_else(|| Error::failed("the destination's answer to prepare lacks a uri"))?
        .to_string();
    let there = prepared["name"].as_str().unwrap_or(&name).to_string();
    let streamed = conn.migrate_perform(key, &uri, bandwidth_mib, &mut |p| {
        (ctx.progress)(p.transferred_bytes, p.total_bytes.max(p.transferred_bytes))
    });
    match streamed {
        Ok(()) => {
            if let Err(e) = peer.call::<()>(Request::MigrateFinish {
                key: there.clone(),
                success: true,
            }) {
                // The destination could not resume: discard its copy, and the guest goes on
                // here.
                let _ = peer.call::<()>(Request::MigrateFinish {
                    key: there.clone(),
                    success: false,
                });
                let _ = conn.migrate_confirm(key, false);
                return Err(Error::new(
                    ErrorKind::OperationFailed,
                    format!(
                        "the destination could not resume '{there}': {}; it keeps running here",
                        e.message
                    ),
                ));
            }
            conn.migrate_confirm(key, true)?;
            Ok(there)
        }
        Err(e) => {
            let _ = peer.call::<()>(Request::MigrateFinish {
                key: there,
                success: false,
            });
            conn.migrate_confirm(key, false)?;
            Err(e)
        }
    }
}
