//! kdump-agent probes. One module per kernel path; no policy here, only facts.
#![no_std]
#![no_main]

mod crash_header;
mod crash_hotplug;
mod crash_protection;
mod kexec;
mod memory;
mod ring;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
