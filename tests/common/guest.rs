//! The test guest: a real Linux VM small and fast enough for integration tests under TCG.
//!
//! It is Debian's kernel, booted as the uncompressed PVH `vmlinux` inside its bzImage (about
//! 4 s to userspace under TCG instead of about 11 s: QEMU enters it directly and skips the
//! decompressor), with a busybox-static initramfs whose `/init` loads the virtio and ACPI
//! modules, starts `acpid` so `system_powerdown` powers the guest off, prints
//! [`READY`] and then a `counter N` line every 0.5 s so a test can see it run (and, after a
//! save/restore, continue), with `cpus N online` and `memtotal N kB` whenever those change
//! (vCPU hotplug, the balloon). With [`PANIC_AT`] on its command line it panics on purpose;
//! with [`IP`] its first NIC gets an address.
//!
//! Include it from a test with `#[path = "common/guest.rs"] mod guest;` and call
//! [`test_guest`] (or [`test_guest_or_skip`]). The kernel comes from `/boot` + `/lib/modules`
//! when installed, else from `apt-get download` of the package `linux-image-amd64` depends on,
//! never installed. The result is cached under `CARGO_TARGET_TMPDIR/test-guest/`.

#![allow(dead_code)]

use std::cmp::Ordering;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Printed once by `/init` when the guest's userspace is up and `acpid` listens.
pub const READY: &str = "VIRTWASM-GUEST-READY";
/// Printed by the ACPI power-button handler just before `poweroff -f`.
pub const POWEROFF: &str = "VIRTWASM-GUEST-POWEROFF";
/// Printed just before the guest panics on purpose (see [`PANIC_AT`]).
pub const PANICKING: &str = "VIRTWASM-GUEST-PANICKING";
/// A kernel command line word (append `=N`) that has `/init` panic the kernel
/// (`echo c > /proc/sysrq-trigger`) once its counter reaches N: a guest that crashes on
/// purpose, some seconds after it is up.
pub const PANIC_AT: &str = "virtwasm_panic_at";
/// A kernel command line word (append `=ADDR/PREFIX`) that has `/init` give the guest's
/// `eth0` that address and print `eth0 ADDR/PREFIX up` (or `eth0 missing`).
pub const IP: &str = "virtwasm_ip";
/// The kernel command line [`Guest::cmdline`] holds: console on the first serial port, an
/// immediate reboot on panic (unless QEMU stops the guest first: the pvpanic modules are
/// loaded, and the QEMU driver gives pc and q35 guests a pvpanic device), a fixed TSC frequency
/// (TCG's PIT calibration is load-dependent and hangs some machine types), no kernel chatter.
/// Append `key=value` words to pass variables to `/init`'s environment.
pub const CMDLINE: &str = "console=ttyS0 panic=-1 tsc_early_khz=2000000 quiet";

/// Modules `/init` loads, in dependency order (busybox `insmod` does not resolve
/// dependencies). Ones the kernel has built in are skipped.
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "button",
    "evdev",
    "failover",
    "net_failover",
    "virtio_net",
    // The balloon: `setmem` takes memory away and MemTotal shrinks.
    "virtio_balloon",
    // pvpanic: QEMU's ISA panic device, found through ACPI (QEMU0001) by pvpanic-mmio, so
    // a panic reaches the host as QEMU's guest-panicked state.
    "pvpanic",
    "pvpanic-mmio",
    // IDE/SATA disks and CD-ROMs: the pc machine's PIIX controller (and AHCI), SCSI disks
    // and CD-ROMs on top of libata, with sd_mod's checksum helpers.
    "scsi_common",
    "scsi_mod",
    "libata",
    "ata_piix",
    "libahci",
    "ahci",
    "cdrom",
    "sr_mod",
    "crct10dif_common",
    "crc-t10dif",
    "crc64",
    "crc64-rocksoft",
    "t10-pi",
    "sd_mod",
    // SCSI controllers: virtio-scsi, and the LSI 53C895A (libvirt's lsilogic).
    "virtio_scsi",
    "scsi_transport_spi",
    "sym53c8xx",
    // The floppy controller's drives.
    "floppy",
    // USB disks: the EHCI, UHCI and xHCI host controllers (EHCI first, as the kernel asks,
    // so a device on an EHCI with UHCI companions is found once) and USB mass storage.
    "usb-common",
    "usbcore",
    "ehci-hcd",
    "ehci-pci",
    "uhci-hcd",
    "xhci-hcd",
    "xhci-pci",
    "usb-storage",
];

/// The package whose dependency names the current Debian kernel.
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";

/// Bump when the way the guest is assembled changes, so cached guests are rebuilt.
const FORMAT: &str = "4";

/// `/init`, run by busybox sh as PID 1; `@MODULES@` is replaced with [`MODULES`]. Started as
/// `/bin/busybox sh` since `/bin/sh` exists only after `busybox --install`.
const INIT: &str = r#"#!/bin/busybox sh
# /init of the virtwasm test guest. It must never exit: PID 1 exiting panics the kernel.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# The kernel opened the console on the initramfs's /dev; reopen it on devtmpfs.
exec </dev/console >/dev/console 2>&1

# busybox insmod does not resolve dependencies, hence the order. A missing file means the
# kernel has the driver built in.
for m in @MODULES@; do
    [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done

# The power button (button.ko) reports through evdev; acpid runs /etc/acpi/PWRF/00000080 on
# it, so QEMU's system_powerdown powers the guest off.
acpid -c /etc/acpi -l /dev/null

# say LINE: print where tests read: the console, and ttyS0 / hvc0 (virtio console) when they
# exist and are not the console already (no duplicate lines).
active=" $(cat /sys/class/tty/console/active 2>/dev/null) "
say() {
    echo "$*" >/dev/console
    for t in ttyS0 hvc0; do
        case "$active" in *" $t "*) continue ;; esac
        [ -c /dev/$t ] && echo "$*" >/dev/$t 2>/dev/null
    done
}

# With virtwasm_ip=ADDR/PREFIX, eth0 (the first NIC, virtio_net above) gets that address, so
# a test can reach the guest over the network it is connected to.
if [ -n "$virtwasm_ip" ]; then
    ip link set lo up
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
    if ip link set eth0 up && ip addr add "$virtwasm_ip" dev eth0; then
        say "eth0 $virtwasm_ip up"
    else
        say "eth0 missing"
    fi
fi

# Each NIC with its MAC and the PCI address the guest found it at (a virtio NIC's device is
# the virtio device; its PCI function is the parent), so a test can check where a device
# landed in the guest's PCI topology.
for n in /sys/class/net/eth*; do
    [ -e "$n/device" ] || continue
    p=$(readlink -f "$n/device")
    case "$(basename "$p")" in virtio*) p=$(dirname "$p") ;; esac
    say "nic $(cat "$n/address") at $(basename "$p")"
done

# A shell reading the console, so a client of `virtwasm console` can type commands and see
# their output (the console round trip).
sh </dev/console >/dev/console 2>&1 &

say VIRTWASM-GUEST-READY
# A heartbeat: tests see the guest run, pause (no lines) and continue after restore. Each
# disk (virtio, SATA/IDE, SCSI, USB, CD-ROM, floppy) is announced once with its first bytes, including ones
# hot-plugged later; the number of online CPUs
# and MemTotal each time they change (a hot-plugged CPU is brought online first, as udev
# would; the balloon shrinks MemTotal).
n=0
seen=" "
cpus=
mem=
while :; do
    n=$((n + 1))
    say "counter $n"
    if [ -n "$virtwasm_panic_at" ] && [ "$n" -ge "$virtwasm_panic_at" ]; then
        say VIRTWASM-GUEST-PANICKING
        echo c >/proc/sysrq-trigger
    fi
    for c in /sys/devices/system/cpu/cpu[0-9]*; do
        [ "$(cat $c/online 2>/dev/null)" = 0 ] && echo 1 >$c/online 2>/dev/null
    done
    now=$(grep -c ^processor /proc/cpuinfo)
    if [ "$now" != "$cpus" ]; then
        cpus=$now
        say "cpus $cpus online"
    fi
    now=$(grep ^MemTotal: /proc/meminfo | tr -s ' ' | cut -d' ' -f2)
    if [ "$now" != "$mem" ]; then
        mem=$now
        say "memtotal $mem kB"
    fi
    for d in /dev/vd[a-z] /dev/sd[a-z] /dev/sr[0-9] /dev/fd[0-1]; do
        [ -b "$d" ] || continue
        case "$seen" in *" $d "*) continue ;; esac
        seen="$seen$d "
        # The disk's first bytes, letters, digits and dashes only: a test writes a marker
        # there to see which file reached which device.
        say "disk ${d#/dev/} present $(head -c 32 $d 2>/dev/null | tr -dc 'A-Za-z0-9-')"
    done
    sleep 0.5
done
"#;

/// The ACPI power-button handler busybox `acpid` runs (its built-in table maps the power
/// button's key event to `PWRF/00000080` under the config directory).
const POWER_BUTTON: &str =
    "#!/bin/busybox sh\necho VIRTWASM-GUEST-POWEROFF >/dev/console\npoweroff -f\n";

/// A bootable test guest: `qemu-system-x86_64 -kernel KERNEL -initrd INITRD -append CMDLINE`.
#[derive(Clone, Debug)]
pub struct Guest {
    /// The uncompressed PVH kernel (an ELF `vmlinux`).
    pub kernel: PathBuf,
    /// The gzip'd newc initramfs.
    pub initrd: PathBuf,
    /// [`CMDLINE`].
    pub cmdline: String,
}

impl Guest {
    /// A domain (type `qemu`, machine `pc`, 128 MiB, one vCPU, ACPI) booting this guest with
    /// `extra` appended to its kernel command line and `devices` inside `<devices>`.
    pub fn domain_xml(&self, name: &str, extra: &str, devices: &str) -> String {
        let cmdline = if extra.is_empty() {
            self.cmdline.clone()
        } else {
            format!("{} {extra}", self.cmdline)
        };
        format!(
            "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    {devices}
  </devices>
</domain>",
            self.kernel.display(),
            self.initrd.display(),
        )
    }
}

/// What a guest's console file holds so far (empty before QEMU created it).
pub fn console_text(p: &Path) -> String {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned()
}

/// Builds the test guest once (per process, and per kernel and `/init` across processes: the
/// result is cached) and returns it, or says what is missing (kernel package, busybox, a tool).
pub fn test_guest() -> Result<Guest, String> {
    static GUEST: OnceLock<Result<Guest, String>> = OnceLock::new();
    GUEST
        .get_or_init(|| build(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-guest")))
        .clone()
}

/// Whether `VIRTWASM_REQUIRE_GUEST` asks that guest tests run for real (CI sets it).
pub fn guest_required() -> bool {
    std::env::var("VIRTWASM_REQUIRE_GUEST").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports that a guest test cannot run: a loud `SKIPPED` on stderr, or a panic when
/// `VIRTWASM_REQUIRE_GUEST` is set. The caller returns afterwards.
#[track_caller]
pub fn skip(reason: &str) {
    if guest_required() {
        panic!("VIRTWASM_REQUIRE_GUEST is set but the guest test cannot run: {reason}");
    }
    // Straight to the stderr handle: the test harness captures eprintln! of passing tests,
    // and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n******** SKIPPED: {reason} (set VIRTWASM_REQUIRE_GUEST=1 to fail instead) ********\n"
    );
}

/// [`test_guest`], or `None` after [`skip`] (which panics when guests are required).
#[track_caller]
pub fn test_guest_or_skip() -> Option<Guest> {
    match test_guest() {
        Ok(g) => Some(g),
        Err(e) => {
            skip(&format!("no test guest: {e}"));
            None
        }
    }
}

/// Where the kernel comes from.
enum KernelSource {
    /// `/boot/vmlinuz-VER` and `/lib/modules/VER`.
    Installed {
        version: String,
        vmlinuz: PathBuf,
        modules: PathBuf,
    },
    /// A downloaded `linux-image-VER` package, not installed.
    Deb { version: String, deb: PathBuf },
}

/// Where busybox comes from.
enum BusyboxSource {
    Installed(PathBuf),
    Deb(PathBuf),
}

fn build(root: &Path) -> Result<Guest, String> {
    fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let kernel = kernel_source(root)?;
    let busybox = busybox_source(root)?;
    let init = INIT.replace("@MODULES@", &MODULES.join(" "));

    // The key names the kernel version and hashes everything the guest is made of, so a new
    // kernel, busybox or /init gets its own directory and old ones stay valid.
    let (version, kernel_id) = match &kernel {
        KernelSource::Installed {
            version, vmlinuz, ..
        } => (version, file_identity(vmlinuz)),
        KernelSource::Deb { version, deb } => (version, file_identity(deb)),
    };
    let busybox_id = match &busybox {
        BusyboxSource::Installed(p) | BusyboxSource::Deb(p) => file_identity(p),
    };
    let hash = fnv1a(
        [
            FORMAT,
            &init,
            POWER_BUTTON,
            &MODULES.join(" "),
            &kernel_id,
            &busybox_id,
        ]
        .join("\0")
        .as_bytes(),
    );
    let dir = root.join(format!("{version}-{hash:016x}"));
    let guest = Guest {
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd.gz"),
        cmdline: CMDLINE.to_string(),
    };
    if guest.kernel.is_file() && guest.initrd.is_file() {
        return Ok(guest);
    }

    // Build in a private directory and rename it into place: a concurrent test process either
    // wins the rename or finds the finished directory, never a half-written one.
    let tmp = unique_tmp(root, "build")?;
    let result = assemble(&tmp, &kernel, &busybox, &init);
    let result = result.and_then(|()| {
        fs::remove_dir_all(tmp.join("work")).map_err(|e| format!("clean up: {e}"))?;
        match fs::rename(&tmp, &dir) {
            Ok(()) => Ok(()),
            Err(_) if guest.kernel.is_file() && guest.initrd.is_file() => Ok(()),
            Err(e) => Err(format!(
                "rename {} to {}: {e}",
                tmp.display(),
                dir.display()
            )),
        }
    });
    let _ = fs::remove_dir_all(&tmp);
    result.map(|()| guest)
}

/// Writes `out/vmlinux` and `out/initrd.gz`, using `out/work` as scratch space.
fn assemble(
    out: &Path,
    kernel: &KernelSource,
    busybox: &BusyboxSource,
    init: &str,
) -> Result<(), String> {
    let work = out.join("work");
    let tree = work.join("initramfs");
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "lib/modules",
        "etc/acpi/PWRF",
        "proc",
        "sys",
        "dev",
        "tmp",
        "var/log",
        "var/run",
    ] {
        mkdir(&tree.join(d))?;
    }

    // The kernel: unpack the needed files of a package, or use the installed ones.
    let (vmlinuz, modules) = match kernel {
        KernelSource::Installed {
            vmlinuz, modules, ..
        } => (vmlinuz.clone(), modules.clone()),
        KernelSource::Deb { version, deb } => {
            let x = work.join("kernel");
            let vmlinuz = format!("./boot/vmlinuz-{version}");
            extract_deb(deb, &x, |name| {
                let file = name.rsplit('/').next().unwrap_or(name);
                name == vmlinuz
                    || file == "modules.builtin"
                    || MODULES.iter().any(|m| {
                        [".ko", ".ko.xz", ".ko.zst"]
                            .iter()
                            .any(|suffix| file == format!("{m}{suffix}"))
                    })
            })?;
            (
                x.join(format!("boot/vmlinuz-{version}")),
                modules_dir(&x, version)
                    .ok_or_else(|| format!("{} has no lib/modules/{version}", deb.display()))?,
            )
        }
    };
    extract_vmlinux(&vmlinuz, &out.join("vmlinux"))?;
    copy_modules(&modules, &tree.join("lib/modules"))?;

    let busybox = match busybox {
        BusyboxSource::Installed(p) => p.clone(),
        BusyboxSource::Deb(deb) => {
            let x = work.join("busybox");
            extract_deb(deb, &x, |name| name == "./bin/busybox")?;
            x.join("bin/busybox")
        }
    };
    copy(&busybox, &tree.join("bin/busybox"), 0o755)?;
    write(&tree.join("init"), init.as_bytes(), 0o755)?;
    write(
        &tree.join("etc/acpi/PWRF/00000080"),
        POWER_BUTTON.as_bytes(),
        0o755,
    )?;

    let cpio = work.join("initrd.cpio");
    archive(&tree, &cpio)?;
    // gzip -1: the archive is mostly busybox and modules; better ratios buy nothing here.
    let gz = fs::File::create(out.join("initrd.gz")).map_err(|e| format!("create initrd: {e}"))?;
    let input = fs::File::open(&cpio).map_err(|e| format!("open {}: {e}", cpio.display()))?;
    run(
        Command::new("gzip")
            .args(["-1", "-n", "-c"])
            .stdin(input)
            .stdout(gz),
        "gzip",
    )?;
    Ok(())
}

/// The newest `/boot/vmlinuz-VER` with its `/lib/modules/VER`, else the package
/// `linux-image-amd64` depends on, downloaded (not installed) into `root/debs`.
fn kernel_source(root: &Path) -> Result<KernelSource, String> {
    let mut installed: Vec<(String, PathBuf, PathBuf)> = fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            // Some distributions make vmlinuz readable by root only: then download instead.
            fs::File::open(e.path()).ok()?;
            let modules = modules_dir(Path::new("/"), &version)?;
            Some((version, e.path(), modules))
        })
        .collect();
    installed.sort_by(|a, b| compare_versions(&a.0, &b.0));
    if let Some((version, vmlinuz, modules)) = installed.pop() {
        return Ok(KernelSource::Installed {
            version,
            vmlinuz,
            modules,
        });
    }

    // `apt-cache depends linux-image-amd64` prints `  Depends: linux-image-6.1.0-56-amd64`.
    let out = run(
        Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]),
        "apt-cache",
    )
    .map_err(|e| format!("no installed kernel in /boot and {e}"))?;
    let package = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "no installed kernel in /boot, and apt-cache names no linux-image dependency \
                 of {KERNEL_META_PACKAGE} (apt-get update?)"
            )
        })?;
    let version = package["linux-image-".len()..].to_string();
    let deb =
        cached_deb(root, &package).map_err(|e| format!("no installed kernel in /boot and {e}"))?;
    Ok(KernelSource::Deb { version, deb })
}

/// `/bin/busybox` when it is statically linked (package busybox-static), else the
/// busybox-static package downloaded into `root/debs`.
fn busybox_source(root: &Path) -> Result<BusyboxSource, String> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if fs::read(p).is_ok_and(|elf| is_static_elf(&elf)) {
            return Ok(BusyboxSource::Installed(PathBuf::from(p)));
        }
    }
    cached_deb(root, "busybox-static")
        .map(BusyboxSource::Deb)
        .map_err(|e| format!("no static /bin/busybox and {e}"))
}

/// The `.deb` of `package` in `root/debs`, fetched with `apt-get download` when absent.
fn cached_deb(root: &Path, package: &str) -> Result<PathBuf, String> {
    let debs = root.join("debs");
    let find = |dir: &Path| -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
    };
    if let Some(deb) = find(&debs) {
        return Ok(deb);
    }
    mkdir(&debs)?;
    // Download into a private directory, then rename the finished file into place.
    let tmp = unique_tmp(root, "download")?;
    let result = run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&tmp),
        "apt-get",
    )
    .map_err(|e| format!("could not download package {package}: {e}"))
    .and_then(|_| {
        let deb = find(&tmp).ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
        let dest = debs.join(deb.file_name().unwrap());
        fs::rename(&deb, &dest).map_err(|e| format!("rename {}: {e}", deb.display()))?;
        Ok(dest)
    });
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Unpacks the files of `deb` whose archive names (`./boot/...`) `select` accepts into
/// `dest`: the kernel package is 70 MB packed and about 400 MB unpacked, and the guest needs
/// a few MB of it. Lists first, then extracts exact names (a tar wildcard that matches
/// nothing, e.g. for a built-in module, would fail the extraction).
fn extract_deb(deb: &Path, dest: &Path, select: impl Fn(&str) -> bool) -> Result<(), String> {
    mkdir(dest)?;
    let listing = deb_tar(deb, Command::new("tar").args(["-t", "-f", "-"]))?;
    let names: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .filter(|n| select(n))
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(format!("{} holds none of the needed files", deb.display()));
    }
    deb_tar(
        deb,
        Command::new("tar")
            .args(["-x", "-C"])
            .arg(dest)
            .args(["-f", "-"])
            .args(&names),
    )
    .map(|_| ())
}

/// Runs `tar` on the file system tarball of `deb` (`dpkg-deb --fsys-tarfile` piped in).
fn deb_tar(deb: &Path, tar: &mut Command) -> Result<Vec<u8>, String> {
    let mut data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| missing_tool("dpkg-deb", e))?;
    let out = run(tar.stdin(data.stdout.take().unwrap()), "tar");
    let dpkg = data.wait_with_output().map_err(|e| e.to_string())?;
    if !dpkg.status.success() {
        return Err(format!(
            "dpkg-deb --fsys-tarfile {}: {}",
            deb.display(),
            String::from_utf8_lossy(&dpkg.stderr).trim()
        ));
    }
    out.map_err(|e| format!("unpack {}: {e}", deb.display()))
}

/// `lib/modules/VER` (or the merged-/usr spelling) under `root`, if it holds a kernel tree.
fn modules_dir(root: &Path, version: &str) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(version))
        .find(|d| d.join("kernel").is_dir())
}

/// Extracts the uncompressed kernel from a bzImage: the payload is an XZ stream starting at
/// the magic `FD 37 7A 58 5A 00`, and QEMU boots the resulting ELF through its PVH note.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<(), String> {
    let image = fs::read(vmlinuz).map_err(|e| format!("read {}: {e}", vmlinuz.display()))?;
    const MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let mut last_error = format!(
        "{} has no XZ payload (only XZ kernels are supported)",
        vmlinuz.display()
    );
    // The first match is the payload in practice; trying later ones costs nothing.
    for offset in
        (0..image.len().saturating_sub(MAGIC.len())).filter(|&i| image[i..].starts_with(MAGIC))
    {
        let file = fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
        // --single-stream stops at the end of the stream and ignores the bzImage's trailer.
        let mut xz = Command::new("xz")
            .args(["-dc", "--single-stream"])
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| missing_tool("xz", e))?;
        let mut stdin = xz.stdin.take().unwrap();
        // xz may stop reading early (trailing data, or an error): a broken pipe is expected.
        let _ = stdin.write_all(&image[offset..]);
        drop(stdin);
        let result = xz.wait_with_output().map_err(|e| e.to_string())?;
        let mut head = [0u8; 4];
        let elf = fs::File::open(out)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == *b"\x7fELF";
        if result.status.success() && elf {
            return Ok(());
        }
        last_error = format!(
            "xz -dc of {} at offset {offset}: {}",
            vmlinuz.display(),
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    Err(last_error)
}

/// Copies [`MODULES`] from the kernel tree `from` into the flat directory `to`, decompressing
/// `.ko.xz`/`.ko.zst`; a module neither present nor listed in `modules.builtin` is an error.
fn copy_modules(from: &Path, to: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    walk(&from.join("kernel"), &mut files)?;
    let builtin = fs::read_to_string(from.join("modules.builtin")).unwrap_or_default();
    for module in MODULES {
        let found = |suffix: &str| {
            let name = format!("{module}{suffix}");
            files
                .iter()
                .find(|p| p.file_name().is_some_and(|n| n.to_str() == Some(&name)))
        };
        let dest = to.join(format!("{module}.ko"));
        if let Some(ko) = found(".ko") {
            copy(ko, &dest, 0o644)?;
        } else if let Some((ko, tool)) = found(".ko.xz")
            .map(|p| (p, "xz"))
            .or_else(|| found(".ko.zst").map(|p| (p, "zstd")))
        {
            let file = fs::File::create(&dest).map_err(|e| e.to_string())?;
            run(Command::new(tool).arg("-dc").arg(ko).stdout(file), tool)?;
        } else if !builtin
            .lines()
            .any(|l| l.ends_with(&format!("/{module}.ko")))
        {
            return Err(format!(
                "kernel module {module} is neither in {} nor built in",
                from.display()
            ));
        }
    }
    Ok(())
}

/// Writes the initramfs tree as a newc archive: with the `cpio` program when present, else
/// in Rust (the format is a text header per file).
fn archive(tree: &Path, out: &Path) -> Result<(), String> {
    let mut paths = Vec::new();
    walk(tree, &mut paths)?;
    let relative: Vec<String> = paths
        .iter()
        .map(|p| {
            let r = p.strip_prefix(tree).unwrap().to_string_lossy();
            format!("./{r}")
        })
        .collect();
    let file = fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(tree)
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn();
    match cpio {
        Ok(mut child) => {
            let mut list = relative.join("\n");
            list.push('\n');
            child
                .stdin
                .take()
                .unwrap()
                .write_all(list.as_bytes())
                .map_err(|e| format!("cpio: {e}"))?;
            let result = child.wait_with_output().map_err(|e| e.to_string())?;
            if !result.status.success() {
                return Err(format!(
                    "cpio: {}",
                    String::from_utf8_lossy(&result.stderr).trim()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = newc(&paths, &relative)?;
            fs::write(out, bytes).map_err(|e| format!("write {}: {e}", out.display()))
        }
        Err(e) => Err(format!("cpio: {e}")),
    }
}

/// A newc ("070701") archive of directories and regular files, owned by root.
fn newc(paths: &[PathBuf], names: &[String]) -> Result<Vec<u8>, String> {
    fn entry(out: &mut Vec<u8>, ino: usize, mode: u32, mtime: u64, name: &str, data: &[u8]) {
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{mtime:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            0,
            0,
            1,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        // The name (after the 110-byte header) and the data are each padded to 4 bytes.
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    for (i, (path, name)) in paths.iter().zip(names).enumerate() {
        let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        let data = if meta.is_file() {
            fs::read(path).map_err(|e| e.to_string())?
        } else if meta.is_dir() {
            Vec::new()
        } else {
            return Err(format!("{}: only files and directories", path.display()));
        };
        let name = name.trim_start_matches("./");
        entry(
            &mut out,
            i + 1,
            meta.mode(),
            meta.mtime() as u64,
            name,
            &data,
        );
    }
    entry(&mut out, 0, 0, 0, "TRAILER!!!", &[]);
    Ok(out)
}

/// Every path under `dir`, each directory before its contents, in a stable order.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        out.push(p.clone());
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out)?;
        }
    }
    Ok(())
}

/// Whether an ELF file has no program interpreter, i.e. is statically linked.
fn is_static_elf(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    // 64-bit little-endian only, which is all an x86_64 host runs.
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        elf.get(phoff + i * phentsize..phoff + i * phentsize + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != PT_INTERP)
    })
}

/// Orders kernel versions: runs of digits compare as numbers (`6.1.0-10` after `6.1.0-9`).
fn compare_versions(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in s.char_indices().skip(1) {
            let prev = s[..i].chars().next_back().unwrap();
            if prev.is_ascii_digit() != c.is_ascii_digit() {
                out.push((prev.is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        if !s.is_empty() {
            out.push((
                s[start..].starts_with(|c: char| c.is_ascii_digit()),
                &s[start..],
            ));
        }
        out
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let order = match (x, y) {
            ((true, x), (true, y)) => x
                .parse::<u64>()
                .unwrap_or(0)
                .cmp(&y.parse::<u64>().unwrap_or(0)),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Path, size and modification time: enough to notice a replaced kernel or busybox.
fn file_identity(p: &Path) -> String {
    let meta = fs::metadata(p).ok();
    format!(
        "{} {} {}",
        p.display(),
        meta.as_ref().map_or(0, |m| m.len()),
        meta.as_ref().map_or(0, |m| m.mtime())
    )
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A new directory under `root` private to this call (process id + time).
fn unique_tmp(root: &Path, what: &str) -> Result<PathBuf, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = root.join(format!(".{what}-{}-{nanos}", std::process::id()));
    mkdir(&dir)?;
    Ok(dir)
}

/// Runs a command to completion; its stdout, or an error with its stderr. A missing program
/// is named with the Debian package that provides it.
fn run(cmd: &mut Command, program: &str) -> Result<Vec<u8>, String> {
    // Commands given a file for stdout keep it; the others are captured.
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| missing_tool(program, e))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn missing_tool(program: &str, e: std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::NotFound {
        return format!("{program}: {e}");
    }
    let package = match program {
        "xz" => "xz-utils",
        "dpkg-deb" => "dpkg",
        "apt-get" | "apt-cache" => "apt",
        other => other,
    };
    format!("`{program}` not found (install the {package} package)")
}

fn mkdir(p: &Path) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("create {}: {e}", p.display()))
}

fn write(p: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    fs::write(p, bytes).map_err(|e| format!("write {}: {e}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    fs::copy(from, to).map_err(|e| format!("copy {}: {e}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}
