//! Directory storage pools through the `storage-dir` plugin, with real files and the real
//! `qemu-img`: a QEMU connection's `dir` pools, their volumes in every format the driver
//! makes, the bytes of an upload and a download through virtwasmd's streams, and the limits
//! (a backing file outside the pool, a pool outside the daemon's directories, a pool type
//! nothing serves).

mod common;
#[path = "common/guest.rs"]
mod guest;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, Run};

/// `qemu-img`, or a loud skip (a failure when `VIRTWASM_REQUIRE_GUEST` is set, as in CI).
fn have_qemu_img() -> bool {
    let found = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        guest::skip("qemu-img is not installed (Debian: qemu-utils)");
    }
    found
}

fn embed(home: &Path, script: &str) -> Run {
    let uri = format!("qemu:///embed?root={}", home.join("root").display());
    common::virtwasm(home, &["-c", &uri, script])
}

/// What `qemu-img info` says of `path`: (format, virtual size).
/// Pool `p1`, a `dir` pool built under the daemon's images directory (the only place its
/// clients may name), holding one volume; its directory.
fn pool_with_volume(d: &Daemon, uri: &str, vol: &str, size: &str) -> PathBuf {
    let pool = d.root.join("images/p1");
    let r = d.client(
        uri,
        &format!(
            "pool-create-as p1 dir --target {} --build; vol-create-as p1 {vol} {size}",
            pool.display()
        ),
    );
    assert_eq!(r.ok(), format!("Pool p1 created\n\nVol {vol} created\n\n"));
    pool
}

fn image_info(path: &Path) -> (String, u64) {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["format"].as_str().unwrap().to_string(),
        v["virtual-size"].as_u64().unwrap(),
    )
}

#[test]
fn a_directory_pool_holds_real_volumes() {
    if !have_qemu_img() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let pool = home.path().join("pools/p1");
    let r = embed(
        home.path(),
        &format!(
            "pool-define-as p1 dir --target {}; pool-build p1; pool-start p1; pool-autostart p1",
            pool.display()
        ),
    );
    assert_eq!(
        r.ok(),
        "Pool p1 defined\n\nPool p1 built\n\nPool p1 started\n\nPool p1 marked as autostarted\n\n"
    );
    // The host made the directory with libvirt's default mode for pool directories.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pool).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o711);

    // One volume per format the driver makes, each a real image of that format and size.
    let formats = ["raw", "qcow2", "qed", "vmdk", "vdi"];
    let script: Vec<String> = formats
        .iter()
        .map(|f| format!("vol-create-as p1 v.{f} 10M --format {f}"))
        .collect();
    let r = embed(home.path(), &script.join("; "));
    let expected: String = formats
        .iter()
        .map(|f| format!("Vol v.{f} created\n\n"))
        .collect();
    assert_eq!(r.ok(), expected);
    for f in formats {
        assert_eq!(
            image_info(&pool.join(format!("v.{f}"))),
            (f.to_string(), 10 << 20),
            "v.{f}"
        );
    }
    // Listed by name, each with its path.
    let r = embed(home.path(), "vol-list p1");
    let rows: Vec<Vec<String>> = r
        .ok()
        .lines()
        .skip(2)
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let mut names: Vec<String> = formats.iter().map(|f| format!("v.{f}")).collect();
    names.sort();
    let expected: Vec<Vec<String>> = names
        .iter()
        .map(|n| vec![n.clone(), pool.join(n).display().to_string()])
        .collect();
    assert_eq!(rows, expected, "{}", r.ok());
    let r = embed(home.path(), "vol-dumpxml v.qcow2 --pool p1");
    let xml = r.ok();
    assert!(
        xml.contains(&format!("<key>{}</key>", pool.join("v.qcow2").display()))
            && xml.contains("<capacity unit='bytes'>10485760</capacity>")
            && xml.contains("<format type='qcow2'/>"),
        "{xml}"
    );

    // Clone (another format), resize (a shrink only when asked), backing files from the pool.
    let r = embed(
        home.path(),
        &format!(
            "vol-clone v.raw c.qcow2 --pool p1; vol-resize v.raw 20M --pool p1; \
             vol-create-as p1 overlay.qcow2 0 --format qcow2 --backing-vol {} --backing-vol-format qcow2",
            pool.join("v.qcow2").display()
        ),
    );
    assert_eq!(
        r.ok(),
        "Vol c.qcow2 cloned from v.raw\n\nSize of volume 'v.raw' successfully changed to 20M\n\nVol overlay.qcow2 created\n\n"
    );
    assert_eq!(image_info(&pool.join("v.raw")), ("raw".into(), 20 << 20));
    assert_eq!(
        image_info(&pool.join("overlay.qcow2")),
        ("qcow2".into(), 10 << 20),
        "an overlay takes its backing file's size"
    );
    let r = embed(home.path(), "vol-resize v.raw 1M --pool p1");
    assert_eq!(
        r.failed(),
        "error: Failed to change size of volume 'v.raw' to 1M\nerror: invalid argument: Can't shrink capacity below current capacity unless shrink flag explicitly specified\n"
    );
    let outside = home.path().join("secret.img");
    std::fs::write(&outside, b"not for the pool").unwrap();
    let r = embed(
        home.path(),
        &format!(
            "vol-create-as p1 evil.qcow2 0 --format qcow2 --backing-vol {}",
            outside.display()
        ),
    );
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to create vol evil.qcow2\nerror: invalid argument: backing store '{}' is not a volume of this pool ('{}'): this driver takes backing files from the same pool\n",
            outside.display(),
            pool.display()
        )
    );
    assert!(!pool.join("evil.qcow2").exists());

    // Wipe leaves zeroes of the same size (raw) or an empty image of the same size.
    std::fs::write(pool.join("v.raw"), vec![0xa5u8; 20 << 20]).unwrap();
    let r = embed(
        home.path(),
        "vol-wipe v.raw --pool p1; vol-wipe v.qcow2 --pool p1",
    );
    assert_eq!(r.ok(), "Vol v.raw wiped\n\nVol v.qcow2 wiped\n\n");
    let data = std::fs::read(pool.join("v.raw")).unwrap();
    assert_eq!(data.len(), 20 << 20);
    assert!(data.iter().all(|b| *b == 0), "the raw volume holds zeroes");
    assert_eq!(
        image_info(&pool.join("v.qcow2")),
        ("qcow2".into(), 10 << 20)
    );

    // A file put in the directory by hand appears after a refresh, as in libvirt.
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(pool.join("byhand.qcow2"))
        .arg("1M")
        .status()
        .unwrap();
    assert!(made.success());
    let r = embed(
        home.path(),
        "pool-refresh p1; vol-info byhand.qcow2 --pool p1",
    );
    assert!(
        r.ok().starts_with(
            "Pool p1 refreshed\n\nName:           byhand.qcow2\nType:           file\nCapacity:       1.00 MiB\nAllocation:     "
        ),
        "{}",
        r.ok()
    );

    // An image placed (or uploaded) in the pool whose backing file is outside it: every verb
    // that would read the chain refuses, and nothing of the outside file is copied.
    let secret = home.path().join("secret.raw");
    std::fs::write(&secret, b"SECRET-OUTSIDE-THE-POOL").unwrap();
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-u", "-b"])
        .arg(&secret)
        .arg(pool.join("sneaky.qcow2"))
        .arg("1M")
        .status()
        .unwrap();
    assert!(made.success());
    embed(home.path(), "pool-refresh p1").ok();
    let refusal = format!(
        "'{}' is backed by '{}', which is not a volume of this pool ('{}')",
        pool.join("sneaky.qcow2").display(),
        secret.display(),
        pool.display()
    );
    for verb in [
        "vol-clone sneaky.qcow2 copy.raw --pool p1",
        "vol-resize sneaky.qcow2 2M --pool p1",
        "vol-wipe sneaky.qcow2 --pool p1",
    ] {
        let r = embed(home.path(), verb);
        assert!(r.failed().contains(&refusal), "{verb}: {}", r.stderr);
    }
    assert!(!pool.join("copy.raw").exists(), "nothing was copied");
    let r = embed(home.path(), "vol-delete sneaky.qcow2 --pool p1");
    assert_eq!(r.ok(), "Vol sneaky.qcow2 deleted\n\n");

    // A pool with volumes is not deleted; once empty, its directory goes.
    let r = embed(home.path(), "pool-destroy p1; pool-delete p1");
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to delete pool p1\nerror: operation failed: failed to remove pool '{}': Directory not empty\n",
            pool.display()
        )
    );
    assert!(pool.join("v.vdi").exists(), "nothing was removed");
    let names = "v.raw v.qcow2 v.qed v.vmdk v.vdi c.qcow2 overlay.qcow2 byhand.qcow2";
    let deletes: Vec<String> = names
        .split(' ')
        .map(|n| format!("vol-delete {n} --pool p1"))
        .collect();
    let r = embed(
        home.path(),
        &format!(
            "pool-start p1; {}; vol-list p1; pool-destroy p1; pool-delete p1; pool-undefine p1",
            deletes.join("; ")
        ),
    );
    assert!(r.ok().ends_with(
        "Vol byhand.qcow2 deleted\n\n Name   Path\n--------------\n\nPool p1 destroyed\n\nPool p1 deleted\n\nPool p1 has been undefined\n\n"
    ), "{}", r.ok());
    assert!(!pool.exists(), "pool-delete removed the emptied directory");
}

#[test]
fn a_pool_type_nothing_serves_is_refused_at_define() {
    let home = tempfile::tempdir().unwrap();
    let r = embed(
        home.path(),
        "pool-define-as vg logical --source-name vg0 --target /dev/vg0; pool-list --all",
    );
    assert_eq!(
        r.stderr,
        "error: Failed to define pool vg\nerror: no storage driver here serves pools of type 'logical' (the 'qemu' driver serves none; storage plugins serve dir)\n"
    );
    assert_eq!(
        r.stdout,
        "\n Name   State   Autostart\n---------------------------\n\n"
    );
}

#[test]
fn volume_streams_through_the_daemon_carry_real_bytes() {
    if !have_qemu_img() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let uri = d.uri("qemu", "/system");
    let pool = pool_with_volume(&d, &uri, "disk.img", "4M");

    // 3 MiB and a bit of random bytes up, then down, through the daemon's streams.
    let data: Vec<u8> = (0..(3 << 20) + 12345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = home.path().join("up.bin");
    let down = home.path().join("down.bin");
    std::fs::write(&up, &data).unwrap();
    let r = d.client(
        &uri,
        &format!(
            "vol-upload disk.img {} --pool p1; vol-download disk.img {} --pool p1",
            up.display(),
            down.display()
        ),
    );
    assert_eq!(r.ok(), "\n\n", "{}", r.stderr);
    let on_disk = std::fs::read(pool.join("disk.img")).unwrap();
    assert_eq!(on_disk.len(), 4 << 20, "an upload writes into the volume");
    assert!(
        on_disk[..data.len()] == data[..],
        "the volume holds the bytes sent"
    );
    let got = std::fs::read(&down).unwrap();
    assert_eq!(got.len(), 4 << 20);
    assert!(got == on_disk, "the download is the volume's bytes");

    // A pool outside the daemon's directories would hand that directory to the driver.
    let elsewhere = Path::new("/etc/virtwasm-test-pool");
    let r = d.client(
        &uri,
        &format!("pool-define-as p2 dir --target {}", elsewhere.display()),
    );
    assert!(
        r.failed().starts_with(&format!(
            "error: Failed to define pool p2\nerror: storage pool 'p2': '{}' is outside the directories this daemon lets clients name ({}, ",
            elsewhere.display(),
            d.root.join("images").display()
        )),
        "{}",
        r.stderr
    );
    // Nor may a pool be an allowed directory itself (the images directory holds save images).
    let images = d.root.join("images");
    let r = d.client(
        &uri,
        &format!("pool-define-as p3 dir --target {}", images.display()),
    );
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to define pool p3\nerror: storage pool 'p3': '{}' is one of the directories clients may name; a pool's directory must lie below one\n",
            images.display()
        )
    );
    let r = d.client(&uri, "pool-list --all --name");
    assert_eq!(r.ok(), "p1\n\n", "nothing was defined");
    let r = d.client(&uri, "vol-delete disk.img --pool p1; pool-destroy p1");
    assert_eq!(r.ok(), "Vol disk.img deleted\n\nPool p1 destroyed\n\n");
}

#[test]
fn a_client_that_stops_reading_a_download_is_let_go() {
    if !have_qemu_img() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_config(home.path(), "[limits]\nidle_timeout_secs = 2\n", &[]);
    let uri = d.uri("qemu", "/system");
    // 64 MiB: more than the stream's queue and the socket's buffers hold.
    pool_with_volume(&d, &uri, "big.img", "64M");

    // A client asks for the volume, reads the head of the answer, then reads no more.
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    write!(
        s,
        "GET /v1/volumes/big.img/data?pool=p1 HTTP/1.1\r\nHost: x\r\nX-Virtwasm-Uri: qemu:///system\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 256];
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The daemon gives up on it after the idle timeout, and says why on the operation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let failed = loop {
        let r = d.client(&uri, "operation-list --json");
        let ops: serde_json::Value = serde_json::from_str(r.ok()).unwrap();
        let op = ops
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == "vol-download")
            .cloned();
        if let Some(op) = op.filter(|o| o["status"] == "failure") {
            break op;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled download was never let go: {ops}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        failed["error"]["message"], "the client took no data for 2 s ([limits] idle_timeout_secs)",
        "{failed}"
    );
    drop(s);
}

#[test]
fn a_pool_directory_swapped_for_a_link_is_not_handed_to_the_driver() {
    if !have_qemu_img() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let uri = d.uri("qemu", "/system");
    let pool = pool_with_volume(&d, &uri, "a.img", "1M");

    // Someone with write access to the images directory swaps the pool's directory for a
    // link to a directory clients may not name: one outside those the fixture allows (the
    // temporary directory and the test target's).
    let allowed: Vec<PathBuf> = [
        std::env::temp_dir(),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    ]
    .iter()
    .filter_map(|p| p.canonicalize().ok())
    .collect();
    let Some(outside) = ["/var/tmp", "/srv", "/run"]
        .iter()
        .filter_map(|base| tempfile::tempdir_in(base).ok())
        .find(|t| {
            let real = t.path().canonicalize().unwrap();
            !allowed.iter().any(|a| real.starts_with(a))
        })
    else {
        panic!("no writable directory outside {allowed:?} among /var/tmp, /srv, /run");
    };
    let real = outside.path().canonicalize().unwrap();
    let moved = d.root.join("images/p1.moved");
    std::fs::rename(&pool, &moved).unwrap();
    std::os::unix::fs::symlink(outside.path(), &pool).unwrap();

    for cmd in ["pool-refresh p1", "vol-create-as p1 b.img 1M"] {
        let r = d.client(&uri, cmd);
        let e = r.failed();
        assert!(
            e.contains(&format!(
                "storage pool 'p1': its directory resolves to '{}', outside the directories this daemon lets clients name (",
                real.display()
            )),
            "{cmd}: {e}"
        );
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing was made through the link"
    );

    // Put back, the pool works again.
    std::fs::remove_file(&pool).unwrap();
    std::fs::rename(&moved, &pool).unwrap();
    let r = d.client(&uri, "pool-refresh p1; vol-list p1");
    let out = r.ok();
    assert!(
        out.starts_with("Pool p1 refreshed\n")
            && out.contains(&format!(" a.img   {}\n", pool.join("a.img").display())),
        "{out}"
    );
    let r = d.client(&uri, "vol-delete a.img --pool p1; pool-destroy p1");
    assert_eq!(r.ok(), "Vol a.img deleted\n\nPool p1 destroyed\n\n");
}
