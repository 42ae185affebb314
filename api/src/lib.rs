//! # virtwasm-api: the management API
//!
//! One vocabulary of operations ([`ops::Request`], with each one's route and permission),
//! the dispatch of a request onto the host ([`dispatch`]), and the [`Client`] that the CLI
//! and other programs use, in-process or over a unix socket, TLS or SSH to `virtwasmd`.
//! The daemon's HTTP front end lives in the `virtwasm-daemon` crate; nothing here depends on
//! how requests are framed except the client's transport.

pub mod client;
pub mod console;
pub mod dispatch;
pub mod endpoint;
pub mod migrate;
pub mod openapi;
pub mod operation;
pub mod ops;
pub mod pki;
pub mod remote;
pub mod tls;
pub mod wire;

pub use client::Client;
pub use ops::{Permission, Request};
