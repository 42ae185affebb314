//! libvirt's own QEMU corpus (`../shared/conformance/libvirt/qemuxml2argv`: domain XML
//! inputs, each with the argv libvirt 9.6 expects) through virtwasm's QEMU driver and a real
//! QEMU under TCG, as a scored report.
//!
//! For each `NAME.xml` one daemon (`qemu:///system` under a temporary root) is asked to
//! `define` it; an accepted domain is started with `start --paused` (QEMU runs with `-S`),
//! its monitor must answer QMP `query-status` (`prelaunch` or `paused`), the argv QEMU really
//! runs with is read from `/proc/PID/cmdline` (the pid from the daemon's runtime record,
//! `GET /v1/domains/NAME`), then the domain is destroyed and undefined. That argv is compared
//! with libvirt's expected one (`NAME.x86_64-latest.args`, else `NAME.args`) on three
//! points: memory (`-m`), vCPUs (`-smp`: current and maximum), and the multiset of device
//! drivers (the driver of each `-device`, whether written `drv,k=v` or as JSON).
//!
//! The inputs are rewritten before `define`, so that what is tested is virtwasm's
//! XML → argv → QEMU, not this host's files or hardware:
//! - `<domain type='kvm'>` becomes `type='qemu'`: KVM is not usable here, TCG is.
//! - an `<emulator>` naming a program that does not exist becomes `qemu-system-x86_64`.
//! - a domain refused only for its `i686` guest architecture (the driver runs x86_64) is
//!   recorded with that refusal, then retried with `arch='x86_64'` and
//!   `qemu-system-x86_64`, so its devices are measured too; the report counts both.
//! - each disk's `<source file=…>` becomes a fresh 1 MiB sparse file in the temporary
//!   directory (a minimal empty qcow2 image, written here, where the disk's driver says
//!   `qcow2`: QEMU refuses a raw file opened as qcow2, and `qemu-img` may be absent);
//!   each `<source dev=…>` (a block disk, cdrom or floppy: `/dev/HostVG/…`) becomes a
//!   character device node equal to `/dev/null` in that directory, which QEMU's
//!   `host_device` driver opens as it would a block device; but a block disk holding an
//!   image (`<driver type='qcow2'>`), opened with O_DIRECT (`cache='none'`/`'directsync'`,
//!   which a character device refuses), or run without the privilege to create a device
//!   node becomes a `type='file'` disk on such a temporary image: same device model, `file`
//!   instead of `host_device` underneath. `type='dir'` and network sources are left as written.
//! - `<kernel>`, `<initrd>`, `<cmdline>` and `<dtb>` are dropped (QEMU refuses a missing or
//!   empty kernel, and `-append` without `-kernel`).
//! - a `file`, `pipe` or `unix` character device's `<source path=…>` (`/tmp/…`) moves into
//!   the temporary directory; for a unix socket in `connect` mode the test listens there
//!   first, as the peer libvirt's test assumes. `type='dev'` (a host tty) is left as written.
//! - a display's listen address that is neither loopback nor a wildcard (`2001:1:2:…`, an
//!   address of libvirt's imagined host) becomes `127.0.0.1`: QEMU cannot bind an address
//!   this host lacks. The daemon lets displays listen on the wildcards as well (its
//!   `[displays]` default is loopback only).
//!
//! Comparison rules, lenient on what libvirt adds by itself rather than from the XML:
//! the default USB host controllers (`piix3-usb-uhci`, `-usb`, the ich9 companions,
//! `qemu-xhci`), the default video adapters (`VGA`, `cirrus-vga`) and `pcie-root-port`
//! (libvirt's automatic hot-plug slots on q35) are left out of both multisets and shown as
//! ignored. `-serial chardev:ID`, which virtwasm writes, counts as `isa-serial`: it is the
//! same device, created by QEMU. A device named by one of QEMU's aliases (`lsi`) counts under
//! its own name (`lsi53c895a`), as `qemu-system-x86_64 -device help` lists them. Devices virtwasm adds to every guest by its own choice
//! (`pvpanic` on pc and q35, for crash detection by default) are tolerated once per guest
//! where libvirt's argv lacks them (libvirt writes one only for `<panic model='isa'/>`); the
//! report says how often. One libvirt expects and virtwasm lacks still counts as missing.
//!
//! The scores are the report; the test fails only if an accepted domain does not start in
//! QEMU (with QEMU's words), or if a refusal does not say what it refuses. A refusal may come
//! at `define` or, for configurations the driver cannot express on a command line, at
//! `start` before QEMU runs; both count as refusals. Without the corpus the test prints
//! `SKIPPED` and passes; the corpus is never copied into the repository.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Daemon;

/// Where the corpus lives: `../shared` beside the repository.
const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/libvirt/qemuxml2argv"
);

/// After this long, files not yet run are reported as not run rather than stretching the
/// test past its budget (a paused start takes well under a second).
const BUDGET: Duration = Duration::from_secs(150);

/// Devices libvirt adds by itself (defaults of the machine type), left out of the comparison.
const IMPLICIT: &[&str] = &[
    "piix3-usb-uhci",
    "ich9-usb-ehci1",
    "ich9-usb-uhci1",
    "ich9-usb-uhci2",
    "ich9-usb-uhci3",
    "qemu-xhci",
    "VGA",
    "cirrus-vga",
    "pcie-root-port",
];

/// Devices virtwasm's QEMU driver adds to every guest by its own choice, with why: one of
/// each in virtwasm's argv beyond libvirt's is tolerated (and counted in the report).
const VIRTWASM_ADDS: &[(&str, &str)] = &[(
    "pvpanic",
    "crash detection by default on pc and q35 (libvirt: only for <panic model='isa'/>)",
)];

// ------------------------------------------------------------------ argv

/// Splits a libvirt `.args` file as the shell would: backslash-newline continues a line,
/// single quotes keep JSON whole, a backslash escapes one character.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(n) => {
                    in_word = true;
                    cur.push(n);
                }
            },
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// What is compared of a command line.
#[derive(Debug, Default)]
struct Summary {
    /// `-m`, in KiB.
    memory_kib: Option<u64>,
    /// `-smp`: (current, maximum).
    vcpus: Option<(u32, u32)>,
    /// The device drivers, sorted.
    devices: Vec<String>,
}

/// `-m` in KiB: `N` (MiB), `size=N[kKmMgGtT]`, with optional `,slots=…,maxmem=…`.
fn memory_kib(value: &str) -> Option<u64> {
    let first = value.split(',').next()?;
    let size = first.strip_prefix("size=").unwrap_or(first);
    let split = size
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(size.len());
    let n: u64 = size[..split].parse().ok()?;
    Some(match &size[split..] {
        "k" | "K" => n,
        "" | "m" | "M" => n * 1024,
        "g" | "G" => n * 1024 * 1024,
        "t" | "T" => n * 1024 * 1024 * 1024,
        _ => return None,
    })
}

/// `-smp N[,maxcpus=M][,…]` as (current, maximum).
fn smp(value: &str) -> Option<(u32, u32)> {
    let mut parts = value.split(',');
    let first = parts.next()?;
    let mut current = first.strip_prefix("cpus=").unwrap_or(first).parse().ok();
    let mut max = None;
    for p in parts {
        if let Some(v) = p.strip_prefix("maxcpus=") {
            max = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("cpus=") {
            current = v.parse().ok();
        }
    }
    let current = current?;
    Some((current, max.unwrap_or(current)))
}

/// QEMU's own device aliases (`lsi` for `lsi53c895a`), from `-device help`: the same
/// device under two names counts once.
fn device_aliases() -> &'static std::collections::HashMap<String, String> {
    static ALIASES: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    ALIASES.get_or_init(|| {
        let out = std::process::Command::new("qemu-system-x86_64")
            .args(["-device", "help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let quoted = |line: &str, key: &str| {
            let rest = &line[line.find(&format!("{key} \""))? + key.len() + 2..];
            Some(rest[..rest.find('"')?].to_string())
        };
        out.lines()
            .filter_map(|l| Some((quoted(l, "alias")?, quoted(l, "name")?)))
            .collect()
    })
}

/// The driver of one `-device` value (`{"driver":"x",…}` or `x,k=v,…`), by QEMU's own name
/// for it rather than an alias.
fn device_driver(value: &str) -> String {
    let name = if value.starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v) if v["driver"].is_string() => {
                v["driver"].as_str().unwrap_or_default().to_string()
            }
            _ => return format!("<unparsed {value}>"),
        }
    } else {
        value.split(',').next().unwrap_or_default().to_string()
    };
    device_aliases().get(&name).cloned().unwrap_or(name)
}

fn summarize(argv: &[String]) -> Summary {
    let mut s = Summary::default();
    let mut it = argv.iter();
    while let Some(opt) = it.next() {
        match opt.as_str() {
            "-m" => s.memory_kib = it.next().and_then(|v| memory_kib(v)),
            "-smp" => s.vcpus = it.next().and_then(|v| smp(v)),
            "-device" => {
                if let Some(v) = it.next() {
                    s.devices.push(device_driver(v));
                }
            }
            // QEMU makes an isa-serial for each -serial.
            "-serial" => {
                let value = it.next();
                if value.is_some_and(|v| v != "none") {
                    s.devices.push("isa-serial".into());
                }
            }
            // Old libvirt's spelling of the default USB controller.
            "-usb" => s.devices.push("piix3-usb-uhci".into()),
            _ => {}
        }
    }
    s.devices.sort();
    s
}

/// The devices of `a` not in `b`, as a multiset difference.
fn minus(a: &[String], b: &[String]) -> Vec<String> {
    let mut left = b.to_vec();
    let mut out = Vec::new();
    for d in a {
        match left.iter().position(|x| x == d) {
            Some(i) => {
                left.remove(i);
            }
            None => out.push(d.clone()),
        }
    }
    out
}

/// Compares virtwasm's device drivers with libvirt's, leaving out [`IMPLICIT`] defaults on
/// both sides: (missing from virtwasm's, extra in virtwasm's, virtwasm's own additions
/// tolerated). One of each [`VIRTWASM_ADDS`] beyond what libvirt expects is tolerated, not
/// extra; one libvirt expects and virtwasm lacks is still missing.
fn compare_devices(ours: &[String], theirs: &[String]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let keep = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|d| !IMPLICIT.contains(&d.as_str()))
            .cloned()
            .collect()
    };
    let (mine, libvirts) = (keep(ours), keep(theirs));
    let missing = minus(&libvirts, &mine);
    let mut extra = minus(&mine, &libvirts);
    let mut tolerated = Vec::new();
    for (added, _) in VIRTWASM_ADDS {
        if let Some(i) = extra.iter().position(|d| d == added) {
            tolerated.push(extra.remove(i));
        }
    }
    (missing, extra, tolerated)
}

#[test]
fn virtwasms_own_pvpanic_is_tolerated_once_and_a_missing_one_still_counts() {
    let v = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Added by virtwasm where libvirt's argv has none: tolerated, not extra.
    assert_eq!(
        compare_devices(&v(&["pvpanic", "virtio-blk-pci"]), &v(&["virtio-blk-pci"])),
        (v(&[]), v(&[]), v(&["pvpanic"]))
    );
    // Asked for by the XML (<panic model='isa'/>): both have it, nothing to tolerate.
    assert_eq!(
        compare_devices(&v(&["pvpanic"]), &v(&["pvpanic"])),
        (v(&[]), v(&[]), v(&[]))
    );
    // Only one per guest is virtwasm's own: a second is a real difference.
    assert_eq!(
        compare_devices(&v(&["pvpanic", "pvpanic"]), &v(&[])),
        (v(&[]), v(&["pvpanic"]), v(&["pvpanic"]))
    );
    // One libvirt expects and virtwasm lacks is missing, and other extras stay extra.
    assert_eq!(
        compare_devices(&v(&["isa-serial", "VGA"]), &v(&["pvpanic", "cirrus-vga"])),
        (v(&["pvpanic"]), v(&["isa-serial"]), v(&[]))
    );
}

// ------------------------------------------------------------------ XML rewriting

/// The byte range of attribute `name`'s value in the start tag `tag`.
fn attr_range(tag: &str, name: &str) -> Option<(usize, usize)> {
    let key = format!("{name}=");
    let mut from = 0;
    while let Some(i) = tag[from..].find(&key) {
        let at = from + i;
        let before = tag[..at].chars().last();
        if before.is_some_and(char::is_whitespace) {
            let q = tag[at + key.len()..].chars().next()?;
            if q == '\'' || q == '"' {
                let start = at + key.len() + 1;
                let end = start + tag[start..].find(q)?;
                return Some((start, end));
            }
        }
        from = at + key.len();
    }
    None
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    attr_range(tag, name).map(|(s, e)| &tag[s..e])
}

/// The start tag (`<name …>` or `<name …/>`) beginning at `at`.
fn start_tag(xml: &str, at: usize) -> &str {
    let end = xml[at..].find('>').map(|e| at + e + 1).unwrap_or(xml.len());
    &xml[at..end]
}

/// Every element `<name …>…</name>` (or `<name …/>`): (start, end) byte ranges.
fn elements(xml: &str, name: &str) -> Vec<(usize, usize)> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = xml[from..].find(&open) {
        let at = from + i;
        let next = xml[at + open.len()..].chars().next();
        if !next.is_some_and(|c| c.is_whitespace() || c == '>' || c == '/') {
            from = at + open.len();
            continue;
        }
        let tag = start_tag(xml, at);
        let end = if tag.ends_with("/>") {
            at + tag.len()
        } else {
            xml[at..]
                .find(&close)
                .map(|e| at + e + close.len())
                .unwrap_or(xml.len())
        };
        out.push((at, end));
        from = end;
    }
    out
}

/// Replaces attribute `name` of the first `<source …>` inside `block` with `value`; returns
/// the old value.
fn set_source_attr(block: &mut String, name: &str, value: &str) -> Option<String> {
    let at = block.find("<source")?;
    let tag = start_tag(block, at).to_string();
    let (s, e) = attr_range(&tag, name)?;
    let old = tag[s..e].to_string();
    block.replace_range(at + s..at + e, value);
    Some(old)
}

/// A minimal empty qcow2 (version 2, 64 KiB clusters, 1 MiB virtual): header, refcount
/// table, one refcount block covering the four clusters, an empty L1 table.
fn empty_qcow2() -> Vec<u8> {
    let mut b = vec![0u8; 0x40000];
    let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, b"QFI\xfb");
    put(4, &2u32.to_be_bytes()); // version
    put(20, &16u32.to_be_bytes()); // cluster_bits
    put(24, &(1u64 << 20).to_be_bytes()); // size
    put(36, &1u32.to_be_bytes()); // l1_size
    put(40, &0x30000u64.to_be_bytes()); // l1_table_offset
    put(48, &0x10000u64.to_be_bytes()); // refcount_table_offset
    put(56, &1u32.to_be_bytes()); // refcount_table_clusters
    put(0x10000, &0x20000u64.to_be_bytes()); // refcount table -> block
    for i in 0..4 {
        put(0x20000 + 2 * i, &1u16.to_be_bytes());
    }
    b
}

/// A character device node equal to `/dev/null` at `path` (QEMU's `host_device` wants a
/// block or character device); `None` without the privilege to create one.
fn null_device_node(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; makedev(1, 3) is /dev/null's device number.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    (rc == 0).then(|| path.display().to_string())
}

/// One corpus file made runnable here.
struct Prepared {
    xml: String,
    name: String,
    rewrites: Vec<String>,
    /// Listening sockets for `connect`-mode unix chardevs, held while the domain runs.
    listeners: Vec<UnixListener>,
}

/// Applies the rewrites the doc comment lists; files go in `dir`, named after `tag`.
fn prepare(original: &str, dir: &Path, tag: &str) -> Prepared {
    let mut xml = original.to_string();
    let mut rewrites = Vec::new();
    let mut listeners = Vec::new();

    let root = start_tag(&xml, xml.find("<domain").unwrap_or(0)).to_string();
    if attr(&root, "type") == Some("kvm") {
        let at = xml.find("<domain").unwrap();
        let (s, e) = attr_range(&root, "type").unwrap();
        xml.replace_range(at + s..at + e, "qemu");
        rewrites.push("type kvm→qemu".into());
    }

    if let Some(&(s, e)) = elements(&xml, "emulator").first() {
        let inner = &xml[s..e];
        let path = inner
            .trim_start_matches("<emulator>")
            .trim_end_matches("</emulator>")
            .trim()
            .to_string();
        if !Path::new(&path).exists() {
            xml.replace_range(s..e, "<emulator>qemu-system-x86_64</emulator>");
            rewrites.push(format!("emulator {path}→qemu-system-x86_64"));
        }
    }

    for name in ["kernel", "initrd", "cmdline", "dtb"] {
        for &(s, e) in elements(&xml, name).iter().rev() {
            xml.replace_range(s..e, "");
            rewrites.push(format!("dropped <{name}>"));
        }
    }

    // Disks, last first so earlier ranges stay valid.
    let disks = elements(&xml, "disk");
    for (i, &(s, e)) in disks.iter().enumerate().rev() {
        let mut block = xml[s..e].to_string();
        let head = start_tag(&block, 0).to_string();
        let driver = block
            .find("<driver")
            .map(|at| start_tag(&block, at).to_string())
            .unwrap_or_default();
        let format = attr(&driver, "type").map(str::to_string);
        let mut kind = attr(&head, "type").unwrap_or("file").to_string();
        // A null device holds no image and refuses O_DIRECT: such a block disk becomes a
        // file disk (same device model, `file` instead of `host_device` underneath).
        let image = format.as_deref().is_some_and(|f| f != "raw");
        let direct = matches!(attr(&driver, "cache"), Some("none" | "directsync"));
        let node = dir.join(format!("{tag}-blk{i}"));
        let mut null_node = None;
        let as_file = if kind != "block" || !block.contains("<source") {
            None
        } else if image {
            Some("holds an image")
        } else if direct {
            Some("O_DIRECT")
        } else {
            null_node = null_device_node(&node);
            // Not /dev/null itself: two disks on one file would fight over QEMU's locks.
            null_node
                .is_none()
                .then_some("no privilege to create a device node")
        };
        if let Some(why) = as_file {
            let (ts, te) = attr_range(&head, "type").unwrap();
            block.replace_range(ts..te, "file");
            let at = block.find("<source").unwrap();
            let tag = start_tag(&block, at).to_string();
            if let Some((vs, _)) = attr_range(&tag, "dev") {
                // `dev='…'` becomes `file='…'`: the name ends two bytes before the value.
                block.replace_range(at + vs - 5..at + vs - 2, "file");
            }
            rewrites.push(format!("disk type block→file ({why})"));
            kind = "file".into();
        }
        match kind.as_str() {
            "file" => {
                let path = dir.join(format!("{tag}-disk{i}.img"));
                if format.as_deref() == Some("qcow2") {
                    std::fs::write(&path, empty_qcow2()).unwrap();
                } else {
                    let f = std::fs::File::create(&path).unwrap();
                    f.set_len(1 << 20).unwrap();
                }
                if let Some(old) = set_source_attr(&mut block, "file", &path.display().to_string())
                {
                    rewrites.push(format!("disk {old}→temp file"));
                }
            }
            "block" => {
                let node = null_node.unwrap_or_default();
                if let Some(old) = set_source_attr(&mut block, "dev", &node) {
                    rewrites.push(format!("disk {old}→null device"));
                }
            }
            _ => {}
        }
        xml.replace_range(s..e, &block);
    }

    // Character devices with a path on this host.
    for kind in ["serial", "console", "channel", "parallel"] {
        let found = elements(&xml, kind);
        for (i, &(s, e)) in found.iter().enumerate().rev() {
            let mut block = xml[s..e].to_string();
            let head = start_tag(&block, 0).to_string();
            let ty = attr(&head, "type").unwrap_or("pty").to_string();
            if !matches!(ty.as_str(), "file" | "pipe" | "unix") {
                continue;
            }
            let path = dir.join(format!("{tag}-{kind}{i}.{ty}"));
            let connect = block
                .find("<source")
                .and_then(|at| attr(start_tag(&block, at), "mode"))
                == Some("connect");
            if let Some(old) = set_source_attr(&mut block, "path", &path.display().to_string()) {
                rewrites.push(format!("{kind} {old}→temp {ty}"));
                if ty == "unix" && connect {
                    listeners.push(UnixListener::bind(&path).unwrap());
                }
            }
            xml.replace_range(s..e, &block);
        }
    }

    // Display addresses this host has: in the listen attribute and in <listen address=…>.
    for (s, e) in elements(&xml, "graphics").into_iter().rev() {
        let mut block = xml[s..e].to_string();
        let mut at = 0;
        while let Some(i) = block[at..].find('<') {
            let tag_at = at + i;
            let tag = start_tag(&block, tag_at).to_string();
            for name in ["listen", "address"] {
                if let Some((vs, ve)) = attr_range(&tag, name)
                    && !matches!(&tag[vs..ve], "127.0.0.1" | "::1" | "0.0.0.0" | "::")
                    && tag[vs..ve].parse::<std::net::IpAddr>().is_ok()
                {
                    rewrites.push(format!("display address {}→127.0.0.1", &tag[vs..ve]));
                    block.replace_range(tag_at + vs..tag_at + ve, "127.0.0.1");
                    break;
                }
            }
            at = tag_at + 1;
        }
        xml.replace_range(s..e, &block);
    }

    let name = elements(&xml, "name")
        .first()
        .map(|&(s, e)| {
            xml[s..e]
                .trim_start_matches("<name>")
                .trim_end_matches("</name>")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    Prepared {
        xml,
        name,
        rewrites,
        listeners,
    }
}

/// The i686 → x86_64 retry: the architecture and an emulator able to run it.
fn as_x86_64(xml: &str) -> String {
    let mut out = xml.replace("arch='i686'", "arch='x86_64'");
    out = out.replace("arch=\"i686\"", "arch=\"x86_64\"");
    if let Some(&(s, e)) = elements(&out, "emulator").first() {
        out.replace_range(s..e, "<emulator>qemu-system-x86_64</emulator>");
    }
    out
}

// ------------------------------------------------------------------ the daemon and QEMU

/// The last `error: …` line of a failed command, without the prefix.
fn reason(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: ").to_string())
        .unwrap_or_default()
}

/// Does a refusal say what it refuses? It must name the unsupported thing (an element,
/// attribute or value of the file) or say "unsupported".
fn names_something(msg: &str, xml: &str) -> bool {
    if msg.trim().is_empty() {
        return false;
    }
    if msg.contains("unsupported") || msg.contains('\'') || msg.contains('<') {
        return true;
    }
    // An element name of the file (at least 3 letters, so "os" does not count).
    let mut from = 0;
    while let Some(i) = xml[from..].find('<') {
        let at = from + i + 1;
        let name: String = xml[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if name.len() >= 3 && msg.contains(&name) {
            return true;
        }
        from = at;
    }
    false
}

/// `GET /v1/domains/NAME` on the daemon's socket: the host's record of the domain.
fn domain_record(socket: &Path, name: &str) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/domains/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-virtwasm-uri: qemu:///system\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {body}", head.lines().next().unwrap_or("")));
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The first `driver_data` anywhere in the record, parsed (it is JSON in a string).
fn driver_data(v: &serde_json::Value) -> Option<serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(d) = m.get("driver_data") {
                return match d {
                    serde_json::Value::String(s) => serde_json::from_str(s).ok(),
                    other => Some(other.clone()),
                };
            }
            m.values().find_map(driver_data)
        }
        serde_json::Value::Array(a) => a.iter().find_map(driver_data),
        _ => None,
    }
}

/// Asks QEMU's monitor `query-status` (after the capabilities handshake); its status.
fn qmp_status(monitor: &str) -> Result<String, String> {
    let s = UnixStream::connect(monitor).map_err(|e| format!("connect {monitor}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut answer = |r: &mut BufReader<UnixStream>| -> Result<serde_json::Value, String> {
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("the monitor closed".into());
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
            // Events may come between a command and its answer.
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    };
    let greeting = answer(&mut r)?;
    if greeting.get("QMP").is_none() {
        return Err(format!("no QMP greeting: {greeting}"));
    }
    writeln!(w, r#"{{"execute":"qmp_capabilities"}}"#).map_err(|e| e.to_string())?;
    answer(&mut r)?;
    writeln!(w, r#"{{"execute":"query-status"}}"#).map_err(|e| e.to_string())?;
    let v = answer(&mut r)?;
    v["return"]["status"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("query-status answered {v}"))
}

/// What happened to one file.
#[derive(Default)]
struct Outcome {
    file: String,
    rewrites: Vec<String>,
    /// The i686 refusal before the retry as x86_64.
    i686_refusal: Option<String>,
    /// `Some(reason)` when refused, with where ("define" or "start").
    refused: Option<(String, String)>,
    /// QEMU's (or the monitor's) words when an accepted domain did not start.
    qemu_error: Option<String>,
    started: bool,
    memory: Option<bool>,
    vcpus: Option<bool>,
    devices: Option<bool>,
    /// virtwasm's own additions ([`VIRTWASM_ADDS`]) left out of the device comparison.
    tolerated: Vec<String>,
    detail: Vec<String>,
    xml: String,
}

/// Defines, starts paused, checks QMP, reads the argv, stops and undefines one domain.
fn run_one(d: &Daemon, uri: &str, dir: &Path, file: &Path, expected: &[String]) -> Outcome {
    let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
    let mut out = Outcome {
        file: stem.clone(),
        ..Outcome::default()
    };
    let original = std::fs::read_to_string(file).unwrap();
    let mut p = prepare(&original, dir, &stem);
    out.rewrites = p.rewrites.clone();
    out.xml = p.xml.clone();
    let path = dir.join(format!("{stem}.xml"));
    std::fs::write(&path, &p.xml).unwrap();
    let mut r = d.client(uri, &format!("define {}", path.display()));
    if r.code != 0 && reason(&r.stderr).contains("'i686'") {
        out.i686_refusal = Some(reason(&r.stderr));
        p.xml = as_x86_64(&p.xml);
        out.rewrites
            .push("arch i686→x86_64, emulator qemu-system-x86_64".into());
        std::fs::write(&path, &p.xml).unwrap();
        out.xml = p.xml.clone();
        r = d.client(uri, &format!("define {}", path.display()));
    }
    if r.code != 0 {
        out.refused = Some(("define".into(), reason(&r.stderr)));
        return out;
    }
    let name = p.name.clone();
    let cleanup = || {
        let _ = d.client(uri, &format!("destroy {name}"));
        let _ = d.client(uri, &format!("undefine {name}"));
    };
    let r = d.client(uri, &format!("start {name} --paused"));
    if r.code != 0 {
        let why = reason(&r.stderr);
        // The driver's refusal before QEMU runs, versus QEMU refusing the command line.
        if why.contains("unsupported configuration") && !why.contains("QEMU") {
            out.refused = Some(("start".into(), why));
        } else {
            out.qemu_error = Some(why);
        }
        cleanup();
        return out;
    }
    let argv = (|| -> Result<Vec<String>, String> {
        let record = domain_record(&d.socket(), &name)?;
        let data = driver_data(&record).ok_or_else(|| format!("no driver_data in {record}"))?;
        let pid = data["pid"].as_u64().ok_or("no pid in driver_data")?;
        let monitor = data["monitor"]
            .as_str()
            .ok_or("no monitor in driver_data")?;
        let status = qmp_status(monitor)?;
        if status != "prelaunch" && status != "paused" {
            return Err(format!("QEMU is '{status}', not paused"));
        }
        let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map_err(|e| format!("QEMU (pid {pid}) is gone: {e}"))?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        // The record's pid must be this QEMU, not a recycled pid.
        if !argv.first().is_some_and(|a| a.contains("qemu-system"))
            || !argv.iter().any(|a| a.contains(&format!("guest={name},")))
        {
            return Err(format!("pid {pid} is not this domain's QEMU: {argv:?}"));
        }
        Ok(argv)
    })();
    cleanup();
    drop(p.listeners);
    let argv = match argv {
        Ok(a) => a,
        Err(e) => {
            out.qemu_error = Some(e);
            return out;
        }
    };
    out.started = true;

    let ours = summarize(&argv[1..]);
    let theirs = summarize(expected);
    out.memory = Some(ours.memory_kib.is_some() && ours.memory_kib == theirs.memory_kib);
    if out.memory != Some(true) {
        out.detail.push(format!(
            "memory: virtwasm {:?} KiB, libvirt {:?} KiB",
            ours.memory_kib, theirs.memory_kib
        ));
    }
    out.vcpus = Some(ours.vcpus.is_some() && ours.vcpus == theirs.vcpus);
    if out.vcpus != Some(true) {
        out.detail.push(format!(
            "vcpus (current, max): virtwasm {:?}, libvirt {:?}",
            ours.vcpus, theirs.vcpus
        ));
    }
    let (missing, extra, tolerated) = compare_devices(&ours.devices, &theirs.devices);
    out.tolerated = tolerated;
    out.devices = Some(missing.is_empty() && extra.is_empty());
    if out.devices != Some(true) {
        let ignored: Vec<&String> = theirs
            .devices
            .iter()
            .chain(&ours.devices)
            .filter(|d| IMPLICIT.contains(&d.as_str()))
            .collect();
        out.detail.push(format!(
            "devices: missing {missing:?}, extra {extra:?} (ignored: {ignored:?}; virtwasm's own, tolerated: {:?})",
            out.tolerated
        ));
    }
    out
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn mark(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

#[test]
fn libvirts_qemuxml2argv_corpus() {
    let corpus = PathBuf::from(CORPUS);
    if !corpus.is_dir() {
        eprintln!(
            "SKIPPED: libvirt's qemuxml2argv corpus not found (looked in {})",
            corpus.display()
        );
        return;
    }
    if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: qemu-system-x86_64 is not installed (.ci/run installs it)");
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();

    let home = tempfile::tempdir().unwrap();
    // Displays may listen on the wildcards too: what is measured is the driver's command
    // line, not the daemon's policy (which keeps them on loopback by default).
    let d = Daemon::start_with_config(
        home.path(),
        "[displays]\nlisten_allowed = [\"127.0.0.1\", \"::1\", \"0.0.0.0\", \"::\"]\n",
        &[],
    );
    let uri = d.uri("qemu", "/system");
    let work = home.path().join("corpus");
    std::fs::create_dir_all(&work).unwrap();

    let started_at = Instant::now();
    let mut outcomes = Vec::new();
    let mut not_run = Vec::new();
    for f in &files {
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        if started_at.elapsed() > BUDGET {
            not_run.push(stem);
            continue;
        }
        // libvirt's modern expectation where it has one.
        let latest = corpus.join(format!("{stem}.x86_64-latest.args"));
        let plain = corpus.join(format!("{stem}.args"));
        let args = std::fs::read_to_string(&latest)
            .or_else(|_| std::fs::read_to_string(&plain))
            .unwrap_or_default();
        outcomes.push(run_one(&d, &uri, &work, f, &shell_words(&args)));
    }

    // The table.
    let mut report = String::new();
    report.push_str(&format!(
        "{:<46} {:<12} {:<7} {:<6} {:<6} {:<7}\n",
        "file", "accepted", "started", "memory", "vcpus", "devices"
    ));
    for o in &outcomes {
        let accepted = match &o.refused {
            Some((at, _)) => format!("no ({at})"),
            None => "yes".into(),
        };
        report.push_str(&format!(
            "{:<46} {:<12} {:<7} {:<6} {:<6} {:<7}\n",
            o.file,
            accepted,
            if o.refused.is_some() {
                "-"
            } else {
                yes(o.started)
            },
            mark(o.memory),
            mark(o.vcpus),
            mark(o.devices),
        ));
        if let Some((_, why)) = &o.refused {
            report.push_str(&format!("    refused: {why}\n"));
        }
        if let Some(e) = &o.qemu_error {
            report.push_str(&format!("    QEMU: {e}\n"));
        }
        for line in &o.detail {
            report.push_str(&format!("    {line}\n"));
        }
        if !o.rewrites.is_empty() {
            report.push_str(&format!("    rewrites: {}\n", o.rewrites.join("; ")));
        }
    }
    let n = outcomes.len();
    let accepted: Vec<&Outcome> = outcomes.iter().filter(|o| o.refused.is_none()).collect();
    let started: Vec<&Outcome> = accepted.iter().copied().filter(|o| o.started).collect();
    let count =
        |f: fn(&Outcome) -> Option<bool>| started.iter().filter(|o| f(o) == Some(true)).count();
    let (a, s) = (accepted.len(), started.len());
    let (m, v, dv) = (
        count(|o| o.memory),
        count(|o| o.vcpus),
        count(|o| o.devices),
    );

    for (added, why) in VIRTWASM_ADDS {
        let times = started
            .iter()
            .filter(|o| o.tolerated.iter().any(|t| t == added))
            .count();
        report.push_str(&format!(
            "\nvirtwasm's addition '{added}' ({why}) is not counted as a device difference: tolerated in {times} of {} started domains\n",
            started.len()
        ));
    }

    // Refusals grouped by reason.
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for o in &outcomes {
        if let Some((at, why)) = &o.refused {
            groups
                .entry(format!("[{at}] {why}"))
                .or_default()
                .push(&o.file);
        }
    }
    report.push_str("\nrefusals by reason:\n");
    for (why, who) in &groups {
        report.push_str(&format!(
            "  {:>3} x {why}\n        {}\n",
            who.len(),
            who.join(", ")
        ));
    }
    // Not a failure (the thing is named), but not libvirt's words either.
    let rusty: Vec<&str> = groups
        .keys()
        .filter(|why| why.contains("::"))
        .map(String::as_str)
        .collect();
    if !rusty.is_empty() {
        report.push_str(&format!(
            "refusals worded with Rust type names instead of libvirt's values: {}\n",
            rusty.len()
        ));
    }
    let i686 = outcomes.iter().filter(|o| o.i686_refusal.is_some()).count();
    let kvm = outcomes
        .iter()
        .filter(|o| o.rewrites.iter().any(|r| r.starts_with("type kvm")))
        .count();
    report.push_str(&format!(
        "\n{i686} files were refused as written for their i686 guest ('{}') and measured as x86_64; {kvm} kvm domains ran as type qemu (TCG)\n",
        outcomes
            .iter()
            .find_map(|o| o.i686_refusal.clone())
            .unwrap_or_default()
    ));
    if !not_run.is_empty() {
        report.push_str(&format!(
            "NOT RUN (time budget of {BUDGET:?} spent): {}\n",
            not_run.join(", ")
        ));
    }
    report.push_str(&format!(
        "\naccepted {a}/{n}, started {s}/{a}, memory {m}/{s}, vcpus {v}/{s}, devices {dv}/{s}   ({:.1} s)\n",
        started_at.elapsed().as_secs_f64()
    ));
    eprintln!("libvirt qemuxml2argv corpus through virtwasm's QEMU driver:\n{report}");

    // Every accepted domain starts in QEMU.
    let failed: Vec<String> = accepted
        .iter()
        .filter(|o| !o.started)
        .map(|o| format!("{}: {}", o.file, o.qemu_error.as_deref().unwrap_or("?")))
        .collect();
    assert!(
        failed.is_empty(),
        "accepted domains that did not start in QEMU:\n{}",
        failed.join("\n")
    );
    // Every refusal says what it refuses.
    let vague: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            let (_, why) = o.refused.as_ref()?;
            (!names_something(why, &o.xml)).then(|| format!("{}: '{why}'", o.file))
        })
        .collect();
    assert!(
        vague.is_empty(),
        "refusals that do not name what they refuse:\n{}",
        vague.join("\n")
    );
}
