//! Helpers the suites share: processes, loopback HTTP, a Prometheus server, the agent's builds,
//! the exposition format, the test tally. They use nothing of `lab`, `fleet`, `bench_fleet` or
//! `test`, which use them and never each other (`test` aside, which runs the others).
pub mod agent;
pub mod certs;
pub mod exposition;
pub mod http;
pub mod process;
pub mod prometheus;
pub mod static_elf;
pub mod tally;
pub mod unit;
