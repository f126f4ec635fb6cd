//! The pause after a failed `accept`, shared by the HTTP server and the control socket.
use std::time::Duration;

/// First and longest pause, doubling in between: out of descriptors stays so until something
/// closes, and retrying at once spins a core and floods the log.
const PAUSE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

pub struct AcceptPause(Duration);

impl Default for AcceptPause {
    fn default() -> Self {
        Self(PAUSE.0)
    }
}

impl AcceptPause {
    /// After a successful accept.
    pub fn reset(&mut self) {
        self.0 = PAUSE.0;
    }

    /// How long to wait after this failure; the next one waits twice as long.
    pub fn after_failure(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(PAUSE.1);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_a_second_and_resets() {
        let mut p = AcceptPause::default();
        let waits: Vec<_> = (0..9).map(|_| p.after_failure().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        p.reset();
        assert_eq!(p.after_failure().as_millis(), 10);
    }
}
