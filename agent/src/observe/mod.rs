//! Observe: the probes, their records and the uevent fallback, turned into [`Event`]s.
//!
//! [`Event`]: crate::model::events::Event
pub mod assemble;
pub mod probe_table;
pub mod probes;
pub mod records;
pub mod uevent;
