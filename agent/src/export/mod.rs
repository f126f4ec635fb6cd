//! Export: what the state says, to Prometheus, the textfile collector, the control socket
//! and the console. Exporters only read the state.
pub mod accept;
pub mod control;
pub mod http;
pub mod metrics;
pub mod show;
pub mod status;
pub mod textfile;
pub mod web_config;
