//! Reload: feeds the reconciler, performs its actions (verify against `/proc/iomem`; loads run
//! off the event loop as [`LoadJob`]s), keeps what is known of the loaded header (its only
//! writer), persists state and fills the reload side of the state.
pub mod arm64_load;
pub mod distro;
pub mod kexec;
pub mod loader;
pub mod recipe;
pub mod statefile;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::{
    model::{
        elfcorehdr::{Arch, LoadPath},
        events::{Event, KexecLoad},
        header::{ListedCpuNotes, LoadedHeader, Provenance, Reloader, Transition},
        load::LoadOutcome,
        mode::Mode,
        observations::Observations,
        readiness::readiness,
        units::{unix_seconds, utc},
    },
    reconcile::{
        Action, Alert, HeaderCheck, HeaderState, Input, Reconciler, ReloadReason, Timing,
        header::HeaderKnowledge,
    },
    reload::{
        distro::Host,
        loader::{CrashLoader, LoadReport, ReloadStrategy},
        recipe::{LoadRecipe, RecipeFlags, RecipeSource},
        statefile::{LoadLock, LoadRecord, PersistedState, RangeRecord, RecipeRecord, StateDir},
    },
    sys::{kcore, node::NodeState, procfs::Procfs, rootfs::Rootfs, sysfs::Sysfs},
};

/// `--reload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReloadChoice {
    /// The agent calls kexec_file_load itself.
    KexecFile,
    /// The agent lays out an arm64 image and calls kexec_load itself (the default on arm64
    /// kernels without CONFIG_KEXEC_FILE).
    KexecLoad,
    /// The agent runs --reload-command.
    Command,
    /// Report only.
    Off,
}

/// The reload flags of `kdump-agent run`.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// `None`: `kexec-file` when a recipe is known (`kexec-load` on an arm64 kernel without
    /// `kexec_file_load`), else off.
    pub choice: Option<ReloadChoice>,
    pub command: Vec<String>,
    pub command_timeout: Duration,
    /// kdumpctl's lock, flocked around each of the agent's own loads with kdump-config's
    /// (`None`: no distribution lock is taken).
    pub distro_lock: Option<PathBuf>,
    /// The host's root: distribution configurations, locks and recipe files are under it.
    pub rootfs: Rootfs,
    pub flags: RecipeFlags,
    pub timing: Timing,
}

/// Label values of `kdump_reloads_total`.
pub const RELOAD_RESULTS: [&str; 3] = ["success", "failure", "rolled_back"];

/// The agent's reload side, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadStatus {
    /// `kexec-file`, `kexec-load`, `command` or `off`.
    pub strategy: String,
    /// Where the recipe came from, since when, and what it loads.
    pub recipe: Option<String>,
    /// Since when it has been the recipe, seconds since the epoch.
    pub recipe_since: Option<u64>,
    /// The last reload, one line.
    pub last: Option<String>,
    /// The last alert raised, one line.
    pub alert: Option<String>,
    /// Consecutive failed reloads (0 after a success).
    pub failures: u32,
    /// Why the last `kexec_file_load` by another loader gave no recipe to adopt.
    pub adoption_refused: Option<String>,
    /// Why the host's distribution configuration gave no recipe, when nothing else did.
    pub recipe_refused: Option<String>,
    /// The host's udev rules that reload on memory events too (host paths).
    pub distro_rules: Vec<String>,
    /// Conditions the agent works around, one line each (an ignored lock, a double reload).
    pub warnings: Vec<String>,
}

impl Default for ReloadStatus {
    fn default() -> Self {
        Self {
            strategy: "off".into(),
            recipe: None,
            recipe_since: None,
            last: None,
            alert: None,
            failures: 0,
            adoption_refused: None,
            recipe_refused: None,
            distro_rules: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// The reload side of the state; [`ReconcileLoop`] is its only writer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReloadState {
    pub status: ReloadStatus,
    /// The agent has a recipe and a reload strategy (agent-managed when the kernel is not).
    pub can_reload: bool,
    /// Keyed by [`RELOAD_RESULTS`].
    pub results: BTreeMap<&'static str, u64>,
    /// Decision to outcome, in seconds.
    pub durations: Observations,
    /// Without the window probes: the agent's own replacing loads, an upper bound of the window.
    pub own_windows: Observations,
}

impl ReloadState {
    pub fn reloads(&self) -> u64 {
        self.results.values().sum()
    }
}

/// What the reload stage is handed: the parts of the state it writes, and the node it
/// re-reads before each verdict.
pub struct ReloadParts<'a> {
    pub node: &'a mut NodeState,
    pub header: &'a mut HeaderKnowledge,
    pub reload: &'a mut ReloadState,
}

impl ReloadParts<'_> {
    fn mode(&self) -> Mode {
        Mode::of(&self.node.facts, self.reload.can_reload)
    }

    fn ready(&self) -> bool {
        readiness(
            &self.node.facts,
            &self.node.no_kexec_reason,
            self.header.status(),
        )
        .ready
    }
}

/// A load to run off the event loop: the loader goes in and comes back with the report.
#[derive(Debug)]
pub struct LoadJob {
    loader: CrashLoader,
    rollback: bool,
}

/// A load job's result, with the loader coming back.
#[derive(Debug)]
pub struct LoadDone {
    loader: CrashLoader,
    report: LoadReport,
    rollback: bool,
}

impl LoadJob {
    /// How long it may run before the watchdog reports it failed.
    pub fn budget(&self) -> Duration {
        self.loader.budget()
    }

    pub fn run(mut self) -> LoadDone {
        let report = if self.rollback {
            self.loader.rollback()
        } else {
            self.loader.reload()
        };
        LoadDone {
            loader: self.loader,
            report,
            rollback: self.rollback,
        }
    }
}

/// A reload from decision to outcome (through the rollback that may follow).
#[derive(Clone, Copy, Debug)]
struct Attempt {
    decided: Instant,
    reason: ReloadReason,
    /// Time spent in loads that had freed the old image (an upper bound of the window).
    unprotected: Duration,
    /// A crash kernel was loaded when the reload began (else there was no protection to lose).
    replaced: bool,
}

/// The job the daemon is running, as the reload stage remembers it.
#[derive(Debug)]
struct InFlight {
    rollback: bool,
    /// Takes over if the job never comes back (its loader, and its last good image, stay in it).
    spare: CrashLoader,
}

pub struct ReconcileLoop {
    procfs: Procfs,
    sysfs: Sysfs,
    reconciler: Reconciler,
    /// `None` when reloading is off, or while a job has it.
    loader: Option<CrashLoader>,
    recipe: Option<LoadRecipe>,
    /// The recipe as the state file keeps it: where it first came from, and since when.
    record: Option<RecipeRecord>,
    state_dir: StateDir,
    /// `--reload` as given: only the default may start reloading with an adopted recipe.
    choice: Option<ReloadChoice>,
    /// The host's root and locks every loader of this agent uses.
    host: Host,
    /// The state directory's lock, held while this agent can load.
    lock: Option<LoadLock>,
    persisted: PersistedState,
    /// The event source reports every kexec load (see [`ReconcileLoop::set_loads_observed`]).
    loads_observed: bool,
    /// Set by a finished load: the next verify re-reads the kexec-locked sysfs files.
    reread_locked: bool,
    attempt: Option<Attempt>,
    job: Option<LoadJob>,
    in_flight: Option<InFlight>,
}

/// `status`'s recipe: where it came from (first, for one kept in the state directory), since
/// when, and what it loads.
fn describe(recipe: &LoadRecipe, record: &RecipeRecord) -> String {
    let source = recipe.source.to_string();
    let mut text = if recipe.source == RecipeSource::Persisted && record.source != source {
        format!("{source} (recorded from {})", record.source)
    } else {
        source
    };
    if let Some(since) = record.since {
        text.push_str(&format!(" since {}", utc(since)));
    }
    text.push_str(&format!(": kernel {}", recipe.kernel.display()));
    if let Some(initrd) = &recipe.initrd {
        text.push_str(&format!(", initrd {}", initrd.display()));
    }
    text
}

/// The recipe and strategy `run`'s flags, the persisted state and the distribution's
/// configuration call for, on a kernel that has `kexec_file_load` or not. Pure: the files are
/// read by the caller.
fn resolve(
    opts: &ReloadOptions,
    persisted: &PersistedState,
    distro: Option<LoadRecipe>,
    proc_cmdline: &str,
    kexec_file_load: Option<bool>,
) -> anyhow::Result<(Option<LoadRecipe>, Option<ReloadStrategy>)> {
    let recipe = recipe::resolve(
        &opts.flags,
        persisted.recipe.as_ref().map(RecipeRecord::to_recipe),
        distro,
        proc_cmdline,
    )
    .map_err(anyhow::Error::msg)?;
    let strategy = match (opts.choice, &recipe) {
        (Some(ReloadChoice::Off), _) | (None, None) => None,
        (None, Some(r)) if Arch::RUNNING == Arch::Aarch64 && kexec_file_load == Some(false) => {
            Some(ReloadStrategy::KexecLoad(r.clone()))
        }
        (Some(ReloadChoice::KexecFile) | None, Some(r)) => {
            Some(ReloadStrategy::KexecFile(r.clone()))
        }
        (Some(ReloadChoice::KexecLoad), Some(r)) => Some(ReloadStrategy::KexecLoad(r.clone())),
        (Some(choice @ (ReloadChoice::KexecFile | ReloadChoice::KexecLoad)), None) => bail!(
            "--reload {} needs a recipe: pass --kernel (with --initrd, --cmdline) \
             or configure {} or {}",
            if choice == ReloadChoice::KexecFile {
                "kexec-file"
            } else {
                "kexec-load"
            },
            distro::KDUMP_TOOLS_CONFIG,
            distro::SYSCONFIG_KDUMP
        ),
        (Some(ReloadChoice::Command), _) if opts.command.is_empty() => {
            bail!("--reload command needs --reload-command")
        }
        (Some(ReloadChoice::Command), _) => Some(ReloadStrategy::Command {
            argv: opts.command.clone(),
            timeout: opts.command_timeout,
        }),
    };
    Ok((recipe, strategy))
}

/// When the reload stage judges the header, which decides whether a read-back is worth its
/// cost (a scan of the reservation: tenths of a second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occasion {
    /// Right after a batch of events, maybe mid-burst: the kernel may be rewriting the header.
    Events,
    /// Before a decision, once a burst went quiet.
    Verify,
    /// The periodic rescan: without probes, another loader's load is seen only here.
    Rescan,
}

/// Reads the loaded header back from the crash reservation into `header` (or records why
/// it cannot be read); a failure is logged once per reason.
pub fn read_back(procfs: &Procfs, sysfs: &Sysfs, node: &NodeState, header: &mut HeaderKnowledge) {
    let Some(iomem) = &node.iomem else { return };
    let outcome = match kcore::read_back(procfs, sysfs, iomem) {
        Ok(back) => {
            let millis = back.elapsed.as_secs_f64() * 1000.0;
            tracing::debug!(
                phys_addr = back.phys_addr,
                candidates = back.candidates,
                millis,
                "loaded crash header read back"
            );
            Ok(LoadedHeader::read_back(
                &back.header,
                back.phys_addr,
                millis,
                unix_seconds(SystemTime::now()),
            ))
        }
        Err(e) => {
            let why = e.to_string();
            if header
                .status()
                .unknown
                .as_deref()
                .is_none_or(|u| !u.ends_with(&why))
            {
                tracing::warn!(error = %why, "the loaded crash header cannot be read back");
            }
            Err(why)
        }
    };
    header.read_back(outcome, Some(iomem.system_ram()));
}

/// What an earlier run recorded as loaded, while a crash kernel is still loaded: inferred
/// whatever that run knew, since another loader may have replaced it while no agent watched.
/// It still shows a change of RAM since (stale); it never vouches for the header.
fn restored_header(persisted: &PersistedState, now: u64) -> Option<LoadedHeader> {
    let ram = persisted
        .loaded_header
        .as_deref()
        .and_then(RangeRecord::to_ram)?;
    Some(LoadedHeader {
        load: LoadPath::infer(&ram),
        ram,
        // The record has no notes: only its RAM is judged.
        cpu_notes: ListedCpuNotes::Unknown,
        provenance: Provenance::Inferred,
        origin: "recorded by an earlier run of this agent".into(),
        at: now,
        own_load: false,
    })
}

impl ReconcileLoop {
    /// Reads what the setup needs (state directory, distribution configurations), resolves the
    /// recipe and strategy, takes the lock, and fills the reload side of `parts`.
    pub fn start(
        opts: ReloadOptions,
        state_dir: &Path,
        parts: &mut ReloadParts<'_>,
        procfs: &Procfs,
        sysfs: &Sysfs,
    ) -> anyhow::Result<Self> {
        let state_dir = StateDir::open(state_dir)?;
        let persisted = state_dir
            .read()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring the persisted state");
                None
            })
            .unwrap_or_default();
        let proc_cmdline = std::fs::read_to_string(procfs.path("cmdline")).unwrap_or_default();
        let found = distro::find(&opts.rootfs, &proc_cmdline, &parts.node.kernel_release);
        let (distro_recipe, refused) = match found.recipe {
            Ok(r) => (Some(r), None),
            Err(why) => (None, Some(why)),
        };
        let (recipe, strategy) = resolve(
            &opts,
            &persisted,
            distro_recipe,
            &proc_cmdline,
            parts.node.kexec_file_load,
        )?;
        let status = &mut parts.reload.status;
        if let (None, Some(why)) = (&recipe, refused) {
            tracing::warn!(reason = %why, "no reload recipe from the host's kdump configuration; observing");
            status.recipe_refused = Some(why);
        }
        if recipe.is_none()
            && opts.choice.is_none()
            && let Err(why) = procfs.may_resolve_fds_of(1)
        {
            tracing::warn!(reason = %why, "adoption of another loader's recipe is impossible");
            status.adoption_refused = Some(why);
        }
        let host = Host {
            locks: opts
                .distro_lock
                .iter()
                .cloned()
                .chain(
                    opts.distro_lock
                        .is_some()
                        .then_some(found.locks)
                        .into_iter()
                        .flatten(),
                )
                .collect(),
            rootfs: opts.rootfs.clone(),
        };
        status.warnings = host.lock_warnings();
        for why in &status.warnings {
            tracing::warn!(lock = %why, "this distribution lock will not be taken");
        }
        let rules = distro::memory_reload_rules(&host.rootfs);
        status.distro_rules = rules.iter().map(|r| r.display().to_string()).collect();
        if strategy.is_some() {
            for rule in &rules {
                let line = distro::double_reload_warning(rule);
                tracing::warn!(rule = %rule.display(), "{line}");
                status.warnings.push(line);
            }
        }
        let lock = strategy.as_ref().map(|_| state_dir.lock()).transpose()?;
        let loader = strategy
            .map(|s| CrashLoader::new(s, procfs.clone(), sysfs.clone()).with_host(host.clone()));
        Ok(Self::new(
            opts, host, state_dir, persisted, recipe, loader, lock, parts, procfs, sysfs,
        ))
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the resolved setup, consumed once"
    )]
    fn new(
        opts: ReloadOptions,
        host: Host,
        state_dir: StateDir,
        persisted: PersistedState,
        recipe: Option<LoadRecipe>,
        mut loader: Option<CrashLoader>,
        lock: Option<LoadLock>,
        parts: &mut ReloadParts<'_>,
        procfs: &Procfs,
        sysfs: &Sysfs,
    ) -> Self {
        let crash_loaded = parts.node.facts.crash_loaded;
        let record = recipe.as_ref().map(|r| {
            RecipeRecord::taking_over(
                r,
                persisted.recipe.as_ref(),
                unix_seconds(SystemTime::now()),
            )
        });
        if let (Some(loader), Some(r)) = (&mut loader, &record)
            && crash_loaded
            && (persisted
                .last_good
                .as_ref()
                .is_some_and(|g| g.same_files(r))
                || matches!(loader.strategy(), ReloadStrategy::KexecLoad(_)))
        {
            // What is loaded came from this recipe in an earlier run: keep it for rollbacks.
            // An arm64 kexec_load frees the loaded image before it loads, and kexec-tools'
            // segments are not kept: the image this recipe makes now is the one to go back to.
            match loader.adopt_last_good() {
                Ok(bytes) => tracing::info!(bytes, "last known good image adopted from the recipe"),
                Err(e) => tracing::warn!(error = %e, "no last known good image"),
            }
        }
        if crash_loaded && parts.header.loaded().is_none_or(|l| !l.known()) {
            // Read back at start-up beats what an earlier run recorded.
            *parts.header = HeaderKnowledge::restored(restored_header(
                &persisted,
                unix_seconds(SystemTime::now()),
            ));
        }
        let r = &mut parts.reload;
        r.can_reload = loader.is_some();
        r.status.strategy = loader
            .as_ref()
            .map_or("off", |l| l.strategy().name())
            .to_owned();
        r.status.recipe = recipe
            .as_ref()
            .zip(record.as_ref())
            .map(|(r, d)| describe(r, d));
        r.status.recipe_since = record.as_ref().and_then(|d| d.since);
        let mode = parts.mode();
        if loader.is_some() && mode == Mode::Unsupported {
            tracing::warn!(
                "reloading is configured but this kernel cannot load a crash kernel: {}",
                readiness(
                    &parts.node.facts,
                    &parts.node.no_kexec_reason,
                    parts.header.status()
                )
                .reason
            );
        }
        let has_last_good = loader.as_ref().is_some_and(CrashLoader::has_last_good);
        Self {
            procfs: procfs.clone(),
            sysfs: sysfs.clone(),
            reconciler: Reconciler::new(opts.timing, mode, parts.reload.can_reload, has_last_good),
            loader,
            recipe,
            record,
            state_dir,
            choice: opts.choice,
            host,
            lock,
            persisted,
            loads_observed: false,
            reread_locked: false,
            attempt: None,
            job: None,
            in_flight: None,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.reconciler.next_deadline()
    }

    /// A load the daemon must run off the event loop, if one was decided.
    pub fn take_job(&mut self) -> Option<LoadJob> {
        self.job.take()
    }

    /// Only a rollback, which puts back the image a failed load freed: what a stopping daemon
    /// still runs. A reload stays decided, untaken, and the reconciler waits for it.
    pub fn take_rollback(&mut self) -> Option<LoadJob> {
        self.job.take_if(|job| job.rollback)
    }

    /// `reload` or `rollback` while a job is out, for the log.
    pub fn in_flight(&self) -> Option<&'static str> {
        self.in_flight
            .as_ref()
            .map(|f| if f.rollback { "rollback" } else { "reload" })
    }

    /// Feeds one input and performs the resulting actions (and their answers) until the
    /// reconciler waits for time or for a load.
    pub fn handle(&mut self, now: Instant, input: Input, parts: &mut ReloadParts<'_>) {
        if let Input::Event(event) = &input {
            self.learn(event, parts);
        }
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            for action in self.reconciler.handle(now, input) {
                match action {
                    Action::Verify => {
                        let check = self.verify(parts);
                        if parts.mode() != self.reconciler.mode() {
                            inputs.push(Input::Mode(parts.mode()));
                        }
                        inputs.push(Input::Checked(check));
                    }
                    Action::Reload { reason } => {
                        tracing::info!(%reason, "reloading the crash kernel");
                        self.attempt = Some(Attempt {
                            decided: now,
                            reason,
                            unprotected: Duration::ZERO,
                            replaced: parts.node.facts.crash_loaded,
                        });
                        self.start_job(false, parts.header);
                    }
                    Action::Rollback => {
                        tracing::warn!("rolling back to the last known good crash kernel");
                        self.start_job(true, parts.header);
                    }
                    Action::Alert(alert) => {
                        let line = alert_line(alert);
                        tracing::warn!(alert = %line, "kdump alert");
                        parts.reload.status.alert = Some(line);
                    }
                }
            }
            parts.reload.status.failures = self.reconciler.view().failures;
        }
        // An alert describes a condition that kept the node from being ready; it ends with it.
        if parts.ready() {
            parts.reload.status.alert = None;
        }
    }

    /// What an event tells about the loaded header, and about a recipe to adopt.
    fn learn(&mut self, event: &Event, parts: &mut ReloadParts<'_>) {
        if let Err(e) = parts.header.observe(event, unix_seconds(SystemTime::now())) {
            tracing::warn!(error = %e, "captured crash header unusable; what is loaded is unknown");
        }
        if let Event::KexecLoad(load) = event
            && !load.by_agent
        {
            self.adopt(load, parts);
        }
    }

    /// The event source reports every kexec load (the probes): a rescan need not read the
    /// header back to notice another loader's.
    pub fn set_loads_observed(&mut self, observed: bool) {
        self.loads_observed = observed;
    }

    /// Judges the loaded header against the node as last read, with the one log line a change
    /// of verdict gets. Reads it back first when only that can tell what is loaded.
    pub fn judge(&self, parts: &mut ReloadParts<'_>, occasion: Occasion) {
        let kernel_managed = parts.mode() == Mode::KernelManaged;
        let crash_loaded = parts.node.facts.crash_loaded;
        let ram = parts
            .node
            .iomem
            .as_ref()
            .map(crate::model::iomem::Iomem::system_ram);
        let wants = |kernel_managed| {
            parts
                .header
                .wants_read_back(crash_loaded, kernel_managed, ram.as_ref())
        };
        let read = match occasion {
            // Mid-burst a kernel-managed header may be half rewritten: wait for the verify.
            Occasion::Events => wants(false) && !kernel_managed,
            Occasion::Verify => wants(kernel_managed),
            Occasion::Rescan => wants(kernel_managed) || (crash_loaded && !self.loads_observed),
        };
        if read {
            read_back(&self.procfs, &self.sysfs, parts.node, parts.header);
        }
        let node = &*parts.node;
        let skipped_before = parts.header.skipped_updates();
        // A command reloads with the node's own loader, the one that loaded the header.
        let reloader = match self.loader.as_ref().map(|l| l.strategy()) {
            Some(ReloadStrategy::KexecFile(_)) => Reloader::Through(LoadPath::KexecFileLoad),
            Some(ReloadStrategy::KexecLoad(_)) => Reloader::Agent,
            Some(ReloadStrategy::Command { .. }) | None => Reloader::HeadersOwnLoader,
        };
        let transition = parts.header.judge(
            node.facts.crash_loaded,
            kernel_managed,
            node.iomem.as_ref(),
            node.cpus.as_ref(),
            unix_seconds(SystemTime::now()),
            reloader,
        );
        let skipped = parts.header.skipped_updates() - skipped_before;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "the kernel skipped its in-kernel update of the crash header (kexec lock busy): \
                 what it holds lists the RAM of before"
            );
        }
        let h = parts.header.status();
        match transition {
            Transition::BecameStale => tracing::warn!(
                missing_bytes = h.missing_bytes,
                excess_bytes = h.excess_bytes,
                missing_cpu_notes = ?h.missing_cpu_notes,
                provenance = h.provenance.map_or("unknown", Provenance::as_str),
                "the loaded crash header is stale"
            ),
            Transition::BecameFresh => tracing::info!(
                provenance = h.provenance.map_or("unknown", Provenance::as_str),
                "the loaded crash header covers all RAM again"
            ),
            Transition::Unchanged => {}
        }
    }

    /// Another loader's successful `kexec_file_load` becomes the recipe when the agent has none
    /// and `--reload` was left to its default, or when the agent's recipe was adopted earlier or
    /// kept in the state directory: the newer load wins (flags and the distribution's
    /// configuration are not replaced). What it loaded is sealed at once as the last known good.
    fn adopt(&mut self, load: &KexecLoad, parts: &mut ReloadParts<'_>) {
        let replaceable = match &self.recipe {
            None => self.choice.is_none(),
            Some(r) => {
                matches!(
                    r.source,
                    RecipeSource::Adopted { .. } | RecipeSource::Persisted
                ) && self
                    .loader
                    .as_ref()
                    .is_some_and(|l| matches!(l.strategy(), ReloadStrategy::KexecFile(_)))
            }
        };
        if !replaceable
            || load.syscall != LoadPath::KexecFileLoad
            || !load.succeeded()
            || load.unload
        {
            return;
        }
        let status = &mut parts.reload.status;
        let recipe = match recipe::adopted(load, |p| self.host.rootfs.file_bytes(p)) {
            Ok(recipe) => recipe,
            Err(e) => {
                tracing::warn!(pid = load.pid, comm = %load.comm, reason = %e, "no recipe adopted from this kexec_file_load");
                status.adoption_refused = Some(format!("{} (pid {}): {e}", load.comm, load.pid));
                return;
            }
        };
        if self.lock.is_none() {
            match self.state_dir.lock() {
                Ok(lock) => self.lock = Some(lock),
                Err(e) => {
                    tracing::error!(error = %e, "no recipe adopted: the load lock is unavailable");
                    status.adoption_refused = Some(e.to_string());
                    return;
                }
            }
        }
        let mut loader = CrashLoader::new(
            ReloadStrategy::KexecFile(recipe.clone()),
            self.procfs.clone(),
            self.sysfs.clone(),
        )
        .with_host(self.host.clone());
        if let Err(e) = loader.adopt_last_good() {
            tracing::warn!(error = %e, "the adopted recipe's files could not be sealed as the last known good");
        }
        let record = RecipeRecord::taking_over(&recipe, None, unix_seconds(SystemTime::now()));
        tracing::info!(recipe = %describe(&recipe, &record), "recipe adopted from a kexec_file_load");
        status.adoption_refused = None;
        status.recipe = Some(describe(&recipe, &record));
        status.recipe_since = record.since;
        status.strategy = loader.strategy().name().to_owned();
        parts.reload.can_reload = true;
        self.reconciler.set_can_reload(true);
        self.reconciler.set_last_good(loader.has_last_good());
        self.loader = Some(loader);
        self.recipe = Some(recipe);
        self.record = Some(record);
        self.persisted.recipe = self.record.clone();
        self.persisted.last_good = self.record.clone();
        self.save();
    }

    /// After a rescan: the mode may have changed (e.g. crash_hotplug after a load).
    pub fn resync_mode(&mut self, now: Instant, parts: &mut ReloadParts<'_>) {
        if parts.mode() != self.reconciler.mode() {
            self.handle(now, Input::Mode(parts.mode()), parts);
        }
    }

    fn start_job(&mut self, rollback: bool, header: &mut HeaderKnowledge) {
        let loader = self
            .loader
            .take()
            .expect("the reconciler decides a load only with a loader, one at a time");
        header.own_load_started();
        self.in_flight = Some(InFlight {
            rollback,
            spare: loader.fresh(),
        });
        self.job = Some(LoadJob { loader, rollback });
    }

    /// The watchdog: the job ran past its budget. A thread cannot be killed, so it is left to
    /// finish on its own and its result is dropped; the load counts as failed, and a fresh
    /// loader (without a last good image, which the job holds) takes over.
    pub fn overran(&mut self, now: Instant, budget: Duration, parts: &mut ReloadParts<'_>) {
        let Some(InFlight { rollback, spare }) = self.in_flight.take() else {
            return;
        };
        let report = LoadReport {
            outcome: LoadOutcome::Failed {
                still_loaded: spare.still_loaded(),
            },
            detail: format!(
                "the load job ran past its {:.0} s budget and was abandoned (its thread finishes on its own, unheard)",
                budget.as_secs_f64()
            ),
            load_time: budget,
            header: None,
        };
        self.finished(
            now,
            LoadDone {
                loader: spare,
                report,
                rollback,
            },
            parts,
        );
    }

    /// The daemon exits with a job out: what is loaded is not known, so the state file claims
    /// nothing, and the next start reads the node (and reloads if need be).
    pub fn interrupted(&mut self, now: Instant) {
        let Some(what) = self.in_flight() else { return };
        let reason = self
            .attempt
            .map_or_else(|| "unknown".to_owned(), |a| a.reason.to_string());
        let p = &mut self.persisted;
        p.last_load = Some(LoadRecord {
            at_unix_seconds: unix_seconds(SystemTime::now()),
            result: format!("interrupted ({what} in flight at exit)"),
            reason,
            duration_seconds: self
                .attempt
                .map_or(0.0, |a| (now - a.decided).as_secs_f64()),
        });
        p.loaded_header = None;
        p.loaded_header_verified = false;
        self.save();
    }

    /// Re-reads the node, judges the loaded header, and answers `Verify`. `kexec_crash_size`
    /// and `crash_hotplug` take the kexec lock, and a kernel that finds it busy skips its
    /// in-place header rewrite: they are re-read only after a load (when they change), never
    /// while hotplug events are being verified.
    fn verify(&mut self, parts: &mut ReloadParts<'_>) -> HeaderCheck {
        let read_locked = std::mem::take(&mut self.reread_locked);
        if let Err(e) = parts.node.refresh(&self.procfs, &self.sysfs, read_locked) {
            tracing::warn!(error = %format!("{e:#}"), "verify: keeping the last facts");
        }
        self.judge(parts, Occasion::Verify);
        let status = parts.header.status();
        HeaderCheck {
            loaded: parts.node.facts.crash_loaded,
            header: HeaderState::of(status),
            verified: status.verified,
        }
    }

    /// A load job came back: count it, learn what is loaded, tell the reconciler.
    pub fn finished(&mut self, now: Instant, done: LoadDone, parts: &mut ReloadParts<'_>) {
        let LoadDone {
            loader,
            report,
            rollback,
        } = done;
        self.in_flight = None;
        self.reconciler.set_last_good(loader.has_last_good());
        self.loader = Some(loader);
        self.reread_locked = true;
        let mut attempt = self.attempt.unwrap_or(Attempt {
            decided: now,
            reason: ReloadReason::Requested,
            unprotected: Duration::ZERO,
            replaced: false,
        });
        if report.outcome != LoadOutcome::Refused {
            attempt.unprotected += report.load_time;
        }
        let what = if rollback { "rollback" } else { "reload" };
        match report.outcome {
            LoadOutcome::Loaded => tracing::info!(%report, reason = %attempt.reason, "{what} done"),
            _ => tracing::error!(%report, reason = %attempt.reason, "{what} failed"),
        }
        // A failure that freed the old image is followed by a rollback; count the attempt once.
        let rolls_back = !rollback
            && report.outcome
                == (LoadOutcome::Failed {
                    still_loaded: false,
                })
            && self.loader.as_ref().is_some_and(CrashLoader::has_last_good);
        let result = match (report.outcome, rollback) {
            (LoadOutcome::Loaded, false) => Some("success"),
            (LoadOutcome::Loaded, true) => Some("rolled_back"),
            _ if rolls_back => None,
            _ => Some("failure"),
        };
        if report.outcome == LoadOutcome::Loaded
            && let Err(e) = parts.node.refresh(&self.procfs, &self.sysfs, false)
        {
            tracing::warn!(error = %format!("{e:#}"), "after the load: keeping the last facts");
        }
        parts.header.own_load_finished(
            report.outcome == LoadOutcome::Loaded,
            report.header.as_deref(),
            parts.node.iomem.as_ref(),
            parts.node.cpus.as_ref(),
            unix_seconds(SystemTime::now()),
        );
        if report.outcome == LoadOutcome::Loaded
            && !self.loads_observed
            && parts
                .header
                .loaded()
                .is_some_and(|l| l.provenance == Provenance::Inferred)
        {
            // No probe will capture it: what the kernel built can still be read, not assumed.
            // With the probes, its capture may just be behind the job's end.
            read_back(&self.procfs, &self.sysfs, parts.node, parts.header);
        }
        if let Some(result) = result {
            let r = &mut *parts.reload;
            *r.results.entry(result).or_default() += 1;
            r.durations.record((now - attempt.decided).as_secs_f64());
            if attempt.replaced && report.outcome == LoadOutcome::Loaded {
                r.own_windows.record(attempt.unprotected.as_secs_f64());
            }
            r.status.last = Some(format!(
                "{result} ({}, {:.3} s): {}",
                attempt.reason,
                (now - attempt.decided).as_secs_f64(),
                report.detail
            ));
            self.persist(
                attempt,
                result,
                now,
                report.outcome == LoadOutcome::Loaded && !rollback,
                parts.header.loaded(),
            );
            self.attempt = None;
        } else {
            self.attempt = Some(attempt);
        }
        self.handle(now, Input::Loaded(report.outcome), parts);
    }

    fn persist(
        &mut self,
        attempt: Attempt,
        result: &str,
        now: Instant,
        recipe_loaded: bool,
        loaded: Option<&LoadedHeader>,
    ) {
        let p = &mut self.persisted;
        p.recipe = self.record.clone();
        p.last_load = Some(LoadRecord {
            at_unix_seconds: unix_seconds(SystemTime::now()),
            result: result.to_owned(),
            reason: attempt.reason.to_string(),
            duration_seconds: (now - attempt.decided).as_secs_f64(),
        });
        p.loaded_header = loaded.map(|h| RangeRecord::all(&h.ram));
        p.loaded_header_verified = loaded.is_some_and(|h| h.provenance.verified());
        if recipe_loaded {
            p.last_good = p.recipe.clone();
        }
        self.save();
    }

    /// Writes the persisted state; a failure is logged, the daemon goes on.
    fn save(&self) {
        if let Err(e) = self.state_dir.write(&self.persisted) {
            tracing::error!(error = %e, "state not persisted");
        }
    }
}

fn alert_line(alert: Alert) -> String {
    match alert {
        Alert::Stale(s) => format!("header stale ({s}) and this agent does not reload"),
        Alert::KernelUpdateFailed(s) => format!("the kernel did not update the header ({s})"),
        Alert::StaleAfterReload(s) => format!("still stale after the agent's load ({s})"),
        Alert::BeyondReload(s) => format!(
            "header stale ({s}) and no reload through the node's loader can fix it: not reloading"
        ),
        Alert::ReloadFailed { failures, retry_in } => format!(
            "reload failed {failures} time(s) in a row; next try in {:.1} s",
            retry_in.as_secs_f64()
        ),
        Alert::RollbackFailed { retry_in } => format!(
            "rollback to the last known good image failed; no crash kernel loaded; next try in {:.1} s",
            retry_in.as_secs_f64()
        ),
        Alert::NoCaptureKernel => "no crash kernel is loaded and this agent cannot load one".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;
    use crate::model::events::{Event, EventSource, HotplugAction};
    use crate::state::AgentState;

    const IOMEM_1G: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000f0000-000fffff : Reserved
00100000-3ffdffff : System RAM
  2f000000-3effffff : Crash kernel
";
    const DIMM: &str = "100000000-11fffffff : System RAM\n";
    const MS: Duration = Duration::from_millis(1);

    /// A node in files: procfs and sysfs trees with kexec, a crash kernel loaded, 1 GiB RAM.
    struct Node {
        dir: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Self {
            let node = Self {
                dir: tempfile::tempdir().unwrap(),
            };
            node.write("proc/iomem", IOMEM_1G);
            node.write("proc/cmdline", "root=/dev/vda crashkernel=256M\n");
            node.write("sys/kernel/kexec_crash_loaded", "1\n");
            node.write("sys/kernel/kexec_crash_size", "268435456\n");
            node
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn procfs(&self) -> Procfs {
            Procfs::new(self.dir.path().join("proc"))
        }

        fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.dir.path().join("sys"))
        }

        fn state_dir(&self) -> PathBuf {
            self.dir.path().join("run/kdump-agent")
        }

        fn state(&self) -> AgentState {
            let mut node = NodeState::new("6.1.0-47-amd64".into(), vec![], String::new());
            node.refresh(&self.procfs(), &self.sysfs(), true).unwrap();
            AgentState::new(node)
        }

        /// No recipe flags, `--reload` and `--reload-command` as given.
        fn start_with(
            &self,
            choice: Option<ReloadChoice>,
            command: Vec<String>,
            state: &mut ReloadParts<'_>,
        ) -> ReconcileLoop {
            let opts = ReloadOptions {
                choice,
                command,
                command_timeout: Duration::from_secs(10),
                distro_lock: None,
                rootfs: Rootfs::default(),
                flags: RecipeFlags::default(),
                timing: Timing::default(),
            };
            ReconcileLoop::start(
                opts,
                &self.state_dir(),
                state,
                &self.procfs(),
                &self.sysfs(),
            )
            .unwrap()
        }

        fn start_without_recipe(
            &self,
            choice: Option<ReloadChoice>,
            state: &mut ReloadParts<'_>,
        ) -> ReconcileLoop {
            self.start_with(choice, vec![], state)
        }

        /// `--reload command` running `script` with the node's sysfs in `$SYS`.
        fn start(&self, script: &str, state: &mut ReloadParts<'_>) -> ReconcileLoop {
            let sys = self.dir.path().join("sys");
            let script = format!("SYS={}; {script}", sys.display());
            self.start_with(
                Some(ReloadChoice::Command),
                vec!["sh".into(), "-c".into(), script],
                state,
            )
        }
    }

    fn online() -> Input {
        Input::Event(Event::Memory {
            action: HotplugAction::Online,
            phys_start: Some(1 << 32),
            bytes: Some(128 << 20),
            source: EventSource::Uevent,
            ktime_ns: None,
        })
    }

    #[test]
    fn a_hot_added_dimm_is_one_reload_and_the_header_ends_current() {
        let node = Node::new();
        let mut state = node.state();
        let mut rl = node.start("echo reloaded", &mut state.reload_parts());
        assert_eq!(state.mode(), Mode::AgentManaged);
        assert_eq!(state.reload.status.strategy, "command");
        let t0 = Instant::now();
        rl.handle(t0, Input::Tick, &mut state.reload_parts());
        assert!(!state.header.status().stale, "inferred at start: current");
        assert!(!state.header.status().verified);

        node.write("proc/iomem", &format!("{IOMEM_1G}{DIMM}"));
        for i in 0..4 {
            rl.handle(t0 + MS * i, online(), &mut state.reload_parts());
        }
        assert!(rl.take_job().is_none(), "nothing before the quiet period");
        rl.handle(t0 + 253 * MS, Input::Tick, &mut state.reload_parts());
        assert!(state.header.status().stale);
        assert_eq!(state.header.status().missing_bytes, 512 << 20);
        assert!(state.header.status().stale_since.is_some());
        assert!(!state.readiness().ready);
        let job = rl.take_job().expect("one reload");
        let done = job.run();
        rl.finished(t0 + 400 * MS, done, &mut state.reload_parts());
        assert!(rl.take_job().is_none(), "exactly one");
        assert!(!state.header.status().stale, "{:?}", state.header.status());
        assert!(state.readiness().ready, "{}", state.readiness().reason);
        assert_eq!(state.reload.results.get("success"), Some(&1));
        assert_eq!(state.reload.durations.total, 1);
        assert_eq!(state.reload.own_windows.total, 1);
        let last = state.reload.status.last.clone().unwrap();
        assert!(
            last.starts_with("success (ram-changed, 0.147 s): exit status: 0 after "),
            "{last}"
        );
        let persisted = StateDir::open(&node.state_dir())
            .unwrap()
            .read()
            .unwrap()
            .unwrap();
        assert_eq!(persisted.last_load.unwrap().result, "success");
        let ram = RangeRecord::to_ram(&persisted.loaded_header.unwrap()).unwrap();
        assert!(ram.contains(1 << 32), "the DIMM is in the persisted header");
    }

    /// Boots a node with the command strategy and decides one reload for a hot-added DIMM.
    fn decided_reload(node: &Node, state: &mut AgentState) -> (ReconcileLoop, Instant) {
        let mut rl = node.start("echo reloaded", &mut state.reload_parts());
        let t0 = Instant::now();
        rl.handle(t0, Input::Tick, &mut state.reload_parts());
        node.write("proc/iomem", &format!("{IOMEM_1G}{DIMM}"));
        rl.handle(t0, online(), &mut state.reload_parts());
        rl.handle(t0 + 250 * MS, Input::Tick, &mut state.reload_parts());
        (rl, t0)
    }

    #[test]
    fn a_stopping_daemon_takes_only_a_rollback_and_an_overrun_job_counts_as_failed() {
        let node = Node::new();
        let mut state = node.state();
        let (mut rl, t0) = decided_reload(&node, &mut state);
        assert!(rl.take_rollback().is_none(), "a reload is left decided");
        assert_eq!(rl.in_flight(), Some("reload"));
        let job = rl.take_job().expect("still there");
        assert_eq!(job.budget(), Duration::from_secs(15), "timeout 10 s + 5 s");
        rl.overran(t0 + 15_250 * MS, job.budget(), &mut state.reload_parts());
        assert_eq!(rl.in_flight(), None);
        assert_eq!(state.reload.results.get("failure"), Some(&1));
        let last = state.reload.status.last.clone().unwrap();
        assert!(
            last.ends_with("ran past its 15 s budget and was abandoned (its thread finishes on its own, unheard)"),
            "{last}"
        );
        // The spare loader retries after the backoff; the abandoned job is never heard from.
        rl.handle(t0 + 17 * 1000 * MS, Input::Tick, &mut state.reload_parts());
        let retry = rl.take_job().expect("a retry with the spare loader");
        let done = retry.run();
        rl.finished(t0 + 17_100 * MS, done, &mut state.reload_parts());
        assert_eq!(state.reload.results.get("success"), Some(&1));
    }

    #[test]
    fn exiting_with_a_load_in_flight_leaves_no_claim_about_what_is_loaded() {
        let node = Node::new();
        let mut state = node.state();
        let (mut rl, t0) = decided_reload(&node, &mut state);
        let _job = rl.take_job().unwrap();
        rl.interrupted(t0 + 500 * MS);
        let persisted = StateDir::open(&node.state_dir())
            .unwrap()
            .read()
            .unwrap()
            .unwrap();
        let last = persisted.last_load.unwrap();
        assert_eq!(last.result, "interrupted (reload in flight at exit)");
        assert_eq!(last.reason, "ram-changed");
        assert_eq!(persisted.loaded_header, None);
    }

    #[test]
    fn a_header_an_earlier_run_captured_is_not_vouched_for_after_a_restart() {
        let ram = crate::model::iomem::Iomem::parse(IOMEM_1G)
            .unwrap()
            .system_ram();
        let persisted = PersistedState {
            loaded_header: Some(RangeRecord::all(&ram)),
            loaded_header_verified: true,
            ..PersistedState::default()
        };
        let h = restored_header(&persisted, 1).unwrap();
        assert_eq!(h.provenance, Provenance::Inferred);
        assert!(
            !h.known(),
            "another loader may have replaced it while no agent ran"
        );
        assert_eq!(h.ram, ram);
    }

    #[test]
    fn a_restarted_agent_sees_the_persisted_header_is_stale() {
        let node = Node::new();
        let mut state = node.state();
        let mut rl = node.start("echo reloaded", &mut state.reload_parts());
        let t0 = Instant::now();
        rl.handle(t0, Input::Tick, &mut state.reload_parts());
        node.write("proc/iomem", &format!("{IOMEM_1G}{DIMM}"));
        rl.handle(t0, online(), &mut state.reload_parts());
        rl.handle(t0 + 250 * MS, Input::Tick, &mut state.reload_parts());
        let done = rl.take_job().unwrap().run();
        rl.finished(t0 + 300 * MS, done, &mut state.reload_parts());
        drop(rl);

        // Killed; RAM shrinks back while it is down; a new agent starts.
        node.write("proc/iomem", IOMEM_1G);
        let mut state = node.state();
        let mut rl = node.start("echo reloaded", &mut state.reload_parts());
        rl.handle(Instant::now(), Input::Tick, &mut state.reload_parts());
        assert!(state.header.status().stale);
        assert_eq!(state.header.status().excess_bytes, 512 << 20);
        assert!(
            rl.take_job().is_some(),
            "the survey reloads the stale header"
        );
    }

    #[test]
    fn a_failed_command_that_unloaded_counts_one_failure_and_alerts() {
        let node = Node::new();
        let mut state = node.state();
        let mut rl = node.start(
            "echo 0 > $SYS/kernel/kexec_crash_loaded; echo kexec failed >&2; exit 1",
            &mut state.reload_parts(),
        );
        let t0 = Instant::now();
        rl.handle(t0, Input::Tick, &mut state.reload_parts());
        node.write("proc/iomem", &format!("{IOMEM_1G}{DIMM}"));
        rl.handle(t0, online(), &mut state.reload_parts());
        rl.handle(t0 + 250 * MS, Input::Tick, &mut state.reload_parts());
        let done = rl.take_job().unwrap().run();
        rl.finished(t0 + 300 * MS, done, &mut state.reload_parts());
        // The command strategy keeps no image, so there is no rollback: a failure, then backoff.
        assert!(rl.take_job().is_none());
        assert_eq!(state.reload.results.get("failure"), Some(&1));
        assert_eq!(state.reload.status.failures, 1);
        assert!(
            state
                .reload
                .status
                .last
                .clone()
                .unwrap()
                .ends_with(": kexec failed")
        );
        assert_eq!(
            state.reload.status.alert.as_deref(),
            Some("reload failed 1 time(s) in a row; next try in 1.0 s")
        );
        assert_eq!(rl.next_deadline(), Some(t0 + 1300 * MS));
        rl.handle(t0 + 1300 * MS, Input::Tick, &mut state.reload_parts());
        assert!(!state.node.facts.crash_loaded);
        assert!(rl.take_job().is_some(), "the retry loads again");
    }

    #[test]
    fn kernel_managed_without_a_captured_header_trusts_the_kernel_and_does_not_reload() {
        let node = Node::new();
        node.write("sys/devices/system/memory/crash_hotplug", "1\n");
        let mut state = node.state();
        let mut rl = node.start("echo reloaded", &mut state.reload_parts());
        assert_eq!(state.mode(), Mode::KernelManaged);
        let t0 = Instant::now();
        rl.handle(t0, Input::Tick, &mut state.reload_parts());
        node.write("proc/iomem", &format!("{IOMEM_1G}{DIMM}"));
        rl.handle(t0, online(), &mut state.reload_parts());
        rl.handle(t0 + 250 * MS, Input::Tick, &mut state.reload_parts());
        assert!(rl.take_job().is_none(), "no reload in kernel-managed mode");
        assert!(!state.header.status().stale);
        assert!(!state.header.status().verified, "inferred, not captured");
    }

    #[test]
    fn two_agents_never_share_a_state_directory() {
        let node = Node::new();
        let mut state = node.state();
        let _first = node.start("true", &mut state.reload_parts());
        let opts = ReloadOptions {
            choice: Some(ReloadChoice::Command),
            command: vec!["true".into()],
            command_timeout: Duration::from_secs(1),
            distro_lock: None,
            rootfs: Rootfs::default(),
            flags: RecipeFlags::default(),
            timing: Timing::default(),
        };
        let err = ReconcileLoop::start(
            opts,
            &node.state_dir(),
            &mut state.reload_parts(),
            &node.procfs(),
            &node.sysfs(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(&format!("is held by pid {}", std::process::id())),
            "{err}"
        );
    }

    /// A distribution's `kexec -s -p KERNEL --initrd INITRD`, as the probes report it.
    fn distro_load(kernel: &Path, initrd: &Path) -> Input {
        Input::Event(Event::KexecLoad(
            crate::model::events::KexecLoad::distro_file_load(
                Some(kernel.to_path_buf()),
                Some(initrd.to_path_buf()),
            ),
        ))
    }

    #[test]
    fn an_observing_agent_adopts_a_distribution_load_and_becomes_agent_managed() {
        let node = Node::new();
        let mut state = node.state();
        let mut rl = node.start_without_recipe(None, &mut state.reload_parts());
        assert_eq!(
            (state.mode(), state.reload.status.strategy.as_str()),
            (Mode::Observe, "off")
        );
        let (kernel, initrd) = (
            node.dir.path().join("vmlinuz"),
            node.dir.path().join("initrd"),
        );
        rl.handle(
            Instant::now(),
            distro_load(&kernel, &initrd),
            &mut state.reload_parts(),
        );
        assert_eq!(state.mode(), Mode::AgentManaged);
        assert_eq!(state.reload.status.strategy, "kexec-file");
        let recipe = state.reload.status.recipe.clone().unwrap();
        assert!(
            recipe.starts_with("adopted from kexec (pid 4242) since ")
                && recipe.contains(" UTC: kernel "),
            "{recipe}"
        );
        assert_eq!(state.reload.status.adoption_refused, None);
        let persisted = StateDir::open(&node.state_dir())
            .unwrap()
            .read()
            .unwrap()
            .unwrap();
        let adopted = persisted.recipe.unwrap().to_recipe();
        assert_eq!((adopted.kernel, adopted.initrd), (kernel, Some(initrd)));
        assert_eq!(adopted.cmdline, "console=ttyS0 irqpoll");
    }

    #[test]
    fn a_newer_observed_load_replaces_a_persisted_recipe_and_the_record_says_so() {
        let node = Node::new();
        let dir = StateDir::open(&node.state_dir()).unwrap();
        let recorded = RecipeRecord {
            kernel: "/boot/old-vmlinuz".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            source: "flags".into(),
            since: Some(1_796_123_203),
        };
        dir.write(&PersistedState {
            recipe: Some(recorded.clone()),
            ..PersistedState::default()
        })
        .unwrap();
        let mut state = node.state();
        let mut rl = node.start_without_recipe(None, &mut state.reload_parts());
        assert_eq!(
            state.reload.status.recipe.as_deref(),
            Some(
                "state directory (recorded from flags) since 2026-12-01 11:06:43 UTC: kernel /boot/old-vmlinuz"
            )
        );
        assert_eq!(state.reload.status.recipe_since, Some(1_796_123_203));

        let (kernel, initrd) = (
            node.dir.path().join("vmlinuz"),
            node.dir.path().join("initrd"),
        );
        rl.handle(
            Instant::now(),
            distro_load(&kernel, &initrd),
            &mut state.reload_parts(),
        );
        let record = dir.read().unwrap().unwrap().recipe.unwrap();
        assert_eq!(
            (record.kernel, record.source.as_str()),
            (kernel, "adopted from kexec (pid 4242)")
        );
        assert!(record.since.unwrap() >= unix_seconds(SystemTime::now()) - 60);
        assert!(
            state
                .reload
                .status
                .recipe
                .as_deref()
                .unwrap()
                .starts_with("adopted from kexec (pid 4242) since ")
        );
    }

    #[test]
    fn a_memfd_or_reload_off_adopts_nothing_and_says_why() {
        let node = Node::new();
        let mut state = node.state();
        let mut rl = node.start_without_recipe(None, &mut state.reload_parts());
        let memfd = Path::new("/memfd:kernel (deleted)");
        rl.handle(
            Instant::now(),
            distro_load(memfd, Path::new("/boot/i")),
            &mut state.reload_parts(),
        );
        assert_eq!(state.mode(), Mode::Observe);
        let why = state.reload.status.adoption_refused.clone().unwrap();
        assert_eq!(
            why,
            "kexec (pid 4242): the kernel was /memfd:kernel (deleted), which cannot be opened again (an anonymous or deleted file)"
        );

        let node = Node::new();
        let mut state = node.state();
        let mut rl = node.start_without_recipe(Some(ReloadChoice::Off), &mut state.reload_parts());
        let (kernel, initrd) = (
            node.dir.path().join("vmlinuz"),
            node.dir.path().join("initrd"),
        );
        rl.handle(
            Instant::now(),
            distro_load(&kernel, &initrd),
            &mut state.reload_parts(),
        );
        assert_eq!(
            (state.mode(), state.reload.status.recipe.as_ref()),
            (Mode::Observe, None)
        );
    }
}
