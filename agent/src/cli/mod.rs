//! Subcommands, one file each; `main.rs` dispatches to them.
pub mod header;
