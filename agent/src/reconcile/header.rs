//! What the agent knows of the loaded crash header: one instance, one writer (the reload
//! stage's loop), and every verdict through [`judge`]. Pure: the caller passes the RAM and the
//! time.
use crate::model::{
    cpus::CpuNotes,
    elfcorehdr::LoadPath,
    events::Event,
    header::{
        HeaderCaptureError, HeaderStatus, LoadedHeader, Provenance, Reloader, Transition, judge,
    },
    iomem::Iomem,
    ranges::RamRanges,
};

/// The loaded header as last learnt, and the verdict on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderKnowledge {
    loaded: Option<LoadedHeader>,
    status: HeaderStatus,
    /// A load of this agent is in flight, and whether the probes captured its header yet.
    own_load: Option<bool>,
    /// Why the last read-back failed, while nothing better is known.
    unreadable: Option<String>,
    /// A read-back failed and no load came since: a scan of the reservation (seconds under
    /// TCG) finds nothing new until another load, unless the kernel rewrites the header.
    read_failed: bool,
    /// The System RAM when the header was last read back: a kernel-managed header needs
    /// another read only once the RAM (and so what the kernel rewrote) changed.
    read_for_ram: Option<RamRanges>,
    /// Times the kernel's hotplug handler returned without a rewrite, not judged yet.
    handler_skips: u64,
    /// CLOCK_MONOTONIC nanoseconds of the last skip that no load or rewrite started after.
    last_skip_ns: Option<u64>,
    /// A skip came while another crash load held the lock (no image is loaded until it ends).
    skipped_during_load: bool,
    /// In-kernel updates of a kernel-managed header that the kernel skipped, since start.
    skipped_updates: u64,
    /// When the first skip since the header was last loaded or rewritten was judged: the
    /// kernel's copy is behind from then on, whatever the RAM of now says.
    behind_since: Option<u64>,
}

impl HeaderKnowledge {
    /// What an earlier run left, or nothing (then the first judgement infers).
    pub fn restored(loaded: Option<LoadedHeader>) -> Self {
        Self {
            loaded,
            ..Self::default()
        }
    }

    /// Test fixture: a verdict as given, for the exporters' tests.
    #[cfg(test)]
    pub fn with_status(status: HeaderStatus) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    pub fn loaded(&self) -> Option<&LoadedHeader> {
        self.loaded.as_ref()
    }

    pub fn status(&self) -> &HeaderStatus {
        &self.status
    }

    /// In-kernel updates of a kernel-managed header that the kernel skipped, since start.
    pub fn skipped_updates(&self) -> u64 {
        self.skipped_updates
    }

    /// Learns from an event: a captured load or in-kernel update replaces what was known; an
    /// unload, or a load whose header was not captured, leaves nothing known (the next
    /// judgement infers). A failed load or update keeps the old one, as the kernel does.
    pub fn observe(&mut self, event: &Event, now: u64) -> Result<(), HeaderCaptureError> {
        let (origin, header, started_ns) = match event {
            Event::KexecLoad(load) if load.succeeded() => {
                self.read_failed = false;
                if load.unload {
                    self.loaded = None;
                    return Ok(());
                }
                if load.by_agent
                    && let Some(captured) = &mut self.own_load
                {
                    *captured = load.header.is_some();
                }
                (
                    format!(
                        "{} by {} (pid {})",
                        load.syscall.as_str(),
                        load.comm,
                        load.pid
                    ),
                    &load.header,
                    load.duration_ns.map(|d| load.ktime_ns.saturating_sub(d)),
                )
            }
            Event::KernelHeaderUpdate(update) if update.succeeded() => (
                "in-kernel update".to_string(),
                &update.header,
                update
                    .duration_ns
                    .map(|d| update.ktime_ns.saturating_sub(d)),
            ),
            Event::KernelUpdateSkipped {
                ktime_ns,
                during_load,
            } => {
                self.handler_skips += 1;
                self.last_skip_ns = Some(*ktime_ns);
                self.skipped_during_load |= during_load;
                return Ok(());
            }
            _ => return Ok(()),
        };
        self.loaded = None;
        self.skipped_during_load = false;
        // A load or a rewrite builds the whole header from the RAM of its moment: it covers a
        // skip before it started, not one while it held the lock (the skip's very cause).
        if self
            .last_skip_ns
            .is_some_and(|skip| started_ns.is_some_and(|start| skip < start))
        {
            self.last_skip_ns = None;
            self.behind_since = None;
        }
        let Some(header) = header else { return Ok(()) };
        self.loaded = Some(LoadedHeader::captured(header, origin, now)?);
        Ok(())
    }

    /// Whether only a read-back can tell what is loaded: nothing is known, or only inferred.
    /// `kernel_managed`: an uncaptured header that the kernel may have rewritten since the RAM
    /// changed counts too (`ram`: the System RAM now).
    pub fn wants_read_back(
        &self,
        crash_loaded: bool,
        kernel_managed: bool,
        ram: Option<&RamRanges>,
    ) -> bool {
        let rewritten_since = |l: &LoadedHeader| match l.provenance {
            Provenance::Captured => false,
            Provenance::ReadBack => self.read_for_ram.as_ref() != ram,
            Provenance::Inferred => true,
        };
        // Only a kernel-managed header changes without a load (its in-place rewrites).
        crash_loaded
            && (kernel_managed || !self.read_failed)
            && self
                .loaded
                .as_ref()
                .is_none_or(|l| !l.known() || (kernel_managed && rewritten_since(l)))
    }

    /// What a read-back of the crash reservation gave, with the System RAM it was read for:
    /// the header, or why it could not be read.
    pub fn read_back(&mut self, outcome: Result<LoadedHeader, String>, ram: Option<RamRanges>) {
        match outcome {
            Ok(header) => {
                self.loaded = Some(header);
                self.unreadable = None;
                self.read_failed = false;
                self.read_for_ram = ram;
            }
            Err(why) => {
                self.unreadable = Some(why);
                self.read_failed = true;
            }
        }
    }

    /// This agent starts a load of its own.
    pub fn own_load_started(&mut self) {
        self.own_load = Some(false);
    }

    /// This agent's load ended. When it succeeded with a header the agent built itself
    /// (`loaded_header`), that is what is loaded; else, when no probe captured its header, the
    /// kernel built one from the RAM and CPUs of now: that is what is known (inferred).
    pub fn own_load_finished(
        &mut self,
        loaded: bool,
        loaded_header: Option<&[u8]>,
        iomem: Option<&Iomem>,
        cpus: Option<&CpuNotes>,
        now: u64,
    ) {
        let captured = self.own_load.take().unwrap_or(false);
        if !loaded {
            return;
        }
        if let Some(bytes) = loaded_header {
            self.loaded = LoadedHeader::own(bytes, now).ok();
        } else if !captured {
            self.loaded = iomem.and_then(|io| {
                LoadedHeader::inferred(
                    io,
                    cpus,
                    LoadPath::KexecFileLoad,
                    "this agent's load".into(),
                    now,
                )
                .ok()
                .map(|h| LoadedHeader {
                    own_load: true,
                    ..h
                })
            });
        }
    }

    /// The one judgement: what is loaded against the RAM in `iomem` and the online CPUs in
    /// `cpus`. Without a crash kernel
    /// nothing is loaded; a crash kernel nothing is known about, or a kernel-managed one whose
    /// rewrites were neither captured nor read back, is assumed to hold the header of the RAM
    /// of now, and the verdict says that this is not known. Unless the kernel skipped an
    /// update since: then it holds what it held before, and is judged as that.
    /// `reloader`: what would write the header of the agent's next reload.
    pub fn judge(
        &mut self,
        crash_loaded: bool,
        kernel_managed: bool,
        iomem: Option<&Iomem>,
        cpus: Option<&CpuNotes>,
        now: u64,
        reloader: Reloader,
    ) -> Transition {
        // Only an image that accepts updates can have one skipped (others never take any),
        // and the one another load is putting in place.
        let skips = std::mem::take(&mut self.handler_skips);
        if kernel_managed && (crash_loaded || self.skipped_during_load) {
            self.skipped_updates += skips;
            if crash_loaded && self.last_skip_ns.is_some() {
                self.behind_since.get_or_insert(now);
            }
        } else {
            self.last_skip_ns = None;
            self.behind_since = None;
        }
        let kernel_kept_up = kernel_managed && self.behind_since.is_none();
        // While this agent's load runs, `crash_loaded` is as read before it: no reason to
        // forget the header a probe captured of that very load.
        if !crash_loaded && self.own_load.is_none() {
            self.loaded = None;
        } else if self.loaded.is_none()
            || (kernel_kept_up
                && self
                    .loaded
                    .as_ref()
                    .is_some_and(|l| l.provenance == Provenance::Inferred))
            // A header read back before the kernel rewrote it is no longer what is loaded.
            || (kernel_kept_up
                && self
                    .loaded
                    .as_ref()
                    .is_some_and(|l| l.provenance == Provenance::ReadBack)
                && self.unreadable.is_some())
        {
            self.loaded = iomem.and_then(|io| {
                LoadedHeader::inferred(
                    io,
                    cpus,
                    LoadPath::KexecFileLoad,
                    "inferred from the RAM when the agent first saw the load".into(),
                    now,
                )
                .ok()
            });
        }
        let why = match &self.unreadable {
            Some(e) => format!("not captured by a probe, and not read back: {e}"),
            None => "not captured by a probe, and not read back".to_owned(),
        };
        let (mut status, transition) = judge(
            self.loaded.as_ref(),
            iomem,
            cpus,
            &self.status,
            now,
            &why,
            reloader,
        );
        if status.verified && !status.stale {
            // What is loaded is known and current: whatever the kernel skipped did not matter.
            self.last_skip_ns = None;
            self.behind_since = None;
        }
        status.kernel_skipped_since = self.behind_since;
        self.status = status;
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        elfcorehdr::{ElfCoreHeader, crash_memory_ranges, sample_header},
        events::{CapturedHeader, HeaderSource, KernelHeaderUpdate, KexecLoad},
    };

    const IOMEM_1G: &str = "\
00001000-0009fbff : System RAM
00100000-3ffdffff : System RAM
  2f000000-3effffff : Crash kernel
";
    const DIMM: &str = "100000000-11fffffff : System RAM\n";

    fn iomem(extra: &str) -> Iomem {
        Iomem::parse(&format!("{IOMEM_1G}{extra}")).unwrap()
    }

    /// The header `source`'s loader builds for `iomem`, as a probe would capture it.
    fn captured(iomem: &Iomem, source: HeaderSource) -> CapturedHeader {
        let load = match source {
            HeaderSource::Kernel => LoadPath::KexecFileLoad,
            HeaderSource::KexecLoadSegment => LoadPath::KexecLoad,
        };
        let bytes = sample_header(crash_memory_ranges(iomem, load).unwrap().ranges());
        CapturedHeader {
            source,
            total_bytes: bytes.len() as u64,
            bytes,
            complete: true,
        }
    }

    fn load(syscall: LoadPath, header: Option<CapturedHeader>, by_agent: bool) -> Event {
        Event::KexecLoad(KexecLoad {
            syscall,
            pid: 312,
            comm: "kexec".into(),
            flags: 1,
            unload: false,
            by_agent,
            result: 0,
            duration_ns: Some(1),
            header,
            files: None,
            ktime_ns: 1,
        })
    }

    /// A `kexec_file_load` that entered at `enter_ns` and returned at `exit_ns`.
    fn timed_load(
        header: Option<CapturedHeader>,
        by_agent: bool,
        enter_ns: u64,
        exit_ns: u64,
    ) -> Event {
        let mut event = load(LoadPath::KexecFileLoad, header, by_agent);
        if let Event::KexecLoad(l) = &mut event {
            (l.ktime_ns, l.duration_ns) = (exit_ns, Some(exit_ns - enter_ns));
        }
        event
    }

    #[test]
    fn a_captured_load_is_verified_then_goes_stale_with_a_dimm_until_the_kernel_rewrites_it() {
        for (source, syscall) in [
            (HeaderSource::KexecLoadSegment, LoadPath::KexecLoad),
            (HeaderSource::Kernel, LoadPath::KexecFileLoad),
        ] {
            let mut k = HeaderKnowledge::default();
            k.judge(
                true,
                false,
                Some(&iomem("")),
                None,
                10,
                Reloader::HeadersOwnLoader,
            );
            assert_eq!(k.status().provenance, Some(Provenance::Inferred));
            k.observe(
                &load(syscall, Some(captured(&iomem(""), source)), false),
                11,
            )
            .unwrap();
            k.judge(
                true,
                false,
                Some(&iomem("")),
                None,
                11,
                Reloader::HeadersOwnLoader,
            );
            let s = k.status();
            assert!(s.verified && !s.stale, "{s:?}");
            assert_eq!(
                s.captured.as_deref(),
                Some(format!("{} by kexec (pid 312)", syscall.as_str()).as_str())
            );
            assert_eq!(
                k.judge(
                    true,
                    false,
                    Some(&iomem(DIMM)),
                    None,
                    12,
                    Reloader::HeadersOwnLoader
                ),
                Transition::BecameStale
            );
            assert_eq!(
                (k.status().missing_bytes, k.status().stale_since),
                (512 << 20, Some(12))
            );
            let update = Event::KernelHeaderUpdate(KernelHeaderUpdate {
                header: Some(captured(&iomem(DIMM), HeaderSource::Kernel)),
                result: 0,
                duration_ns: None,
                ktime_ns: 2,
            });
            k.observe(&update, 14).unwrap();
            assert_eq!(
                k.judge(
                    true,
                    true,
                    Some(&iomem(DIMM)),
                    None,
                    14,
                    Reloader::HeadersOwnLoader
                ),
                Transition::BecameFresh
            );
            assert!(k.status().verified && k.status().stale_since.is_none());
        }
    }

    #[test]
    fn uncaptured_or_unusable_headers_are_unverified() {
        let mut k = HeaderKnowledge::default();
        let io = iomem("");
        k.observe(
            &load(
                LoadPath::KexecLoad,
                Some(captured(&io, HeaderSource::KexecLoadSegment)),
                false,
            ),
            1,
        )
        .unwrap();
        k.observe(&load(LoadPath::KexecFileLoad, None, false), 2)
            .unwrap();
        k.judge(true, false, Some(&io), None, 2, Reloader::HeadersOwnLoader);
        assert!(!k.status().verified, "a newer uncaptured load replaces it");
        let mut partial = captured(&io, HeaderSource::Kernel);
        partial.complete = false;
        assert!(matches!(
            k.observe(&load(LoadPath::KexecFileLoad, Some(partial), false), 3),
            Err(HeaderCaptureError::Incomplete { .. })
        ));
        let mut garbage = captured(&io, HeaderSource::Kernel);
        garbage.bytes[0] = 0;
        assert!(matches!(
            k.observe(&load(LoadPath::KexecFileLoad, Some(garbage), false), 3),
            Err(HeaderCaptureError::Parse(_))
        ));
        k.judge(true, false, Some(&io), None, 3, Reloader::HeadersOwnLoader);
        assert!(!k.status().verified);
    }

    /// The fallback bug: with no probes, the agent's own reload must be judged against the
    /// header it loaded, not the one inferred at start.
    #[test]
    fn the_agents_own_uncaptured_load_is_what_later_rescans_judge() {
        let mut k = HeaderKnowledge::default();
        k.judge(
            true,
            false,
            Some(&iomem("")),
            None,
            1,
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(
            k.judge(
                true,
                false,
                Some(&iomem(DIMM)),
                None,
                2,
                Reloader::HeadersOwnLoader
            ),
            Transition::BecameStale
        );
        k.own_load_started();
        k.own_load_finished(true, None, Some(&iomem(DIMM)), None, 3);
        assert_eq!(
            k.judge(
                true,
                false,
                Some(&iomem(DIMM)),
                None,
                3,
                Reloader::HeadersOwnLoader
            ),
            Transition::BecameFresh
        );
        for t in 4..10 {
            assert_eq!(
                k.judge(
                    true,
                    false,
                    Some(&iomem(DIMM)),
                    None,
                    t,
                    Reloader::HeadersOwnLoader
                ),
                Transition::Unchanged
            );
        }
        assert!(!k.status().stale);
        assert_eq!(k.loaded().unwrap().origin, "this agent's load");
    }

    #[test]
    fn the_agents_captured_load_is_kept_whichever_comes_first() {
        let dimm = iomem(DIMM);
        let own = load(
            LoadPath::KexecFileLoad,
            Some(captured(&dimm, HeaderSource::Kernel)),
            true,
        );
        // The probe's record before the load job's end.
        let mut k = HeaderKnowledge::default();
        k.own_load_started();
        k.observe(&own, 1).unwrap();
        k.own_load_finished(true, None, Some(&dimm), None, 2);
        assert_eq!(k.loaded().unwrap().provenance, Provenance::Captured);
        // After it: the capture replaces the inference.
        let mut k = HeaderKnowledge::default();
        k.own_load_started();
        k.own_load_finished(true, None, Some(&dimm), None, 2);
        assert_eq!(k.loaded().unwrap().provenance, Provenance::Inferred);
        k.observe(&own, 3).unwrap();
        k.judge(
            true,
            false,
            Some(&dimm),
            None,
            3,
            Reloader::HeadersOwnLoader,
        );
        assert!(k.status().verified && !k.status().stale);
    }

    #[test]
    fn the_header_the_agent_loaded_itself_is_what_is_known() {
        let dimm = iomem(DIMM);
        let whole = sample_header(
            crash_memory_ranges(&dimm, LoadPath::KexecLoad)
                .unwrap()
                .ranges(),
        );
        let mut k = HeaderKnowledge::default();
        k.own_load_started();
        k.own_load_finished(true, Some(&whole), Some(&dimm), None, 2);
        let loaded = k.loaded().unwrap();
        assert_eq!(loaded.provenance, Provenance::Captured);
        assert_eq!(loaded.origin, "this agent's kexec_load");
        assert!(loaded.own_load);
        k.judge(
            true,
            false,
            Some(&dimm),
            None,
            2,
            Reloader::HeadersOwnLoader,
        );
        assert!(k.status().verified && !k.status().stale);
        // What it loaded, not the RAM of now, is judged: a header built before the DIMM is stale.
        let boot = sample_header(
            crash_memory_ranges(&iomem(""), LoadPath::KexecLoad)
                .unwrap()
                .ranges(),
        );
        k.own_load_started();
        k.own_load_finished(true, Some(&boot), Some(&dimm), None, 3);
        k.judge(
            true,
            false,
            Some(&dimm),
            None,
            3,
            Reloader::HeadersOwnLoader,
        );
        assert!(k.status().verified && k.status().stale);
        // A failed load keeps it.
        k.own_load_started();
        k.own_load_finished(false, Some(&whole), Some(&dimm), None, 4);
        k.judge(
            true,
            false,
            Some(&dimm),
            None,
            4,
            Reloader::HeadersOwnLoader,
        );
        assert!(k.status().stale);
    }

    #[test]
    fn a_failed_own_load_keeps_what_was_known_and_unloading_forgets_it() {
        let io = iomem("");
        let mut k = HeaderKnowledge::default();
        k.observe(
            &load(
                LoadPath::KexecLoad,
                Some(captured(&io, HeaderSource::KexecLoadSegment)),
                false,
            ),
            1,
        )
        .unwrap();
        k.own_load_started();
        k.own_load_finished(false, None, Some(&io), None, 2);
        assert_eq!(k.loaded().unwrap().provenance, Provenance::Captured);
        k.judge(false, false, Some(&io), None, 3, Reloader::HeadersOwnLoader);
        assert!(k.loaded().is_none());
        assert_eq!(k.status(), &HeaderStatus::default());
    }

    /// Start-up reads the header back; the verify that follows must not read it again while
    /// the RAM (and so what a kernel-managed header says) is unchanged.
    #[test]
    fn a_kernel_managed_header_is_read_again_only_once_the_ram_changed() {
        let (before, after) = (iomem(""), iomem(DIMM));
        let read = |io: &Iomem| {
            let bytes = sample_header(
                crash_memory_ranges(io, LoadPath::KexecFileLoad)
                    .unwrap()
                    .ranges(),
            );
            LoadedHeader::read_back(&ElfCoreHeader::parse(&bytes).unwrap(), 0x2e00_0000, 1.0, 1)
        };
        let mut k = HeaderKnowledge::default();
        assert!(k.wants_read_back(true, true, Some(&before.system_ram())));
        k.read_back(Ok(read(&before)), Some(before.system_ram()));
        assert!(!k.wants_read_back(true, true, Some(&before.system_ram())));
        assert!(
            !k.wants_read_back(true, false, Some(&after.system_ram())),
            "agent-managed: known"
        );
        assert!(k.wants_read_back(true, true, Some(&after.system_ram())));
        k.read_back(Err("EPERM".into()), Some(after.system_ram()));
        assert!(
            k.wants_read_back(true, true, Some(&after.system_ram())),
            "a failed read keeps asking"
        );
        assert!(
            !k.wants_read_back(false, true, None),
            "nothing loaded, nothing to read"
        );
    }

    /// 6.1: the captured load lists CPU 0 (the sample header's note); CPU 1 onlined since has
    /// none: stale for that alone, until the agent's own captured load lists both.
    #[test]
    fn a_cpu_onlined_after_a_captured_load_is_stale_until_a_load_lists_it() {
        use crate::model::{
            cpus::{CpuNote, CpuNotes},
            elfcorehdr::{HeaderInputs, NoteRegion, arch, build},
        };
        let io = iomem("");
        let note = |cpu: u32| CpuNote {
            cpu,
            paddr: 0x3fa1_8000 + 0x4_0000 * u64::from(cpu),
            size: 0x150,
        };
        let cpus = |online: &[u32]| CpuNotes {
            present: vec![note(0), note(1)],
            online: online.to_vec(),
            kernel_lists_possible: false,
        };
        let mut k = HeaderKnowledge::default();
        k.observe(
            &load(
                LoadPath::KexecFileLoad,
                Some(captured(&io, HeaderSource::Kernel)),
                false,
            ),
            1,
        )
        .unwrap();
        assert_eq!(
            k.judge(
                true,
                false,
                Some(&io),
                Some(&cpus(&[0])),
                1,
                Reloader::HeadersOwnLoader
            ),
            Transition::Unchanged
        );
        assert_eq!(
            k.judge(
                true,
                false,
                Some(&io),
                Some(&cpus(&[0, 1])),
                2,
                Reloader::HeadersOwnLoader
            ),
            Transition::BecameStale
        );
        assert_eq!(k.status().missing_cpu_notes, [1]);
        assert_eq!(k.status().missing_bytes, 0);
        let both: Vec<NoteRegion> = [note(0), note(1)].iter().map(CpuNote::region).collect();
        let bytes = build(&HeaderInputs {
            arch: crate::model::elfcorehdr::Arch::X86_64,
            cpu_notes: &both,
            vmcoreinfo: NoteRegion {
                paddr: 0x100_0000,
                size: 1024,
            },
            kernel_text: None,
            ram: crash_memory_ranges(&io, LoadPath::KexecFileLoad)
                .unwrap()
                .ranges(),
            page_offset: arch::X86_64_DEFAULT_PAGE_OFFSET,
        })
        .unwrap();
        k.own_load_started();
        let header = CapturedHeader {
            source: HeaderSource::Kernel,
            total_bytes: bytes.len() as u64,
            bytes,
            complete: true,
        };
        k.observe(&load(LoadPath::KexecFileLoad, Some(header), true), 3)
            .unwrap();
        k.own_load_finished(true, None, Some(&io), Some(&cpus(&[0, 1])), 3);
        assert_eq!(
            k.judge(
                true,
                false,
                Some(&io),
                Some(&cpus(&[0, 1])),
                3,
                Reloader::HeadersOwnLoader
            ),
            Transition::BecameFresh
        );
        assert!(k.status().missing_cpu_notes.is_empty());
    }

    #[test]
    fn kernel_managed_without_a_capture_follows_the_ram() {
        let mut k = HeaderKnowledge::default();
        k.judge(
            true,
            true,
            Some(&iomem("")),
            None,
            1,
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(
            k.judge(
                true,
                true,
                Some(&iomem(DIMM)),
                None,
                2,
                Reloader::HeadersOwnLoader
            ),
            Transition::Unchanged
        );
        assert!(!k.status().stale && !k.status().verified);
    }

    #[test]
    fn a_skipped_kernel_update_freezes_what_the_kernel_holds_until_a_load_or_rewrite() {
        let skip = Event::KernelUpdateSkipped {
            ktime_ns: 5,
            during_load: false,
        };
        let mut k = HeaderKnowledge::default();
        k.judge(
            true,
            true,
            Some(&iomem("")),
            None,
            1,
            Reloader::HeadersOwnLoader,
        );
        k.observe(&skip, 2).unwrap();
        assert_eq!(
            k.judge(
                true,
                true,
                Some(&iomem(DIMM)),
                None,
                3,
                Reloader::HeadersOwnLoader
            ),
            Transition::BecameStale,
            "the kernel did not rewrite: it still lists the RAM before the DIMM"
        );
        let s = k.status();
        assert_eq!(
            (s.missing_bytes, s.kernel_skipped_since),
            (512 << 20, Some(3))
        );
        assert_eq!(k.skipped_updates(), 1);
        // Judged again (a rescan): still behind, counted once.
        k.judge(
            true,
            true,
            Some(&iomem(DIMM)),
            None,
            4,
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(
            (k.status().kernel_skipped_since, k.skipped_updates()),
            (Some(3), 1)
        );
        // A load that held the lock while the kernel skipped does not cover the skip...
        let before = Some(captured(&iomem(""), HeaderSource::Kernel));
        k.observe(&timed_load(before, false, 3, 9), 5).unwrap();
        k.judge(
            true,
            true,
            Some(&iomem(DIMM)),
            None,
            5,
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(
            (k.status().stale, k.status().kernel_skipped_since),
            (true, Some(3))
        );
        // ...one that started after it does: it builds the whole header from the RAM of then.
        k.observe(&timed_load(None, true, 16, 20), 6).unwrap();
        assert_eq!(
            k.judge(
                true,
                true,
                Some(&iomem(DIMM)),
                None,
                6,
                Reloader::HeadersOwnLoader
            ),
            Transition::BecameFresh
        );
        assert_eq!(k.status().kernel_skipped_since, None);
    }

    #[test]
    fn a_skip_while_another_load_holds_the_lock_is_counted_and_its_image_is_behind() {
        let mut k = HeaderKnowledge::default();
        k.judge(
            true,
            true,
            Some(&iomem("")),
            None,
            1,
            Reloader::HeadersOwnLoader,
        );
        // The load freed the old image: nothing is loaded while the kernel skips.
        k.observe(
            &Event::KernelUpdateSkipped {
                ktime_ns: 5,
                during_load: true,
            },
            2,
        )
        .unwrap();
        k.judge(
            false,
            true,
            Some(&iomem(DIMM)),
            None,
            2,
            Reloader::HeadersOwnLoader,
        );
        k.judge(
            false,
            true,
            Some(&iomem(DIMM)),
            None,
            3,
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(k.skipped_updates(), 1);
        let before = Some(captured(&iomem(""), HeaderSource::Kernel));
        k.observe(&timed_load(before, false, 1, 9), 4).unwrap();
        assert_eq!(
            k.judge(
                true,
                true,
                Some(&iomem(DIMM)),
                None,
                4,
                Reloader::HeadersOwnLoader
            ),
            Transition::BecameStale
        );
        assert_eq!(k.status().kernel_skipped_since, Some(4));
    }

    #[test]
    fn skips_matter_only_for_an_image_that_takes_updates_and_a_later_rewrite_covers_them() {
        let skip = Event::KernelUpdateSkipped {
            ktime_ns: 5,
            during_load: false,
        };
        let mut k = HeaderKnowledge::default();
        k.judge(
            true,
            false,
            Some(&iomem("")),
            None,
            1,
            Reloader::HeadersOwnLoader,
        );
        k.observe(&skip, 2).unwrap();
        k.judge(
            true,
            false,
            Some(&iomem("")),
            None,
            3,
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(
            (k.skipped_updates(), k.status().kernel_skipped_since),
            (0, None)
        );
        let mut k = HeaderKnowledge::default();
        k.judge(
            true,
            true,
            Some(&iomem("")),
            None,
            1,
            Reloader::HeadersOwnLoader,
        );
        k.observe(&skip, 2).unwrap();
        let rewrite = Event::KernelHeaderUpdate(KernelHeaderUpdate {
            header: Some(captured(&iomem(DIMM), HeaderSource::Kernel)),
            result: 0,
            duration_ns: Some(1),
            ktime_ns: 6,
        });
        k.observe(&rewrite, 3).unwrap();
        assert_eq!(
            k.judge(
                true,
                true,
                Some(&iomem(DIMM)),
                None,
                4,
                Reloader::HeadersOwnLoader
            ),
            Transition::Unchanged
        );
        let s = k.status();
        assert!(
            s.verified && !s.stale && s.kernel_skipped_since.is_none(),
            "{s:?}"
        );
        assert_eq!(k.skipped_updates(), 1, "the skip still counts");
    }

    /// The agent's first load (nothing was loaded): the probes' capture arrives while the
    /// job runs and the node's facts still say nothing is loaded; it is what is known after.
    #[test]
    fn a_capture_of_the_own_load_survives_the_facts_read_before_it() {
        let io = iomem("");
        let mut k = HeaderKnowledge::default();
        k.judge(false, false, Some(&io), None, 1, Reloader::HeadersOwnLoader);
        k.own_load_started();
        k.observe(
            &load(
                LoadPath::KexecLoad,
                Some(captured(&io, HeaderSource::KexecLoadSegment)),
                true,
            ),
            2,
        )
        .unwrap();
        k.judge(false, false, Some(&io), None, 2, Reloader::HeadersOwnLoader);
        k.own_load_finished(true, None, Some(&io), None, 3);
        k.judge(true, false, Some(&io), None, 3, Reloader::HeadersOwnLoader);
        assert_eq!(k.loaded().map(|l| l.provenance), Some(Provenance::Captured));
        assert!(k.status().verified && !k.status().stale);
        assert!(!k.wants_read_back(true, false, Some(&io.system_ram())));
        // Once no load of its own runs, a crash kernel gone is a header gone.
        k.judge(false, false, Some(&io), None, 4, Reloader::HeadersOwnLoader);
        assert!(k.loaded().is_none());
    }

    /// arm64 6.1: the reservation reads as no header, each scan costing seconds under TCG. A
    /// failed read is not repeated for the same image, whatever the RAM; another load is
    /// worth one, and a kernel-managed header (rewritten in place) always.
    #[test]
    fn a_failed_read_back_is_retried_only_after_another_load() {
        let io = iomem("");
        let ram = io.system_ram();
        let mut k = HeaderKnowledge::default();
        k.judge(true, false, Some(&io), None, 1, Reloader::HeadersOwnLoader);
        assert!(k.wants_read_back(true, false, Some(&ram)));
        k.read_back(Err("no ELF core header".into()), Some(ram.clone()));
        assert!(!k.wants_read_back(true, false, Some(&ram)));
        let grown = iomem(DIMM).system_ram();
        assert!(!k.wants_read_back(true, false, Some(&grown)));
        assert!(k.wants_read_back(true, true, Some(&grown)));
        k.observe(&load(LoadPath::KexecLoad, None, false), 2)
            .unwrap();
        assert!(k.wants_read_back(true, false, Some(&ram)));
    }
}
