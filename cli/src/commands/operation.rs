//! Operation commands: the daemon's long work (a start, a save, a volume transfer), listed,
//! waited for, or cancelled from any client.

use virtwasm_api::operation::{Operation, Status};

use super::{Args, Command, Failure, Outcome, arg, flag, value};
use crate::session::Session;
use crate::table::Table;

/// The operation commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "operation-list",
        group: "Operations",
        help: "list the daemon's running and recent operations",
        opts: &[flag("json", "print as JSON")],
        run: operation_list,
    },
    Command {
        name: "operation-wait",
        group: "Operations",
        help: "wait for an operation to finish",
        opts: &[
            arg("id", "operation id"),
            value("timeout", "seconds to wait (default 30)"),
            flag("json", "print as JSON"),
        ],
        run: operation_wait,
    },
    Command {
        name: "operation-cancel",
        group: "Operations",
        help: "cancel an operation",
        opts: &[arg("id", "operation id")],
        run: operation_cancel,
    },
];

fn status(s: Status) -> &'static str {
    match s {
        Status::Running => "running",
        Status::Success => "success",
        Status::Failure => "failure",
        Status::Cancelled => "cancelled",
    }
}

fn progress(o: &Operation) -> String {
    match &o.progress {
        Some(p) if p.total > 0 => format!("{}/{} {}", p.done, p.total, p.unit),
        Some(p) => format!("{} {}", p.done, p.unit),
        None => "-".into(),
    }
}

fn operation_list(sess: &mut Session, a: &Args) -> Outcome {
    let ops = sess.conn()?.operations()?;
    if a.flag("json") {
        return sess.print_json(&ops);
    }
    let mut t = Table::new(&["Id", "Operation", "Target", "Status", "Progress"]);
    for o in &ops {
        t.row(vec![
            o.id.clone(),
            o.op.clone(),
            o.target.clone().unwrap_or_else(|| "-".into()),
            status(o.status).into(),
            progress(o),
        ]);
    }
    let quiet = sess.settings.quiet;
    sess.print(&t.render(quiet));
    Ok(())
}

fn operation_wait(sess: &mut Session, a: &Args) -> Outcome {
    let secs = match a.get("timeout") {
        None => 30,
        Some(t) => t
            .parse()
            .map_err(|_| Failure::msg(format!("invalid timeout '{t}': expected whole seconds")))?,
    };
    let o = sess.conn()?.operation_wait(a.req("id"), secs)?;
    if a.flag("json") {
        return sess.print_json(&o);
    }
    match (o.status, &o.error) {
        (Status::Running, _) => Err(Failure::msg(format!(
            "operation {} ({}) still running after {secs} s ({})",
            o.id,
            o.op,
            progress(&o)
        ))),
        (Status::Success, _) => {
            sess.extra(&format!("Operation {} ({}) succeeded\n", o.id, o.op));
            Ok(())
        }
        (s, Some(e)) => Err(Failure(vec![
            format!("operation {} ({}) {}", o.id, o.op, status(s)),
            e.message.clone(),
        ])),
        (s, None) => Err(Failure::msg(format!(
            "operation {} ({}) {}",
            o.id,
            o.op,
            status(s)
        ))),
    }
}

fn operation_cancel(sess: &mut Session, a: &Args) -> Outcome {
    let o = sess.conn()?.operation_cancel(a.req("id"))?;
    sess.extra(&format!("Operation {} ({}) cancel requested\n", o.id, o.op));
    Ok(())
}
