//! A deliberately hostile driver, for the host's sandbox tests only (never bundled).
//!
//! Each verb attacks the sandbox in one way; the domain's `<description>` carries the target
//! (`read:PATH`, `run:PROGRAM`) so the tests choose it:
//!
//! | verb       | attack                                                        |
//! |------------|---------------------------------------------------------------|
//! | `start`    | with `read:PATH`, reads PATH (outside its preopen); else starts |
//! | `shutdown` | with `run:PROGRAM`, runs PROGRAM (outside its allowlist); else stops |
//! | `suspend`  | loops forever                                                 |
//! | `reset`    | allocates and touches 512 MiB (past its memory cap)           |
//! | `reboot`   | panics in the middle of the verb                              |
//! | `start`    | with `spawn:PROGRAM ARG`, starts a long-lived child and keeps its pid |
//! | `start`    | with `identify:PROGRAM`, asks the host for PROGRAM's identity and reports it |
//! | `destroy`  | adopts the recorded child (or, with `adopt:PID`, a process that is not its own), kills and reaps it |
//!
//! Every other verb behaves, so a test can show that the host still answers afterwards.

use virtwasm_sdk::host::process;
use virtwasm_sdk::types::*;
use virtwasm_sdk::{Hypervisor, Network, Storage, VerbResult, error, export_driver, log};

struct Hostile;

fn running() -> DomainRuntime {
    DomainRuntime {
        state: DomainState::Running(RunningReason::Booted),
        driver_data: String::new(),
    }
}

fn target(dom: &DomainRef, prefix: &str) -> Option<String> {
    dom.def
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix(prefix))
        .map(str::to_string)
}

impl Hypervisor for Hostile {
    fn open(_path: String, _params: Vec<(String, String)>) -> VerbResult<InitialObjects> {
        Ok(InitialObjects {
            domains: vec![],
            pools: vec![],
            networks: vec![],
        })
    }

    fn get_node_info() -> VerbResult<NodeInfo> {
        Ok(NodeInfo {
            cpu_model: "hostile".into(),
            memory_kib: 1024,
            cpus: 1,
            mhz: 1,
            nodes: 1,
            sockets: 1,
            cores: 1,
            threads: 1,
        })
    }

    fn fill_defaults(def: DomainDef) -> VerbResult<DomainDef> {
        Ok(def)
    }

    fn start(dom: DomainRef, _paused: bool) -> VerbResult<DomainRuntime> {
        if let Some(command) = target(&dom, "spawn:") {
            // A guest-like child: the host owns it; the pid goes into the runtime record.
            let mut words = command.split_whitespace();
            let program = words.next().unwrap_or_default().to_string();
            let args: Vec<String> = words.map(str::to_string).collect();
            let child = process::spawn(&program, &args)?;
            return Ok(DomainRuntime {
                state: DomainState::Running(RunningReason::Booted),
                driver_data: child.pid().to_string(),
            });
        }
        if let Some(program) = target(&dom, "identify:") {
            // The answer travels back as an error so the test reads every field.
            let id = process::identify(&program)?;
            return Err(error(
                ErrorKind::Internal,
                format!(
                    "identified {program}: path {} resolved {} size {} mtime {}.{:09} inode {} device {}",
                    id.path,
                    id.resolved,
                    id.size,
                    id.mtime_seconds,
                    id.mtime_nanoseconds,
                    id.inode,
                    id.device
                ),
            ));
        }
        if let Some(bridge) = target(&dom, "tap:") {
            let tap = virtwasm_sdk::host::netdev::create_tap(&bridge)?;
            return Err(error(
                ErrorKind::Internal,
                format!("SANDBOX ESCAPE: made tap {tap} on {bridge}"),
            ));
        }
        if let Some(name) = target(&dom, "untap:") {
            virtwasm_sdk::host::netdev::delete_tap(&name)?;
            return Err(error(
                ErrorKind::Internal,
                format!("SANDBOX ESCAPE: deleted {name}"),
            ));
        }
        let Some(path) = target(&dom, "read:") else {
            return Ok(running());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Err(error(
                ErrorKind::Internal,
                format!("SANDBOX ESCAPE: read {} bytes from {path}", text.len()),
            )),
            Err(e) => Err(error(
                ErrorKind::PermissionDenied,
                format!("reading {path}: {e}"),
            )),
        }
    }

    fn shutdown(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        let Some(program) = target(&dom, "run:") else {
            return Ok(DomainRuntime {
                state: DomainState::Shutoff(ShutoffReason::Shutdown),
                driver_data: String::new(),
            });
        };
        let out = process::run(&program, &[], &[], 1000)?;
        Err(error(
            ErrorKind::Internal,
            format!("SANDBOX ESCAPE: ran {program}, exit {:?}", out.status.code),
        ))
    }

    fn suspend(_dom: DomainRef) -> VerbResult<DomainRuntime> {
        log::info("about to spin forever");
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn reset(_dom: DomainRef) -> VerbResult<DomainRuntime> {
        let mut hog = vec![0u8; 512 << 20];
        for i in (0..hog.len()).step_by(4096) {
            hog[i] = 1;
        }
        Err(error(
            ErrorKind::Internal,
            format!("SANDBOX ESCAPE: allocated {} bytes", hog.len()),
        ))
    }

    fn reboot(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        log::warn("rebooting, or rather not");
        panic!("hostile plugin panicked while rebooting '{}'", dom.def.name);
    }

    fn destroy(dom: DomainRef, _graceful: bool) -> VerbResult<DomainRuntime> {
        let pid = match target(&dom, "adopt:") {
            Some(pid) => pid.parse::<u32>().ok(),
            None => dom
                .runtime
                .as_ref()
                .and_then(|r| r.driver_data.parse::<u32>().ok()),
        };
        if let Some(pid) = pid {
            let child = process::adopt(pid)?;
            child.kill(9)?;
            let status = child
                .wait(5000)?
                .ok_or_else(|| error(ErrorKind::Timeout, format!("process {pid} did not end")))?;
            log::info(&format!(
                "process {pid} ended by signal {:?}",
                status.signal
            ));
        }
        Ok(DomainRuntime {
            state: DomainState::Shutoff(ShutoffReason::Destroyed),
            driver_data: String::new(),
        })
    }

    fn resume(_dom: DomainRef) -> VerbResult<DomainRuntime> {
        Ok(running())
    }
}

impl Storage for Hostile {}
impl Network for Hostile {}

export_driver!(Hostile);
