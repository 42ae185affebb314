//! A real guest on a bridge: `<interface type='bridge'>` through the host's netdev capability.
//! The test makes a network namespace of its own with a bridge holding 10.77.0.1/24, runs
//! virtwasmd inside it (`ip netns exec`), boots the test guest with 10.77.0.2/24 on its NIC,
//! pings it from the bridge's side, and checks that the tap the host made is enslaved while
//! the guest runs and gone once it stops. Nothing touches the host's own network; the
//! namespace is removed at the end.

mod common;
#[path = "common/guest.rs"]
mod guest;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use guest::console_text;

const BRIDGE: &str = "vwbr0";
const HOST_SIDE: &str = "10.77.0.1/24";
const GUEST_IP: &str = "10.77.0.2";
const MAC: &str = "52:54:00:77:00:02";

/// A network namespace this test made, removed (with everything in it) when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns, String> {
        let name = format!("vwbr-{}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns(name);
        for cmd in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", BRIDGE, "type", "bridge"],
            vec!["addr", "add", HOST_SIDE, "dev", BRIDGE],
            vec!["link", "set", BRIDGE, "up"],
        ] {
            ns.ip(&cmd)?;
        }
        Ok(ns)
    }

    /// `ip ARGS` inside the namespace.
    fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.0, "ip"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ARGS` run inside the namespace.
    fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.0];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn domain(name: &str, g: &guest::Guest, console: &Path, bridge: &str) -> String {
    g.domain_xml(
        name,
        &format!("{}={GUEST_IP}/24", guest::IP),
        &format!(
            "<interface type='bridge'>
      <source bridge='{bridge}'/>
      <mac address='{MAC}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='{}'/></serial>",
            console.display()
        ),
    )
}

#[test]
fn a_guest_on_a_bridge_answers_on_it_and_its_tap_goes_with_it() {
    let Some(g) = guest::test_guest_or_skip() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        guest::skip("bridges and taps need root (CAP_NET_ADMIN)");
        return;
    }
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(e) => {
            guest::skip(&format!(
                "cannot make a network namespace with a bridge: {e}"
            ));
            return;
        }
    };
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start_under(home.path(), &[], &["ip", "netns", "exec", &ns.0]);
    let uri = d.uri("qemu", "/system");
    let console = home.path().join("net1.console");
    let xml = home.path().join("net1.xml");
    std::fs::write(&xml, domain("net1", &g, &console, BRIDGE)).unwrap();
    let r = d.client(&uri, &format!("define {}; start net1", xml.display()));
    assert_eq!(
        r.ok(),
        format!(
            "Domain 'net1' defined from {}\n\nDomain 'net1' started\n\n",
            xml.display()
        )
    );

    // The host made a tap and put it on the bridge, with the bridge's MTU.
    let enslaved = ns.ip(&["-o", "link", "show", "master", BRIDGE]).unwrap();
    let tap = enslaved
        .split(':')
        .nth(1)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    assert!(
        tap.starts_with("vwnet"),
        "no vwnet tap on {BRIDGE}: {enslaved}"
    );
    assert!(enslaved.contains("mtu 1500"), "{enslaved}");
    assert!(
        ns.ip(&["-d", "link", "show", &tap])
            .unwrap()
            .contains("tun type tap"),
        "{tap} is a tap"
    );

    // The guest configures its NIC; then it answers on the bridge.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !console_text(&console).contains(&format!("eth0 {GUEST_IP}/24 up")) {
        assert!(
            !console_text(&console).contains("eth0 missing"),
            "the guest has no NIC:\n{}",
            console_text(&console)
        );
        assert!(
            Instant::now() < deadline,
            "the guest did not bring eth0 up:\n{}",
            console_text(&console)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // busybox's ping (busybox-static is there for the test guest; iputils may not be).
        match ns.exec(&["busybox", "ping", "-c", "1", "-W", "1", GUEST_IP]) {
            Ok(out) => {
                assert!(out.contains("1 packets received"), "{out}");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the guest never answered: {e}"),
        }
    }
    // The guest's MAC is the one the definition gave, learned on the bridge's port.
    let neigh = ns.ip(&["neigh", "show", GUEST_IP]).unwrap();
    assert!(neigh.contains(MAC), "{neigh}");

    // A second NIC on the bridge, hot-plugged: another tap while it is there, none after.
    // (First on a bridge that does not exist: refused, and no tap is left over.)
    let second = "52:54:00:77:00:03";
    let r = d.client(
        &uri,
        &format!("attach-interface net1 bridge nosuchbr0 --mac {second} --live"),
    );
    assert!(
        r.failed()
            .contains("'nosuchbr0' is not a bridge on this host"),
        "{}",
        r.stderr
    );
    let taps = ns.ip(&["-o", "link", "show", "type", "tun"]).unwrap();
    assert_eq!(taps.matches("vwnet").count(), 1, "{taps}");
    let r = d.client(
        &uri,
        &format!("attach-interface net1 bridge {BRIDGE} --mac {second} --model virtio --live"),
    );
    assert_eq!(r.ok(), "Interface attached successfully\n\n");
    let ports = ns.ip(&["-o", "link", "show", "master", BRIDGE]).unwrap();
    assert_eq!(ports.matches("vwnet").count(), 2, "{ports}");
    let r = d.client(
        &uri,
        &format!("detach-interface net1 bridge --mac {second} --live"),
    );
    assert_eq!(r.ok(), "Interface detached successfully\n\n");
    let ports = ns.ip(&["-o", "link", "show", "master", BRIDGE]).unwrap();
    assert_eq!(
        ports.matches("vwnet").count(),
        1,
        "the unplugged NIC's tap went: {ports}"
    );
    assert!(
        ports.contains(&format!("{tap}:")),
        "the first tap stayed: {ports}"
    );

    // A restarted daemon still knows the tap is its own: stopping the guest then removes it.
    let mut d = d;
    d.stop_with(libc::SIGTERM);
    d.spawn();
    // Stopping the guest removes its tap.
    let r = d.client(&uri, "destroy net1");
    assert_eq!(r.ok(), "Domain 'net1' destroyed\n\n");
    assert!(
        ns.ip(&["link", "show", &tap]).is_err(),
        "tap {tap} outlived its guest"
    );

    // A bridge that does not exist: the start fails saying so, and leaves no tap behind.
    let bad = home.path().join("net2.xml");
    std::fs::write(&bad, domain("net2", &g, &console, "nosuchbr0")).unwrap();
    let r = d.client(&uri, &format!("define {}; start net2", bad.display()));
    assert!(
        r.failed().contains(&format!(
            "cannot connect interface {MAC} to bridge 'nosuchbr0': 'nosuchbr0' is not a bridge on this host"
        )),
        "{}",
        r.stderr
    );
    let taps = || {
        ns.ip(&["-o", "link", "show", "type", "tun"])
            .unwrap_or_default()
    };
    assert!(
        !taps().contains("vwnet"),
        "a tap was left behind: {}",
        taps()
    );
    // Two NICs, the first on the bridge, the second on a missing one: the first's tap, made
    // already, is taken back when the second fails.
    let two = home.path().join("net3.xml");
    std::fs::write(
        &two,
        domain("net3", &g, &console, BRIDGE).replace(
            "    <serial type='file'>",
            "    <interface type='bridge'><source bridge='nosuchbr0'/><mac address='52:54:00:77:00:09'/><model type='virtio'/></interface>\n    <serial type='file'>",
        ),
    )
    .unwrap();
    let r = d.client(&uri, &format!("define {}; start net3", two.display()));
    assert!(
        r.failed()
            .contains("'nosuchbr0' is not a bridge on this host"),
        "{}",
        r.stderr
    );
    assert!(
        !taps().contains("vwnet"),
        "the first NIC's tap was left: {}",
        taps()
    );
    // A start that fails after QEMU was spawned (a disk file that does not exist) takes its
    // taps back too.
    let missing = home.path().join("missing.img");
    let broken = home.path().join("net4.xml");
    std::fs::write(
        &broken,
        domain("net4", &g, &console, BRIDGE).replace(
            "    <serial type='file'>",
            &format!(
                "    <disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk>\n    <serial type='file'>",
                missing.display()
            ),
        ),
    )
    .unwrap();
    let r = d.client(&uri, &format!("define {}; start net4", broken.display()));
    assert!(
        r.failed().contains("QEMU failed to start net4"),
        "{}",
        r.stderr
    );
    assert!(
        !taps().contains("vwnet"),
        "the failed QEMU's tap was left: {}",
        taps()
    );
    drop(d);
}
