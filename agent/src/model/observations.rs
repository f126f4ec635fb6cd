//! The last observations of a histogram, kept as plain data until an exporter reads them.
use std::collections::VecDeque;

use serde::Serialize;

/// The last observations of a histogram metric, with a running total so exporters can tell which
/// ones they have not seen yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Observations {
    recent: VecDeque<f64>,
    pub total: u64,
}

impl Observations {
    const KEEP: usize = 1024;

    pub fn record(&mut self, value: f64) {
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
        self.total += 1;
    }

    /// Observations after the first `seen` ones (those still kept).
    pub fn since(&self, seen: u64) -> impl Iterator<Item = f64> + '_ {
        let new = self
            .total
            .saturating_sub(seen)
            .min(self.recent.len() as u64) as usize;
        self.recent.iter().skip(self.recent.len() - new).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_report_only_unseen_values() {
        let mut o = Observations::default();
        o.record(1.0);
        o.record(2.0);
        assert_eq!(o.since(0).collect::<Vec<_>>(), [1.0, 2.0]);
        assert_eq!(o.since(1).collect::<Vec<_>>(), [2.0]);
        assert_eq!(o.since(2).count(), 0);
        for i in 0..2000 {
            o.record(f64::from(i));
        }
        assert_eq!(o.since(0).count(), Observations::KEEP);
        assert_eq!(o.since(o.total - 1).collect::<Vec<_>>(), [1999.0]);
    }
}
