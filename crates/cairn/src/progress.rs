//! Progress bars on stderr for `push` and `pull`: hidden when stderr is not a terminal or
//! with `--quiet`, so logs and pipes get only the final summary.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A set of bars drawn together: one total, any number per file.
#[derive(Clone)]
pub struct Bars {
    multi: MultiProgress,
    visible: bool,
}

const BYTES: &str = "{prefix:>12.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}";
const FILE: &str = "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {wide_msg}";

impl Bars {
    /// Bars on stderr, unless `quiet` or stderr is not a terminal.
    pub fn new(quiet: bool) -> Self {
        let visible = !quiet && std::io::stderr().is_terminal();
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self { multi: MultiProgress::with_draw_target(target), visible }
    }

    /// A bar counting `total` bytes, labelled `label` (e.g. "hashing").
    pub fn total(&self, label: &str, total: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(style(BYTES));
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A bar for one file, shown under the others until it is finished.
    pub fn file(&self, name: &str, total: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(style(FILE));
        bar.set_prefix("");
        bar.set_message(name.to_owned());
        bar
    }

    /// Prints a line above the bars (or plainly on stderr when they are hidden).
    pub fn println(&self, line: &str) {
        if self.visible {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("the templates are constants").progress_chars("=> ")
}

/// `1234567` → `1.18 MiB`, the units of the bars.
pub fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
