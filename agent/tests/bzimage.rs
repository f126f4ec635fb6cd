//! The bzImage check against real Debian kernels from the lab's package cache: what
//! `kexec_file_load` would accept must pass, and a damaged copy must be refused by name.
use std::path::PathBuf;

use kdump_agent::reload::recipe::{Arm64Image, BZIMAGE_HEADER_LEN, BzImage, KERNEL_HEAD_LEN};

/// `$KDUMP_LAB_CACHE/root/*/boot/vmlinuz-*` (default cache `/work/lab-cache`).
fn cached_kernels() -> Vec<PathBuf> {
    let cache =
        std::env::var_os("KDUMP_LAB_CACHE").map_or_else(|| "/work/lab-cache".into(), PathBuf::from);
    let Ok(packages) = std::fs::read_dir(cache.join("root")) else {
        return Vec::new();
    };
    let mut kernels: Vec<PathBuf> = packages
        .filter_map(Result::ok)
        .filter_map(|p| std::fs::read_dir(p.path().join("boot")).ok())
        .flat_map(|boot| boot.filter_map(Result::ok).map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels
}

#[test]
fn debian_kernels_are_bzimages_kexec_file_load_accepts() {
    let kernels = cached_kernels();
    if kernels.is_empty() {
        println!("SKIP: no kernels in the lab cache (run `cargo xtask lab` once to fetch them)");
        return;
    }
    // The arm64 builds (`*_arm64` packages) are plain `Image` files: refused by name.
    let (arm64, x86): (Vec<_>, Vec<_>) = kernels.into_iter().partition(|p| {
        p.ancestors()
            .nth(2)
            .is_some_and(|pkg| pkg.to_string_lossy().ends_with("_arm64"))
    });
    for path in arm64 {
        let bytes = std::fs::read(&path).unwrap();
        let why = BzImage::parse(&bytes[..BZIMAGE_HEADER_LEN], bytes.len() as u64).unwrap_err();
        assert!(why.contains("not a bzImage"), "{}: {why}", path.display());
        println!("{}: refused: {why}", path.display());
        // The arm64 check takes it whole, and refuses it cut in half (what the lab's
        // agent-refuses-bad-kernel-6.1-arm64 gives the agent).
        let head = &bytes[..KERNEL_HEAD_LEN];
        let image = Arm64Image::parse(head, bytes.len() as u64)
            .unwrap_or_else(|why| panic!("{}: {why}", path.display()));
        println!("{}: arm64 Image {image:?}", path.display());
        let why = Arm64Image::parse(head, bytes.len() as u64 / 2).unwrap_err();
        assert!(why.starts_with("truncated"), "{}: {why}", path.display());
    }
    assert!(!x86.is_empty(), "the lab cache has only arm64 kernels");
    for path in x86 {
        let bytes = std::fs::read(&path).unwrap();
        let why = Arm64Image::parse(&bytes[..KERNEL_HEAD_LEN], bytes.len() as u64).unwrap_err();
        assert!(
            why.starts_with("not an arm64 Image"),
            "{}: {why}",
            path.display()
        );
        let image = BzImage::parse(&bytes[..BZIMAGE_HEADER_LEN], bytes.len() as u64)
            .unwrap_or_else(|why| panic!("{}: {why}", path.display()));
        assert!(
            image.version >= 0x020c,
            "{}: {:#x}",
            path.display(),
            image.version
        );
        // Debian kernels decompress into tens of MiB and take long command lines.
        assert!(
            image.init_size > 16 << 20,
            "{}: init_size {}",
            path.display(),
            image.init_size
        );
        assert!(
            image.cmdline_size >= 2047,
            "{}: cmdline_size {}",
            path.display(),
            image.cmdline_size
        );
        println!(
            "{}: boot protocol {}.{}, init_size {} bytes, cmdline_size {} bytes",
            path.display(),
            image.version >> 8,
            image.version & 0xff,
            image.init_size,
            image.cmdline_size
        );
        let mut damaged = bytes[..BZIMAGE_HEADER_LEN].to_vec();
        damaged[0x202] = b'X';
        assert!(
            BzImage::parse(&damaged, bytes.len() as u64)
                .unwrap_err()
                .contains("HdrS")
        );
    }
}
