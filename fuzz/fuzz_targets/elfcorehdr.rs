//! Any bytes as an elfcorehdr or /proc/vmcore head: parse, then diff it against itself.
#![no_main]

use kdump_agent::model::elfcorehdr::{ElfCoreHeader, LoadPath, diff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = ElfCoreHeader::parse(data) else {
        return;
    };
    // Program headers are bounded by the input, never by e_phnum alone.
    assert!(header.segments.len() <= data.len() / 32);
    let ram = header.ram_ranges();
    let _ = LoadPath::infer(&ram);
    assert!(!diff(&ram, &ram).stale());
});
