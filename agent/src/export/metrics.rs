//! The Prometheus exporter: the DESIGN.md catalogue, computed from the agent's state at scrape time.
use std::sync::Mutex;

use prometheus::{
    Encoder as _, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::{
    model::{
        events::{EventSource, HotplugAction},
        mode::Mode,
    },
    state::{AgentState, KEXEC_SYSCALLS, LOAD_ORIGINS, LOAD_RESULTS, RELOAD_RESULTS},
};

/// Buckets for reload durations and unprotected windows, in seconds.
const SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Catalogue {
    ready: IntGauge,
    crash_kernel_loaded: IntGauge,
    reserved_bytes: IntGauge,
    mode: IntGaugeVec,
    header_stale: IntGauge,
    header_verified: IntGauge,
    missing_bytes: IntGauge,
    excess_bytes: IntGauge,
    stale_since: IntGauge,
    system_ram_bytes: Gauge,
    hotplug_events: IntCounterVec,
    kexec_loads: IntCounterVec,
    kernel_header_updates: IntCounterVec,
    reloads: IntCounterVec,
    reload_duration: Histogram,
    unprotected_window: Histogram,
    event_source: IntGaugeVec,
    events_lost: IntCounter,
    build_info: GaugeVec,
    probe_attached: IntGaugeVec,
    /// Histogram observations already exported (reload durations, unprotected windows).
    seen: (u64, u64),
}

/// Renders `/metrics` (and the textfile) from an [`AgentState`].
pub struct Exporter {
    registry: Registry,
    catalogue: Mutex<Catalogue>,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names in the catalogue are unique");
    metric
}

impl Exporter {
    pub fn new() -> Self {
        let r = Registry::new();
        let g = |name: &str, help: &str| reg(&r, IntGauge::new(name, help).expect("valid metric"));
        let gv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let cv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let h = |name: &str, help: &str| {
            reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            )
        };
        let catalogue = Catalogue {
            ready: g(
                "kdump_ready",
                "1 when a crash kernel is loaded and its ELF header covers the current RAM.",
            ),
            crash_kernel_loaded: g(
                "kdump_crash_kernel_loaded",
                "1 when a crash kernel is loaded (/sys/kernel/kexec_crash_loaded).",
            ),
            reserved_bytes: g(
                "kdump_crash_kernel_reserved_bytes",
                "Memory reserved for the crash kernel (/sys/kernel/kexec_crash_size), in bytes.",
            ),
            mode: gv(
                "kdump_mode",
                "1 for the current mode: kernel-managed, agent-managed, observe or unsupported.",
                &["mode"],
            ),
            header_stale: g(
                "kdump_header_stale",
                "1 when the loaded crash ELF header differs from the current System RAM.",
            ),
            header_verified: g(
                "kdump_header_verified",
                "1 when the loaded header's content was captured, 0 when it is inferred.",
            ),
            missing_bytes: g(
                "kdump_header_missing_bytes",
                "System RAM not covered by the loaded header (lost from a dump), in bytes.",
            ),
            excess_bytes: g(
                "kdump_header_excess_bytes",
                "Header ranges that are no longer System RAM (can hang a dump), in bytes.",
            ),
            stale_since: g(
                "kdump_header_stale_since_timestamp_seconds",
                "When the header became stale (Unix time, seconds); 0 when fresh.",
            ),
            system_ram_bytes: reg(
                &r,
                Gauge::new(
                    "kdump_system_ram_bytes",
                    "System RAM from /proc/iomem, in bytes; NaN when unreadable.",
                )
                .expect("valid metric"),
            ),
            hotplug_events: cv(
                "kdump_memory_hotplug_events_total",
                "Memory hotplug events seen, by action.",
                &["action"],
            ),
            kexec_loads: cv(
                "kdump_kexec_loads_total",
                "Crash kernel loads seen, by syscall, result and origin.",
                &["syscall", "result", "origin"],
            ),
            kernel_header_updates: cv(
                "kdump_kernel_header_updates_total",
                "In-kernel rewrites of the loaded crash header seen, by result.",
                &["result"],
            ),
            reloads: cv(
                "kdump_reloads_total",
                "Crash kernel reloads done by the agent, by result.",
                &["result"],
            ),
            reload_duration: h(
                "kdump_reload_duration_seconds",
                "Agent reloads, from decision to loaded, in seconds.",
            ),
            unprotected_window: h(
                "kdump_unprotected_window_seconds",
                "Time with no crash kernel loaded during a reload by any loader, in seconds (probes: from the kernel releasing the old image to the new one in place; without them, the agent's own load syscalls, an upper bound).",
            ),
            event_source: gv(
                "kdump_agent_event_source",
                "1 for the event source in use: ebpf, uevent or poll.",
                &["source"],
            ),
            events_lost: reg(
                &r,
                IntCounter::new(
                    "kdump_agent_events_lost_total",
                    "Events dropped before the agent read them; each forces a resync.",
                )
                .expect("valid metric"),
            ),
            build_info: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "kdump_agent_build_info",
                        "Always 1; labels give the agent version and the running kernel.",
                    ),
                    &["version", "kernel"],
                )
                .expect("valid metric"),
            ),
            probe_attached: gv(
                "kdump_agent_probe_attached",
                "1 when the probe is attached; how is fentry, kprobe, tracepoint or none.",
                &["probe", "how"],
            ),
            seen: (0, 0),
        };
        Self {
            registry: r,
            catalogue: Mutex::new(catalogue),
        }
    }

    /// The Prometheus text exposition of `state`.
    pub fn render(&self, state: &AgentState) -> String {
        let mut c = self.catalogue.lock().unwrap_or_else(|e| e.into_inner());
        c.sync(state);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

/// Raises a counter to `target` (state counters are monotonic, so the delta is never negative).
fn raise(counter: &IntCounter, target: u64) {
    counter.inc_by(target.saturating_sub(counter.get()));
}

impl Catalogue {
    fn sync(&mut self, s: &AgentState) {
        let readiness = s.readiness();
        let f = &s.facts;
        self.ready.set(i64::from(readiness.ready));
        self.crash_kernel_loaded.set(i64::from(f.crash_loaded));
        self.reserved_bytes.set(f.reserved_bytes as i64);
        let mode = s.mode();
        for m in Mode::ALL {
            self.mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(m == mode));
        }
        self.header_stale.set(i64::from(s.header.stale));
        self.header_verified.set(i64::from(s.header.verified));
        self.missing_bytes.set(s.header.missing_bytes as i64);
        self.excess_bytes.set(s.header.excess_bytes as i64);
        self.stale_since
            .set(s.header.stale_since.unwrap_or(0) as i64);
        self.system_ram_bytes
            .set(f.system_ram_bytes.map_or(f64::NAN, |b| b as f64));
        for action in HotplugAction::ALL {
            raise(
                &self.hotplug_events.with_label_values(&[action.as_str()]),
                s.counters.hotplug(action),
            );
        }
        for syscall in KEXEC_SYSCALLS {
            for result in LOAD_RESULTS {
                for origin in LOAD_ORIGINS {
                    let n = s
                        .counters
                        .kexec_loads
                        .get(&(syscall, result, origin))
                        .copied()
                        .unwrap_or(0);
                    raise(
                        &self
                            .kexec_loads
                            .with_label_values(&[syscall, result, origin]),
                        n,
                    );
                }
            }
        }
        for result in LOAD_RESULTS {
            let n = s
                .counters
                .kernel_header_updates
                .get(result)
                .copied()
                .unwrap_or(0);
            raise(&self.kernel_header_updates.with_label_values(&[result]), n);
        }
        for result in RELOAD_RESULTS {
            raise(
                &self.reloads.with_label_values(&[result]),
                s.counters.reloads.get(result).copied().unwrap_or(0),
            );
        }
        s.reload_durations
            .since(self.seen.0)
            .for_each(|v| self.reload_duration.observe(v));
        s.unprotected_windows
            .since(self.seen.1)
            .for_each(|v| self.unprotected_window.observe(v));
        self.seen = (s.reload_durations.total, s.unprotected_windows.total);
        for source in EventSource::ALL {
            self.event_source
                .with_label_values(&[source.as_str()])
                .set(i64::from(source == s.event_source));
        }
        raise(&self.events_lost, s.counters.events_lost);
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &s.kernel_release])
            .set(1.0);
        self.probe_attached.reset();
        for p in &s.probes {
            self.probe_attached
                .with_label_values(&[p.probe.as_str(), p.how.as_str()])
                .set(i64::from(p.how.is_attached()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{
            facts::KdumpFacts,
            probe::{Attach, ProbeReport},
        },
        state::HeaderStatus,
    };

    fn value(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
            .to_string()
    }

    fn unsupported() -> AgentState {
        AgentState::new("6.18.0".into(), vec![], "CONFIG_KEXEC is not set".into())
    }

    #[test]
    fn unsupported_node_is_not_ready() {
        let text = Exporter::new().render(&unsupported());
        assert_eq!(value(&text, "kdump_ready"), "0");
        assert_eq!(value(&text, r#"kdump_mode{mode="unsupported"}"#), "1");
        assert_eq!(value(&text, r#"kdump_mode{mode="observe"}"#), "0");
        assert_eq!(
            value(&text, r#"kdump_agent_event_source{source="poll"}"#),
            "1"
        );
        assert_eq!(value(&text, "kdump_system_ram_bytes"), "NaN");
        assert_eq!(
            value(
                &text,
                r#"kdump_agent_build_info{kernel="6.18.0",version="0.1.0"}"#
            ),
            "1"
        );
    }

    #[test]
    fn every_catalogue_metric_has_help_and_a_series() {
        let text = Exporter::new().render(&unsupported());
        for name in [
            "kdump_ready",
            "kdump_crash_kernel_loaded",
            "kdump_crash_kernel_reserved_bytes",
            "kdump_mode",
            "kdump_header_stale",
            "kdump_header_verified",
            "kdump_header_missing_bytes",
            "kdump_header_excess_bytes",
            "kdump_header_stale_since_timestamp_seconds",
            "kdump_system_ram_bytes",
            "kdump_memory_hotplug_events_total",
            "kdump_kexec_loads_total",
            "kdump_kernel_header_updates_total",
            "kdump_reloads_total",
            "kdump_reload_duration_seconds",
            "kdump_unprotected_window_seconds",
            "kdump_agent_event_source",
            "kdump_agent_events_lost_total",
            "kdump_agent_build_info",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with(name) && !l.starts_with('#')),
                "no series for {name}"
            );
        }
    }

    #[test]
    fn counters_and_histograms_follow_the_state_across_scrapes() {
        let exporter = Exporter::new();
        let mut s = unsupported();
        s.facts = KdumpFacts {
            kexec: true,
            crash_loaded: true,
            reserved_bytes: 1 << 28,
            ..Default::default()
        };
        s.header = HeaderStatus {
            stale: true,
            missing_bytes: 1 << 29,
            stale_since: Some(1_700_000_000),
            ..Default::default()
        };
        s.counters.hotplug_events[HotplugAction::Online as usize] = 4;
        s.counters.reloads.insert("success", 2);
        s.reload_durations.record(0.2);
        let first = exporter.render(&s);
        assert_eq!(value(&first, "kdump_ready"), "0");
        assert_eq!(value(&first, "kdump_header_missing_bytes"), "536870912");
        assert_eq!(
            value(&first, "kdump_header_stale_since_timestamp_seconds"),
            "1700000000"
        );
        assert_eq!(
            value(
                &first,
                r#"kdump_memory_hotplug_events_total{action="online"}"#
            ),
            "4"
        );
        assert_eq!(
            value(&first, r#"kdump_reloads_total{result="success"}"#),
            "2"
        );
        assert_eq!(value(&first, "kdump_reload_duration_seconds_count"), "1");
        s.counters.hotplug_events[HotplugAction::Online as usize] = 6;
        s.reload_durations.record(0.4);
        let second = exporter.render(&s);
        assert_eq!(
            value(
                &second,
                r#"kdump_memory_hotplug_events_total{action="online"}"#
            ),
            "6"
        );
        assert_eq!(value(&second, "kdump_reload_duration_seconds_count"), "2");
        assert_eq!(
            value(&second, "kdump_reload_duration_seconds_sum"),
            "0.6000000000000001"
        );
    }

    /// The `how` label values the dashboards count by (`deploy/grafana-dashboard.yaml`).
    #[test]
    fn probe_attached_labels_say_how_or_none() {
        let mut s = unsupported();
        s.probes = [
            ("online_pages", Attach::Fentry),
            ("remove_memory", Attach::Kprobe),
            ("syscalls/sys_enter_kexec_load", Attach::Tracepoint),
            ("arch_crash_handle_hotplug_event", Attach::NotAttached),
        ]
        .into_iter()
        .map(|(probe, how)| ProbeReport {
            probe: probe.into(),
            how,
            reason: String::new(),
        })
        .collect();
        let text = Exporter::new().render(&s);
        for (series, want) in [
            (r#"{how="fentry",probe="online_pages"}"#, "1"),
            (r#"{how="kprobe",probe="remove_memory"}"#, "1"),
            (
                r#"{how="tracepoint",probe="syscalls/sys_enter_kexec_load"}"#,
                "1",
            ),
            (
                r#"{how="none",probe="arch_crash_handle_hotplug_event"}"#,
                "0",
            ),
        ] {
            assert_eq!(
                value(&text, &format!("kdump_agent_probe_attached{series}")),
                want
            );
        }
    }
}
