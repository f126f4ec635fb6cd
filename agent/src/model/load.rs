//! What one load of a crash kernel came to.

/// The result of one load of a crash kernel (a reload or a rollback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    /// The kernel accepted the image.
    Loaded,
    /// Validation refused the recipe before anything was touched: the old image stays.
    Refused,
    /// The load syscall (or command) failed; `still_loaded` is the readback of
    /// `/sys/kernel/kexec_crash_loaded` afterwards (a failing `kexec_file_load` frees the old image).
    Failed { still_loaded: bool },
}
