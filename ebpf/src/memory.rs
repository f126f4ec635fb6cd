//! Memory hotplug: blocks going online. fentry where the kernel has trampolines, kprobe otherwise.
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use kdump_agent_common::{EventKind, PagesEvent};

use crate::ring::{emit, header};

fn online(pfn: u64, nr_pages: u64) {
    emit(PagesEvent {
        header: header(EventKind::OnlinePages),
        pfn,
        nr_pages,
    });
}

/// `int online_pages(unsigned long pfn, unsigned long nr_pages, struct zone *zone, struct memory_group *group)`
#[fentry(function = "online_pages")]
pub fn online_pages(ctx: FEntryContext) -> u32 {
    let (pfn, nr_pages): (u64, u64) = (ctx.arg(0), ctx.arg(1));
    online(pfn, nr_pages);
    0
}

#[kprobe]
pub fn online_pages_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(pfn), Some(nr_pages)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        online(pfn, nr_pages);
    }
    0
}
