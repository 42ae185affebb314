//! Plugin commands: what drivers this host has, and what each may touch.

use virtwasm_host::plugin::PluginSource;

use super::{Args, Command, Failure, Outcome, arg, flag};
use crate::session::Session;
use crate::table::Table;

/// The plugin commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "plugin-list",
        group: "Plugins",
        help: "list driver plugins",
        opts: &[flag("json", "print as JSON")],
        run: plugin_list,
    },
    Command {
        name: "plugin-info",
        group: "Plugins",
        help: "show a plugin's manifest, grants and cache state (loads it)",
        opts: &[arg("plugin", "plugin name"), flag("json", "print as JSON")],
        run: plugin_info,
    },
];

fn source_text(s: &PluginSource) -> String {
    match s {
        PluginSource::Bundled => "bundled".into(),
        PluginSource::Directory(p) => p.display().to_string(),
    }
}

fn plugin_list(sess: &mut Session, a: &Args) -> Outcome {
    // The plugins of whichever host serves the URI: this process's, or the daemon's.
    let remote = virtwasm_api::endpoint::resolve(&sess.settings.uri, sess.settings.readonly)
        .is_ok_and(|t| t.endpoint != virtwasm_api::endpoint::Endpoint::InProcess);
    let list = match remote {
        true => sess.conn()?.list_plugins()?.unwrap_or_default(),
        false => sess.host()?.registry().list(),
    };
    if a.flag("json") {
        return sess.print_json(&list);
    }
    let mut t = Table::new(&["Name", "Version", "World", "Schemes", "Source"]);
    for p in &list {
        let world = p
            .world
            .strip_prefix("virtwasm:plugin/")
            .unwrap_or(&p.world)
            .to_string();
        t.row(vec![
            p.name.clone(),
            p.version.clone(),
            world,
            p.schemes.join(","),
            source_text(&p.source),
        ]);
    }
    let quiet = sess.settings.quiet;
    sess.print(&t.render(quiet));
    Ok(())
}

fn plugin_info(sess: &mut Session, a: &Args) -> Outcome {
    let name = a.req("plugin");
    let plugin = sess
        .host()?
        .registry()
        .plugin(name)
        .map_err(|e| Failure(vec![format!("failed to load plugin '{name}'"), e.message]))?;
    let m = &plugin.manifest;
    let g = plugin.grants();
    if a.flag("json") {
        let v = serde_json::json!({
            "manifest": m, "source": plugin.source, "sha256": plugin.sha256, "load": plugin.report, "imports": plugin.imports,
        });
        return sess.print_json(&v);
    }
    let cache = match &plugin.report.cache {
        virtwasm_host::engine::CacheState::Hit => "hit (loaded precompiled)".to_string(),
        virtwasm_host::engine::CacheState::Stored => "miss (compiled, now cached)".to_string(),
        virtwasm_host::engine::CacheState::Disabled(why) => format!("off ({why})"),
    };
    let programs = if g.process {
        g.programs.entries().join(", ")
    } else {
        "none".into()
    };
    let files = if g.files.is_empty() {
        "none".to_string()
    } else {
        g.files
            .iter()
            .map(|(h, guest, acc)| {
                format!(
                    "{} as {guest} ({})",
                    h.display(),
                    if matches!(acc, virtwasm_host::manifest::Access::ReadOnly) {
                        "read-only"
                    } else {
                        "read-write"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sockets = if g.socket_prefixes.is_empty() {
        "none".to_string()
    } else {
        g.socket_prefixes
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<15} {v}\n"));
    line("Name:", m.plugin.name.clone());
    line("Version:", m.plugin.version.clone());
    line("Description:", m.plugin.description.clone());
    line("World:", m.plugin.world.clone());
    line("Schemes:", m.plugin.schemes.join(", "));
    line("Source:", source_text(&plugin.source));
    line("SHA-256:", plugin.sha256.clone());
    line("Programs:", programs);
    line("Files:", files);
    line("Sockets:", sockets);
    line(
        "Pool types:",
        match m.plugin.pool_types.is_empty() {
            true => "none".to_string(),
            false => m.plugin.pool_types.join(", "),
        },
    );
    line("Memory limit:", format!("{} MiB", m.limits.memory_mib));
    line("Call timeout:", format!("{} ms", m.limits.call_timeout_ms));
    line("Instances:", m.limits.instances.to_string());
    line("Cache:", cache);
    line(
        "Load time:",
        format!("{:.2} ms", plugin.report.compile.as_secs_f64() * 1e3),
    );
    line("Imports:", plugin.imports.join(", "));
    sess.print(&out);
    Ok(())
}
