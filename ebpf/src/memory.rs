//! Memory hotplug: blocks going online.
use aya_ebpf::{macros::fentry, programs::FEntryContext};
use kdump_agent_common::{EventKind, PagesEvent};

use crate::ring::{emit, header};

/// `int online_pages(unsigned long pfn, unsigned long nr_pages, struct zone *zone, struct memory_group *group)`
#[fentry(function = "online_pages")]
pub fn online_pages(ctx: FEntryContext) -> u32 {
    // SAFETY: the first two arguments of online_pages are unsigned longs.
    let (pfn, nr_pages): (u64, u64) = unsafe { (ctx.arg(0), ctx.arg(1)) };
    emit(PagesEvent {
        header: header(EventKind::OnlinePages),
        pfn,
        nr_pages,
    });
    0
}
