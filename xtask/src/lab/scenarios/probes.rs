//! Lab scenarios for the probes: the agent runs in the guest with its eBPF probes, and what it
//! reports (its log, /metrics, `status`) is checked against the guest's /proc/iomem and, after
//! the crash, against the capture kernel's /proc/vmcore header.
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use kdump_agent::{
    model::{elfcorehdr::LoadPath, iomem::Iomem, ranges::RamRanges},
    observe::probe_table,
};
use serde_json::Value;

use super::{
    agent::{SUCCESS, expect_reloads, wait_metric},
    virtio_mem,
};
use crate::lab::{
    guests::Boot,
    image::{GUEST_AGENT, KERNEL_6_1, KERNEL_6_12, KERNEL_6_12_ARM64, KERNEL_7_2},
    machine::{Machine, Memory},
    scenario::{Online, Run, Scenario, built_with},
};

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "probes-hotplug-6.1",
        about: "6.1, agent with probes, +512 MiB onlined: one online event per block, at its pfns",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: hotplug_6_1,
    },
    Scenario {
        name: "probes-hotplug-6.12",
        about: "6.12, agent with probes, +512 MiB auto-onlined: one online event per block",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: hotplug_auto_online,
    },
    Scenario {
        name: "probes-kexec-load-6.1",
        about: "6.1, kexec -c -p after the agent: header captured and current; DIMM: stale before the crash",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: kexec_load_6_1,
    },
    Scenario {
        name: "probes-kexec-load-6.12",
        about: "6.12, kexec -c -p after the agent: header captured and current; DIMM: stale before the crash",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: kexec_load_auto_online,
    },
    Scenario {
        name: "probes-kexec-file-6.1",
        about: "6.1, kexec -s -p after the agent: kernel-built header captured; DIMM: stale before the crash",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: kexec_file_6_1,
    },
    Scenario {
        name: "probes-kexec-file-6.12",
        about: "6.12, kexec -s -p after the agent: the kernel-built header is captured and verified",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: kexec_file_6_12,
    },
    Scenario {
        name: "probes-kernel-update-6.12",
        about: "6.12, kexec -s -p, +512 MiB: in-kernel updates captured, header covers the DIMM, ready",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: kernel_update_6_12,
    },
    Scenario {
        name: "probes-hotplug-7.2",
        about: "7.2, agent with probes, +512 MiB auto-onlined: one online event per block",
        kernel: KERNEL_7_2,
        fixture: false,
        benchmark: false,
        body: hotplug_auto_online,
    },
    Scenario {
        name: "probes-kexec-load-7.2",
        about: "7.2, kexec -c -p after the agent: header captured and current; DIMM: stale before the crash",
        kernel: KERNEL_7_2,
        fixture: false,
        benchmark: false,
        body: kexec_load_auto_online,
    },
    Scenario {
        name: "probes-hotplug-6.12-arm64",
        about: "arm64 6.12, agent with probes reloading through kexec -c -p: its kexec_load header captured; virtio-mem grown by 512 MiB: every block seen by the probes, no reload (kexec-tools never lists it); the dump misses it",
        kernel: KERNEL_6_12_ARM64,
        fixture: false,
        benchmark: false,
        body: hotplug_arm64,
    },
    Scenario {
        name: "probes-bench-6.12",
        about: "6.12: online 32 blocks without/with the agent, its CPU per event, event latency",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: true,
        body: bench_6_12,
    },
];

const AGENT_LOG: &str = "/tmp/kdump-agent.log";
/// The agent's debug log as JSON lines: memory events carry their ranges.
const AGENT_ENV: &str = "RUST_LOG=kdump_agent=debug";
/// Observe only: by default an agent without a recipe adopts the one of the scenario's
/// `kexec -s -p` and repairs the header these scenarios show going stale.
const AGENT_ARGS: &str = "--log-format json --reload off";
/// How long the agent may take to see an event (TCG is slow; events arrive in milliseconds).
const SETTLE: Duration = Duration::from_secs(30);

fn hotplug_6_1(run: &mut Run) -> Result<()> {
    hotplug(run, Online::Write("online"))
}

fn hotplug_auto_online(run: &mut Run) -> Result<()> {
    hotplug(run, Online::Auto)
}

fn kexec_load_6_1(run: &mut Run) -> Result<()> {
    load_then_dimm(run, LoadPath::KexecLoad, Online::Write("online"))
}

fn kexec_load_auto_online(run: &mut Run) -> Result<()> {
    load_then_dimm(run, LoadPath::KexecLoad, Online::Auto)
}

fn kexec_file_6_1(run: &mut Run) -> Result<()> {
    load_then_dimm(run, LoadPath::KexecFileLoad, Online::Write("online"))
}

/// Every online event the probes gave the agent, as (start, bytes).
fn online_events(m: &mut Machine) -> Result<Vec<(u64, u64)>> {
    Ok(agent_log(m)?
        .iter()
        .filter(|f| f["message"] == "memory event" && f["action"] == "online")
        .filter(|f| f["source"] == "ebpf")
        .filter_map(|f| Some((f["phys_start"].as_u64()?, f["bytes"].as_u64()?)))
        .collect())
}

/// The `fields` of each JSON line of the agent's log.
fn agent_log(m: &mut Machine) -> Result<Vec<Value>> {
    let text = m.sh(&format!("cat {AGENT_LOG}"))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|mut v| v["fields"].take())
        .collect())
}

fn hotplug(run: &mut Run, online: Online) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    run.start_agent_with(&mut m, AGENT_ENV, AGENT_ARGS)?;
    probes_attached(run, &mut m)?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let before = system_ram(&mut m)?;
    let dimm = run.hot_add(&mut m, 512, online)?;
    online_events_cover(run, &mut m, &before)?;
    run.crash(&mut m)?;
    // 6.12 rewrites the header in place; 6.1 cannot, so its dump misses the DIMM.
    let missing = if run.kernel_updates_header()? {
        0
    } else {
        dimm.size
    };
    run.expect(missing, 0);
    Ok(())
}

/// The probes saw each memory block /proc/iomem gained since `before` come online: one online
/// event per block, at its pfns, each counted once on /metrics.
fn online_events_cover(run: &mut Run, m: &mut Machine, before: &RamRanges) -> Result<()> {
    let added = system_ram(m)?.subtract(before);
    let block = m.block_size()?;
    let want = (added.total_bytes() / block) as usize;
    let _ = m.wait_until(
        &format!("[ $(grep -c '\"action\":\"online\"' {AGENT_LOG}) -ge {want} ]"),
        SETTLE,
    );
    let events = online_events(m)?;
    run.note("online_events", events.len());
    run.note("blocks", want);
    run.check(
        events.len() == want,
        format!(
            "{} online events from the probes for {want} blocks",
            events.len()
        ),
    );
    let seen: RamRanges = events
        .iter()
        .filter_map(|&(start, bytes)| {
            kdump_agent::model::ranges::PhysRange::from_start_size(start, bytes)
        })
        .collect();
    run.check(
        seen == added,
        format!(
            "online events cover {:?}, /proc/iomem gained {:?}",
            seen.as_slice(),
            added.as_slice()
        ),
    );
    run.check(
        events.iter().all(|&(_, b)| b == block),
        format!("events are not one block each: {events:?}"),
    );
    let counted = metric(m, "kdump_memory_hotplug_events_total{action=\"online\"}")?;
    run.check(
        counted == want as f64,
        format!("kdump_memory_hotplug_events_total{{action=\"online\"}} is {counted}, want {want}"),
    );
    Ok(())
}

/// arm64 6.12 (kexec_load only, no crash hotplug): the agent reloads through kexec-tools, as a
/// node's kdump-tools would. Its own load's header is captured from kexec_load's segments;
/// the virtio-mem grow is seen block by block through the probes, and the agent says the
/// dump misses it and that no reload through kexec-tools can bring it back, and does not try.
fn hotplug_arm64(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&virtio_mem::boot())?;
    let command = run.kdump_command(LoadPath::KexecLoad);
    m.sh(&format!("echo \"exec {command}\" > /tmp/kexec-load.sh"))?;
    run.start_agent_with(
        &mut m,
        AGENT_ENV,
        "--log-format json --reload command --reload-command 'sh /tmp/kexec-load.sh'",
    )?;
    probes_attached(run, &mut m)?;
    let source = metric(&mut m, "kdump_agent_event_source{source=\"ebpf\"}")?;
    run.check(source == 1.0, "the agent's event source is not ebpf");
    // Nothing is loaded: the agent's first survey loads through the command.
    wait_metric(&mut m, SUCCESS, 1.0)?;
    run.load = Some(LoadPath::KexecLoad);
    captured_and_current(run, &mut m, LoadPath::KexecLoad, "agent")?;
    run.virtio_mem_up(&mut m)?;
    let before = system_ram(&mut m)?;
    run.resize_virtio_mem(&mut m, virtio_mem::GROW_MIB)?;
    let added = virtio_mem::grown_bytes(run, &mut m)?;
    let blocks = added / m.block_size()?;
    // The driver adds each block (add_memory_driver_managed) and the kernel onlines it.
    virtio_mem::hotplug_events(run, &mut m, &[("add", blocks), ("online", blocks)])?;
    online_events_cover(run, &mut m, &before)?;
    stale_before_crash(run, &mut m, added)?;
    beyond_reload_before_crash(run, &mut m, added)?;
    run.crash(&mut m)?;
    run.expect(added, 0);
    Ok(())
}

/// Loads kdump after the agent started, checks the captured header diffs to zero, then
/// hot-adds a DIMM the kernel will not put in the header and checks the agent says so
/// before the crash; the crash confirms it.
fn load_then_dimm(run: &mut Run, load: LoadPath, online: Online) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    run.start_agent_with(&mut m, AGENT_ENV, AGENT_ARGS)?;
    probes_attached(run, &mut m)?;
    run.load_kdump(&mut m, load)?;
    captured_and_current(run, &mut m, load, "other")?;
    // kexec_load without --hotplug: no kernel rewrites it, whatever the kernel.
    let updates_it = load == LoadPath::KexecFileLoad && run.kernel_updates_header()?;
    let dimm = run.hot_add(&mut m, 512, online)?;
    if updates_it {
        run.crash(&mut m)?;
        run.expect(0, 0);
        return Ok(());
    }
    stale_before_crash(run, &mut m, dimm.size)?;
    run.crash(&mut m)?;
    run.expect(dimm.size, 0);
    Ok(())
}

fn kexec_file_6_12(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    run.start_agent_with(&mut m, AGENT_ENV, AGENT_ARGS)?;
    probes_attached(run, &mut m)?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    captured_and_current(run, &mut m, LoadPath::KexecFileLoad, "other")?;
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}

fn kernel_update_6_12(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    run.start_agent_with(&mut m, AGENT_ENV, AGENT_ARGS)?;
    probes_attached(run, &mut m)?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    run.check_crash_hotplug(&mut m, "1")?;
    captured_and_current(run, &mut m, LoadPath::KexecFileLoad, "other")?;
    let dimm = run.hot_add(&mut m, 512, Online::Auto)?;
    let blocks = m.blocks(&dimm)?;
    let want = (blocks.end - blocks.start) as f64;
    let _ = m.wait_until(
        &format!(
            "wget -qO- http://127.0.0.1:10864/metrics | grep -q '^kdump_kernel_header_updates_total{{result=\"success\"}} {want}$'"
        ),
        SETTLE,
    );
    let updates = metric(
        &mut m,
        "kdump_kernel_header_updates_total{result=\"success\"}",
    )?;
    let failures = metric(
        &mut m,
        "kdump_kernel_header_updates_total{result=\"failure\"}",
    )?;
    run.note("kernel_header_updates", updates);
    run.check(
        updates == want && failures == 0.0,
        format!("{updates} in-kernel updates ({failures} failed), want one per block: {want}"),
    );
    // The last update's header covers the DIMM: verified, current, ready.
    for (name, want) in [
        ("kdump_header_verified", 1.0),
        ("kdump_header_stale", 0.0),
        ("kdump_header_missing_bytes", 0.0),
        ("kdump_ready", 1.0),
    ] {
        let got = metric(&mut m, name)?;
        run.check(
            got == want,
            format!("{name} is {got} after the DIMM, want {want}"),
        );
    }
    let status = m.run(&format!("{GUEST_AGENT} status"))?;
    run.check(
        status.code == 0,
        format!(
            "`status` exits {} after the DIMM:\n{}",
            status.code,
            status.text()
        ),
    );
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}

/// Every probe is attached, but an optional one (the agent's probe table says which) that this
/// kernel cannot have by the table's facts (release, `CONFIG_*`).
fn probes_attached(run: &mut Run, m: &mut Machine) -> Result<()> {
    let (kernel, config) = run.kernel_config()?;
    let built_with = |option: &str| built_with(&config, option);
    let text = m.sh("wget -qO- http://127.0.0.1:10864/metrics")?;
    let mut how = serde_json::Map::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("kdump_agent_probe_attached{"))
    {
        let probe = label(line, "probe").unwrap_or_default();
        let kind = label(line, "how").unwrap_or_default();
        how.insert(probe.clone(), kind.clone().into());
        let optional = probe_table::find(&probe).is_some_and(|p| {
            p.optional
                && !p
                    .kernels
                    .has(kernel.release, kernel.arch.uname_machine(), built_with)
        });
        run.check(
            kind != "none" || optional,
            format!("probe {probe} not attached"),
        );
    }
    run.check(!how.is_empty(), "no kdump_agent_probe_attached series");
    run.note("probes", Value::Object(how));
    Ok(())
}

fn label(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// The value of one series on the guest agent's /metrics.
fn metric(m: &mut Machine, series: &str) -> Result<f64> {
    let text = m.sh("wget -qO- http://127.0.0.1:10864/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .ok_or_else(|| anyhow!("{series}: not on the agent's /metrics"))?
        .trim()
        .parse()
        .with_context(|| format!("{series}: not a number"))
}

fn system_ram(m: &mut Machine) -> Result<RamRanges> {
    let text = m.sh("cat /proc/iomem")?;
    Ok(Iomem::parse(&text)
        .map_err(|e| anyhow!("guest /proc/iomem: {e}"))?
        .system_ram())
}

/// The one load the agent logged (by `origin`: `agent` or `other`) carries a header that
/// diffs to zero against RAM.
fn captured_and_current(
    run: &mut Run,
    m: &mut Machine,
    load: LoadPath,
    origin: &str,
) -> Result<()> {
    // The capture of the agent's own load may come after its job ended: wait for it.
    let _ = m.wait_until(
        "wget -qO- http://127.0.0.1:10864/metrics | grep -q '^kdump_header_provenance{provenance=\"captured\"} 1$'",
        SETTLE,
    );
    let loads: Vec<Value> = agent_log(m)?
        .into_iter()
        .filter(|f| f["message"] == "crash kernel load seen")
        .collect();
    run.check(
        loads.len() == 1 && loads[0]["syscall"] == load.as_str() && loads[0]["result"] == 0,
        format!("the agent logged these loads: {loads:?}"),
    );
    if let Some(l) = loads.first() {
        run.note("load_seen", l.clone());
    }
    for (name, want) in [
        ("kdump_header_verified", 1.0),
        ("kdump_header_stale", 0.0),
        ("kdump_header_missing_bytes", 0.0),
        ("kdump_header_excess_bytes", 0.0),
    ] {
        let got = metric(m, name)?;
        run.check(
            got == want,
            format!("{name} is {got} after the load, want {want}"),
        );
    }
    let series = format!(
        "kdump_kexec_loads_total{{origin=\"{origin}\",result=\"success\",syscall=\"{}\"}}",
        load.as_str()
    );
    let counted = metric(m, &series)?;
    run.check(counted == 1.0, format!("{series} is {counted}, want 1"));
    let show = m.run(&format!("{GUEST_AGENT} show"))?;
    run.check(
        show.code == 0
            && show
                .text()
                .contains(&format!("captured from {}", load.as_str())),
        format!(
            "`show` after the load (exit {}):\n{}",
            show.code,
            show.text()
        ),
    );
    Ok(())
}

/// Before any crash, the agent says the header misses exactly the `added` bytes.
fn stale_before_crash(run: &mut Run, m: &mut Machine, added: u64) -> Result<()> {
    let _ = m.wait_until(
        &format!(
            "wget -qO- http://127.0.0.1:10864/metrics | grep -q '^kdump_header_missing_bytes {added}$'"
        ),
        SETTLE,
    );
    let missing = metric(m, "kdump_header_missing_bytes")?;
    let stale = metric(m, "kdump_header_stale")?;
    run.note("missing_before_crash", missing);
    run.check(
        stale == 1.0 && missing == added as f64,
        format!(
            "before the crash the agent says stale={stale}, missing={missing} bytes; {added} bytes were added"
        ),
    );
    let show = m.run(&format!("{GUEST_AGENT} show"))?;
    run.note("show_before_crash", show.text());
    run.check(
        show.code == 3 && show.text().contains("missing from the dump"),
        format!(
            "`show` before the crash (exit {}):\n{}",
            show.code,
            show.text()
        ),
    );
    let status = m.run(&format!("{GUEST_AGENT} status"))?;
    run.note(
        "status_before_crash",
        status.text().lines().next().unwrap_or(""),
    );
    run.check(
        status.code == 3 && status.text().contains("stale"),
        format!(
            "`status` before the crash (exit {}):\n{}",
            status.code,
            status.text()
        ),
    );
    Ok(())
}

/// Before the crash, with a header that misses only RAM its loader never lists: the agent
/// says so (metric, `status` and its JSON, readiness) and does not reload for it.
fn beyond_reload_before_crash(run: &mut Run, m: &mut Machine, added: u64) -> Result<()> {
    let series = "kdump_header_missing_beyond_reload_bytes";
    let _ = m.wait_until(
        &format!("wget -qO- http://127.0.0.1:10864/metrics | grep -q '^{series} {added}$'"),
        SETTLE,
    );
    let beyond = metric(m, series)?;
    run.note("missing_beyond_reload_bytes", beyond);
    run.check(
        beyond == added as f64,
        format!(
            "{series} is {beyond}, the grow no reload through kexec-tools lists is {added} bytes"
        ),
    );
    let status = m.run(&format!("{GUEST_AGENT} status"))?;
    let text = status.text();
    let first = text.lines().next().unwrap_or_default();
    run.note("status_beyond_reload", first);
    run.check(
        status.code == 3
            && first.contains("512.0 MiB of it no reload through kexec_load can bring back")
            && first.contains("never lists System RAM (virtio_mem)"),
        format!(
            "`status` (exit {}) does not say what no reload brings back:\n{text}",
            status.code
        ),
    );
    let json = m.run(&format!("{GUEST_AGENT} status --json"))?;
    let v: Value = serde_json::from_str(&json.text())
        .with_context(|| format!("status --json: {}", json.text()))?;
    let b = &v["header"]["beyond_reload"];
    run.check(
        v["ready"] == false && b["bytes"] == added && b["through"] == "kexec_load",
        format!("status --json: ready {}, beyond_reload {b}", v["ready"]),
    );
    let ready = metric(m, "kdump_ready")?;
    run.check(ready == 0.0, format!("kdump_ready is {ready}"));
    // The reconciler decided on this verdict already: had it reloaded, the reload would be
    // under way; a retry would come within its first backoff (1 s).
    std::thread::sleep(Duration::from_secs(2));
    expect_reloads(
        run,
        m,
        1,
        "(its first load), and none for RAM kexec-tools never lists",
    )
}

/// Benchmarks, same guest, same run (6.12 under TCG, so absolute figures are slow; the ratio is
/// what counts): onlining 32 blocks without and with the agent, the agent's CPU time per
/// event, and each event's delay from the probe's kernel timestamp to the agent.
fn bench_6_12(run: &mut Run) -> Result<()> {
    const PAIRS: usize = 5;
    let boot = Boot {
        memory: Memory {
            boot_mib: 1024,
            slots: 4,
            max_mib: 8192,
        },
        // Blocks stay offline until the benchmark onlines them.
        extra: "memhp_default_state=offline",
        ..Default::default()
    };
    let mut m = run.boot(&boot)?;
    run.load_kdump(&mut m, LoadPath::KexecLoad)?;
    let dimm = m.hot_add_dimm(4096)?;
    let blocks = m.blocks(&dimm)?;
    let set = |state: &str| {
        format!(
            "for b in $(seq {} {}); do echo {state} > /sys/devices/system/memory/memory$b/state || exit 1; done",
            blocks.start,
            blocks.end - 1
        )
    };
    let timed = |m: &mut Machine| -> Result<f64> {
        // The same quiet time before every round: the kernel finishes the last offlining's
        // deferred work, and an agent just started has settled.
        m.sh("sleep 3")?;
        let t = std::time::Instant::now();
        m.sh(&set("online_movable"))?;
        let seconds = t.elapsed().as_secs_f64();
        m.sh(&set("offline"))?;
        Ok(seconds)
    };
    // A first round pays one-time costs (memmap, page tables); it is not counted.
    timed(&mut m)?;
    let cpu_ns = "cat /proc/$(pidof kdump-agent)/task/*/schedstat | awk '{s+=$1} END {print s}'";
    let counted = "wget -qO- http://127.0.0.1:10864/metrics | awk '/^kdump_memory_hotplug_events_total.action=\"(online|offline)\"/ {s+=$2} END {print s}'";
    let per_round = (2 * (blocks.end - blocks.start)) as f64;
    let (mut without, mut with, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu, mut events) = (0.0, 0.0);
    // Interleaved so drift (other guests on the host, TCG) hits both sides alike.
    for _ in 0..PAIRS {
        without.push(timed(&mut m)?);
        // One log per agent: the latencies of this round only.
        m.sh(&format!(": > {AGENT_LOG}"))?;
        run.start_agent_with(&mut m, AGENT_ENV, AGENT_ARGS)?;
        let before: f64 = m.sh(cpu_ns)?.trim().parse().context("schedstat")?;
        with.push(timed(&mut m)?);
        let _ = m.wait_until(&format!("[ $({counted}) -ge {per_round} ]"), SETTLE);
        let after: f64 = m.sh(cpu_ns)?.trim().parse().context("schedstat")?;
        let seen: f64 = m.sh(counted)?.trim().parse().context("event count")?;
        run.check(
            seen == per_round,
            format!("the agent counted {seen} events, {per_round} happened"),
        );
        cpu += after - before;
        events += seen;
        latencies.extend(
            agent_log(&mut m)?
                .iter()
                .filter(|f| f["message"] == "memory event")
                .filter_map(|f| f["latency_ns"].as_f64()),
        );
        m.sh("kill $(pidof kdump-agent); while pidof kdump-agent >/dev/null; do sleep 0.1; done")?;
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize] / 1e6;
    run.check(!latencies.is_empty(), "no event latencies logged");
    if !latencies.is_empty() {
        run.note("event_latency_p50_ms", pct(0.5));
        run.note("event_latency_p99_ms", pct(0.99));
        run.note("event_latency_samples", latencies.len());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut without), median(&mut with));
    run.note("online_32_blocks_without_agent_s", without.clone());
    run.note("online_32_blocks_with_agent_s", with.clone());
    run.note("online_32_blocks_ratio_with_over_without", b / a);
    run.note("events", events);
    run.note("agent_cpu_ms_per_1000_events", cpu / 1e6 / events * 1000.0);
    run.note(
        "agent_log",
        "RUST_LOG=kdump_agent=debug --log-format json (one line per event)",
    );
    m.sh(&set("online_movable"))?;
    run.crash(&mut m)?;
    // kexec_load without --hotplug: the dump misses the whole DIMM.
    run.expect(dimm.size, 0);
    Ok(())
}
