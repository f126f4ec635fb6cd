//! Unix groups: a name from /etc/group, a process's supplementary groups.
use std::ffi::CString;

/// The gid of `name` (or `name` itself when it is a number).
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let c_name =
        CString::new(name).map_err(|_| anyhow::anyhow!("group {name:?}: contains a NUL byte"))?;
    // SAFETY: libc::group is plain old data (integers and pointers); all zeros is a valid value.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r fills `group` with pointers into `buf`, both outliving the call.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        anyhow::bail!("group {name:?}: {}", std::io::Error::from_raw_os_error(rc));
    }
    if found.is_null() {
        anyhow::bail!("group {name:?}: no such group in /etc/group");
    }
    Ok(group.gr_gid)
}

/// The supplementary groups of process `pid` (the `Groups:` line of /proc/PID/status).
pub fn supplementary_groups(pid: i32) -> std::io::Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_resolve() {
        assert_eq!(group_id("4242").unwrap(), 4242);
        assert_eq!(group_id("root").unwrap(), 0);
        assert!(
            group_id("no-such-group-kdump")
                .unwrap_err()
                .to_string()
                .contains("no such group")
        );
        assert!(supplementary_groups(std::process::id() as i32).is_ok());
    }
}
