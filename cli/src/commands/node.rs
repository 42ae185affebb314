//! Host and connection commands.

use super::{Args, Command, Outcome, flag};
use crate::session::Session;

/// The node commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "nodeinfo",
        group: "Host and Hypervisor",
        help: "node information",
        opts: &[flag("json", "print as JSON")],
        run: nodeinfo,
    },
    Command {
        name: "version",
        group: "Host and Hypervisor",
        help: "show version",
        opts: &[flag("daemon", "report daemon version too")],
        run: version,
    },
    Command {
        name: "uri",
        group: "Host and Hypervisor",
        help: "print the hypervisor canonical URI",
        opts: &[],
        run: uri,
    },
    Command {
        name: "hostname",
        group: "Host and Hypervisor",
        help: "print the hypervisor hostname",
        opts: &[],
        run: hostname,
    },
];

fn nodeinfo(sess: &mut Session, a: &Args) -> Outcome {
    let n = sess.conn()?.node_info()?;
    if a.flag("json") {
        return sess.print_json(&n);
    }
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<20} {v}\n"));
    line("CPU model:", n.cpu_model.clone());
    line("CPU(s):", n.cpus.to_string());
    line("CPU frequency:", format!("{} MHz", n.mhz));
    line("CPU socket(s):", n.sockets.to_string());
    line("Core(s) per socket:", n.cores.to_string());
    line("Thread(s) per core:", n.threads.to_string());
    line("NUMA cell(s):", n.nodes.to_string());
    line("Memory size:", format!("{} KiB", n.memory_kib));
    sess.print(&out);
    Ok(())
}

fn version(sess: &mut Session, _a: &Args) -> Outcome {
    let ours = env!("CARGO_PKG_VERSION");
    let (driver, driver_version) = sess.conn()?.driver_version()?;
    sess.print(&format!(
        "Compiled against library: virtwasm {ours}\nUsing library: virtwasm {ours}\nUsing API: {driver} {ours}\nRunning hypervisor: {driver} {driver_version}\n"
    ));
    Ok(())
}

fn uri(sess: &mut Session, _a: &Args) -> Outcome {
    let u = sess.conn()?.uri().to_string();
    sess.print(&format!("{u}\n"));
    Ok(())
}

fn hostname(sess: &mut Session, _a: &Args) -> Outcome {
    sess.conn()?;
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(super::Failure::msg(format!(
            "cannot get the host name: {}",
            std::io::Error::last_os_error()
        )));
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    sess.print(&format!("{}\n", String::from_utf8_lossy(&buf[..end])));
    Ok(())
}
