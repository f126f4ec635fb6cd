//! Any bytes as /proc/iomem: parse, then every query the agent makes of a parsed tree.
#![no_main]

use kdump_agent::model::{
    elfcorehdr::{LoadPath, crash_memory_ranges},
    iomem::Iomem,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(iomem) = Iomem::parse_bytes(data) else {
        return;
    };
    let ram = iomem.system_ram();
    assert!(ram.total_bytes() >= ram.len() as u64);
    for load in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
        if let Ok(mem) = crash_memory_ranges(&iomem, load) {
            // Exclusions only ever remove RAM.
            assert!(mem.to_ram_ranges().subtract(&ram).is_empty());
        }
    }
    // Printing the tree back gives the same tree.
    assert_eq!(Iomem::parse(&iomem.to_string()).as_ref(), Ok(&iomem));
});
