//! Progress bars for long transfers, on standard error and only on a terminal, so scripts
//! and the virsh-identical output are untouched.

use std::io::IsTerminal;

/// How a bar counting bytes looks, wherever the bytes come from.
fn bytes_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// A bar that appears once there is something to show.
pub struct Bar {
    bar: Option<indicatif::ProgressBar>,
    label: &'static str,
    shown: bool,
}

impl Bar {
    /// A bar counting bytes, labelled `label`.
    pub fn bytes(label: &'static str) -> Bar {
        Bar {
            bar: None,
            label,
            shown: std::io::stderr().is_terminal(),
        }
    }

    /// Shows `done` of `total` bytes (`total` 0 when unknown).
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.shown {
            return;
        }
        let label = self.label;
        let bar = self.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(bytes_style());
            b.set_message(label);
            b
        });
        if total > 0 {
            bar.set_length(total);
        }
        bar.set_position(done);
    }

    /// Clears the bar.
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// The bar of one long operation through the daemon: bytes when the daemon measures them
/// (a migration, a transfer), a spinner with the operation's name otherwise.
#[derive(Default)]
pub struct OperationBar {
    bar: Option<(String, indicatif::ProgressBar)>,
}

impl OperationBar {
    /// Shows `op` as it now is; clears the bar once it has ended.
    pub fn show(&mut self, op: &virtwasm_api::operation::Operation) {
        use virtwasm_api::operation::Status;
        if self.bar.as_ref().is_some_and(|(id, _)| id != &op.id)
            && let Some((_, b)) = self.bar.take()
        {
            b.finish_and_clear();
        }
        if op.status != Status::Running {
            if let Some((_, b)) = self.bar.take() {
                b.finish_and_clear();
            }
            return;
        }
        let (_, bar) = self.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_message(format!("{} {}", op.op, op.target.as_deref().unwrap_or("")));
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            (op.id.clone(), b)
        });
        if let Some(p) = &op.progress
            && p.total > 0
        {
            if bar.length() != Some(p.total) {
                bar.set_length(p.total);
                bar.set_style(bytes_style());
            }
            bar.set_position(p.done);
        }
    }
}
