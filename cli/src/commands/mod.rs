//! The command set: one table of definitions (name, options, handler), parsed the way virsh
//! parses its commands, so the same words, flags and error lines work in both.

mod devices;
mod display;
mod domain;
mod edit;
mod monitor;
mod network;
mod node;
mod operation;
mod pki;
mod plugin;
mod save;
mod snapshot;
mod storage;
mod trust;
mod tuning;

use std::collections::{HashMap, HashSet};

use crate::session::Session;

/// What an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A flag.
    Bool,
    /// A value.
    Data,
    /// A number (virsh names these `--name` rather than `<name>` when they are missing).
    Int,
}

/// One option of a command.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// Its name, used as `--name`.
    pub name: &'static str,
    /// Flag or value.
    pub kind: Kind,
    /// Whether a bare word fills it (in declaration order).
    pub positional: bool,
    /// Whether the command refuses to run without it.
    pub required: bool,
    /// One line of help.
    pub help: &'static str,
}

/// A flag.
pub const fn flag(name: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        kind: Kind::Bool,
        positional: false,
        required: false,
        help,
    }
}

/// A required positional value, such as `<domain>`.
pub const fn arg(name: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        kind: Kind::Data,
        positional: true,
        required: true,
        help,
    }
}

/// A required positional number, such as `<count>`.
pub const fn int_arg(name: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        kind: Kind::Int,
        positional: true,
        required: true,
        help,
    }
}

/// An optional value given as `--name VALUE`.
pub const fn value(name: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        kind: Kind::Data,
        positional: false,
        required: false,
        help,
    }
}

/// An optional positional value.
pub const fn optional_arg(name: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        kind: Kind::Data,
        positional: true,
        required: false,
        help,
    }
}

/// How a command failed: the `error: ...` lines virsh would print.
#[derive(Debug)]
pub struct Failure(pub Vec<String>);

impl Failure {
    /// One line.
    pub fn msg(line: impl Into<String>) -> Failure {
        Failure(vec![line.into()])
    }
}

impl From<virtwasm_host::Error> for Failure {
    fn from(e: virtwasm_host::Error) -> Self {
        Failure(vec![e.message])
    }
}

/// A command's outcome.
pub type Outcome = Result<(), Failure>;

/// One command.
pub struct Command {
    /// Its name.
    pub name: &'static str,
    /// Its group in `help`.
    pub group: &'static str,
    /// One line saying what it does.
    pub help: &'static str,
    /// Its options.
    pub opts: &'static [Opt],
    /// The handler.
    pub run: fn(&mut Session, &Args) -> Outcome,
}

/// Parsed options of one invocation.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<&'static str, String>,
    flags: HashSet<&'static str>,
}

impl Args {
    /// Whether flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }
    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    /// The value of a required option (the parser guarantees it is there).
    pub fn req(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }
}

/// Every command, in `help` order.
pub fn all() -> Vec<&'static Command> {
    let mut v: Vec<&'static Command> = Vec::new();
    v.extend(domain::COMMANDS.iter());
    v.extend(tuning::COMMANDS.iter());
    v.extend(save::COMMANDS.iter());
    v.extend(snapshot::COMMANDS.iter());
    v.extend(monitor::COMMANDS.iter());
    v.extend(display::COMMANDS.iter());
    v.extend(devices::COMMANDS.iter());
    v.extend(edit::COMMANDS.iter());
    v.extend(node::COMMANDS.iter());
    v.extend(storage::COMMANDS.iter());
    v.extend(storage::LIFECYCLE.iter());
    v.extend(network::COMMANDS.iter());
    v.extend(network::LIFECYCLE.iter());
    v.extend(plugin::COMMANDS.iter());
    v.extend(pki::COMMANDS.iter());
    v.extend(operation::COMMANDS.iter());
    v.extend(trust::COMMANDS.iter());
    v
}

/// A time as virsh prints it (`YYYY-MM-DD HH:MM:SS +ZZZZ`, local time).
pub fn snapshot_time(secs: i64) -> String {
    snapshot::local_time(secs)
}

/// Finds a command by name.
pub fn find(name: &str) -> Option<&'static Command> {
    all().into_iter().find(|c| c.name == name)
}

/// Parses `words` (after the command name) against `cmd`'s options, with virsh's messages.
pub fn parse(cmd: &Command, words: &[String]) -> Result<Args, String> {
    let mut args = Args::default();
    let mut i = 0;
    let by_name = |n: &str| cmd.opts.iter().find(|o| o.name == n);
    while i < words.len() {
        let w = &words[i];
        if let Some(rest) = w.strip_prefix("--").filter(|r| !r.is_empty()) {
            let (name, inline) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (rest, None),
            };
            let opt = by_name(name)
                .ok_or_else(|| format!("command '{}' doesn't support option --{name}", cmd.name))?;
            match opt.kind {
                Kind::Bool => {
                    if inline.is_some() {
                        return Err(format!("invalid '=' after option --{name}"));
                    }
                    args.flags.insert(opt.name);
                }
                Kind::Data | Kind::Int => {
                    let v = match inline {
                        Some(v) => v,
                        None => {
                            i += 1;
                            words
                                .get(i)
                                .cloned()
                                .ok_or_else(|| format!("expected syntax: --{name} <string>"))?
                        }
                    };
                    if args.values.insert(opt.name, v).is_some() {
                        return Err(format!("option --{name} already seen"));
                    }
                }
            }
        } else {
            let slot = cmd
                .opts
                .iter()
                .find(|o| o.positional && !args.values.contains_key(o.name))
                .ok_or_else(|| format!("unexpected data '{w}'"))?;
            args.values.insert(slot.name, w.clone());
        }
        i += 1;
    }
    for o in cmd.opts.iter().filter(|o| o.required) {
        if !args.values.contains_key(o.name) {
            return Err(match o.kind {
                Kind::Int => format!("command '{}' requires --{} option", cmd.name, o.name),
                _ => format!("command '{}' requires <{}> option", cmd.name, o.name),
            });
        }
    }
    Ok(args)
}

/// `help` text of one command, in virsh's shape.
pub fn help_text(cmd: &Command) -> String {
    let mut s = format!(
        "  NAME\n    {} - {}\n\n  SYNOPSIS\n    {}",
        cmd.name, cmd.help, cmd.name
    );
    for o in cmd.opts {
        let shown = match (o.kind, o.positional, o.required) {
            (Kind::Bool, ..) => format!(" [--{}]", o.name),
            (Kind::Data | Kind::Int, true, true) => format!(" <{}>", o.name),
            (Kind::Data | Kind::Int, true, false) => format!(" [<{}>]", o.name),
            (Kind::Data | Kind::Int, false, _) => format!(" [--{} <string>]", o.name),
        };
        s.push_str(&shown);
    }
    s.push_str("\n\n");
    if !cmd.opts.is_empty() {
        s.push_str("  OPTIONS\n");
        for o in cmd.opts {
            let left = match o.kind {
                Kind::Bool => format!("--{}", o.name),
                Kind::Data | Kind::Int if o.positional => format!("[--{}] <string>", o.name),
                Kind::Data | Kind::Int => format!("--{} <string>", o.name),
            };
            s.push_str(&format!("    {left:<15}  {}\n", o.help));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_virsh_style_options() {
        let start = find("start").unwrap();
        let a = parse(start, &words("vm1 --paused")).unwrap();
        assert_eq!(a.req("domain"), "vm1");
        assert!(a.flag("paused"));
        let a = parse(start, &words("--domain=vm2")).unwrap();
        assert_eq!(a.req("domain"), "vm2");
        assert_eq!(
            parse(start, &[]).unwrap_err(),
            "command 'start' requires <domain> option"
        );
        assert_eq!(
            parse(start, &words("vm --bogus")).unwrap_err(),
            "command 'start' doesn't support option --bogus"
        );
        assert_eq!(
            parse(start, &words("vm extra")).unwrap_err(),
            "unexpected data 'extra'"
        );
    }

    #[test]
    fn every_command_has_unique_name_and_help() {
        let all = all();
        let names: HashSet<_> = all.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), all.len());
        assert!(all.iter().all(|c| !c.help.is_empty()));
        for required in [
            "list",
            "dominfo",
            "domstate",
            "domid",
            "domname",
            "domuuid",
            "undefine",
            "start",
            "shutdown",
            "reboot",
            "reset",
            "destroy",
            "suspend",
            "resume",
            "autostart",
            "nodeinfo",
            "version",
            "uri",
            "pool-list",
            "pool-info",
            "vol-list",
            "net-list",
            "net-info",
            "plugin-list",
            "plugin-info",
        ] {
            assert!(names.contains(required), "missing command {required}");
        }
    }
}
