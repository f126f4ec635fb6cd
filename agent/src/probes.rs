//! Loads the embedded eBPF probes, attaches each one the best way this kernel allows (fentry,
//! else kprobe), and turns ring buffer records into [`Event`]s.
use std::time::Duration;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{FEntry, KProbe},
};
use kdump_agent_common::{EVENTS_MAP, EventHeader, EventKind, LOST_MAP, PagesEvent};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    capabilities::{Capability, Feature},
    events::{Event, EventSource, HotplugAction},
    state::ProbeReport,
};

/// Built by agent/build.rs; empty when it ran with AYA_BUILD_SKIP=1.
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kdump-agent-probes"));

/// One kernel function and the programs that can watch it.
struct ProbeSpec {
    function: &'static str,
    fentry: &'static str,
    kprobe: &'static str,
}

const PROBES: &[ProbeSpec] = &[ProbeSpec {
    function: "online_pages",
    fentry: "online_pages",
    kprobe: "online_pages_kprobe",
}];

/// How often the dropped-record counter is read.
const LOST_POLL: Duration = Duration::from_secs(1);

/// The loaded object with at least one probe attached.
pub struct Attached {
    ebpf: Ebpf,
}

fn not_attached(function: &str, reason: impl Into<String>) -> ProbeReport {
    ProbeReport {
        probe: function.to_string(),
        how: "none".into(),
        reason: reason.into(),
    }
}

/// Attaches every probe it can. Returns the object when at least one is attached, and a report per probe.
pub fn attach(caps: &[Capability]) -> (Option<Attached>, Vec<ProbeReport>) {
    let available = |f: Feature| {
        caps.iter()
            .find(|c| c.feature == f)
            .filter(|c| !c.available)
            .map(|c| c.detail.clone())
    };
    let all_not = |reason: String| {
        PROBES
            .iter()
            .map(|p| not_attached(p.function, reason.clone()))
            .collect()
    };
    if PROBES_OBJECT.is_empty() {
        return (
            None,
            all_not("this build carries no probes (built with AYA_BUILD_SKIP=1)".into()),
        );
    }
    for needed in [Feature::Bpf, Feature::RingBuf] {
        if let Some(why) = available(needed) {
            return (None, all_not(format!("{}: {why}", needed.label())));
        }
    }
    let mut ebpf = match EbpfLoader::new().load(PROBES_OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            return (
                None,
                all_not(format!("loading the probe object failed: {e}")),
            );
        }
    };
    let btf = Btf::from_sys_fs().ok();
    let mut reports = Vec::new();
    for spec in PROBES {
        let fentry = match (available(Feature::Fentry), &btf) {
            (Some(why), _) => Err(format!("fentry: {why}")),
            (None, None) => Err("fentry: kernel BTF unreadable".into()),
            (None, Some(btf)) => {
                attach_fentry(&mut ebpf, spec, btf).map_err(|e| format!("fentry: {e}"))
            }
        };
        let report = match fentry {
            Ok(()) => ProbeReport {
                probe: spec.function.into(),
                how: "fentry".into(),
                reason: String::new(),
            },
            Err(fentry_why) => {
                let kprobe = match available(Feature::Kprobes) {
                    Some(why) => Err(format!("kprobe: {why}")),
                    None => attach_kprobe(&mut ebpf, spec).map_err(|e| format!("kprobe: {e}")),
                };
                match kprobe {
                    Ok(()) => ProbeReport {
                        probe: spec.function.into(),
                        how: "kprobe".into(),
                        reason: fentry_why,
                    },
                    Err(kprobe_why) => {
                        not_attached(spec.function, format!("{fentry_why}; {kprobe_why}"))
                    }
                }
            }
        };
        reports.push(report);
    }
    let any = reports.iter().any(|r| r.how != "none");
    (any.then_some(Attached { ebpf }), reports)
}

fn attach_fentry(ebpf: &mut Ebpf, spec: &ProbeSpec, btf: &Btf) -> anyhow::Result<()> {
    let program: &mut FEntry = ebpf
        .program_mut(spec.fentry)
        .ok_or_else(|| anyhow::anyhow!("program {} missing from the object", spec.fentry))?
        .try_into()?;
    program.load(spec.function, btf)?;
    program.attach()?;
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf, spec: &ProbeSpec) -> anyhow::Result<()> {
    let program: &mut KProbe = ebpf
        .program_mut(spec.kprobe)
        .ok_or_else(|| anyhow::anyhow!("program {} missing from the object", spec.kprobe))?
        .try_into()?;
    program.load()?;
    program.attach(spec.function, 0)?;
    Ok(())
}

/// Decodes one ring buffer record; `None` for records too short or of an unknown kind.
pub fn decode(record: &[u8], page_bytes: u64) -> Option<Event> {
    if record.len() < size_of::<EventHeader>() {
        return None;
    }
    // SAFETY: length checked; EventHeader is plain integers, any bit pattern is valid.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    match EventKind::from_u32(header.kind)? {
        EventKind::OnlinePages => {
            if record.len() < size_of::<PagesEvent>() {
                return None;
            }
            // SAFETY: as above, for PagesEvent.
            let e: PagesEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
            Some(Event::Memory {
                action: HotplugAction::Online,
                phys_start: Some(e.pfn.saturating_mul(page_bytes)),
                bytes: Some(e.nr_pages.saturating_mul(page_bytes)),
                source: EventSource::Ebpf,
                ktime_ns: Some(header.ktime_ns),
            })
        }
    }
}

impl Attached {
    /// Forwards ring buffer records as events, and dropped-record counts as [`Event::Lost`].
    pub fn spawn_reader(
        mut self,
        tx: mpsc::Sender<Event>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let ring = RingBuf::try_from(
            self.ebpf
                .take_map(EVENTS_MAP)
                .ok_or_else(|| anyhow::anyhow!("no {EVENTS_MAP} map"))?,
        )?;
        let lost: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .take_map(LOST_MAP)
                .ok_or_else(|| anyhow::anyhow!("no {LOST_MAP} map"))?,
        )?;
        // SAFETY: the ring buffer owns its fd and is moved into the AsyncFd, which outlives the registration.
        let mut ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        // SAFETY: sysconf has no preconditions.
        let page_bytes =
            u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        Ok(tokio::spawn(async move {
            let _programs = self.ebpf; // keeps the programs attached while the reader runs
            let mut lost_seen = 0u64;
            let mut tick = tokio::time::interval(LOST_POLL);
            loop {
                tokio::select! {
                    guard = ring.readable_mut() => {
                        let Ok(mut guard) = guard else { return };
                        let rb = guard.get_inner_mut();
                        while let Some(record) = rb.next() {
                            if let Some(event) = decode(&record, page_bytes)
                                && tx.send(event).await.is_err()
                            {
                                    return;
                            }
                        }
                        guard.clear_ready();
                    }
                    _ = tick.tick() => {
                        let now = lost.get(&0, 0).map_or(lost_seen, |per_cpu| per_cpu.iter().sum());
                        if now > lost_seen {
                            if tx.send(Event::Lost { count: now - lost_seen, source: EventSource::Ebpf }).await.is_err() {
                                return;
                            }
                            lost_seen = now;
                        }
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value without padding.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn decodes_online_pages_into_bytes() {
        let record = PagesEvent {
            header: EventHeader {
                kind: EventKind::OnlinePages as u32,
                cpu: 1,
                ktime_ns: 99,
            },
            pfn: 0x48000,
            nr_pages: 0x8000,
        };
        assert_eq!(
            decode(&bytes_of(&record), 4096),
            Some(Event::Memory {
                action: HotplugAction::Online,
                phys_start: Some(0x4800_0000),
                bytes: Some(128 << 20),
                source: EventSource::Ebpf,
                ktime_ns: Some(99),
            })
        );
    }

    #[test]
    fn short_or_unknown_records_are_dropped() {
        let record = PagesEvent {
            header: EventHeader {
                kind: EventKind::OnlinePages as u32,
                cpu: 0,
                ktime_ns: 0,
            },
            pfn: 1,
            nr_pages: 1,
        };
        let bytes = bytes_of(&record);
        assert_eq!(decode(&bytes[..20], 4096), None);
        assert_eq!(decode(&bytes[..4], 4096), None);
        let mut unknown = bytes.clone();
        unknown[0] = 0xff;
        assert_eq!(decode(&unknown, 4096), None);
    }
}
