//! # virtwasm-host: the minimal host
//!
//! Loads driver plugins (WebAssembly components) under their manifests' grants, owns every
//! definition and runtime record, and serves the management API that the CLI (in-process)
//! and the daemon call. See `ARCHITECTURE.md` at the repository root for the layers.

pub mod bindings;
pub mod capabilities;
pub mod connect;
pub mod devices;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
pub mod graphics;
pub mod hostinfo;
pub mod manifest;
pub mod migrate;
pub mod nodefile;
pub mod objects;
pub mod plugin;
pub mod pool_driver;
pub mod registry;
pub mod savefile;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod tuning;
pub mod unmodelled;
pub mod uri;
pub mod xml;

pub use connect::{Connection, Host, HostConfig};
pub use error::{Error, ErrorKind, Result};
pub use registry::BundledPlugin;
