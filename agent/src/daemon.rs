//! `kdump-agent run`: wires the event sources, the state and the exporters together.
//!
//! probes / uevents / rescans -> events -> reconcile -> reload -> state -> /metrics, textfile.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
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
        web_config::WebConfig,
    },
    model::{
        events::{Event, EventSource},
        header::Reloader,
        mode::Mode,
        units::unix_seconds,
    },
    observe::{SourceChoice, probes, uevent},
    reconcile::Input,
    reload::{self, LoadDone, Occasion, ReconcileLoop, ReloadOptions},
    state::{AgentState, SharedState},
    sys::{capabilities::missing_process_caps, node::NodeState, procfs::Procfs, sysfs::Sysfs},
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
    pub event_source: SourceChoice,
    pub reload: ReloadOptions,
    /// On SIGTERM/SIGINT, the longest wait for a load in flight (and its rollback).
    pub stop_timeout: Duration,
    /// TLS and basic auth of the HTTP endpoint (`--web.config.file`).
    pub web: WebConfig,
    /// Members may read `status` and `show` on the control socket.
    pub control_group: Option<u32>,
}

/// Room for a storm of 4096 block events without blocking a source.
const EVENT_QUEUE: usize = 8192;

/// The node's state before any event source runs, with the loaded header judged as the
/// node shows it now; `run`, `status` and `check` all start from it.
pub fn initial_state(procfs: &Procfs, sysfs: &Sysfs, boot: &Path) -> anyhow::Result<AgentState> {
    let mut state = AgentState::new(NodeState::detect(procfs, sysfs, boot)?);
    if state.node.facts.crash_loaded {
        reload::read_back(procfs, sysfs, &state.node, &mut state.header);
    }
    let kernel_managed = state.mode() == Mode::KernelManaged;
    let node = &state.node;
    state.header.judge(
        node.facts.crash_loaded,
        kernel_managed,
        node.iomem.as_ref(),
        node.cpus.as_ref(),
        unix_seconds(SystemTime::now()),
        Reloader::HeadersOwnLoader,
    );
    Ok(state)
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

/// Refuses to start without the capabilities `run` needs, naming the missing ones.
fn require_capabilities() -> anyhow::Result<()> {
    let missing = missing_process_caps(Procfs::effective_capabilities()?);
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|c| c.name()).collect();
        bail!(
            "missing capabilities {}: `kdump-agent run` needs them to read /proc/iomem's addresses, attach probes and load crash kernels (run as root, or grant them to the container)",
            names.join(", ")
        );
    }
    Ok(())
}

/// Starts the event source `choice` asks for (with `auto`: the probes, else uevents, else
/// rescans alone) and says which in `state`.
fn start_observing(
    state: &mut AgentState,
    procfs: &Procfs,
    choice: SourceChoice,
    block_bytes: Option<u64>,
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let observe = &mut state.observe;
    match choice {
        SourceChoice::Auto | SourceChoice::Ebpf => {}
        SourceChoice::Uevent => {
            tracing::info!("probes turned off by --event-source uevent");
            observe.event_source = EventSource::Uevent;
            uevent::listen(block_bytes, uevent::Forward::MemoryAndCpus, tx.clone())
                .context("--event-source uevent: the uevent socket is unavailable")?;
            return Ok(());
        }
        SourceChoice::Poll => {
            tracing::info!(
                "probes and uevents turned off by --event-source poll; rescans see CPU changes"
            );
            observe.event_source = EventSource::Poll;
            return Ok(());
        }
    }
    let (attached, reports) = probes::attach(&state.node.capabilities);
    for r in &reports {
        if !r.how.is_attached() {
            tracing::warn!(probe = %r.probe, reason = %r.reason, "probe not attached");
        } else {
            tracing::info!(probe = %r.probe, how = %r.how, fallback_because = %r.reason, "probe attached");
        }
    }
    if choice == SourceChoice::Ebpf && attached.is_none() {
        let why: Vec<String> = reports
            .iter()
            .map(|r| format!("{}: {}", r.probe, r.reason))
            .collect();
        bail!(
            "--event-source ebpf: no probe could be attached ({})",
            why.join("; ")
        );
    }
    let observe = &mut state.observe;
    observe.windows_from_probes = probes::WINDOW_PROBES
        .iter()
        .all(|w| reports.iter().any(|r| r.probe == *w && r.how.is_attached()));
    observe.probes = reports;
    observe.event_source = match attached.map(|a| a.spawn_reader(procfs.clone(), tx.clone())) {
        Some(Ok(_reader)) => {
            // The probes watch memory and loads; CPU hotplug comes from its uevents.
            if let Err(e) = uevent::listen(None, uevent::Forward::Cpus, tx.clone()) {
                tracing::warn!(error = %e, "CPU uevents unavailable; periodic rescans see CPU changes");
            }
            EventSource::Ebpf
        }
        Some(Err(e)) if choice == SourceChoice::Ebpf => {
            bail!("--event-source ebpf: the ring buffer reader failed: {e}")
        }
        reader => {
            if let Some(Err(e)) = reader {
                tracing::warn!(error = %e, "eBPF ring buffer reader failed; falling back");
            }
            match uevent::listen(block_bytes, uevent::Forward::MemoryAndCpus, tx.clone()) {
                Ok(_listener) => EventSource::Uevent,
                Err(e) => {
                    tracing::warn!(error = %e, "uevent socket unavailable; relying on periodic rescans");
                    EventSource::Poll
                }
            }
        }
    };
    Ok(())
}

/// A load job on the blocking pool.
struct Running {
    handle: JoinHandle<LoadDone>,
    budget: Duration,
    /// When the watchdog reports it failed.
    overdue: Instant,
}

/// A signal asked the daemon to stop while a load was in flight.
struct Stopping {
    signal: &'static str,
    deadline: Instant,
}

/// What the event loop does after a signal.
enum Stop {
    Now,
    /// Wait for the load in flight (and a rollback after it) first.
    After(Stopping),
}

/// The running daemon: the pipeline's stages and the state they write.
struct Daemon {
    opts: Options,
    state: SharedState,
    exporter: Arc<Exporter>,
    reconcile: ReconcileLoop,
    /// The load job in flight, if any.
    load: Option<Running>,
    /// `kdump-agent reload` clients, answered when the reconcile they asked for is over.
    waiting: Vec<(ReloadRequest, u64)>,
}

/// What start-up hands the event loop: the daemon, its inputs and its servers.
struct Started {
    d: Daemon,
    rx: mpsc::Receiver<Event>,
    reload_rx: mpsc::Receiver<ReloadRequest>,
    stop_tx: watch::Sender<bool>,
    servers: [JoinHandle<()>; 2],
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let Started {
        mut d,
        mut rx,
        mut reload_rx,
        stop_tx,
        servers,
    } = start(opts).await?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut rescan = tokio::time::interval(d.opts.rescan_interval);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    // The start-up survey: is a crash kernel loaded, is its header current?
    d.tick();
    let mut stopping: Option<Stopping> = None;
    loop {
        d.start_load(stopping.is_some());
        if let Some(stop) = &stopping
            && d.load.is_none()
        {
            d.stopped(stop.signal);
            break;
        }
        d.answer_waiting();
        let deadline = d.reconcile.next_deadline();
        // select! builds every branch's future, so a disabled timer still needs an instant.
        let far = Instant::now() + Duration::from_secs(3600);
        let wake = deadline.unwrap_or(far);
        let overdue = d.load.as_ref().map_or(far, |r| r.overdue);
        let stop_at = stopping.as_ref().map_or(far, |s| s.deadline);
        let signal = tokio::select! {
            Some(event) = rx.recv() => { d.on_events(drain(event, &mut rx)); None }
            joined = async { (&mut d.load.as_mut().expect("guarded by is_some").handle).await }, if d.load.is_some() => {
                d.load = None;
                d.on_load_done(joined.context("the load task failed")?);
                None
            }
            _ = tokio::time::sleep_until(wake.into()), if deadline.is_some() => { d.tick(); None }
            _ = tokio::time::sleep_until(overdue.into()), if d.load.is_some() => { d.on_overrun(); None }
            _ = rescan.tick(), if d.load.is_none() && stopping.is_none() => { d.on_rescan(); None }
            Some(reply) = reload_rx.recv() => { d.on_reload_request(reply); None }
            _ = tokio::time::sleep_until(stop_at.into()), if stopping.is_some() => {
                d.on_stop_timeout();
                break;
            }
            _ = sigterm.recv() => Some("SIGTERM"),
            _ = sigint.recv() => Some("SIGINT"),
        };
        let Some(signal) = signal else { continue };
        match d.after_signal(stopping.as_ref(), signal) {
            Some(stop) => stopping = Some(stop),
            None => break,
        }
    }
    let _ = stop_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    Ok(())
}

/// `first` and every event already queued behind it: one batch, one rescan.
fn drain(first: Event, rx: &mut mpsc::Receiver<Event>) -> Vec<Event> {
    let mut batch = vec![first];
    while let Ok(more) = rx.try_recv() {
        batch.push(more);
    }
    batch
}

/// Start-up: capabilities, the node, the reload stage, the endpoints, the event source.
async fn start(opts: Options) -> anyhow::Result<Started> {
    require_capabilities()?;
    let mut initial = initial_state(&opts.procfs, &opts.sysfs, &opts.boot)?;
    let mut reconcile = ReconcileLoop::start(
        opts.reload.clone(),
        &opts.state_dir,
        &mut initial.reload_parts(),
        &opts.procfs,
        &opts.sysfs,
    )?;
    let listener = http::bind(opts.listen).await?;
    let control_listener = control::bind(&opts.state_dir, opts.control_group)?;
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    start_observing(
        &mut initial,
        &opts.procfs,
        opts.event_source,
        opts.sysfs.memory_block_size().ok().flatten(),
        &tx,
    )?;
    reconcile.set_loads_observed(initial.observe.event_source == EventSource::Ebpf);
    let readiness = initial.readiness();
    tracing::info!(
        listen = %opts.listen,
        source = %initial.observe.event_source,
        mode = initial.mode().as_str(),
        ready = readiness.ready,
        reason = %readiness.reason,
        rescan_seconds = opts.rescan_interval.as_secs_f64(),
        "kdump-agent running"
    );

    let state: SharedState = Arc::new(RwLock::new(initial));
    let exporter = Arc::new(Exporter::new());
    let control_socket = control::socket_path(&opts.state_dir);
    let mut d = Daemon {
        opts,
        state,
        exporter,
        reconcile,
        load: None,
        waiting: Vec::new(),
    };
    // The textfile is written before the endpoints answer that the agent is up.
    d.publish();
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        d.state.clone(),
        d.exporter.clone(),
        std::mem::take(&mut d.opts.web),
        stop_rx.clone(),
    ));
    let (reload_tx, reload_rx) = mpsc::channel(16);
    let control = tokio::spawn(control::serve(
        control_listener,
        control_socket,
        d.state.clone(),
        reload_tx,
        d.opts.control_group,
        stop_rx,
    ));
    Ok(Started {
        d,
        rx,
        reload_rx,
        stop_tx,
        servers: [server, control],
    })
}

impl Daemon {
    /// Runs `f` with the state locked for writing, then pushes it to the written exporters.
    fn with_state<T>(
        &mut self,
        f: impl FnOnce(&mut AgentState, &mut ReconcileLoop, &Options) -> T,
    ) -> T {
        let out = f(
            &mut self.state.write().unwrap_or_else(|e| e.into_inner()),
            &mut self.reconcile,
            &self.opts,
        );
        self.publish();
        out
    }

    /// Feeds the reconciler `input` with the reload stage's parts of the state.
    fn reconcile(&mut self, input: Input) {
        self.with_state(|s, reconcile, _| {
            reconcile.handle(Instant::now(), input, &mut s.reload_parts());
        });
    }

    fn tick(&mut self) {
        self.reconcile(Input::Tick);
    }

    /// Runs the job the reload stage decided; a stopping daemon runs only a rollback.
    fn start_load(&mut self, stopping: bool) {
        let job = if stopping {
            self.reconcile.take_rollback()
        } else {
            self.reconcile.take_job()
        };
        if let Some(job) = job {
            let budget = job.budget();
            self.load = Some(Running {
                handle: tokio::task::spawn_blocking(move || job.run()),
                budget,
                overdue: Instant::now() + budget,
            });
        }
    }

    /// The watchdog: a job past its budget is reported failed and left to finish unheard
    /// (dropping the handle detaches it; a blocking thread cannot be cancelled).
    fn on_overrun(&mut self) {
        let Some(running) = self.load.take() else {
            return;
        };
        tracing::error!(
            in_flight = self.reconcile.in_flight().unwrap_or("load"),
            budget_seconds = running.budget.as_secs_f64(),
            "load job overran its budget; abandoned and counted as failed"
        );
        self.with_state(|s, reconcile, _| {
            reconcile.overran(Instant::now(), running.budget, &mut s.reload_parts());
        });
    }

    /// SIGTERM or SIGINT: exit now, or once the load in flight (and a rollback it needs) is over.
    fn on_signal(&self, signal: &'static str) -> Stop {
        match self.reconcile.in_flight() {
            Some(what) if self.load.is_some() => {
                tracing::info!(
                    signal,
                    waiting_for = what,
                    timeout_seconds = self.opts.stop_timeout.as_secs_f64(),
                    "stopping once the load in flight is over (and its rollback, if it freed the old image); a second signal exits at once"
                );
                Stop::After(Stopping {
                    signal,
                    deadline: Instant::now() + self.opts.stop_timeout,
                })
            }
            _ => {
                tracing::info!("{signal}: shutting down");
                Stop::Now
            }
        }
    }

    /// The wait for the load in flight is over: say what is loaded on the way out.
    /// A signal while running or stopping: `Some` to wait for the load in flight, `None` to
    /// exit now (nothing in flight, or a second signal).
    fn after_signal(
        &mut self,
        stopping: Option<&Stopping>,
        signal: &'static str,
    ) -> Option<Stopping> {
        match (stopping, self.on_signal(signal)) {
            (None, Stop::After(stop)) => Some(stop),
            (None, Stop::Now) => None,
            (Some(_), _) => {
                tracing::warn!(
                    signal,
                    in_flight = self.reconcile.in_flight().unwrap_or("load"),
                    "second signal: exiting without waiting for the load in flight; the next start reads what is loaded"
                );
                self.reconcile.interrupted(Instant::now());
                None
            }
        }
    }

    fn on_stop_timeout(&mut self) {
        tracing::warn!(
            in_flight = self.reconcile.in_flight().unwrap_or("load"),
            timeout_seconds = self.opts.stop_timeout.as_secs_f64(),
            "stop timeout: exiting with the load in flight; the next start reads what is loaded"
        );
        self.reconcile.interrupted(Instant::now());
    }

    fn stopped(&self, signal: &'static str) {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        tracing::info!(
            signal,
            crash_kernel_loaded = s.node.facts.crash_loaded,
            last = s.reload.status.last.as_deref().unwrap_or("none"),
            "the load in flight is over; shutting down"
        );
    }

    fn answer_waiting(&mut self) {
        if self.load.is_some() || self.waiting.is_empty() {
            return;
        }
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        for (reply, reloads_before) in self.waiting.drain(..) {
            let _ = reply.send(reload_answer(&s, reloads_before));
        }
    }

    /// Counts a batch of events, re-reads the node once for all of them, and lets the
    /// reload stage learn from each and judge the header once.
    fn on_events(&mut self, batch: Vec<Event>) {
        // A load in flight holds the kexec lock: kexec_crash_size reads EBUSY until it
        // ends, and the verify after the load re-reads everything anyway.
        let rescan = self.load.is_none();
        self.with_state(|s, reconcile, opts| {
            for event in &batch {
                log(event);
                s.counters.count(event);
            }
            if rescan {
                let read_locked = batch.iter().any(|e| matches!(e, Event::KexecLoad(_)));
                rescan_node(opts, s, read_locked);
            }
            let now = Instant::now();
            let mut parts = s.reload_parts();
            for event in batch {
                reconcile.handle(now, Input::Event(event), &mut parts);
            }
            reconcile.judge(&mut parts, Occasion::Events);
        });
    }

    fn on_load_done(&mut self, done: LoadDone) {
        self.with_state(|s, reconcile, _| {
            reconcile.finished(Instant::now(), done, &mut s.reload_parts());
        });
    }

    /// A periodic full rescan: catches a change no event told about (missed events, another
    /// loader), and a mode that changed under the agent.
    fn on_rescan(&mut self) {
        self.with_state(|s, reconcile, opts| {
            let online = |s: &AgentState| s.node.cpus.as_ref().map(|c| c.online.clone());
            let before = (
                s.node.facts.system_ram_bytes,
                s.node.facts.crash_loaded,
                online(s),
            );
            rescan_node(opts, s, true);
            let after = (
                s.node.facts.system_ram_bytes,
                s.node.facts.crash_loaded,
                online(s),
            );
            let now = Instant::now();
            let mut parts = s.reload_parts();
            reconcile.judge(&mut parts, Occasion::Rescan);
            // A CPU change a missed uevent did not report counts as a change too.
            if after != before {
                reconcile.handle(now, Input::Event(Event::IomemChanged), &mut parts);
            }
            reconcile.resync_mode(now, &mut parts);
        });
    }

    fn on_reload_request(&mut self, reply: ReloadRequest) {
        let before = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .reload
            .reloads();
        self.waiting.push((reply, before));
        self.reconcile(Input::ReloadRequested);
    }

    /// Renders the state once for the scrapes to come and the textfile.
    fn publish(&self) {
        let rendered = self
            .exporter
            .publish(&self.state.read().unwrap_or_else(|e| e.into_inner()));
        if let Some(dir) = &self.opts.textfile_dir
            && let Err(e) = textfile::write(dir, rendered.as_str())
        {
            tracing::error!(error = %e, "textfile not updated");
        }
    }
}

/// Re-reads the node. A file that cannot be read now keeps the last good facts: the error is
/// logged, the daemon keeps running.
fn rescan_node(opts: &Options, s: &mut AgentState, read_locked: bool) {
    if let Err(e) = s.node.refresh(&opts.procfs, &opts.sysfs, read_locked) {
        tracing::error!(error = %format!("{e:#}"), "rescan failed; keeping the last good state");
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
        Event::KernelUpdateSkipped { during_load, .. } => tracing::debug!(
            during_load,
            "the kernel's crash hotplug handler returned without rewriting the header"
        ),
        Event::KexecLoadStarted { pid, comm } => tracing::info!(
            pid,
            %comm,
            "another loader's crash kernel load started: no reload until it returns"
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
        Event::Cpu { action, cpu } => {
            tracing::info!(action = action.as_str(), cpu, "CPU hotplug event");
        }
        Event::IomemChanged => tracing::debug!("/proc/iomem changed"),
    }
}

/// What `kdump-agent reload` prints: what the reconcile did, and whether kdump is ready now.
fn reload_answer(s: &AgentState, reloads_before: u64) -> serde_json::Value {
    let readiness = s.readiness();
    let outcome = if s.reload.reloads() > reloads_before {
        format!(
            "reloaded: {}",
            s.reload.status.last.as_deref().unwrap_or("?")
        )
    } else if readiness.ready {
        "nothing to do: the loaded header covers all RAM".to_owned()
    } else {
        format!(
            "not reloaded{}",
            s.reload
                .status
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
