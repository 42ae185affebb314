//! `virtwasm`: the virsh-compatible command line of virtwasm.
//!
//! `virtwasm [-c URI] [-r] [-q] [COMMAND [ARGS] [; COMMAND ...]]`, or with no command an
//! interactive shell reading standard input. Commands, flags, tables and error lines follow
//! virsh's, so scripts written for virsh run unchanged.

mod commands;
mod console;
mod docs;
mod progress;
mod session;
mod shell;
mod table;
mod xpath;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use session::{Session, Settings};

/// Command-line options that come before the command.
#[derive(Debug, Parser)]
#[command(
    name = "virtwasm",
    version,
    about = "virtwasm: manage virtual machines and containers through sandboxed WebAssembly driver plugins",
    disable_help_subcommand = true
)]
struct Cli {
    /// Hypervisor connection URI (default: $VIRTWASM_DEFAULT_URI, else qemu:///system for root and qemu:///session for others).
    #[arg(short = 'c', long = "connect", value_name = "URI")]
    connect: Option<String>,
    /// Connect read-only: every change is refused.
    #[arg(short = 'r', long)]
    readonly: bool,
    /// Quiet mode: no table headers and no blank line after each command.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Log level for the host's own diagnostics (error, warn, info, debug, trace).
    #[arg(short = 'd', long = "debug", value_name = "LEVEL")]
    debug: Option<String>,
    /// An extra directory of third-party plugins (DIR/NAME/plugin.toml); also $VIRTWASM_PLUGIN_DIR.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dir: Vec<std::path::PathBuf>,
    /// The command and its arguments; `;` separates several commands.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn default_uri() -> String {
    if let Ok(uri) = std::env::var("VIRTWASM_DEFAULT_URI")
        && !uri.is_empty()
    {
        return uri;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        "qemu:///system".into()
    } else {
        "qemu:///session".into()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .debug
        .clone()
        .or_else(|| std::env::var("VIRTWASM_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let settings = Settings {
        uri: cli.connect.clone().unwrap_or_else(default_uri),
        readonly: cli.readonly,
        quiet: cli.quiet,
        plugin_dirs: cli.plugin_dir.clone(),
    };
    if cli.command.first().map(String::as_str) == Some("gen-docs") {
        // `virtwasm gen-docs DIR`: man pages and shell completions for packaging.
        let dir = std::path::PathBuf::from(
            cli.command
                .get(1)
                .map(String::as_str)
                .unwrap_or("target/docs"),
        );
        return match docs::generate(&dir) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: cannot write documentation to '{}': {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    if cli.command.first().map(String::as_str) == Some("proxy") {
        return proxy(&cli.command[1..]);
    }
    let mut sess = Session::new(settings);
    if cli.command.is_empty() {
        return interactive(&mut sess);
    }
    let parsed = if cli.command.len() == 1 {
        shell::split_commands(&cli.command[0])
    } else {
        Ok(shell::split_argv(&cli.command))
    };
    match parsed {
        Ok(cmds) => run_all(&mut sess, &cmds),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `virtwasm proxy URI [--socket PATH] [--readonly]`: what `qemu+ssh://` runs on the far
/// side, joining ssh's standard streams to that host's daemon.
fn proxy(args: &[String]) -> ExitCode {
    let mut uri = None;
    let mut socket = None;
    let mut readonly = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => socket = it.next().map(std::path::PathBuf::from),
            "--readonly" => readonly = true,
            other if uri.is_none() && !other.starts_with("--") => uri = Some(other.to_string()),
            other => {
                eprintln!(
                    "error: proxy: unexpected argument '{other}' (usage: virtwasm proxy URI [--socket PATH] [--readonly])"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let uri = uri.unwrap_or_else(default_uri);
    match virtwasm_api::remote::proxy_stdio(&uri, socket.as_deref(), readonly) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: proxy: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

/// One command ready to run.
type Ready = (&'static commands::Command, commands::Args);

/// Parses every command first (a parse error runs none of them, as in virsh), then runs them
/// in order; the exit status is the last command's.
fn run_all(sess: &mut Session, cmds: &[Vec<String>]) -> ExitCode {
    let mut ready: Vec<Ready> = Vec::new();
    for words in cmds {
        match prepare(words) {
            Ok(Some(r)) => ready.push(r),
            Ok(None) => {}
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut ok = true;
    for (cmd, args) in &ready {
        ok = run_one(sess, cmd, args);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn prepare(words: &[String]) -> Result<Option<Ready>, String> {
    let Some(name) = words.first() else {
        return Ok(None);
    };
    let cmd = match name.as_str() {
        "help" => &HELP,
        other => commands::find(other).ok_or_else(|| format!("unknown command: '{other}'"))?,
    };
    let args = commands::parse(cmd, &words[1..])?;
    Ok(Some((cmd, args)))
}

static HELP: commands::Command = commands::Command {
    name: "help",
    group: "Virsh itself",
    help: "print help",
    opts: &[commands::optional_arg(
        "command",
        "Prints global help, command specific help, or help for a group of related commands",
    )],
    run: help,
};

fn help(sess: &mut Session, a: &commands::Args) -> commands::Outcome {
    if let Some(name) = a.get("command") {
        let cmd = commands::find(name).ok_or_else(|| {
            commands::Failure::msg(format!("command or command group '{name}' doesn't exist"))
        })?;
        sess.print(&commands::help_text(cmd));
        return Ok(());
    }
    let mut out = String::from("Grouped commands:\n\n");
    let mut group = "";
    for c in commands::all() {
        if c.group != group {
            group = c.group;
            out.push_str(&format!(
                " {group} (help keyword '{}'):\n",
                group.split_whitespace().next().unwrap_or("").to_lowercase()
            ));
        }
        out.push_str(&format!("    {:<20} {}\n", c.name, c.help));
    }
    sess.print(&out);
    Ok(())
}

/// Runs one parsed command, printing virsh's error lines and its blank line.
fn run_one(sess: &mut Session, cmd: &commands::Command, args: &commands::Args) -> bool {
    let result = (cmd.run)(sess, args);
    sess.flush();
    let ok = match result {
        Ok(()) => true,
        Err(commands::Failure(lines)) => {
            let mut err = std::io::stderr().lock();
            for line in lines {
                let _ = writeln!(err, "error: {line}");
            }
            false
        }
    };
    if !sess.settings.quiet {
        sess.print("\n");
    }
    sess.flush();
    ok
}

/// The interactive shell: one line at a time from standard input until `quit`, `exit` or
/// end of input.
fn interactive(sess: &mut Session) -> ExitCode {
    let tty = std::io::stdin().is_terminal();
    if !sess.settings.quiet {
        sess.print("Welcome to virtwasm, the virtualization interactive terminal.\n\nType:  'help' for help with commands\n       'quit' to quit\n\n");
    }
    let prompt = if sess.settings.readonly {
        "virtwasm > "
    } else {
        "virtwasm # "
    };
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut ok = true;
    loop {
        if tty || !sess.settings.quiet {
            sess.print(prompt);
            sess.flush();
        }
        let Some(Ok(line)) = lines.next() else {
            if tty || !sess.settings.quiet {
                sess.print("\n");
            }
            break;
        };
        if !tty && !sess.settings.quiet {
            // Echo the command as a terminal would have, so a transcript reads naturally.
            sess.print(&format!("{line}\n"));
        }
        let cmds = match shell::split_commands(&line) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
                continue;
            }
        };
        if cmds
            .iter()
            .any(|c| matches!(c.first().map(String::as_str), Some("quit" | "exit")))
        {
            break;
        }
        let mut ready = Vec::new();
        let mut parse_failed = false;
        for words in &cmds {
            match prepare(words) {
                Ok(Some(r)) => ready.push(r),
                Ok(None) => {}
                Err(msg) => {
                    eprintln!("error: {msg}");
                    parse_failed = true;
                    break;
                }
            }
        }
        if parse_failed {
            ok = false;
            continue;
        }
        for (cmd, args) in &ready {
            ok = run_one(sess, cmd, args);
        }
    }
    sess.flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
