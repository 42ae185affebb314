//! virtwasm against the real `virsh` as the oracle: every sequence below runs as
//! `virsh -c test:///default "SCRIPT"` and as `virtwasm -c test:///default "SCRIPT"` (some
//! with `-q`), and stdout, stderr and the exit code must be identical byte for byte.
//!
//! Both tools keep per-process state for `test:///default`, so a sequence can change state
//! and then observe it. Each case gets a fresh working directory holding the XML files the
//! scripts refer to as `{dir}`; the directory is emptied and rewritten between the two runs,
//! at the same path, so paths printed by either tool are equal and neither tool sees the
//! other's save images.
//!
//! The only normalisation is the number on dominfo's `CPU time:` line (see [`normalise`]).
//! Every XML file carries a fixed uuid (and MAC where there is one), and no case prints a
//! generated one, so nothing else needs normalising.
//!
//! Where virsh is not installed the test says so loudly on stderr and passes.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const URI: &str = "test:///default";

/// A virtwasm run taking longer than this is killed and counted as a mismatch.
const TIMEOUT: Duration = Duration::from_secs(60);

/// virsh 9.0's `save` and `managedsave` sometimes hang forever, more often on a loaded
/// machine: the worker thread quits virshWatchJob's GMainLoop before the main thread enters
/// `g_main_loop_run`, which then never returns (seen in gdb). A virsh run is therefore
/// killed after this long and run again from scratch, up to [`VIRSH_ATTEMPTS`] times.
const VIRSH_TIMEOUT: Duration = Duration::from_secs(10);
const VIRSH_ATTEMPTS: usize = 5;

const DEFAULT_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

/// Files written into each case's `{dir}` before each tool runs.
const FILES: &[(&str, &str)] = &[
    (
        "vm1.xml",
        "<domain type='test'>
  <name>vm1</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='i686'>hvm</type>
    <boot dev='hd'/>
  </os>
</domain>
",
    ),
    (
        "titled.xml",
        "<domain type='test'>
  <name>titled</name>
  <uuid>33333333-4444-5555-6666-777777777777</uuid>
  <title>A titled guest</title>
  <description>Some description</description>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <os>
    <type>hvm</type>
  </os>
</domain>
",
    ),
    (
        "tvm.xml",
        "<domain type='test'>
  <name>tvm</name>
  <uuid>aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</uuid>
  <memory unit='KiB'>262144</memory>
  <vcpu>1</vcpu>
  <os>
    <type>hvm</type>
  </os>
</domain>
",
    ),
    (
        "vv.xml",
        "<domain type='test'>
  <name>vv</name>
  <uuid>bbbbbbbb-cccc-dddd-eeee-ffffffffffff</uuid>
  <memory unit='KiB'>1024</memory>
  <os>
    <type>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/default-pool/v.img'/>
      <target dev='vda'/>
    </disk>
  </devices>
</domain>
",
    ),
    (
        "displays.xml",
        "<domain type='test'>
  <name>displays</name>
  <memory unit='KiB'>8192</memory>
  <os><type>hvm</type></os>
  <devices>
    <graphics type='vnc' port='5903' autoport='no' listen='127.0.0.1'/>
    <graphics type='spice' port='5910' autoport='no' listen='::1'/>
  </devices>
</domain>
",
    ),
    (
        "wildcard.xml",
        "<domain type='test'>
  <name>wildcard</name>
  <memory unit='KiB'>8192</memory>
  <os><type>hvm</type></os>
  <devices><graphics type='vnc' port='5904' autoport='no' listen='0.0.0.0'/></devices>
</domain>
",
    ),
    (
        "v6wildcard.xml",
        "<domain type='test'>
  <name>v6wildcard</name>
  <memory unit='KiB'>8192</memory>
  <os><type>hvm</type></os>
  <devices><graphics type='vnc' port='5906' autoport='no' listen='::'/></devices>
</domain>
",
    ),
    (
        "net1.xml",
        "<network>
  <name>net1</name>
  <uuid>22222222-3333-4444-5555-666666666666</uuid>
  <bridge name='virbr9'/>
  <mac address='52:54:00:11:22:33'/>
  <ip address='10.9.0.1' netmask='255.255.255.0'/>
</network>
",
    ),
];

/// `(name, script, quiet)`: `{dir}` in a script is the case's working directory and
/// `{uuid}` the default domain's uuid.
const CASES: &[(&str, &str, bool)] = &[
    // ---- list and its filters
    ("list_default", "list", false),
    // ---- where a display listens
    (
        "display_addresses",
        "define {dir}/displays.xml; vncdisplay displays; domdisplay displays; start displays; \
         vncdisplay displays; domdisplay displays; domdisplay --type spice displays; \
         domdisplay --all displays; domdisplay --type rdp displays; define {dir}/wildcard.xml; \
         start wildcard; vncdisplay wildcard; domdisplay wildcard; define {dir}/v6wildcard.xml; \
         start v6wildcard; vncdisplay v6wildcard; domdisplay v6wildcard; vncdisplay test; \
         domdisplay test",
        false,
    ),
    ("list_all", "list --all", false),
    (
        "list_inactive_empty",
        "list --inactive; list --all --inactive",
        false,
    ),
    (
        "list_name_uuid_id",
        "list --name; list --uuid; list --id; list --name --uuid; list --name --id; list --all --name --uuid",
        false,
    ),
    (
        "list_state_filters",
        "list --state-running; list --state-paused; list --state-shutoff; list --state-other; list --all --state-other",
        false,
    ),
    (
        "list_persistent_transient",
        "list --persistent; list --transient",
        false,
    ),
    (
        "list_autostart_filters",
        "list --autostart; list --no-autostart; autostart test; list --autostart; list --no-autostart",
        false,
    ),
    (
        "list_title_table",
        "list --title; list --table; list --all --table --title",
        false,
    ),
    ("list_table_name_exclusive", "list --table --name", false),
    (
        "list_mixed_states",
        "define {dir}/vm1.xml; define {dir}/titled.xml; start titled; suspend titled; \
         list --all --title; list --title; list --all --name; list --all --uuid; list --all --id; \
         list --state-paused; list --state-running; list --state-shutoff; \
         list --state-shutoff --state-paused; list --all --state-running; list --inactive --name; \
         list --all --persistent; list --all --transient; list --all --autostart; list --all --no-autostart",
        false,
    ),
    (
        "list_managed_save_filters",
        "managedsave test; list --all --with-managed-save; list --all --without-managed-save; list --all --managed-save",
        false,
    ),
    // ---- domain lookups
    ("dominfo_running", "dominfo test", false),
    (
        "dominfo_by_id_uuid_and_missing",
        "dominfo 1; dominfo {uuid}; dominfo nosuch; dominfo 7",
        false,
    ),
    (
        "domstate_reason",
        "domstate test; domstate test --reason; domstate --reason 1; domstate {uuid}; domstate nosuch; domstate nosuch --reason",
        false,
    ),
    (
        "domid_domname_domuuid",
        "domid test; domid {uuid}; domname 1; domname {uuid}; domuuid test; domuuid 1",
        false,
    ),
    (
        "domid_domname_domuuid_missing",
        "domid nosuch; domname 99; domuuid nosuch; domname test; domid 1",
        false,
    ),
    (
        "domid_of_shut_off",
        "destroy test; domid test; domname 1; domuuid test; domstate test --reason",
        false,
    ),
    // ---- lifecycle verbs on running, paused, shut-off and missing domains
    (
        "suspend_resume_running",
        "suspend test; domstate test --reason; list --state-paused; resume test; domstate test --reason",
        false,
    ),
    (
        "suspend_paused_resume_running",
        "suspend test; suspend test; resume test; resume test",
        false,
    ),
    (
        "lifecycle_on_paused",
        "suspend test; reboot test; reset test; start test; shutdown test; domstate test --reason",
        false,
    ),
    (
        "destroy_paused",
        "suspend test; destroy test; domstate test --reason; list --all",
        false,
    ),
    (
        "lifecycle_on_shut_off",
        "destroy test; destroy test; shutdown test; reboot test; reset test; suspend test; resume test; \
         domstate test --reason; start test; domid test; domstate test --reason",
        false,
    ),
    ("start_running", "start test", false),
    (
        "reboot_reset_running",
        "reboot test; domstate test --reason; reset test; domstate test --reason",
        false,
    ),
    (
        "shutdown_running",
        "shutdown test; domstate test --reason; domid test; list --all; start test; domid test",
        false,
    ),
    (
        "start_paused_flag",
        "destroy test; start test --paused; domstate test --reason",
        false,
    ),
    (
        "lifecycle_on_missing",
        "start nosuch; shutdown nosuch; reboot nosuch; reset nosuch; destroy nosuch; suspend nosuch; \
         resume nosuch; undefine nosuch; autostart nosuch; autostart --disable nosuch",
        false,
    ),
    (
        "autostart_toggle",
        "autostart test; dominfo test; autostart --disable test; autostart test --disable; dominfo test",
        false,
    ),
    (
        "undefine_running",
        "undefine test; list --all; list --transient; dominfo test; destroy test; list --all; dominfo test",
        false,
    ),
    (
        "undefine_shut_off",
        "destroy test; undefine test; list --all; undefine test",
        false,
    ),
    (
        "autostart_undefine_paused",
        "suspend test; autostart test; undefine test; list --all; domstate test --reason; destroy test; list --all",
        false,
    ),
    (
        "autostart_undefine_shut_off",
        "destroy test; autostart test; list --all --autostart; autostart --disable test; list --all --no-autostart; \
         undefine test; autostart test",
        false,
    ),
    (
        "named_domain_option",
        "destroy --domain test; start --domain test; domid --domain test",
        false,
    ),
    // ---- define and create from XML
    (
        "define_and_inspect",
        "define {dir}/vm1.xml; list --all; dominfo vm1; domstate vm1 --reason; domid vm1; dumpxml vm1",
        false,
    ),
    (
        "define_start_dumpxml",
        "define {dir}/vm1.xml; start vm1; list; domid vm1; domstate vm1 --reason; dumpxml vm1; dumpxml --inactive vm1; \
         destroy vm1; undefine vm1; list --all",
        false,
    ),
    (
        "define_twice_create_defined",
        "define {dir}/vm1.xml; define {dir}/vm1.xml; create {dir}/vm1.xml; list --all; start vm1; \
         undefine vm1; list --all; destroy vm1; list --all",
        false,
    ),
    (
        "create_transient",
        "create {dir}/tvm.xml; list --all; list --transient; list --persistent; dominfo tvm; \
         domstate tvm --reason; destroy tvm; list --all; dominfo tvm",
        false,
    ),
    (
        "create_autostart_undefine_transient",
        "create {dir}/tvm.xml; autostart tvm; undefine tvm; list --all; dominfo tvm",
        false,
    ),
    (
        "define_create_missing_file",
        "define {dir}/nonexist.xml; create {dir}/nonexist.xml",
        false,
    ),
    (
        "define_titled",
        "define {dir}/titled.xml; list --all --title; dominfo titled; dumpxml titled",
        false,
    ),
    (
        "dumpxml_default",
        "dumpxml test; dumpxml --inactive test",
        false,
    ),
    ("dumpxml_missing", "dumpxml nosuch", false),
    // ---- storage
    (
        "pool_list",
        "pool-list; pool-list --all; pool-list --details",
        false,
    ),
    (
        "pool_info_dumpxml",
        "pool-info default-pool; pool-info default-pool --bytes; pool-dumpxml default-pool; \
         pool-info nosuch; pool-dumpxml nosuch",
        false,
    ),
    (
        "vol_list_empty",
        "vol-list default-pool; vol-list default-pool --details; vol-list nosuch",
        false,
    ),
    (
        "vol_lifecycle",
        "vol-create-as default-pool v1.img 10M; vol-create-as default-pool v2.img 1G --allocation 512M --format raw; \
         vol-list default-pool; vol-list default-pool --details; vol-info v1.img --pool default-pool; \
         vol-info /default-pool/v2.img; vol-path v1.img --pool default-pool; vol-dumpxml v1.img --pool default-pool; \
         pool-info default-pool; vol-delete v1.img --pool default-pool; vol-list default-pool",
        false,
    ),
    (
        "vol_errors",
        "vol-create-as default-pool a.img 1M; vol-create-as default-pool a.img 1M; vol-create-as nosuch b.img 1M; \
         vol-create-as default-pool c.img abc; vol-info nosuch --pool default-pool; vol-path nosuch --pool default-pool; \
         vol-dumpxml nosuch --pool default-pool; vol-delete nosuch --pool default-pool; vol-info a.img --pool nosuch; \
         vol-info a.img; vol-info a.img --pool default-pool --bytes; vol-delete a.img --pool default-pool; \
         vol-delete a.img --pool default-pool",
        false,
    ),
    (
        "pool_define_as_lifecycle",
        "pool-define-as p1 dir --target {dir}/p1; pool-list --all; pool-list --all --details; pool-start p1; \
         pool-start p1; pool-list; pool-destroy p1; pool-destroy p1; pool-undefine p1; pool-undefine p1; pool-list --all",
        false,
    ),
    (
        "pool_destroy_default",
        "pool-destroy default-pool; vol-list default-pool; pool-list; pool-list --all; pool-info default-pool; \
         pool-start default-pool; pool-list",
        false,
    ),
    // ---- networks
    (
        "net_list_info_dumpxml",
        "net-list; net-list --all; net-info default; net-info nosuch; net-dumpxml default; net-dumpxml nosuch",
        false,
    ),
    (
        "net_lifecycle",
        "net-define {dir}/net1.xml; net-list --all; net-info net1; net-start net1; net-start net1; net-list; \
         net-dumpxml net1; net-destroy net1; net-destroy net1; net-undefine net1; net-undefine net1; net-list --all; \
         net-start nosuch; net-destroy nosuch",
        false,
    ),
    (
        "net_destroy_default",
        "net-destroy default; net-list; net-list --all; net-info default; net-start default; net-list",
        false,
    ),
    // ---- host and devices
    ("nodeinfo", "nodeinfo", false),
    (
        "domblklist_domiflist",
        "domblklist test; domblklist test --details; domiflist test; domblklist nosuch; domiflist nosuch",
        false,
    ),
    (
        "devices_of_bare_domain",
        "define {dir}/vm1.xml; domblklist vm1; domiflist vm1; vcpucount vm1; snapshot-list vm1",
        false,
    ),
    (
        "snapshot_list",
        "snapshot-list test; snapshot-list nosuch",
        false,
    ),
    // ---- vcpus and memory
    (
        "vcpucount_setvcpus",
        "vcpucount test; setvcpus test 1; vcpucount test; dominfo test; setvcpus test 4; setvcpus test 0; vcpucount nosuch",
        false,
    ),
    (
        "setmem_setmaxmem_running",
        "setmem test 1048576; dominfo test; setmem test 99999999; setmaxmem test 4194304; \
         setmaxmem test 4194304 --config; dominfo test; setmem test abc; setmem nosuch 1024",
        false,
    ),
    (
        "setmem_setvcpus_shut_off",
        "destroy test; setmaxmem test 4194304; setmem test 1024; setvcpus test 1; setvcpus test 1 --config; \
         dominfo test; vcpucount test",
        false,
    ),
    // ---- save, restore, managed save
    (
        "save_restore",
        "save test {dir}/test.sav; list --all; domstate test --reason; restore {dir}/test.sav; list; \
         domstate test --reason; domid test",
        false,
    ),
    (
        "save_restore_errors",
        "save nosuch {dir}/x.sav; restore {dir}/nonexist.sav; destroy test; save test {dir}/t2.sav",
        false,
    ),
    (
        "managedsave_cycle",
        "managedsave test; list --all; dominfo test; domstate test --reason; start test; domstate test --reason; dominfo test",
        false,
    ),
    (
        "managedsave_remove",
        "managedsave-remove test; managedsave test; managedsave test; managedsave-remove test; \
         managedsave-remove test; list --all; managedsave nosuch; managedsave-remove nosuch",
        false,
    ),
    // ---- parsing: unknown commands and options, missing options, blank lines, exit codes
    ("unknown_command", "nosuch", false),
    (
        "unknown_command_aborts_sequence",
        "list; nosuch; list",
        false,
    ),
    ("unknown_option", "list --bogus", false),
    (
        "unknown_option_aborts_sequence",
        "list --all; dominfo test --bogus",
        false,
    ),
    ("abbreviated_option", "list --al", false),
    ("missing_required_domain", "start", false),
    ("missing_option_value", "dominfo --domain", false),
    ("missing_required_size", "setmem test", false),
    (
        "missing_required_capacity",
        "vol-create-as default-pool v",
        false,
    ),
    ("unexpected_extra_argument", "domstate test extra", false),
    ("help_unknown_command", "help nosuch", false),
    (
        "blank_line_after_each_command",
        "domid test; domid test; domname 1; list;;list",
        false,
    ),
    (
        "exit_code_is_last_commands",
        "dominfo nosuch; domid test",
        false,
    ),
    (
        "exit_code_failing_last",
        "domid test; dominfo nosuch",
        false,
    ),
    // ---- quiet
    (
        "quiet_tables",
        "list --all; pool-list; net-list --all; vol-list default-pool; snapshot-list test; domblklist test; \
         domiflist test; vcpucount test; dominfo test; nodeinfo",
        true,
    ),
    (
        "quiet_lifecycle",
        "destroy test; start test; suspend test; suspend test; domstate test --reason; resume test; \
         define {dir}/vm1.xml; undefine vm1; list --all --name; list --uuid",
        true,
    ),
    (
        "quiet_save",
        "save test {dir}/q.sav; restore {dir}/q.sav; domstate test --reason; managedsave test; \
         managedsave-remove test; list --all",
        true,
    ),
    ("quiet_unknown_command", "nosuch", true),
    // ---- added with the commands they cover
    (
        "vol_resize_wipe_unsupported",
        "vol-create-as default-pool a.img 1M; vol-resize a.img 2M --pool default-pool; vol-resize a.img 512K --pool default-pool; vol-info a.img --pool default-pool; vol-wipe a.img --pool default-pool; vol-wipe nosuch --pool default-pool",
        false,
    ),
    (
        "event_and_domstats",
        "event --all --timeout 1; domstats test; domstats; destroy test; domstats --state; domstats nosuch",
        false,
    ),
    (
        "hotplug_unsupported_and_missing",
        "detach-disk test vdz; detach-interface test network --mac 52:54:00:11:22:33; domblklist test; domiflist test",
        false,
    ),
    ("domcapabilities_unsupported", "domcapabilities", false),
    (
        "undefine_with_snapshots_and_managed_save",
        "destroy test; snapshot-create-as test s1; undefine test; undefine test --snapshots-metadata; list --all",
        false,
    ),
    (
        "undefine_refuses_managed_save_image",
        "managedsave test; undefine test; undefine test --managed-save; list --all",
        false,
    ),
    (
        "undefine_remove_all_storage",
        "vol-create-as default-pool v.img 1M; define {dir}/vv.xml; undefine vv --remove-all-storage; vol-list default-pool; destroy test; undefine test --remove-all-storage",
        false,
    ),
    (
        "dumpxml_xpath",
        "dumpxml test --xpath //name; dumpxml test --xpath //disk/target; dumpxml test --xpath //devices/interface --wrap; \
         dumpxml test --xpath 'string(//name)'; dumpxml test --xpath //nosuch; dumpxml test --xpath //devices; dumpxml test --inactive --xpath //os",
        false,
    ),
    (
        "domifaddr_sources_and_states",
        "domifaddr test; domifaddr test --full; domifaddr test --interface vnet7; domifaddr test --source agent; \
         domifaddr test --source bogus; destroy test; domifaddr test; domifaddr nosuch",
        false,
    ),
    (
        "start_console_without_tty",
        "destroy test; start test --console",
        false,
    ),
    (
        "net_update_dhcp_hosts_and_ranges",
        "net-update default add ip-dhcp-host \"<host mac='52:54:00:00:00:01' name='h1' ip='192.168.122.10'/>\"; net-dumpxml default; \
         net-update default add ip-dhcp-host \"<host mac='52:54:00:00:00:01' name='h1' ip='192.168.122.10'/>\"; \
         net-update default delete ip-dhcp-host \"<host mac='52:54:00:00:00:01'/>\"; \
         net-update default add ip-dhcp-range \"<range start='192.168.122.100' end='192.168.122.110'/>\" --config; \
         net-dumpxml default; net-update default add bogus-section '<x/>'; net-update nosuch add ip-dhcp-host '<host/>'",
        false,
    ),
    (
        "vol_upload_download_unsupported",
        "vol-create-as default-pool a.img 1M; vol-upload a.img {dir}/vm1.xml --pool default-pool; vol-download a.img {dir}/out.img --pool default-pool; vol-upload nosuch {dir}/vm1.xml --pool default-pool",
        false,
    ),
];

const TIMED_OUT: &str = "timed out after";

/// What one run printed, normalised.
struct Outcome {
    stdout: String,
    stderr: String,
    /// The exit code, or why there is none.
    exit: String,
}

/// The only rule: libvirt's test driver reports the time of day as a domain's CPU time
/// (`testDomainGetInfo` fills `cpuTime` from the clock), so dominfo's
/// `CPU time:       1795639390.9s` differs between any two runs, even of virsh. The
/// number on exactly that line shape is replaced by `<N>`; nothing else is touched.
fn normalise(text: &str) -> String {
    const PREFIX: &str = "CPU time:       ";
    text.split_inclusive('\n')
        .map(|line| {
            let (body, end) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            if let Some(rest) = body.strip_prefix(PREFIX)
                && let Some(number) = rest.strip_suffix('s')
                && is_decimal(number)
            {
                format!("{PREFIX}<N>s{end}")
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// `DIGITS` or `DIGITS.DIGITS`.
fn is_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && parts.next().is_none_or(digits)
}

/// Runs `command` with stdout and stderr captured in files under `capture`, killing it
/// after `timeout`.
fn run(mut command: Command, capture: &Path, tag: &str, timeout: Duration) -> Outcome {
    let out_path = capture.join(format!("{tag}.stdout"));
    let err_path = capture.join(format!("{tag}.stderr"));
    command
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout capture"))
        .stderr(File::create(&err_path).expect("create stderr capture"));
    let mut child = command.spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    let exit = loop {
        match child.try_wait().expect("wait") {
            Some(status) => {
                break match status.code() {
                    Some(code) => code.to_string(),
                    None => format!("killed by a signal ({status})"),
                };
            }
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("{TIMED_OUT} {}s", timeout.as_secs());
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    Outcome {
        stdout: normalise(&read(&out_path)),
        stderr: normalise(&read(&err_path)),
        exit,
    }
}

/// Empties `dir` and writes [`FILES`] into it.
fn prepare(dir: &Path) {
    for entry in fs::read_dir(dir).expect("read work dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            fs::remove_dir_all(&path).expect("remove dir");
        } else {
            fs::remove_file(&path).expect("remove file");
        }
    }
    for (name, text) in FILES {
        fs::write(dir.join(name), text).expect("write fixture");
    }
}

fn args(quiet: bool, script: &str) -> Vec<String> {
    let mut v = Vec::new();
    if quiet {
        v.push("-q".to_string());
    }
    v.extend(["-c".to_string(), URI.to_string(), script.to_string()]);
    v
}

/// A line-based diff (longest common subsequence): ` ` both, `-` virsh only, `+` virtwasm
/// only. Each line is shown ending in `$` so trailing blanks and blank lines are visible.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.split_inclusive('\n').collect();
    let b: Vec<&str> = actual.split_inclusive('\n').collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let show = |mark: char, line: &str| match line.strip_suffix('\n') {
        Some(body) => format!("    {mark}{body}$\n"),
        None => format!("    {mark}{line}    (no newline at end)\n"),
    };
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out += &show(' ', a[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &show('+', b[j]);
            j += 1;
        } else {
            out += &show('-', a[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn virsh_and_virtwasm_print_the_same() {
    let Some(virsh) = common::virsh() else {
        eprintln!("SKIPPED: virsh not found (install Debian's libvirt-clients)");
        return;
    };
    assert!(
        CASES.len() >= 45,
        "the table must cover at least 45 sequences"
    );
    let names: std::collections::HashSet<_> = CASES.iter().map(|c| c.0).collect();
    assert_eq!(names.len(), CASES.len(), "case names must be unique");

    let mut report = String::new();
    let mut failed: Vec<&str> = Vec::new();
    for &(name, script, quiet) in CASES {
        let work = tempfile::tempdir().expect("work dir");
        let capture = tempfile::tempdir().expect("capture dir");
        let virsh_home = tempfile::tempdir().expect("virsh home");
        let virtwasm_home = tempfile::tempdir().expect("virtwasm home");
        let dir: PathBuf = work.path().to_path_buf();
        let script = script
            .replace("{dir}", dir.to_str().expect("utf-8 temp path"))
            .replace("{uuid}", DEFAULT_UUID);
        let argv = args(quiet, &script);

        let mut expected;
        let mut attempt = 1;
        loop {
            prepare(&dir);
            let mut v = Command::new(&virsh);
            v.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", virsh_home.path())
                .args(&argv);
            expected = run(v, capture.path(), "virsh", VIRSH_TIMEOUT);
            if !expected.exit.starts_with(TIMED_OUT) || attempt == VIRSH_ATTEMPTS {
                break;
            }
            eprintln!("{name}: virsh hung (virshWatchJob race), running it again");
            attempt += 1;
        }

        prepare(&dir);
        let mut w = common::command(virtwasm_home.path());
        w.args(&argv);
        let actual = run(w, capture.path(), "virtwasm", TIMEOUT);

        if expected.stdout == actual.stdout
            && expected.stderr == actual.stderr
            && expected.exit == actual.exit
        {
            continue;
        }
        failed.push(name);
        report += &format!(
            "\n=== {name}{}: {script}\n  exit code: virsh {}, virtwasm {}\n",
            if quiet { " (-q)" } else { "" },
            expected.exit,
            actual.exit
        );
        for (stream, e, a) in [
            ("stdout", &expected.stdout, &actual.stdout),
            ("stderr", &expected.stderr, &actual.stderr),
        ] {
            if e != a {
                report += &format!("  {stream} (-virsh +virtwasm):\n{}", diff(e, a));
            }
        }
    }

    let same = CASES.len() - failed.len();
    println!("{report}");
    let summary = format!(
        "virsh compatibility: {same} of {} sequences identical",
        CASES.len()
    );
    println!("{summary}");
    eprintln!("{summary}");
    assert!(
        failed.is_empty(),
        "{summary}; mismatching: {}",
        failed.join(", ")
    );
}
