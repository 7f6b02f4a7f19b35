//! Progress of long work: a spinner per item on a terminal (item, phase, latest tool line,
//! elapsed time), plain lines at each phase change elsewhere (CI logs).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A set of progress lines, one per item of work.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new(std::io::stderr().is_terminal())
    }
}

impl Progress {
    /// Spinners when `interactive`, plain lines otherwise.
    pub(crate) fn new(interactive: bool) -> Progress {
        let multi =
            interactive.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi }
    }

    /// Starts the line of one item.
    pub(crate) fn item(&self, name: &str) -> Item {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed:>4}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Item {
            name: name.into(),
            bar,
            phase: String::new(),
            started: Instant::now(),
        }
    }

    /// Prints a line above the spinners.
    pub(crate) fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

/// The progress line of one item.
#[derive(Debug)]
pub struct Item {
    name: String,
    bar: Option<ProgressBar>,
    phase: String,
    started: Instant,
}

impl Item {
    /// Enters a new phase.
    pub(crate) fn phase(&mut self, phase: &str) {
        self.phase = phase.into();
        match &self.bar {
            Some(bar) => bar.set_message(phase.to_string()),
            None => eprintln!(
                "{}: {phase} [{:.0} s]",
                self.name,
                self.started.elapsed().as_secs_f64()
            ),
        }
    }

    /// Shows the latest line of tool output beside the phase (terminal only).
    pub(crate) fn detail(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}: {}", self.phase, line.trim()));
        }
    }

    /// Ends the line with a final message.
    pub(crate) fn finish(self, message: &str) {
        let line = format!("{}: {message}", self.name);
        match self.bar {
            Some(bar) => bar.finish_with_message(message.to_string()),
            None => eprintln!("{line}"),
        }
    }

    /// Time since the item started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
