//! A volume's data as a stream: `GET /v1/volumes/{key}/data` downloads it and
//! `PUT` uploads into it, each as a cancellable operation with byte progress. The bytes
//! never sit in memory whole, so the request-size cap does not apply.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request as HttpRequest, Response};
use tokio::sync::mpsc;
use virtwasm_api::Permission;
use virtwasm_api::ops::ObjectKind;
use virtwasm_api::wire::ChannelBody;
use virtwasm_host::objects::VolumeData;
use virtwasm_host::{Error, Result};

use crate::access::authorize;
use crate::server::{Daemon, Peer, Reply, error_response, json_response};

/// Serves one transfer; `req` is a `GET` (download) or `PUT` (upload).
#[allow(clippy::too_many_arguments)]
pub async fn transfer(
    daemon: Arc<Daemon>,
    peer: Arc<Peer>,
    uri: &str,
    readonly: bool,
    key: String,
    pool: Option<String>,
    req: HttpRequest<Incoming>,
    _asynchronous: bool,
) -> Response<Reply> {
    let upload = req.method() == hyper::Method::PUT;
    let (op, permission) = if upload {
        ("vol-upload", Permission::Write)
    } else {
        ("vol-download", Permission::Read)
    };
    let d = daemon.clone();
    let p = peer.clone();
    let uri = uri.to_string();
    let opened = tokio::task::spawn_blocking(move || -> Result<VolumeData> {
        let conn = d.open(&uri, readonly)?;
        let (_, vol) = conn.volume(&key, pool.as_deref())?;
        authorize(
            &d.access(),
            &p.identity,
            readonly,
            op,
            ObjectKind::Volume,
            permission,
            Some(&vol.name),
        )?;
        conn.vol_open(&key, pool.as_deref(), upload)
    })
    .await
    .unwrap_or_else(|e| Err(Error::internal(format!("transfer handler failed: {e}"))));
    let data = match opened {
        Ok(d) => d,
        Err(e) => return error_response(&e),
    };
    let entry = daemon.operations.start(
        op,
        Some(data.name.clone()),
        peer.identity.describe(),
        peer.identity.key(),
        true,
        (ObjectKind::Volume, permission),
    );
    let id_header = |mut r: Response<Reply>| {
        if let Ok(v) = entry.snapshot().id.parse() {
            r.headers_mut().insert("x-virtwasm-operation", v);
        }
        r
    };
    if !upload {
        let total = data.len;
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let e = entry.clone();
        // A client that stops reading would hold this thread forever: it gets the idle
        // timeout to take each chunk.
        let stall = Duration::from_secs(daemon.config.limits.idle_timeout_secs.max(1));
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut file = data.file;
            let mut buf = vec![0u8; 1 << 20];
            let mut done = 0u64;
            let outcome = loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break Ok(done),
                    Ok(n) => n,
                    Err(err) => break Err(Error::io("cannot read", &data.path, err)),
                };
                // A client gone or a cancel stops the stream short; the client sees fewer
                // bytes than the Content-Length promised, never a silently short file.
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                match runtime.block_on(tx.send_timeout(chunk, stall)) {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        break Err(Error::failed(format!(
                            "the client took no data for {} s ([limits] idle_timeout_secs)",
                            stall.as_secs()
                        )));
                    }
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                        break Err(Error::failed("the client went away".to_string()));
                    }
                }
                done += n as u64;
                if let Err(err) = e.progress(done, total, "bytes") {
                    break Err(err);
                }
            };
            e.finish(&outcome.map(|n| serde_json::json!(n)));
        });
        let r = Response::builder()
            .status(200)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(Reply::Stream(ChannelBody {
                rx,
                len: Some(total),
            }))
            .expect("static headers");
        return id_header(r);
    }
    let total = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    if data.capacity > 0 && total > data.capacity {
        let e = Error::invalid(format!(
            "an upload of {total} bytes does not fit volume '{}' (capacity {} bytes)",
            data.name, data.capacity
        ));
        entry.finish(&Err(e.clone()));
        return id_header(json_response(413, virtwasm_api::wire::error_body(&e)));
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let e = entry.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut file = data.file;
        let mut done = 0u64;
        let capacity = data.capacity;
        while let Some(chunk) = rx.blocking_recv() {
            // A body without a length (chunked) is held to the capacity as it arrives.
            if capacity > 0 && done + chunk.len() as u64 > capacity {
                return Err(Error::invalid(format!(
                    "the upload is larger than volume '{}' (capacity {capacity} bytes)",
                    data.name
                )));
            }
            file.write_all(&chunk)
                .map_err(|err| Error::io("cannot write", &data.path, err))?;
            done += chunk.len() as u64;
            e.progress(done, total, "bytes")?;
        }
        file.sync_all()
            .map_err(|err| Error::io("cannot sync", &data.path, err))?;
        if total > 0 && done != total {
            return Err(Error::failed(format!(
                "the upload ended after {done} of {total} bytes"
            )));
        }
        Ok(done)
    });
    let mut body = req.into_body();
    let mut read_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(chunk) = f.into_data()
                    && tx.send(chunk).await.is_err()
                {
                    break; // the writer stopped: its error says why
                }
            }
            Err(err) => {
                read_error = Some(Error::failed(format!("the upload's body broke off: {err}")));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .unwrap_or_else(|err| Err(Error::internal(format!("upload writer failed: {err}"))));
    let outcome = match (written, read_error) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(e)) => Err(e),
        (Ok(n), None) => Ok(n),
    };
    entry.finish(&outcome.clone().map(|n| serde_json::json!(n)));
    id_header(match outcome {
        Ok(n) => json_response(200, serde_json::to_vec(&n).unwrap_or_default()),
        Err(e) => error_response(&e),
    })
}
