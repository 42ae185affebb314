//! Shell completions and man pages, generated from the same command table the parser uses,
//! so they cannot drift from what the CLI accepts.

use clap::{Arg, ArgAction, Command as ClapCommand};

use crate::commands::{self, Kind};

/// The whole command line as a clap tree: global options plus one subcommand per command.
pub fn clap_tree() -> ClapCommand {
    let mut root = ClapCommand::new("virtwasm")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "manage virtual machines and containers through sandboxed WebAssembly driver plugins",
        )
        .long_about(
            "virtwasm speaks virsh's language: the same commands, flags, tables and error lines. \
             Several commands separated by ';' run in one invocation; with no command it reads \
             commands from standard input.",
        )
        .arg(
            Arg::new("connect")
                .short('c')
                .long("connect")
                .value_name("URI")
                .help("hypervisor connection URI"),
        )
        .arg(
            Arg::new("readonly")
                .short('r')
                .long("readonly")
                .action(ArgAction::SetTrue)
                .help("connect read-only"),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::SetTrue)
                .help("quiet mode"),
        )
        .arg(
            Arg::new("debug")
                .short('d')
                .long("debug")
                .value_name("LEVEL")
                .help("log level of the host's diagnostics"),
        )
        .arg(
            Arg::new("plugin-dir")
                .long("plugin-dir")
                .value_name("DIR")
                .help("an extra plugin directory"),
        );
    for cmd in commands::all() {
        let mut sub = ClapCommand::new(cmd.name).about(cmd.help);
        for opt in cmd.opts {
            let mut arg = Arg::new(opt.name).long(opt.name).help(opt.help);
            arg = match opt.kind {
                Kind::Bool => arg.action(ArgAction::SetTrue),
                Kind::Data | Kind::Int => arg.value_name(opt.name.to_uppercase()),
            };
            if opt.positional {
                // virsh takes these bare or as --name; completion offers the bare form.
                arg = Arg::new(opt.name)
                    .value_name(opt.name.to_uppercase())
                    .help(opt.help)
                    .required(opt.required);
            }
            sub = sub.arg(arg);
        }
        root = root.subcommand(sub);
    }
    root
}

/// Writes `virtwasm.1`, one `virtwasm-COMMAND.1` per command, and completions for bash,
/// zsh and fish into `dir`.
pub fn generate(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let tree = clap_tree();
    let mut page = Vec::new();
    clap_mangen::Man::new(tree.clone()).render(&mut page)?;
    let root_page = dir.join("virtwasm.1");
    std::fs::write(&root_page, page)?;
    written.push(root_page);
    for sub in tree.get_subcommands() {
        let mut page = Vec::new();
        let named = sub.clone().name(format!("virtwasm-{}", sub.get_name()));
        clap_mangen::Man::new(named).render(&mut page)?;
        let path = dir.join(format!("virtwasm-{}.1", sub.get_name()));
        std::fs::write(&path, page)?;
        written.push(path);
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut tree = clap_tree();
        let path = clap_complete::generate_to(shell, &mut tree, "virtwasm", dir)?;
        written.push(path);
    }
    Ok(written)
}
