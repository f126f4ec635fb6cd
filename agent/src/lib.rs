//! kdump-agent: keeps kdump ready when RAM changes.
//!
//! Data flows one way: probes -> events -> reconcile -> reload -> state -> exporters.
//! Pure modules (no I/O) are separate from the thin modules that touch the system.

// Pure: no I/O.
pub mod assemble;
pub mod elfcorehdr;
pub mod events;
pub mod iomem;
pub mod kconfig;
pub mod ranges;
pub mod recipe;
pub mod reconcile;
pub mod records;
pub mod show;
pub mod state;
pub mod status;
pub mod units;

// System access, each named after what it touches.
pub mod capabilities;
pub mod control;
pub mod crash_sysfs;
pub mod http;
pub mod kexec;
pub mod loader;
pub mod node;
pub mod probes;
pub mod procfs;
pub mod statefile;
pub mod sysfs;
pub mod textfile;
pub mod uevent;

// Wiring.
pub mod cli;
pub mod daemon;
pub mod metrics;
pub mod reload;
