//! Progress bars for long transfers, on standard error and only on a terminal, so scripts
//! and the virsh-identical output are untouched.

use std::io::IsTerminal;

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
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
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
