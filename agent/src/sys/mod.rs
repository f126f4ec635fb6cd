//! System access, one thin module per thing touched. Every stage may use it.
pub mod capabilities;
pub mod cgroup;
pub mod crash_sysfs;
pub mod groups;
pub mod kcore;
pub mod kexec_load;
pub mod limits;
pub mod node;
pub mod procfs;
pub mod rootfs;
pub mod sysfs;
