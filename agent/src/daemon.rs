//! `kdump-agent run`: wires the event sources, the state and the exporters together.
//!
//! probes / uevents / rescans -> events -> reconcile -> reload -> state -> /metrics, textfile.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    export::{
        control::{self, ReloadRequest},
        http,
        metrics::Exporter,
        textfile,
    },
    model::events::{Event, EventSource},
    observe::{probes, uevent},
    reconcile::Input,
    reload::{LoadDone, ReconcileLoop, ReloadOptions},
    state::{AgentState, SharedState},
    sys::{
        capabilities::{self, missing_process_caps},
        node,
        procfs::Procfs,
        sysfs::Sysfs,
    },
};

pub struct Options {
    pub procfs: Procfs,
    pub sysfs: Sysfs,
    pub boot: PathBuf,
    pub listen: SocketAddr,
    /// Holds the control socket.
    pub state_dir: PathBuf,
    pub textfile_dir: Option<PathBuf>,
    /// Full rescans of the node, whatever the event source (resync after missed events).
    pub rescan_interval: Duration,
    pub reload: ReloadOptions,
}

/// Room for a storm of 4096 block events without blocking a source.
const EVENT_QUEUE: usize = 8192;

/// The node's state before any event source runs; `run` and `status` both start from it.
pub fn initial_state(
    procfs: &Procfs,
    sysfs: &Sysfs,
    boot: &std::path::Path,
) -> anyhow::Result<AgentState> {
    let config = procfs.kernel_config(boot);
    let caps = capabilities::detect(sysfs, config.as_ref());
    let release = procfs.kernel_release().unwrap_or_else(|_| "unknown".into());
    let mut state = AgentState::new(
        release,
        caps,
        capabilities::no_kexec_reason(config.as_ref()),
    );
    refresh(&mut state, procfs, sysfs, false)?;
    Ok(state)
}

/// `during_hotplug`: see [`node::facts`]; the kexec-locked files are left for the next rescan.
fn refresh(
    state: &mut AgentState,
    procfs: &Procfs,
    sysfs: &Sysfs,
    during_hotplug: bool,
) -> anyhow::Result<()> {
    let iomem = node::read_iomem(procfs)?;
    let have_last = state.refreshed_at.is_some();
    state.facts = match node::facts(
        &iomem,
        sysfs,
        (have_last && during_hotplug).then_some(&state.facts),
    ) {
        // kexec_crash_size answers EBUSY while a load holds the kexec lock: keep the last value.
        Err(e) if have_last => {
            tracing::debug!(error = %format!("{e:#}"), "kexec-locked sysfs files busy; keeping their last values");
            node::facts(&iomem, sysfs, Some(&state.facts))?
        }
        facts => facts?,
    };
    state.iomem = Some(iomem);
    let now = SystemTime::now();
    state.refreshed_at = Some(now);
    let was_stale = state.header.stale;
    state.assess_header(unix_seconds(now));
    let h = &state.header;
    if h.stale && !was_stale {
        tracing::warn!(
            missing_bytes = h.missing_bytes,
            excess_bytes = h.excess_bytes,
            verified = h.verified,
            "the loaded crash header is stale"
        );
    }
    Ok(())
}

/// CLOCK_MONOTONIC, the clock of the probes' `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let effective = Procfs::effective_capabilities()?;
    let missing = missing_process_caps(effective);
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|c| c.name()).collect();
        bail!(
            "missing capabilities {}: `kdump-agent run` needs them to attach probes and load crash kernels (run as root, or grant them to the container)",
            names.join(", ")
        );
    }
    let mut initial = initial_state(&opts.procfs, &opts.sysfs, &opts.boot)?;
    let mut reconcile = ReconcileLoop::start(
        opts.reload.clone(),
        &opts.state_dir,
        &mut initial,
        &opts.procfs,
        &opts.sysfs,
    )?;
    let listener = http::bind(opts.listen).await?;
    let control_listener = control::bind(&opts.state_dir)?;
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);

    let (attached, reports) = probes::attach(&initial.capabilities);
    for r in &reports {
        if !r.how.is_attached() {
            tracing::warn!(probe = %r.probe, reason = %r.reason, "probe not attached");
        } else {
            tracing::info!(probe = %r.probe, how = %r.how, fallback_because = %r.reason, "probe attached");
        }
    }
    initial.windows_from_probes = probes::WINDOW_PROBES
        .iter()
        .all(|w| reports.iter().any(|r| r.probe == *w && r.how.is_attached()));
    initial.probes = reports;
    let block_bytes = opts.sysfs.memory_block_size().ok().flatten();
    initial.event_source = match attached.map(|a| a.spawn_reader(tx.clone())) {
        Some(Ok(_reader)) => EventSource::Ebpf,
        reader => {
            if let Some(Err(e)) = reader {
                tracing::warn!(error = %e, "eBPF ring buffer reader failed; falling back");
            }
            match uevent::listen(block_bytes, tx.clone()) {
                Ok(_listener) => EventSource::Uevent,
                Err(e) => {
                    tracing::warn!(error = %e, "uevent socket unavailable; relying on periodic rescans");
                    EventSource::Poll
                }
            }
        }
    };
    let readiness = initial.readiness();
    tracing::info!(
        listen = %opts.listen,
        source = %initial.event_source,
        mode = initial.mode().as_str(),
        ready = readiness.ready,
        reason = %readiness.reason,
        rescan_seconds = opts.rescan_interval.as_secs_f64(),
        "kdump-agent running"
    );

    let state: SharedState = Arc::new(RwLock::new(initial));
    let exporter = Arc::new(Exporter::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        state.clone(),
        exporter.clone(),
        stop_rx.clone(),
    ));
    let (reload_tx, mut reload_rx) = mpsc::channel(16);
    let control = tokio::spawn(control::serve(
        control_listener,
        control::socket_path(&opts.state_dir),
        state.clone(),
        reload_tx,
        stop_rx,
    ));
    publish(&opts, &state, &exporter);

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut rescan = tokio::time::interval(opts.rescan_interval);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    // The start-up survey: is a crash kernel loaded, is its header current?
    with_state(&state, |s| reconcile.handle(Instant::now(), Input::Tick, s));
    publish(&opts, &state, &exporter);
    let mut load: Option<JoinHandle<LoadDone>> = None;
    // `kdump-agent reload` clients, answered when the reconcile they asked for is over.
    let mut waiting: Vec<(ReloadRequest, u64)> = Vec::new();
    loop {
        if let Some(job) = reconcile.take_job() {
            load = Some(tokio::task::spawn_blocking(move || job.run()));
        }
        if load.is_none() && !waiting.is_empty() {
            let s = state.read().unwrap_or_else(|e| e.into_inner());
            for (reply, reloads_before) in waiting.drain(..) {
                let _ = reply.send(reload_answer(&s, reloads_before));
            }
        }
        let deadline = reconcile.next_deadline();
        // select! builds every branch's future, so a disabled timer still needs an instant.
        let wake = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(event) = rx.recv() => {
                let mut batch = vec![event];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                // A load in flight holds the kexec lock: kexec_crash_size reads EBUSY until it
                // ends, and the verify after the load re-reads everything anyway.
                apply(&opts, &state, &batch, load.is_none());
                with_state(&state, |s| {
                    let now = Instant::now();
                    for event in batch {
                        reconcile.handle(now, Input::Event(event), s);
                    }
                });
                publish(&opts, &state, &exporter);
            }
            joined = async { load.as_mut().expect("guarded by is_some").await }, if load.is_some() => {
                load = None;
                let done = joined.context("the load task failed")?;
                with_state(&state, |s| reconcile.finished(Instant::now(), done, s));
                publish(&opts, &state, &exporter);
            }
            _ = tokio::time::sleep_until(wake.into()), if deadline.is_some() => {
                with_state(&state, |s| {
                    reconcile.handle(Instant::now(), Input::Tick, s)
                });
                publish(&opts, &state, &exporter);
            }
            _ = rescan.tick(), if load.is_none() => {
                let before = with_state(&state, |s| (s.facts.system_ram_bytes, s.facts.crash_loaded));
                rescan_now(&opts, &state, false);
                with_state(&state, |s| {
                    let now = Instant::now();
                    // A change no event told us about (missed events, another loader).
                    if (s.facts.system_ram_bytes, s.facts.crash_loaded) != before {
                        reconcile.handle(now, Input::Event(Event::IomemChanged), s);
                    }
                    reconcile.resync_mode(now, s)
                });
                publish(&opts, &state, &exporter);
            }
            Some(reply) = reload_rx.recv() => {
                with_state(&state, |s| {
                    waiting.push((reply, reloads_done(s)));
                    reconcile.handle(Instant::now(), Input::ReloadRequested, s);
                });
                publish(&opts, &state, &exporter);
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = control.await;
    Ok(())
}

/// Counts a batch of events and re-reads the node once for all of them.
fn apply(opts: &Options, state: &SharedState, batch: &[Event], rescan: bool) {
    {
        let mut s = state.write().unwrap_or_else(|e| e.into_inner());
        let now = unix_seconds(SystemTime::now());
        for event in batch {
            log(event);
            s.count(event);
            if let Err(e) = s.take_header(event, now) {
                tracing::warn!(error = %e, "captured crash header unusable; the loaded header is unverified");
            }
        }
    }
    if rescan {
        let hotplug = !batch.iter().any(|e| matches!(e, Event::KexecLoad(_)));
        rescan_now(opts, state, hotplug);
    }
}

fn log(event: &Event) {
    match event {
        Event::Lost { count, source } => {
            tracing::warn!(count, %source, "events lost; resyncing from /proc and /sys");
        }
        Event::MemoryFailed {
            action,
            phys_start,
            bytes,
            result,
        } => {
            tracing::warn!(%action, ?phys_start, ?bytes, result, "the kernel refused a memory hotplug operation");
        }
        Event::KexecLoad(l) => tracing::info!(
            syscall = l.syscall.as_str(), pid = l.pid, comm = %l.comm, flags = l.flags, unload = l.unload,
            result = l.result, duration_ns = ?l.duration_ns, by_agent = l.by_agent,
            header_bytes = ?l.header.as_ref().map(|h| h.bytes.len()), files = ?l.files,
            "crash kernel load seen"
        ),
        Event::KernelHeaderUpdate(u) => tracing::info!(
            result = u.result, duration_ns = ?u.duration_ns,
            header_bytes = ?u.header.as_ref().map(|h| h.bytes.len()),
            "in-kernel crash header update seen"
        ),
        Event::UnprotectedWindow(w) => tracing::info!(
            seconds = w.seconds(), pid = w.pid, comm = %w.comm, by_agent = w.by_agent,
            "crash kernel in place again after a window without one"
        ),
        Event::Memory {
            action,
            phys_start,
            bytes,
            source,
            ktime_ns,
        } => tracing::debug!(
            action = action.as_str(),
            phys_start,
            bytes,
            source = source.as_str(),
            latency_ns = ktime_ns.and_then(|k| monotonic_ns().checked_sub(k)),
            "memory event"
        ),
        Event::IomemChanged => tracing::debug!("/proc/iomem changed"),
    }
}

/// Re-reads the node. A file that cannot be read now keeps the last good facts: the error is
/// logged, the daemon keeps running.
fn rescan_now(opts: &Options, state: &SharedState, during_hotplug: bool) {
    let mut s = state.write().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = refresh(&mut s, &opts.procfs, &opts.sysfs, during_hotplug) {
        tracing::error!(error = %format!("{e:#}"), "rescan failed; keeping the last good state");
    }
}

fn reloads_done(s: &AgentState) -> u64 {
    s.counters.reloads.values().sum()
}

/// What `kdump-agent reload` prints: what the reconcile did, and whether kdump is ready now.
fn reload_answer(s: &AgentState, reloads_before: u64) -> serde_json::Value {
    let readiness = s.readiness();
    let outcome = if reloads_done(s) > reloads_before {
        format!("reloaded: {}", s.reload.last.as_deref().unwrap_or("?"))
    } else if readiness.ready {
        "nothing to do: the loaded header covers all RAM".to_owned()
    } else {
        format!(
            "not reloaded{}",
            s.reload
                .alert
                .as_deref()
                .map_or(String::new(), |a| format!(": {a}"))
        )
    };
    serde_json::json!({
        "outcome": outcome,
        "ready": readiness.ready,
        "reason": readiness.reason,
    })
}

/// Runs `f` with the state locked for writing.
fn with_state<T>(state: &SharedState, f: impl FnOnce(&mut AgentState) -> T) -> T {
    f(&mut state.write().unwrap_or_else(|e| e.into_inner()))
}

/// Pushes the state to the exporters that are written rather than scraped.
fn publish(opts: &Options, state: &SharedState, exporter: &Exporter) {
    if let Some(dir) = &opts.textfile_dir {
        let text = exporter.render(&state.read().unwrap_or_else(|e| e.into_inner()));
        if let Err(e) = textfile::write(dir, &text) {
            tracing::error!(error = %e, "textfile not updated");
        }
    }
}
