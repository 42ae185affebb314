#![allow(missing_docs)] // generated; the documentation lives in the WIT files
//! The host side of the WIT contract in `wit/`, generated once here (the one `bindgen!` in the
//! workspace: every expansion costs seconds of build time, so it lives in a crate that rarely
//! changes).

wasmtime::component::bindgen!({
    world: "full-driver",
    path: "../wit",
    with: {
        "virtwasm:plugin/process.child": crate::capabilities::process::ChildHandle,
        "virtwasm:plugin/unix-socket.connection": crate::capabilities::socket::SocketHandle,
    },
    imports: { default: trappable },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use exports::virtwasm::plugin::{hypervisor, network, storage};
pub use virtwasm::plugin::types;
