//! Aligned, one-line-per-step progress output.
use std::time::Instant;

/// Width of the step-name column.
const NAME_WIDTH: usize = 34;

/// Prints `  name ........ what` lines; `done` adds the elapsed time.
pub struct Step {
    name: String,
    started: Instant,
}

impl Step {
    pub fn start(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            started: Instant::now(),
        }
    }

    pub fn done(self, what: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        println!("  {:<NAME_WIDTH$} {what} ({secs:.1} s)", self.name);
    }

    /// For steps that say something before they finish (long work).
    pub fn progress(&self, what: &str) {
        println!("  {:<NAME_WIDTH$} {what}...", self.name);
    }
}

pub fn section(title: &str) {
    println!("==> {title}");
}

/// A figure under a section: `  name ........ value`, aligned with the steps.
pub fn fact(name: &str, value: &str) {
    println!("  {name:<NAME_WIDTH$} {value}");
}
