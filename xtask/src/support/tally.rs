//! The pass/fail/skip counts of `cargo xtask test`, which every suite adds to.

/// Pass/fail/skip counts over every suite of the run.
#[derive(Default)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn pass(&mut self) {
        self.passed += 1;
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        self.failed += 1;
        self.failures.push(what.into());
    }

    /// A test that could not run here; `why` is printed so a skip is never silent.
    pub fn skip(&mut self, what: &str, why: &str) {
        println!("  SKIP {what}: {why}");
        self.skipped += 1;
    }

    /// One check: pass, or fail with its error, printed on its own aligned line; `suite`
    /// names it in the closing list of failures.
    pub fn record(&mut self, suite: &str, name: &str, outcome: anyhow::Result<()>) {
        match outcome {
            Ok(()) => {
                println!("  ok   {name}");
                self.pass();
            }
            Err(e) => {
                println!("  FAIL {name}: {e:#}");
                self.fail(format!("{suite}: {name}: {e:#}"));
            }
        }
    }
}
