//! What an emulator binary offers (its machine types and device models), learned by running
//! it once with QMP on stdin and cached in a file keyed by the binary's identity (the file the
//! host runs for it, its size, modification time, inode and device), so neither a start nor a
//! daemon start pays for probing, and a replaced or updated binary is probed again.
//!
//! The cache lives in the directory the manifest grants as `{cache_dir}/qemu`, seen by the
//! plugin as [`CACHE_DIR`]. The binary's identity comes from the host (`process.identify`,
//! checked against the same allowlist as running it), so the plugin needs no grant of the
//! directories programs live in; a binary whose identity the host does not give (or a cache
//! the plugin cannot write) is probed on every call rather than cached under a wrong key.

use std::time::UNIX_EPOCH;

use serde_json::{Value, json};
use virtwasm_sdk::host::process;
use virtwasm_sdk::types::ErrorKind;
use virtwasm_sdk::{VerbResult, error, log};

/// Where the plugin sees its cache directory (the manifest's `guest` path for
/// `{cache_dir}/qemu`).
pub const CACHE_DIR: &str = "/cache/qemu";

/// Bump when the cached record changes shape, so old files are probed again. (2: keyed by
/// the host's identity of the binary, with its inode and device.)
const FORMAT: u64 = 2;

/// One machine type, as `query-machines` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// The canonical name (`pc-i440fx-7.2`).
    pub name: String,
    /// Its short alias (`pc`), if any.
    pub alias: Option<String>,
}

/// What one emulator binary offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Emulator {
    /// The program as the definition names it (`qemu-system-x86_64` or a path).
    pub program: String,
    /// The file the host runs for it, when the host told its identity (`/usr/bin/...`).
    pub binary: Option<String>,
    /// QEMU's version, `major.minor.micro`.
    pub version: String,
    /// Its machine types.
    pub machines: Vec<Machine>,
    /// The device models `-device` accepts (non-abstract QOM types implementing `device`),
    /// sorted.
    pub devices: Vec<String>,
}

impl Emulator {
    /// The emulator for messages: the file the host runs when known, else the name.
    pub fn name(&self) -> &str {
        self.binary.as_deref().unwrap_or(&self.program)
    }

    /// Whether `machine` names one of its machine types, by name or alias.
    pub fn has_machine(&self, machine: &str) -> bool {
        self.machines
            .iter()
            .any(|m| m.name == machine || m.alias.as_deref() == Some(machine))
    }

    /// Whether `-device model` exists in this binary.
    pub fn has_device(&self, model: &str) -> bool {
        self.devices
            .binary_search_by(|d| d.as_str().cmp(model))
            .is_ok()
    }

    fn to_json(&self, key: &Identity) -> Value {
        json!({
            "format": FORMAT,
            "path": key.path,
            "size": key.size,
            "mtime_ns": key.mtime_ns.to_string(),
            "inode": key.inode,
            "device": key.device,
            "program": self.program,
            "version": self.version,
            "machines": self.machines.iter().map(|m| json!({ "name": m.name, "alias": m.alias })).collect::<Vec<_>>(),
            "devices": self.devices,
        })
    }

    fn from_json(v: &Value, key: &Identity) -> Option<Emulator> {
        // The file name is a hash of the key: check the key itself, so a collision (or a
        // file from another format) reads as a miss, never as another binary's answer.
        if v["format"].as_u64() != Some(FORMAT)
            || v["path"].as_str() != Some(key.path.as_str())
            || v["size"].as_u64() != Some(key.size)
            || v["mtime_ns"].as_str() != Some(key.mtime_ns.to_string().as_str())
            || v["inode"].as_u64() != Some(key.inode)
            || v["device"].as_u64() != Some(key.device)
        {
            return None;
        }
        Some(Emulator {
            program: v["program"].as_str()?.to_string(),
            binary: Some(key.path.clone()),
            version: v["version"].as_str()?.to_string(),
            machines: v["machines"]
                .as_array()?
                .iter()
                .map(|m| {
                    Some(Machine {
                        name: m["name"].as_str()?.to_string(),
                        alias: m["alias"].as_str().map(str::to_string),
                    })
                })
                .collect::<Option<Vec<_>>>()?,
            devices: v["devices"]
                .as_array()?
                .iter()
                .map(|d| d.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()?,
        })
    }
}

/// A binary's identity: what the cache is keyed by.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    /// The file the host will run, as the host found it (a bare name's match in its program
    /// search path, or the absolute path as given).
    path: String,
    size: u64,
    mtime_ns: i128,
    inode: u64,
    device: u64,
}

impl Identity {
    /// The cache file's name: a stable hash of the identity.
    fn file(&self) -> String {
        let text = format!(
            "{}\0{}\0{}\0{}\0{}",
            self.path, self.size, self.mtime_ns, self.inode, self.device
        );
        format!("{CACHE_DIR}/emulator-{:016x}.json", fnv1a(text.as_bytes()))
    }
}

/// FNV-1a: a hash that stays the same across Rust releases (std's may not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The identity of the binary the host runs for `program`, as the host tells it (the same
/// lookup and allowlist as running it), or why it cannot be had.
fn identify(program: &str) -> Result<Identity, String> {
    let id = process::identify(program).map_err(|e| e.message)?;
    Ok(Identity {
        path: id.path,
        size: id.size,
        mtime_ns: i128::from(id.mtime_seconds) * 1_000_000_000 + i128::from(id.mtime_nanoseconds),
        inode: id.inode,
        device: id.device,
    })
}

/// What `program` offers: from the cache when its identity is known and cached, else by
/// running it (and caching the answer).
pub fn emulator(program: &str) -> VerbResult<Emulator> {
    let key = identify(program);
    if let Ok(key) = &key
        && let Ok(text) = std::fs::read(key.file())
        && let Ok(v) = serde_json::from_slice::<Value>(&text)
        && let Some(e) = Emulator::from_json(&v, key)
    {
        return Ok(e);
    }
    let mut e = probe(program)?;
    e.binary = key.as_ref().ok().map(|k| k.path.clone());
    match &key {
        Ok(key) => {
            if let Err(why) = store(key, &e) {
                log::warn(&format!(
                    "cannot cache what emulator '{program}' offers in {}: {why} (it is probed again next time)",
                    key.file()
                ));
            }
        }
        Err(why) => log::warn(&format!(
            "the host gave no identity of emulator '{program}' ({why}), so what it offers is not cached and is probed on every use"
        )),
    }
    Ok(e)
}

/// Writes the cache file whole: a temporary file renamed into place, so a concurrent reader
/// sees the old file, none, or the new one, never half of one.
fn store(key: &Identity, e: &Emulator) -> std::io::Result<()> {
    let file = key.file();
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = format!("{CACHE_DIR}/.probe.tmp-{nanos}");
    std::fs::write(&tmp, e.to_json(key).to_string())?;
    std::fs::rename(&tmp, &file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    // The same path under an older identity is a binary that was replaced: its answer can
    // never be used again. (Only here, when probing anyway: a hit reads one file.)
    for entry in std::fs::read_dir(CACHE_DIR)?.flatten() {
        let other = format!("{CACHE_DIR}/{}", entry.file_name().to_string_lossy());
        if other == file || !other.ends_with(".json") {
            continue;
        }
        let same_path = std::fs::read(&other)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["path"].as_str() == Some(key.path.as_str()));
        if same_path {
            let _ = std::fs::remove_file(&other);
        }
    }
    Ok(())
}

/// Runs the emulator with no machine and QMP on stdin/stdout: the machine types, the device
/// types, then `quit`. About 0.1 s for qemu-system-x86_64 7.2.
fn probe(program: &str) -> VerbResult<Emulator> {
    let commands = [
        json!({ "execute": "qmp_capabilities" }),
        json!({ "execute": "query-machines" }),
        json!({ "execute": "qom-list-types", "arguments": { "implements": "device", "abstract": false } }),
        json!({ "execute": "quit" }),
    ];
    let stdin: String = commands.iter().map(|c| format!("{c}\n")).collect();
    let args: Vec<String> = [
        "-machine",
        "none",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-qmp",
        "stdio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = process::run(program, &args, stdin.as_bytes(), 30_000).map_err(|e| {
        error(
            e.kind,
            format!("cannot probe emulator '{program}': {}", e.message),
        )
    })?;
    let said = || {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("it printed nothing on stderr")
            .trim()
            .to_string()
    };
    // The answers in order: greeting, then one `return` (or `error`) per command; events
    // (SHUTDOWN at quit) are skipped.
    let messages: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let version = messages
        .iter()
        .find_map(|m| m.get("QMP"))
        .map(|g| {
            let q = &g["version"]["qemu"];
            format!("{}.{}.{}", q["major"], q["minor"], q["micro"])
        })
        .ok_or_else(|| {
            error(
                ErrorKind::OperationFailed,
                format!("emulator '{program}' did not answer on QMP: {}", said()),
            )
        })?;
    let answers: Vec<&Value> = messages
        .iter()
        .filter(|m| m.get("return").is_some() || m.get("error").is_some())
        .collect();
    let answer = |i: usize, what: &str| -> VerbResult<&Value> {
        match answers.get(i) {
            Some(m) if m.get("return").is_some() => Ok(&m["return"]),
            Some(m) => Err(error(
                ErrorKind::OperationFailed,
                format!(
                    "emulator '{program}' refused {what}: {}",
                    m["error"]["desc"].as_str().unwrap_or("no reason given")
                ),
            )),
            None => Err(error(
                ErrorKind::OperationFailed,
                format!("emulator '{program}' gave no answer to {what}: {}", said()),
            )),
        }
    };
    let machines = answer(1, "query-machines")?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Machine {
                name: m["name"].as_str()?.to_string(),
                alias: m["alias"].as_str().map(str::to_string),
            })
        })
        .collect();
    let mut devices: Vec<String> = answer(2, "qom-list-types")?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    devices.sort();
    devices.dedup();
    log::info(&format!(
        "probed emulator '{program}' (QEMU {version}): {} machine types, {} device models",
        answer(1, "query-machines")?.as_array().map_or(0, Vec::len),
        devices.len()
    ));
    Ok(Emulator {
        program: program.to_string(),
        binary: None,
        version,
        machines,
        devices,
    })
}
