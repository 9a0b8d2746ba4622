//! `updraft run`'s progress on stderr. On a terminal, every running node keeps a live line of its own at
//! the bottom (a map's is a bar of its elements) while phase changes scroll above them; otherwise plain
//! lines only: one per phase change, and one per tenth of a map's elements.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Prints lines above the live ones (or plainly); cheap to clone into threads.
#[derive(Clone)]
pub struct Printer(Option<MultiProgress>);

impl Printer {
    /// Prints one line to stderr.
    pub fn line(&self, s: &str) {
        match &self.0 {
            Some(m) => {
                if m.println(s).is_err() {
                    eprintln!("{s}");
                }
            }
            None => eprintln!("{s}"),
        }
    }
}

/// The progress of one run.
pub struct Progress {
    multi: Option<MultiProgress>,
    started: Instant,
    /// Live lines by node path.
    live: BTreeMap<String, ProgressBar>,
    /// The last tenth of each map shown (plain output).
    tenths: BTreeMap<String, u32>,
}

impl Progress {
    /// Live lines when `tty`, plain lines otherwise.
    pub fn new(tty: bool, started: Instant) -> Self {
        let multi =
            tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Self {
            multi,
            started,
            live: BTreeMap::new(),
            tenths: BTreeMap::new(),
        }
    }

    /// A printer for other threads.
    pub fn printer(&self) -> Printer {
        Printer(self.multi.clone())
    }

    /// Prints one line above the live ones.
    pub fn line(&self, s: &str) {
        self.printer().line(s);
    }

    /// Seconds since the run started, as lines show them.
    fn stamp(&self) -> String {
        format!("[{:>7.2}s]", self.started.elapsed().as_secs_f64())
    }

    /// Node `path` changed phase to `phase` (terminal when `done`).
    pub fn phase(&mut self, path: &str, phase: &str, done: bool) {
        self.line(&format!("  {} {path:<24} {phase}", self.stamp()));
        let Some(m) = &self.multi else { return };
        if done {
            if let Some(bar) = self.live.remove(path) {
                bar.finish_and_clear();
                m.remove(&bar);
            }
        } else if phase == "Running" && !self.live.contains_key(path) {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {prefix:<24} running {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(path.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            self.live.insert(path.to_string(), bar);
        }
    }

    /// Map node `path` has `ok` and `failed` of its `size` elements done.
    pub fn array(&mut self, path: &str, size: u32, ok: u32, failed: u32) {
        let done = ok + failed;
        if size == 0 {
            return;
        }
        let failed_note = if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        };
        let Some(m) = &self.multi else {
            // Plain output: a line each time another tenth is done.
            let tenth = done * 10 / size;
            if done == 0 || self.tenths.get(path) == Some(&tenth) {
                return;
            }
            self.tenths.insert(path.to_string(), tenth);
            let width = 30usize;
            let filled = (done as usize * width) / size as usize;
            let bar = format!("{}{}", "#".repeat(filled), ".".repeat(width - filled));
            eprintln!(
                "  {} {path:<24} [{bar}] {done}/{size}{failed_note}",
                self.stamp()
            );
            return;
        };
        let bar = self.live.entry(path.to_string()).or_insert_with(|| {
            let bar = m.add(ProgressBar::no_length());
            bar.set_prefix(path.to_string());
            bar
        });
        // A node's spinner becomes a bar once its elements are known.
        if bar.length() != Some(u64::from(size)) {
            bar.set_length(u64::from(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "  {spinner} {prefix:<24} [{bar:30}] {pos}/{len}{msg} {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("#>."),
            );
        }
        bar.set_position(u64::from(done));
        bar.set_message(failed_note);
    }

    /// Removes every live line (before the run's last words).
    pub fn clear(&mut self) {
        for (_, bar) in std::mem::take(&mut self.live) {
            bar.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
