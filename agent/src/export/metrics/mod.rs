//! The Prometheus exporter: the catalogue of `docs/architecture.md`, one collector per part of
//! the state (node_exporter's one collector per file), rendered once per change of state.
use std::{
    io::Write as _,
    sync::{Arc, Mutex, OnceLock},
};

use hyper::body::Bytes;

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, core::Collector,
};

use crate::state::AgentState;

mod counters;
mod header;
mod node;
mod observe;
mod reload;

/// Buckets for reload durations and unprotected windows, in seconds.
const SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers a metric of the catalogue (names are unique by construction).
fn reg<T: Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names in the catalogue are unique");
    metric
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(r, IntGauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn seconds_histogram(r: &Registry, name: &str, help: &str) -> Histogram {
    reg(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec()))
            .expect("valid metric"),
    )
}

/// Raises a counter to `target` (state counters are monotonic, so the delta is never negative).
fn raise(counter: &prometheus::IntCounter, target: u64) {
    counter.inc_by(target.saturating_sub(counter.get()));
}

struct Catalogue {
    node: node::NodeMetrics,
    header: header::HeaderMetrics,
    counters: counters::CounterMetrics,
    reload: reload::ReloadMetrics,
    observe: observe::ObserveMetrics,
}

/// One rendering of the catalogue: every scrape serves it until the state changes.
pub struct Rendered {
    pub text: Bytes,
    /// Compressed on the first scrape that accepts gzip, then shared.
    gzip: OnceLock<Bytes>,
}

impl Rendered {
    fn new(text: String) -> Self {
        Self {
            text: Bytes::from(text),
            gzip: OnceLock::new(),
        }
    }

    pub fn gzip(&self) -> &Bytes {
        self.gzip.get_or_init(|| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(&self.text)
                .expect("compressing into a Vec cannot fail");
            Bytes::from(
                encoder
                    .finish()
                    .expect("compressing into a Vec cannot fail"),
            )
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).expect("the text encoder writes UTF-8")
    }
}

/// Renders `/metrics` (and the textfile) from an [`AgentState`].
pub struct Exporter {
    registry: Registry,
    catalogue: Mutex<Catalogue>,
    /// The last [`Exporter::publish`]ed rendering; scrapes clone the `Arc`, never lock the state.
    published: Mutex<Option<Arc<Rendered>>>,
}

impl Exporter {
    pub fn new() -> Self {
        let r = Registry::new();
        let catalogue = Catalogue {
            node: node::NodeMetrics::register(&r),
            header: header::HeaderMetrics::register(&r),
            counters: counters::CounterMetrics::register(&r),
            reload: reload::ReloadMetrics::register(&r),
            observe: observe::ObserveMetrics::register(&r),
        };
        Self {
            registry: r,
            catalogue: Mutex::new(catalogue),
            published: Mutex::new(None),
        }
    }

    /// Renders `state` once for every scrape that follows, until the next publish.
    pub fn publish(&self, state: &AgentState) -> Arc<Rendered> {
        let rendered = Arc::new(Rendered::new(self.render(state)));
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = Some(rendered.clone());
        rendered
    }

    /// The last published rendering; `None` before the daemon's first publish.
    pub fn current(&self) -> Option<Arc<Rendered>> {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The Prometheus text exposition of `state`.
    pub fn render(&self, state: &AgentState) -> String {
        let mut c = self.catalogue.lock().unwrap_or_else(|e| e.into_inner());
        c.node.sync(state);
        c.header.sync(&state.header);
        c.counters.sync(&state.counters);
        c.reload
            .sync(&state.reload, &state.observe, &state.counters);
        c.observe.sync(&state.observe, &state.node.kernel_release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::HotplugAction;
    use crate::{
        model::{
            facts::KdumpFacts,
            header::HeaderStatus,
            probe::{Attach, ProbeReport},
        },
        reconcile::header::HeaderKnowledge,
        sys::node::NodeState,
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
        AgentState::new(NodeState::new(
            "6.18.0".into(),
            vec![],
            "CONFIG_KEXEC is not set".into(),
        ))
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
            "kdump_header_stale_reason",
            "kdump_header_missing_cpu_notes",
            "kdump_system_ram_bytes",
            "kdump_memory_hotplug_events_total",
            "kdump_cpu_hotplug_events_total",
            "kdump_kexec_loads_total",
            "kdump_kernel_header_updates_total",
            "kdump_kernel_header_skipped_updates_total",
            "kdump_kernel_header_behind_since_timestamp_seconds",
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
    fn scrapes_serve_the_last_publish_and_gzip_decodes_to_it() {
        use std::io::Read as _;
        let exporter = Exporter::new();
        assert!(exporter.current().is_none());
        let mut s = unsupported();
        exporter.publish(&s);
        let first = exporter.current().unwrap();
        s.counters.hotplug_events[HotplugAction::Online as usize] = 3;
        assert!(Arc::ptr_eq(&first, &exporter.current().unwrap()));
        exporter.publish(&s);
        let second = exporter.current().unwrap();
        assert_eq!(
            value(
                second.as_str(),
                r#"kdump_memory_hotplug_events_total{action="online"}"#
            ),
            "3"
        );
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&second.gzip()[..])
            .read_to_string(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, second.as_str());
        assert!(second.gzip().len() < second.text.len());
    }

    #[test]
    fn a_missing_cpu_note_is_its_own_stale_reason() {
        let mut s = unsupported();
        s.header = HeaderKnowledge::with_status(HeaderStatus {
            stale: true,
            missing_cpu_notes: vec![1],
            ..Default::default()
        });
        let text = Exporter::new().render(&s);
        assert_eq!(value(&text, "kdump_header_missing_cpu_notes"), "1");
        assert_eq!(
            value(
                &text,
                r#"kdump_header_stale_reason{reason="cpu_note_missing"}"#
            ),
            "1"
        );
        assert_eq!(
            value(&text, r#"kdump_header_stale_reason{reason="ram_missing"}"#),
            "0"
        );
    }

    #[test]
    fn counters_and_histograms_follow_the_state_across_scrapes() {
        let exporter = Exporter::new();
        let mut s = unsupported();
        s.node.facts = KdumpFacts {
            kexec: true,
            crash_loaded: true,
            reserved_bytes: 1 << 28,
            ..Default::default()
        };
        s.header = HeaderKnowledge::with_status(HeaderStatus {
            stale: true,
            missing_bytes: 1 << 29,
            stale_since: Some(1_700_000_000),
            ..Default::default()
        });
        s.counters.hotplug_events[HotplugAction::Online as usize] = 4;
        s.reload.results.insert("success", 2);
        s.reload.durations.record(0.2);
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
        s.reload.durations.record(0.4);
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
        s.observe.probes = [
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
