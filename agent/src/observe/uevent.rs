//! Kernel uevents over `NETLINK_KOBJECT_UEVENT` (what udev's rules see): the fallback source of
//! memory events, and the source of CPU hotplug events whatever the memory source. A CPU
//! add/online is a handful of uevents the kernel sends anyway: listening costs nothing while
//! nothing happens, needs no probe on a path that differs between kernels, and works on all.
use kobject_uevent::{ActionType, UEvent};
use netlink_sys::{
    AsyncSocket as _, AsyncSocketExt as _, SocketAddr, TokioSocket,
    protocols::NETLINK_KOBJECT_UEVENT,
};
use tokio::sync::mpsc;

use crate::model::events::{Event, EventSource, HotplugAction};

/// The kernel's uevent multicast group (udev re-broadcasts on group 2).
const KERNEL_GROUP: u32 = 1;
/// Room for a 4096-block storm (each message is a few hundred bytes).
const RECEIVE_BUFFER_BYTES: usize = 4 << 20;

/// What a listener forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Memory blocks and CPUs (the uevent event source).
    MemoryAndCpus,
    /// CPUs only (the probes report memory).
    Cpus,
}

/// Turns a uevent into an [`Event`] when it is about a memory block or a CPU.
pub fn decode(uevent: &UEvent, block_bytes: Option<u64>) -> Option<Event> {
    let action = match uevent.action {
        ActionType::Online => HotplugAction::Online,
        ActionType::Offline => HotplugAction::Offline,
        ActionType::Add => HotplugAction::Add,
        ActionType::Remove => HotplugAction::Remove,
        _ => return None,
    };
    let name = uevent.devpath.file_name().and_then(|n| n.to_str());
    if uevent.subsystem == "cpu" {
        // DEVPATH=/devices/system/cpu/cpu1 (not its cache or other children).
        let cpu = name.and_then(|n| n.strip_prefix("cpu"))?.parse().ok()?;
        return Some(Event::Cpu { action, cpu });
    }
    if uevent.subsystem != "memory" {
        return None;
    }
    // DEVPATH=/devices/system/memory/memory42: block 42 starts at 42 * block size.
    let block: Option<u64> = name
        .and_then(|n| n.strip_prefix("memory"))
        .and_then(|n| n.parse().ok());
    Some(Event::Memory {
        action,
        phys_start: block.zip(block_bytes).map(|(b, size)| b * size),
        bytes: block_bytes.filter(|_| block.is_some()),
        source: EventSource::Uevent,
        ktime_ns: None,
    })
}

/// Opens the socket now (so failure can select another source), then forwards the events
/// `forward` asks for.
pub fn listen(
    block_bytes: Option<u64>,
    forward: Forward,
    tx: mpsc::Sender<Event>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut socket = TokioSocket::new(NETLINK_KOBJECT_UEVENT)?;
    socket.socket_mut().set_rx_buf_sz(RECEIVE_BUFFER_BYTES)?;
    socket
        .socket_mut()
        .bind(&SocketAddr::new(0, KERNEL_GROUP))?;
    Ok(tokio::spawn(async move {
        loop {
            match socket.recv_from_full().await {
                Ok((packet, _)) => match UEvent::from_netlink_packet(&packet) {
                    Ok(uevent) => {
                        let wanted = |e: &Event| {
                            forward == Forward::MemoryAndCpus || matches!(e, Event::Cpu { .. })
                        };
                        if let Some(event) = decode(&uevent, block_bytes).filter(wanted)
                            && tx.send(event).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "ignoring a malformed uevent"),
                },
                // Beside the probes, an overrun is a memory storm the probes report: the periodic
                // rescan re-reads the CPUs, so it is not an event loss to resync for.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && forward == Forward::Cpus => {
                    tracing::debug!("CPU uevent socket overrun during a uevent storm");
                }
                // ENOBUFS: the kernel dropped messages; the count is unknown, the resync is not.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!("uevent socket overrun: events were lost, resyncing");
                    if tx
                        .send(Event::Lost {
                            count: 1,
                            source: EventSource::Uevent,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "uevent socket failed; periodic rescans continue");
                    return;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(fields: &[&str]) -> Vec<u8> {
        let mut p = Vec::new();
        for f in fields {
            p.extend_from_slice(f.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn memory_online_maps_to_its_block() {
        let u = UEvent::from_netlink_packet(&packet(&[
            "online@/devices/system/memory/memory10",
            "ACTION=online",
            "DEVPATH=/devices/system/memory/memory10",
            "SUBSYSTEM=memory",
            "SEQNUM=1234",
        ]))
        .unwrap();
        assert_eq!(
            decode(&u, Some(128 << 20)),
            Some(Event::Memory {
                action: HotplugAction::Online,
                phys_start: Some(10 * (128 << 20)),
                bytes: Some(128 << 20),
                source: EventSource::Uevent,
                ktime_ns: None,
            })
        );
    }

    #[test]
    fn cpu_add_and_online_name_the_cpu() {
        for (action, want) in [
            ("add", HotplugAction::Add),
            ("online", HotplugAction::Online),
        ] {
            let cpu = UEvent::from_netlink_packet(&packet(&[
                &format!("{action}@/devices/system/cpu/cpu1"),
                &format!("ACTION={action}"),
                "DEVPATH=/devices/system/cpu/cpu1",
                "SUBSYSTEM=cpu",
                "SEQNUM=1",
            ]))
            .unwrap();
            assert_eq!(
                decode(&cpu, Some(1)),
                Some(Event::Cpu {
                    action: want,
                    cpu: 1
                })
            );
        }
        let child = UEvent::from_netlink_packet(&packet(&[
            "add@/devices/system/cpu/cpu1/cache",
            "ACTION=add",
            "DEVPATH=/devices/system/cpu/cpu1/cache",
            "SUBSYSTEM=cpu",
            "SEQNUM=2",
        ]))
        .unwrap();
        assert_eq!(decode(&child, Some(1)), None);
    }

    #[test]
    fn other_subsystems_and_actions_are_ignored() {
        let pci = UEvent::from_netlink_packet(&packet(&[
            "add@/devices/pci0000:00/0000:00:03.0",
            "ACTION=add",
            "DEVPATH=/devices/pci0000:00/0000:00:03.0",
            "SUBSYSTEM=pci",
            "SEQNUM=1",
        ]))
        .unwrap();
        assert_eq!(decode(&pci, Some(1)), None);
        let change = UEvent::from_netlink_packet(&packet(&[
            "change@/devices/system/memory/memory3",
            "ACTION=change",
            "DEVPATH=/devices/system/memory/memory3",
            "SUBSYSTEM=memory",
            "SEQNUM=2",
        ]))
        .unwrap();
        assert_eq!(decode(&change, Some(1)), None);
    }

    #[test]
    fn unknown_block_size_keeps_the_action() {
        let u = UEvent::from_netlink_packet(&packet(&[
            "offline@/devices/system/memory/memory3",
            "ACTION=offline",
            "DEVPATH=/devices/system/memory/memory3",
            "SUBSYSTEM=memory",
            "SEQNUM=3",
        ]))
        .unwrap();
        let Some(Event::Memory {
            action,
            phys_start,
            bytes,
            ..
        }) = decode(&u, None)
        else {
            panic!()
        };
        assert_eq!(
            (action, phys_start, bytes),
            (HotplugAction::Offline, None, None)
        );
    }
}
