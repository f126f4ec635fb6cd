//! kdump-agent: keeps kdump ready when RAM changes.
//!
//! The folders follow the pipeline, and data flows one way through them:
//! `observe` -> events -> `reconcile` -> `reload` -> `state` -> `export`. A stage uses only
//! `model` (pure shared vocabulary), `sys` (thin system access) and the stages before it;
//! `daemon` and `cli` wire them together. `docs/architecture.md` draws it.

pub mod model;
pub mod sys;

pub mod export;
pub mod observe;
pub mod reconcile;
pub mod reload;
pub mod state;

pub mod cli;
pub mod daemon;
