//! kdump-agent: keeps kdump ready when RAM changes.
//!
//! Data flows one way: probes -> events -> reconcile -> reload -> state -> exporters.
//! Pure modules (no I/O) are separate from the thin modules that touch the system.
pub mod events;
pub mod kexec;
pub mod recipe;
pub mod reconcile;
pub mod statefile;
