//! The shared vocabulary: pure types and logic, no I/O. Every stage may use it.
pub mod cpus;
pub mod elfcorehdr;
pub mod events;
pub mod facts;
pub mod header;
pub mod iomem;
pub mod kconfig;
pub mod load;
pub mod mode;
pub mod observations;
pub mod probe;
pub mod ranges;
pub mod readiness;
pub mod units;
