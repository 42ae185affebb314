//! `virtwasmd`, the virtwasm daemon: see the `virtwasm-daemon` crate.

fn main() -> std::process::ExitCode {
    virtwasm_daemon::main()
}
