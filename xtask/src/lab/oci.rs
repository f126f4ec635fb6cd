//! The OCI runtime `config.json` a kubelet's runtime would give the DaemonSet's container,
//! generated from `deploy/daemonset.yaml` itself, so a change to the manifest changes what the
//! lab runs under runc: user, capabilities, privilege escalation, read-only root, every
//! `hostPath` volume as a bind mount, host namespaces, the memory limit, and the seccomp
//! profile: `RuntimeDefault` as CRI-O and Podman resolve it (`/usr/share/containers/seccomp.json`),
//! or a `Localhost` profile from the kubelet's seccomp directory (the lab's is `deploy/seccomp/`).
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

/// The profile CRI-O and Podman use for `RuntimeDefault` (Debian's golang-github-containers-common).
pub const CONTAINERS_SECCOMP: &str = "/usr/share/containers/seccomp.json";

/// The profiles a `seccompProfile` can name.
pub struct Profiles<'a> {
    /// What `RuntimeDefault` means (containers-common's profile, as CRI-O and Podman use it).
    pub runtime_default: &'a Value,
    /// Where `Localhost` profiles live: `/var/lib/kubelet/seccomp` on a node, `deploy/seccomp/`
    /// for the lab (the profile the repository ships is the one the node gets).
    pub localhost_root: &'a Path,
}

/// What the lab decides that the manifest does not: the node and the image's entrypoint.
pub struct Node<'a> {
    pub name: &'a str,
    /// The image's `ENTRYPOINT` (the manifest's `args` replace its `CMD`).
    pub entrypoint: &'a [String],
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str().with_context(|| format!("{what}: not a string"))
}

/// Kubernetes' quantity (`128Mi`, `1G`, `500`) in bytes.
pub fn quantity_bytes(q: &str) -> Result<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let n: u64 = digits
        .parse()
        .with_context(|| format!("quantity {q:?}: no integer"))?;
    let unit: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => bail!("quantity {q:?}: unit {suffix:?} not understood"),
    };
    Ok(n * unit)
}

/// The container's capability set: `drop: [ALL]` then `add`, as `CAP_*` names.
fn capabilities(sc: &Value) -> Result<Vec<String>> {
    let caps = &sc["capabilities"];
    let list = |key: &str| -> Result<Vec<String>> {
        caps[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| str_of(c, key).map(|c| format!("CAP_{c}")))
            .collect()
    };
    ensure!(
        list("drop")? == ["CAP_ALL"],
        "securityContext.capabilities.drop must be [ALL]: the lab starts from no capability"
    );
    list("add")
}

/// One `hostPath` volume mounted as the kubelet mounts it: a recursive bind, read-only when
/// the mount says so, with its propagation (`None` is private, `HostToContainer` rslave).
fn bind_mount(mount: &Value, volumes: &[Value]) -> Result<Value> {
    let name = str_of(&mount["name"], "volumeMounts[].name")?;
    let volume = volumes
        .iter()
        .find(|v| v["name"] == name)
        .with_context(|| format!("volumeMount {name}: no such volume"))?;
    let source = str_of(
        &volume["hostPath"]["path"],
        &format!("volume {name}: hostPath.path"),
    )
    .with_context(|| format!("volume {name}: only hostPath volumes are run by the lab"))?;
    let mut options = vec!["rbind".to_owned()];
    if mount["readOnly"] == true {
        options.push("ro".into());
    }
    options.push(
        match mount["mountPropagation"].as_str().unwrap_or("None") {
            "None" => "rprivate",
            "HostToContainer" => "rslave",
            "Bidirectional" => "rshared",
            other => bail!("volumeMount {name}: mountPropagation {other} not understood"),
        }
        .into(),
    );
    Ok(json!({
        "destination": str_of(&mount["mountPath"], "mountPath")?,
        "type": "bind",
        "source": source,
        "options": options,
    }))
}

/// `RuntimeDefault` as CRI-O and Podman build it from containers-common's profile: a rule
/// applies when the container holds every capability it `includes` and none it `excludes`.
pub fn seccomp(profile: &Value, caps: &[String]) -> Result<Value> {
    let arch = profile["archMap"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["architecture"] == "SCMP_ARCH_X86_64")
        .context("seccomp profile: no SCMP_ARCH_X86_64 in archMap")?;
    let mut architectures = vec![json!("SCMP_ARCH_X86_64")];
    architectures.extend(
        arch["subArchitectures"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    let held = |list: &Value| -> Vec<bool> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| caps.iter().any(|h| Some(h.as_str()) == c.as_str()))
            .collect()
    };
    let on_arch = |list: &Value| {
        list.as_array()
            .is_none_or(|a| a.iter().any(|x| x == "amd64" || x == "x86_64"))
    };
    let mut syscalls = Vec::new();
    for rule in profile["syscalls"]
        .as_array()
        .context("seccomp profile: no syscalls")?
    {
        let (inc, exc) = (&rule["includes"], &rule["excludes"]);
        let included = held(&inc["caps"]).iter().all(|h| *h) && on_arch(&inc["arches"]);
        let excluded = held(&exc["caps"]).iter().any(|h| *h)
            || exc["arches"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "amd64" || x == "x86_64"));
        if !included || excluded {
            continue;
        }
        let mut out = json!({ "names": rule["names"], "action": rule["action"] });
        if let Some(args) = rule["args"].as_array().filter(|a| !a.is_empty()) {
            out["args"] = json!(args);
        }
        if let Some(errno) = rule["errnoRet"].as_u64() {
            out["errnoRet"] = json!(errno);
        }
        syscalls.push(out);
    }
    let mut out = json!({
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(errno) = profile["defaultErrnoRet"].as_u64() {
        out["defaultErrnoRet"] = json!(errno);
    }
    Ok(out)
}

/// The action the generated filter takes for `syscall` (the first rule naming it, else the default).
pub fn seccomp_action<'a>(filter: &'a Value, syscall: &str) -> &'a str {
    filter["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == syscall))
                && r["args"].is_null()
        })
        .map_or(&filter["defaultAction"], |r| &r["action"])
        .as_str()
        .unwrap_or("")
}

/// The container's `config.json` from the DaemonSet document, its seccomp profile found in
/// `profiles`.
pub fn config(daemonset: &Value, profiles: &Profiles<'_>, node: &Node<'_>) -> Result<Value> {
    let pod = &daemonset["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().context("no containers")?;
    ensure!(containers.len() == 1, "the lab runs pods of one container");
    let c = &containers[0];
    let sc = &c["securityContext"];
    ensure!(
        sc["privileged"] != true,
        "a privileged container is not what the lab runs"
    );
    let caps = capabilities(sc)?;
    let mut args: Vec<String> = node.entrypoint.to_vec();
    for a in c["args"].as_array().context("container has no args")? {
        args.push(str_of(a, "args[]")?.to_owned());
    }
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    for e in c["env"].as_array().into_iter().flatten() {
        let name = str_of(&e["name"], "env[].name")?;
        let value = match (
            &e["value"],
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Value::String(v), _) => v.clone(),
            (_, Some("spec.nodeName")) => node.name.to_owned(),
            _ => bail!("env {name}: only values and spec.nodeName are run by the lab"),
        };
        env.push(format!("{name}={value}"));
    }
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    // The mounts every CRI runtime gives a container, then the manifest's.
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    let mut binds = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| bind_mount(m, &volumes))
        .collect::<Result<Vec<_>>>()?;
    // Parents first, as containerd and CRI-O sort them: /host must not cover /host/proc.
    binds.sort_by_key(|m| {
        m["destination"]
            .as_str()
            .map_or(0, |d| d.split('/').count())
    });
    mounts.extend(binds);
    let mut namespaces = vec![json!({"type": "mount"}), json!({"type": "ipc"})];
    if pod["hostPID"] != true {
        namespaces.push(json!({"type": "pid"}));
    }
    if pod["hostNetwork"] != true {
        // A pod network namespace; the kubelet's pod also gets its own hostname then.
        namespaces.push(json!({"type": "network"}));
        namespaces.push(json!({"type": "uts"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                         "/sys/firmware", "/proc/scsi", "/proc/acpi"],
        "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    });
    if let Some(limit) = c["resources"]["limits"]["memory"].as_str() {
        linux["resources"] = json!({"memory": {"limit": quantity_bytes(limit)?}});
    }
    let wanted = &sc["seccompProfile"];
    match wanted["type"].as_str().unwrap_or("Unconfined") {
        "RuntimeDefault" => linux["seccomp"] = seccomp(profiles.runtime_default, &caps)?,
        "Localhost" => {
            let name = str_of(
                &wanted["localhostProfile"],
                "seccompProfile.localhostProfile",
            )?;
            ensure!(
                !name.starts_with('/') && !name.split('/').any(|p| p == ".."),
                "seccompProfile.localhostProfile {name}: must be relative to the kubelet's seccomp directory"
            );
            let path = profiles.localhost_root.join(name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("Localhost seccomp profile {}", path.display()))?;
            let profile: Value = serde_json::from_str(&text)
                .with_context(|| format!("Localhost seccomp profile {}", path.display()))?;
            linux["seccomp"] = seccomp(&profile, &caps)?;
        }
        "Unconfined" => {}
        other => {
            bail!("seccompProfile {other}: the lab runs Localhost, RuntimeDefault or Unconfined")
        }
    }
    let as_u64 = |v: &Value, what: &str| v.as_u64().with_context(|| format!("{what}: not set"));
    let mut out = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": as_u64(&sc["runAsUser"], "securityContext.runAsUser")?,
                "gid": sc["runAsGroup"].as_u64().unwrap_or(0),
            },
            "args": args,
            "env": env,
            "cwd": "/",
            // Kubernetes gives no ambient or inheritable capabilities.
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": [],
            },
            "noNewPrivileges": sc["allowPrivilegeEscalation"] == false,
        },
        "root": {"path": "rootfs", "readonly": sc["readOnlyRootFilesystem"] == true},
        "mounts": mounts,
        "linux": linux,
    });
    if pod["hostNetwork"] != true {
        // Its own UTS namespace: the pod's hostname. With hostNetwork the pod shares the node's
        // (runc refuses a hostname without a private UTS namespace).
        out["hostname"] = node.name.into();
    }
    Ok(out)
}

/// The config the lab runs: the repository's `deploy/daemonset.yaml` (its seccomp profile
/// replaced by `seccomp_profile` when given), Localhost profiles from `deploy/seccomp/`,
/// RuntimeDefault from containers-common.
pub fn from_repo(root: &Path, node: &Node<'_>, seccomp_profile: Option<Value>) -> Result<Value> {
    let path = root.join("deploy/daemonset.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut ds = daemonset(&text)?;
    if let Some(profile) = seccomp_profile {
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
            profile;
    }
    config_in_repo(root, &ds, node).with_context(|| format!("{}", path.display()))
}

/// The config of a DaemonSet document (the repository's, or one edited from it), with the
/// repository's Localhost profiles and containers-common's RuntimeDefault.
pub fn config_in_repo(root: &Path, ds: &Value, node: &Node<'_>) -> Result<Value> {
    let runtime_default = match std::fs::read_to_string(CONTAINERS_SECCOMP) {
        Ok(text) => serde_json::from_str(&text).context(CONTAINERS_SECCOMP)?,
        // Only an error when the manifest asks for RuntimeDefault (seccomp() names it then).
        Err(_) => Value::Null,
    };
    let localhost_root = root.join("deploy/seccomp");
    config(
        ds,
        &Profiles {
            runtime_default: &runtime_default,
            localhost_root: &localhost_root,
        },
        node,
    )
    .with_context(|| {
        format!("the OCI config ({CONTAINERS_SECCOMP} for RuntimeDefault comes with buildah: cargo xtask setup)")
    })
}

/// The DaemonSet with one capability (`BPF`, as the manifest names it) left out of
/// `capabilities.add`, as the lab's least-privilege measurement runs it; an error if the manifest
/// does not add it.
pub fn without_capability(daemonset: &Value, cap: &str) -> Result<Value> {
    let mut ds = daemonset.clone();
    let add =
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array_mut()
            .context("securityContext.capabilities.add: not a list")?;
    let before = add.len();
    add.retain(|c| c != cap);
    ensure!(add.len() < before, "capability {cap}: not in the manifest");
    Ok(ds)
}

/// The DaemonSet with one `volumeMounts` entry (by volume name) left out; the volume stays
/// declared, unmounted. An error if the container does not mount it.
pub fn without_mount(daemonset: &Value, name: &str) -> Result<Value> {
    let mut ds = daemonset.clone();
    let mounts = ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .context("volumeMounts: not a list")?;
    let before = mounts.len();
    mounts.retain(|m| m["name"] != name);
    ensure!(
        mounts.len() < before,
        "volumeMount {name}: not in the manifest"
    );
    Ok(ds)
}

/// The DaemonSet in a pod network namespace of its own (`hostNetwork` off) with `args` appended
/// to the container's.
pub fn with_pod_network(daemonset: &Value, args: &[&str]) -> Result<Value> {
    let mut ds = daemonset.clone();
    let pod = &mut ds["spec"]["template"]["spec"];
    pod["hostNetwork"] = json!(false);
    let list = pod["containers"][0]["args"]
        .as_array_mut()
        .context("container has no args")?;
    list.extend(args.iter().map(|a| json!(a)));
    Ok(ds)
}

/// The manifest's added capabilities and mounted volumes, in its order: what the
/// least-privilege measurement removes one at a time.
pub fn privileges(daemonset: &Value) -> (Vec<String>, Vec<String>) {
    let c = &daemonset["spec"]["template"]["spec"]["containers"][0];
    let names = |list: &Value, key: Option<&str>| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| key.map_or(v, |k| &v[k]).as_str().map(str::to_owned))
            .collect()
    };
    (
        names(&c["securityContext"]["capabilities"]["add"], None),
        names(&c["volumeMounts"], Some("name")),
    )
}

/// The image `deploy/Containerfile` builds, as the lab lays it out without a builder: the files
/// it `COPY`s from its build context (the musl release directory) and its `ENTRYPOINT`.
pub struct ContainerImage {
    /// (file in the build context, path in the image).
    pub copies: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
}

/// Reads a Containerfile of the shape the project ships: `FROM scratch`, `COPY`, `ENTRYPOINT`
/// in exec form (anything that would need a builder is refused, so the lab's rootfs is the
/// image's).
pub fn container_image(text: &str) -> Result<ContainerImage> {
    let mut image = ContainerImage {
        copies: Vec::new(),
        entrypoint: Vec::new(),
    };
    let mut from = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word.to_ascii_uppercase().as_str() {
            "FROM" => from = Some(rest.trim().to_owned()),
            "COPY" => match rest.split_whitespace().collect::<Vec<_>>()[..] {
                [src, dst] if !src.starts_with("--") => {
                    image.copies.push((src.to_owned(), dst.to_owned()));
                }
                _ => bail!("Containerfile: `{line}`: the lab copies one file to one path"),
            },
            "ENTRYPOINT" => {
                image.entrypoint = serde_json::from_str(rest)
                    .with_context(|| format!("Containerfile: `{line}`: not the exec form"))?;
            }
            "EXPOSE" | "CMD" | "LABEL" => {}
            other => bail!("Containerfile: {other} is not run by the lab"),
        }
    }
    ensure!(
        from.as_deref() == Some("scratch"),
        "Containerfile: the lab lays out images FROM scratch only"
    );
    ensure!(!image.entrypoint.is_empty(), "Containerfile: no ENTRYPOINT");
    Ok(image)
}

/// What a kubelet does on the node before it starts the pod, as shell: each `hostPath` volume
/// of type `DirectoryOrCreate` created, each `Directory` checked.
pub fn host_paths(daemonset: &Value) -> Result<String> {
    let mut script = String::new();
    for v in daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(path) = v["hostPath"]["path"].as_str() else {
            continue;
        };
        match v["hostPath"]["type"].as_str().unwrap_or("") {
            "DirectoryOrCreate" => script.push_str(&format!("mkdir -p {path}\n")),
            "Directory" => script.push_str(&format!(
                "test -d {path} || {{ echo 'hostPath {path}: not a directory' >&2; exit 1; }}\n"
            )),
            "" => {}
            other => bail!("hostPath {path}: type {other} is not run by the lab"),
        }
    }
    Ok(script)
}

/// The DaemonSet document of a manifest file's text.
pub fn daemonset(text: &str) -> Result<Value> {
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("deploy/daemonset.yaml")?;
        if v["kind"] == "DaemonSet" {
            return Ok(v);
        }
    }
    bail!("deploy/daemonset.yaml: no DaemonSet")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containers-common's profile with the one change kdump-agent needs: `kexec_file_load` moves
    /// from the unconditional EPERM rule to a rule of its own allowing it to holders of
    /// CAP_SYS_BOOT. `bpf` and `perf_event_open` need nothing: the profile allows them to holders
    /// of CAP_SYS_ADMIN, which the pod has (for `/proc/iomem`). `deploy/seccomp/kdump-agent.json`
    /// is this, and a test keeps it so.
    fn kdump_agent_profile(containers_common: &Value) -> Result<Value> {
        let mut profile = containers_common.clone();
        let rules = profile["syscalls"]
            .as_array_mut()
            .context("seccomp profile: no syscalls")?;
        let at = rules
            .iter()
            .position(|r| {
                r["action"] != "SCMP_ACT_ALLOW"
                    && r["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n == "kexec_file_load"))
            })
            .context("seccomp profile: no rule refusing kexec_file_load")?;
        let names = rules[at]["names"].as_array_mut().expect("checked above");
        names.retain(|n| n != "kexec_file_load");
        rules.insert(
            at + 1,
            json!({
                "names": ["kexec_file_load"],
                "action": "SCMP_ACT_ALLOW",
                "args": [],
                "comment": "kdump-agent: reload the capture kernel with a header for the RAM the node has now (kexec_file_load with KEXEC_FILE_ON_CRASH); only for a container holding CAP_SYS_BOOT, which the kernel requires too",
                "includes": {"caps": ["CAP_SYS_BOOT"]},
                "excludes": {},
            }),
        );
        Ok(profile)
    }

    fn repo() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn shipped() -> Value {
        daemonset(&std::fs::read_to_string(repo().join("deploy/daemonset.yaml")).unwrap()).unwrap()
    }

    /// Runs `f` with the lab's profiles: `runtime_default` and the repository's `deploy/seccomp/`.
    fn with_profiles<T>(runtime_default: &Value, f: impl FnOnce(&Profiles<'_>) -> T) -> T {
        let root = repo().join("deploy/seccomp");
        f(&Profiles {
            runtime_default,
            localhost_root: &root,
        })
    }

    fn generated(ds: &Value, runtime_default: &Value) -> Result<Value> {
        with_profiles(runtime_default, |p| config(ds, p, &node()))
    }

    fn runtime_default(ds: &mut Value) {
        pod_security(ds, "seccompProfile", json!({"type": "RuntimeDefault"}));
    }

    fn profile() -> Value {
        json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [
                {"names": ["kexec_file_load"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "includes": {}, "excludes": {}},
                {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}},
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "includes": {}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}},
            ],
        })
    }

    fn node() -> Node<'static> {
        static ENTRY: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["/kdump-agent".into()]);
        Node {
            name: "lab",
            entrypoint: &ENTRY,
        }
    }

    #[test]
    fn the_shipped_manifest_becomes_its_runtime_config() {
        let c = generated(&shipped(), &profile()).unwrap();
        let p = &c["process"];
        assert_eq!(p["user"]["uid"], 0);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(p["args"][0], "/kdump-agent");
        assert_eq!(p["args"][1], "run");
        assert!(
            p["env"]
                .as_array()
                .unwrap()
                .contains(&json!("NODE_NAME=lab"))
        );
        let caps = p["capabilities"]["effective"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_SYS_BOOT")) && caps.contains(&json!("CAP_SYS_ADMIN")));
        assert_eq!(p["capabilities"]["ambient"], json!([]));
        let host = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/host")
            .unwrap();
        assert_eq!(host["source"], "/");
        assert_eq!(host["options"], json!(["rbind", "ro", "rslave"]));
        let order: Vec<&str> = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        let at = |d: &str| order.iter().position(|o| *o == d).unwrap();
        assert!(at("/host") < at("/host/proc") && at("/host") < at("/host/run/lock"));
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 128 << 20);
        // A pod network namespace, and with it a UTS namespace and hostname of its own.
        assert_eq!(c["hostname"], "lab");
    }

    #[test]
    fn runtime_default_keeps_rules_by_the_containers_capabilities() {
        let admin = seccomp(&profile(), &["CAP_SYS_ADMIN".into()]).unwrap();
        assert_eq!(seccomp_action(&admin, "bpf"), "SCMP_ACT_ALLOW");
        assert_eq!(seccomp_action(&admin, "kexec_file_load"), "SCMP_ACT_ERRNO");
        assert_eq!(seccomp_action(&admin, "mount"), "SCMP_ACT_ERRNO");
        let none = seccomp(&profile(), &[]).unwrap();
        assert_eq!(seccomp_action(&none, "bpf"), "SCMP_ACT_ERRNO");
        assert_eq!(
            none["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
    }

    #[test]
    fn a_manifest_change_changes_the_config() {
        let mut ds = shipped();
        let pod = &mut ds["spec"]["template"]["spec"];
        pod["hostNetwork"] = json!(true);
        pod["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_BOOT"]);
        let c = generated(&ds, &profile()).unwrap();
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network") && ns.contains(&"pid") && !ns.contains(&"uts"));
        // The node's UTS namespace: no hostname of its own (runc refuses one).
        assert!(c["hostname"].is_null());
        assert_eq!(
            c["process"]["capabilities"]["bounding"],
            json!(["CAP_SYS_BOOT"])
        );
        pod_security(&mut ds, "privileged", json!(true));
        assert!(generated(&ds, &profile()).is_err());
    }

    fn pod_security(ds: &mut Value, key: &str, value: Value) {
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"][key] = value;
    }

    #[test]
    fn the_shipped_containerfile_is_one_binary() {
        let text = std::fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
        let image = container_image(&text).unwrap();
        assert_eq!(
            image.copies,
            [("kdump-agent".to_owned(), "/kdump-agent".to_owned())]
        );
        assert_eq!(image.entrypoint, ["/kdump-agent"]);
        assert!(container_image("FROM debian\nENTRYPOINT [\"/x\"]\n").is_err());
        assert!(container_image("FROM scratch\nRUN true\nENTRYPOINT [\"/x\"]\n").is_err());
    }

    #[test]
    fn the_kubelet_creates_the_state_and_lock_directories() {
        let script = host_paths(&shipped()).unwrap();
        assert!(script.contains("mkdir -p /run/kdump-agent\n"));
        assert!(script.contains("mkdir -p /run/lock\n"));
        assert!(script.contains("test -d /proc ||"));
    }

    #[test]
    fn one_privilege_removed_at_a_time() {
        let ds = shipped();
        let (caps, mounts) = privileges(&ds);
        assert_eq!(caps, ["SYS_BOOT", "SYS_ADMIN", "SYS_RAWIO"]);
        assert!(mounts.contains(&"host-proc".to_owned()) && mounts.contains(&"state".to_owned()));
        let c = generated(&without_capability(&ds, "SYS_RAWIO").unwrap(), &profile()).unwrap();
        let held = c["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(held.len(), caps.len() - 1);
        assert!(!held.contains(&json!("CAP_SYS_RAWIO")) && held.contains(&json!("CAP_SYS_BOOT")));
        // The seccomp rules follow the capabilities, as the runtime builds them.
        let c = generated(&without_capability(&ds, "SYS_BOOT").unwrap(), &profile()).unwrap();
        assert_eq!(
            seccomp_action(&c["linux"]["seccomp"], "kexec_file_load"),
            "SCMP_ACT_ERRNO"
        );
        assert!(without_capability(&ds, "NET_ADMIN").is_err());
        let c = generated(&without_mount(&ds, "host-proc").unwrap(), &profile()).unwrap();
        let dests: Vec<&Value> = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["destination"])
            .collect();
        assert!(!dests.contains(&&json!("/host/proc")) && dests.contains(&&json!("/host/sys")));
        assert!(without_mount(&ds, "nope").is_err());
        // The input is untouched.
        assert_eq!(privileges(&ds), (caps, mounts));
    }

    #[test]
    fn a_pod_network_namespace_with_extra_args() {
        let mut host_network = shipped();
        host_network["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        let ds = with_pod_network(&host_network, &["--event-source", "uevent"]).unwrap();
        let c = generated(&ds, &profile()).unwrap();
        assert!(
            c["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network"}))
        );
        let args = c["process"]["args"].as_array().unwrap();
        assert_eq!(
            args[args.len() - 2..],
            [json!("--event-source"), json!("uevent")]
        );
        assert!(
            !generated(&host_network, &profile()).unwrap()["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network"}))
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("128Mi").unwrap(), 128 << 20);
        assert_eq!(quantity_bytes("1G").unwrap(), 1_000_000_000);
        assert!(quantity_bytes("1.5Gi").is_err());
    }

    /// Debian's containers-common profile, when installed, as CRI-O would apply it.
    #[test]
    fn containers_common_refuses_kexec_whatever_the_capabilities() {
        let Ok(text) = std::fs::read_to_string(CONTAINERS_SECCOMP) else {
            println!(
                "SKIP: {CONTAINERS_SECCOMP} is not installed (cargo xtask setup installs buildah, which brings it)"
            );
            return;
        };
        let profile: Value = serde_json::from_str(&text).unwrap();
        let mut ds = shipped();
        runtime_default(&mut ds);
        let c = generated(&ds, &profile).unwrap();
        let filter = &c["linux"]["seccomp"];
        assert_eq!(seccomp_action(filter, "bpf"), "SCMP_ACT_ALLOW");
        assert_eq!(seccomp_action(filter, "perf_event_open"), "SCMP_ACT_ALLOW");
        assert_eq!(seccomp_action(filter, "kexec_file_load"), "SCMP_ACT_ERRNO");
    }

    /// The shipped Localhost profile is containers-common's with exactly one change, and under
    /// it the DaemonSet's container may reload, load probes and nothing more than before.
    #[test]
    fn the_shipped_localhost_profile_allows_the_reload_and_nothing_else() {
        let c = generated(&shipped(), &profile()).unwrap();
        let filter = &c["linux"]["seccomp"];
        for syscall in ["kexec_file_load", "bpf", "perf_event_open", "read"] {
            assert_eq!(
                seccomp_action(filter, syscall),
                "SCMP_ACT_ALLOW",
                "{syscall}"
            );
        }
        assert_eq!(seccomp_action(filter, "kexec_load"), "SCMP_ACT_ERRNO");
        // Without CAP_SYS_BOOT the new rule does not apply, and the default refuses it.
        let mut ds = shipped();
        pod_security(
            &mut ds,
            "capabilities",
            json!({"drop": ["ALL"], "add": ["SYS_ADMIN", "SYS_RAWIO"]}),
        );
        let c = generated(&ds, &profile()).unwrap();
        assert_eq!(
            seccomp_action(&c["linux"]["seccomp"], "kexec_file_load"),
            "SCMP_ACT_ERRNO"
        );
        let Ok(text) = std::fs::read_to_string(CONTAINERS_SECCOMP) else {
            println!("SKIP: {CONTAINERS_SECCOMP} is not installed; the derivation is unchecked");
            return;
        };
        let shipped_profile: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("deploy/seccomp/kdump-agent.json")).unwrap(),
        )
        .unwrap();
        let derived = kdump_agent_profile(&serde_json::from_str(&text).unwrap()).unwrap();
        assert!(
            shipped_profile == derived,
            "deploy/seccomp/kdump-agent.json is not containers-common's {CONTAINERS_SECCOMP} plus the kexec_file_load rule (oci::kdump_agent_profile)"
        );
    }

    #[test]
    fn a_localhost_profile_outside_the_kubelet_directory_is_refused() {
        let mut ds = shipped();
        pod_security(
            &mut ds,
            "seccompProfile",
            json!({"type": "Localhost", "localhostProfile": "../x.json"}),
        );
        assert!(generated(&ds, &profile()).is_err());
    }
}
