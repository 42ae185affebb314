//! The host's own node facts (`virsh nodeinfo`), for drivers that do not answer
//! `get-node-info` themselves: a driver plugin has no business reading `/proc` and `/sys`,
//! while the numbers describe the machine the host (and its guests) run on.
//!
//! The numbers are computed as libvirt computes them for its QEMU driver
//! (`virCapabilitiesGetNodeInfo`, `virHostCPUGetInfoPopulateLinux`): the model is the
//! machine's architecture; memory is `MemTotal`; CPUs are the online ones; the topology is
//! counted per NUMA node from sysfs, and when nodes × sockets × cores × threads does not
//! equal the CPUs (online and offline), libvirt reports one node and one socket of that many
//! single-threaded cores, and so do we.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::bindings::types::NodeInfo;
use crate::error::{Error, ErrorKind, Result};

/// Where the facts are read from: `/proc` and `/sys/devices/system` on a real host, a
/// directory tree in tests.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `/proc` (`meminfo`, `cpuinfo`).
    pub proc: PathBuf,
    /// `/sys/devices/system` (`cpu/`, `node/`).
    pub sys: PathBuf,
    /// The machine's architecture as `uname -m` says it (`x86_64`).
    pub arch: String,
}

impl Sources {
    /// This host's.
    pub fn host() -> Sources {
        Sources {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys/devices/system"),
            arch: machine_arch(),
        }
    }
}

/// The machine's architecture (`uname -m`), which libvirt reports as the CPU model; the
/// architecture virtwasm was built for if uname fails.
fn machine_arch() -> String {
    // SAFETY: utsname is plain data, and uname fills it (NUL-terminated) or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } == 0 {
        // SAFETY: uname NUL-terminates `machine`.
        let machine = unsafe { std::ffi::CStr::from_ptr(uts.machine.as_ptr()) };
        if let Ok(m) = machine.to_str()
            && !m.is_empty()
        {
            return m.to_string();
        }
    }
    std::env::consts::ARCH.to_string()
}

/// This host's node facts.
pub fn node_info() -> Result<NodeInfo> {
    node_info_from(&Sources::host())
}

/// The node facts read from `src`; an error names the file that could not be read.
pub fn node_info_from(src: &Sources) -> Result<NodeInfo> {
    let memory_kib = mem_total_kib(&src.proc)?;
    let mhz = mhz(src);
    let topo = topology(src)?;
    Ok(NodeInfo {
        cpu_model: src.arch.clone(),
        memory_kib,
        cpus: topo.cpus,
        mhz,
        nodes: topo.nodes,
        sockets: topo.sockets,
        cores: topo.cores,
        threads: topo.threads,
    })
}

fn failed(what: String) -> Error {
    Error::new(ErrorKind::Internal, what)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))
}

/// `MemTotal` of `/proc/meminfo`, in KiB (the file's `kB` are KiB).
fn mem_total_kib(proc: &Path) -> Result<u64> {
    let path = proc.join("meminfo");
    let text = read(&path)?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| failed(format!("no MemTotal line in {}", path.display())))
}

/// The CPU frequency in MHz: the architecture's line of `/proc/cpuinfo` (the last CPU's, as
/// libvirt reads it, fraction dropped); when it has none (ARM, or a hypervisor that hides
/// it), the first online CPU's cpufreq maximum; 0 when neither is known.
fn mhz(src: &Sources) -> u32 {
    let prefix = match src.arch.as_str() {
        "x86_64" | "i386" | "i486" | "i586" | "i686" => Some("cpu MHz"),
        a if a.starts_with("ppc") => Some("clock"),
        "s390x" | "s390" => Some("cpu MHz dynamic"),
        _ => None,
    };
    let from_cpuinfo = prefix.and_then(|prefix| {
        let text = std::fs::read_to_string(src.proc.join("cpuinfo")).ok()?;
        text.lines()
            .filter_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == prefix).then_some(value)
            })
            .filter_map(|v| v.trim().split('.').next()?.parse::<u32>().ok())
            .next_back()
    });
    from_cpuinfo
        .filter(|&m| m > 0)
        .or_else(|| {
            let online = cpu_list(&src.sys.join("cpu/online")).ok()?;
            let first = online.iter().next()?;
            let khz: u64 = std::fs::read_to_string(
                src.sys
                    .join(format!("cpu/cpu{first}/cpufreq/cpuinfo_max_freq")),
            )
            .ok()?
            .trim()
            .parse()
            .ok()?;
            u32::try_from(khz / 1000).ok()
        })
        .unwrap_or(0)
}

/// A kernel CPU list (`0-3,8,10-11`).
fn parse_cpu_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                set.extend(a..=b);
            }
            None => {
                set.insert(part.parse().ok()?);
            }
        }
    }
    Some(set)
}

fn cpu_list(path: &Path) -> Result<BTreeSet<u32>> {
    let text = read(path)?;
    parse_cpu_list(&text)
        .ok_or_else(|| failed(format!("cannot parse the CPU list in {}", path.display())))
}

#[derive(Debug, Default, PartialEq)]
struct Topology {
    cpus: u32,
    nodes: u32,
    sockets: u32,
    cores: u32,
    threads: u32,
}

/// What one node directory (`node/nodeN`, or `cpu` itself without NUMA) holds.
#[derive(Debug, Default)]
struct NodeCount {
    /// Online CPUs.
    cpus: u32,
    offline: u32,
    sockets: u32,
    /// The most cores of any socket.
    cores: u32,
    /// The most thread siblings of any CPU.
    threads: u32,
}

/// A number in a sysfs topology file, or `default` when the file does not exist (as
/// libvirt: no `physical_package_id` or `core_id` means 0); -1 also reads as 0.
fn topology_value(sys: &Path, cpu: u32, file: &str) -> Result<u32> {
    let path = sys.join(format!("cpu/cpu{cpu}/topology/{file}"));
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .map(|v| u32::try_from(v).unwrap_or(0))
            .map_err(|e| failed(format!("cannot parse {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(failed(format!("cannot read {}: {e}", path.display()))),
    }
}

/// How many threads share `cpu`'s core (`thread_siblings_list`; 1 without it).
fn siblings(sys: &Path, cpu: u32) -> Result<u32> {
    let path = sys.join(format!("cpu/cpu{cpu}/topology/thread_siblings_list"));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_cpu_list(&text)
            .map(|s| s.len() as u32)
            .ok_or_else(|| failed(format!("cannot parse the CPU list in {}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
        Err(e) => Err(failed(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Counts the CPUs listed in `dir` (entries `cpuN`) that are present.
fn count_node(
    sys: &Path,
    dir: &Path,
    present: &BTreeSet<u32>,
    online: &BTreeSet<u32>,
    s390: bool,
) -> Result<NodeCount> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| failed(format!("cannot read {}: {e}", dir.display())))?;
    let cpus: BTreeSet<u32> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("cpu")?
                .parse::<u32>()
                .ok()
        })
        .filter(|c| present.contains(c))
        .collect();
    let mut count = NodeCount::default();
    let mut cores_of: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for &cpu in &cpus {
        if !online.contains(&cpu) {
            count.offline += 1;
            continue;
        }
        count.cpus += 1;
        let socket = topology_value(sys, cpu, "physical_package_id")?;
        // On s390 a logical CPU is a core (libvirt's rule).
        let core = if s390 {
            cpu
        } else {
            topology_value(sys, cpu, "core_id")?
        };
        cores_of.entry(socket).or_default().insert(core);
        count.threads = count.threads.max(siblings(sys, cpu)?);
    }
    count.sockets = cores_of.len() as u32;
    count.cores = cores_of.values().map(|c| c.len() as u32).max().unwrap_or(0);
    Ok(count)
}

fn topology(src: &Sources) -> Result<Topology> {
    let sys = &src.sys;
    let present = cpu_list(&sys.join("cpu/present"))?;
    let online = cpu_list(&sys.join("cpu/online"))?;
    let s390 = src.arch.starts_with("s390");
    let mut t = Topology::default();
    let mut offline = 0;
    // NUMA nodes first; a host without `node/` (or whose nodes list no CPUs) is one node.
    if let Ok(nodes) = std::fs::read_dir(sys.join("node")) {
        let mut dirs: Vec<PathBuf> = nodes
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("node"))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .map(|e| e.path())
            .collect();
        dirs.sort();
        for dir in dirs {
            let n = count_node(sys, &dir, &present, &online, s390)?;
            t.nodes += 1;
            t.cpus += n.cpus;
            offline += n.offline;
            t.sockets = t.sockets.max(n.sockets);
            t.cores = t.cores.max(n.cores);
            t.threads = t.threads.max(n.threads);
        }
    }
    if t.cpus == 0 || t.nodes == 0 {
        let n = count_node(sys, &sys.join("cpu"), &present, &online, s390)?;
        offline = n.offline;
        t = Topology {
            cpus: n.cpus,
            nodes: 1,
            sockets: n.sockets,
            cores: n.cores,
            threads: n.threads,
        };
    }
    if t.cpus == 0 || t.sockets == 0 || t.threads == 0 {
        return Err(failed(format!(
            "no online CPUs found in {}",
            sys.join("cpu").display()
        )));
    }
    // A topology the counts cannot multiply out to (hidden nodes, AMD modules counted as
    // both cores and threads): libvirt reports it flat, pointing users to the capabilities.
    if t.nodes * t.sockets * t.cores * t.threads != t.cpus + offline {
        t.nodes = 1;
        t.sockets = 1;
        t.cores = t.cpus + offline;
        t.threads = 1;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/devices/system` and `/proc`: `cpus` as (cpu, node, socket, core,
    /// siblings list, online).
    fn tree(cpus: &[(u32, u32, u32, u32, &str, bool)]) -> (tempfile::TempDir, Sources) {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        let proc = tmp.path().join("proc");
        std::fs::create_dir_all(&proc).unwrap();
        let list = |set: Vec<u32>| set.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        std::fs::create_dir_all(sys.join("cpu")).unwrap();
        std::fs::write(
            sys.join("cpu/present"),
            list(cpus.iter().map(|c| c.0).collect()),
        )
        .unwrap();
        std::fs::write(
            sys.join("cpu/online"),
            list(cpus.iter().filter(|c| c.5).map(|c| c.0).collect()),
        )
        .unwrap();
        for &(cpu, node, socket, core, sib, _) in cpus {
            let topo = sys.join(format!("cpu/cpu{cpu}/topology"));
            std::fs::create_dir_all(&topo).unwrap();
            std::fs::write(topo.join("physical_package_id"), format!("{socket}\n")).unwrap();
            std::fs::write(topo.join("core_id"), format!("{core}\n")).unwrap();
            std::fs::write(topo.join("thread_siblings_list"), format!("{sib}\n")).unwrap();
            let n = sys.join(format!("node/node{node}/cpu{cpu}"));
            std::fs::create_dir_all(&n).unwrap();
        }
        std::fs::create_dir_all(sys.join("cpu/cpufreq")).unwrap();
        std::fs::write(
            proc.join("meminfo"),
            "MemTotal:       16318480 kB\nMemFree:         1000 kB\n",
        )
        .unwrap();
        std::fs::write(
            proc.join("cpuinfo"),
            "processor\t: 0\ncpu MHz\t\t: 2400.123\n\nprocessor\t: 1\ncpu MHz\t\t: 2593.906\n",
        )
        .unwrap();
        (
            tmp,
            Sources {
                proc,
                sys,
                arch: "x86_64".into(),
            },
        )
    }

    #[test]
    fn two_nodes_of_one_socket_with_two_hyperthreaded_cores() {
        let (_t, src) = tree(&[
            (0, 0, 0, 0, "0,4", true),
            (1, 0, 0, 1, "1,5", true),
            (4, 0, 0, 0, "0,4", true),
            (5, 0, 0, 1, "1,5", true),
            (2, 1, 1, 0, "2,6", true),
            (3, 1, 1, 1, "3,7", true),
            (6, 1, 1, 0, "2,6", true),
            (7, 1, 1, 1, "3,7", true),
        ]);
        let n = node_info_from(&src).unwrap();
        assert_eq!(
            (n.cpus, n.nodes, n.sockets, n.cores, n.threads),
            (8, 2, 1, 2, 2)
        );
        assert_eq!(n.memory_kib, 16318480);
        // The last CPU's line, its fraction dropped, as libvirt reads it.
        assert_eq!(n.mhz, 2593);
        assert_eq!(n.cpu_model, "x86_64");
    }

    #[test]
    fn without_numa_nodes_the_cpu_directory_is_one_node() {
        let (_t, src) = tree(&[
            (0, 0, 0, 0, "0", true),
            (1, 0, 0, 1, "1", true),
            (2, 0, 0, 2, "2", true),
        ]);
        std::fs::remove_dir_all(src.sys.join("node")).unwrap();
        let n = node_info_from(&src).unwrap();
        assert_eq!(
            (n.cpus, n.nodes, n.sockets, n.cores, n.threads),
            (3, 1, 1, 3, 1)
        );
    }

    #[test]
    fn an_offline_cpu_is_not_counted_and_a_topology_that_does_not_multiply_out_is_flattened() {
        // Two sockets of two cores, one CPU offline: 3 online, and 2 × 2 × 1 = 4 = 3 + 1
        // offline, so the topology stands.
        let (_t, src) = tree(&[
            (0, 0, 0, 0, "0", true),
            (1, 0, 0, 1, "1", true),
            (2, 0, 1, 0, "2", true),
            (3, 0, 1, 1, "3", false),
        ]);
        let n = node_info_from(&src).unwrap();
        assert_eq!(
            (n.cpus, n.nodes, n.sockets, n.cores, n.threads),
            (3, 1, 2, 2, 1)
        );
        // Siblings claimed across cores (AMD modules): 1 × 1 × 2 × 2 ≠ 2, so libvirt's flat
        // answer: one socket of two single-threaded cores.
        let (_t, src) = tree(&[(0, 0, 0, 0, "0-1", true), (1, 0, 0, 1, "0-1", true)]);
        let n = node_info_from(&src).unwrap();
        assert_eq!(
            (n.cpus, n.nodes, n.sockets, n.cores, n.threads),
            (2, 1, 1, 2, 1)
        );
    }

    #[test]
    fn the_frequency_falls_back_to_cpufreq_and_else_is_zero() {
        let (_t, mut src) = tree(&[(0, 0, 0, 0, "0", true)]);
        src.arch = "aarch64".into();
        assert_eq!(node_info_from(&src).unwrap().mhz, 0);
        let freq = src.sys.join("cpu/cpu0/cpufreq");
        std::fs::create_dir_all(&freq).unwrap();
        std::fs::write(freq.join("cpuinfo_max_freq"), "2200000\n").unwrap();
        assert_eq!(node_info_from(&src).unwrap().mhz, 2200);
    }

    #[test]
    fn an_unreadable_meminfo_is_named() {
        let (_t, src) = tree(&[(0, 0, 0, 0, "0", true)]);
        std::fs::remove_file(src.proc.join("meminfo")).unwrap();
        let e = node_info_from(&src).unwrap_err();
        assert!(e.message.contains("meminfo"), "{e}");
    }
}
