//! The state directory (`--state-dir`, default `/run/kdump-agent`): the persisted state, written
//! atomically so a restarted agent knows what is loaded, and the lock that keeps two agents from
//! loading at once.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    model::ranges::{PhysRange, RamRanges},
    reload::recipe::{LoadRecipe, RecipeSource},
};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
/// Bumped when the format changes incompatibly; an unknown version is ignored, not misread.
const FORMAT: u32 = 1;

/// A recipe as persisted (paths and command line; where it came from and since when, for
/// `status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeRecord {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Where it first came from (`flags`, `config /etc/default/kdump-tools`, `adopted from
    /// kexec (pid N)`); a restart that takes it from the state directory keeps this.
    pub source: String,
    /// Since when it has been the recipe, seconds since the epoch (absent in older files).
    #[serde(default)]
    pub since: Option<u64>,
}

impl From<&LoadRecipe> for RecipeRecord {
    fn from(recipe: &LoadRecipe) -> Self {
        Self {
            kernel: recipe.kernel.clone(),
            initrd: recipe.initrd.clone(),
            cmdline: recipe.cmdline.clone(),
            source: recipe.source.to_string(),
            since: None,
        }
    }
}

impl RecipeRecord {
    /// The record of `recipe` as it takes over at `now`: one taken from the state directory
    /// is `recorded` itself; one equal to `recorded` (files, command line, source) keeps its
    /// `since`; anything else starts now.
    pub fn taking_over(recipe: &LoadRecipe, recorded: Option<&Self>, now: u64) -> Self {
        let fresh = Self::from(recipe);
        match recorded {
            Some(r) if recipe.source == RecipeSource::Persisted => r.clone(),
            Some(r) if r.same_files(&fresh) && r.source == fresh.source => Self {
                since: r.since,
                ..fresh
            },
            _ => Self {
                since: Some(now),
                ..fresh
            },
        }
    }

    /// Loads the same files with the same command line, wherever either came from.
    pub fn same_files(&self, other: &Self) -> bool {
        (&self.kernel, &self.initrd, &self.cmdline)
            == (&other.kernel, &other.initrd, &other.cmdline)
    }

    /// The recipe again, marked as coming from the state directory.
    pub fn to_recipe(&self) -> LoadRecipe {
        LoadRecipe {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            source: RecipeSource::Persisted,
        }
    }
}

/// One physical byte range of a header, as persisted (`end` inclusive, as [`PhysRange`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRecord {
    pub start: u64,
    pub end: u64,
}

impl RangeRecord {
    pub fn all(ram: &RamRanges) -> Vec<Self> {
        ram.iter()
            .map(|r| Self {
                start: r.start,
                end: r.end,
            })
            .collect()
    }

    /// The persisted ranges as a set; a reversed range makes the record unusable.
    pub fn to_ram(records: &[Self]) -> Option<RamRanges> {
        records
            .iter()
            .map(|r| PhysRange::new(r.start, r.end))
            .collect::<Option<Vec<_>>>()
            .map(RamRanges::from_ranges)
    }
}

/// The agent's last load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// Wall-clock time of the load, seconds since the Unix epoch.
    pub at_unix_seconds: u64,
    /// `success`, `failure`, `rolled_back` (the `result` label of `kdump_reloads_total`).
    pub result: String,
    /// The reconcile reason (`ram-changed`, ...).
    pub reason: String,
    pub duration_seconds: f64,
}

/// Everything a restarted agent needs to know about what is loaded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    pub format: u32,
    pub recipe: Option<RecipeRecord>,
    pub last_load: Option<LoadRecord>,
    /// RAM ranges the loaded header lists, and whether they were captured (else inferred).
    pub loaded_header: Option<Vec<RangeRecord>>,
    pub loaded_header_verified: bool,
    /// The recipe of the last image that loaded successfully.
    pub last_good: Option<RecipeRecord>,
}

/// A state-directory problem: one line naming the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    // The cause is in the message, so it is no `source()`: `{:#}` would print it twice.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path} is held by pid {holder} (another kdump-agent is running); stop it or use another --state-dir"
    )]
    Locked { path: PathBuf, holder: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |cause| StateError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// The state directory, created root-only if missing.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The persisted state; `None` if there is none or it has an unknown format.
    pub fn read(&self) -> Result<Option<PersistedState>, StateError> {
        let path = self.dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let corrupt = |e: serde_json::Error| StateError::Corrupt {
            line: e.line(),
            column: e.column(),
            message: {
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let message = e.to_string();
                message.strip_suffix(&suffix).unwrap_or(&message).to_owned()
            },
            path: path.clone(),
        };
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        if serde_json::from_str::<Format>(&text)
            .map_err(corrupt)?
            .format
            != FORMAT
        {
            return Ok(None);
        }
        serde_json::from_str(&text).map(Some).map_err(corrupt)
    }

    /// Replaces the persisted state atomically: write a temporary file, fsync it, rename it
    /// over the old one, fsync the directory. A crash at any point leaves the old or the new.
    pub fn write(&self, state: &PersistedState) -> Result<(), StateError> {
        let state = PersistedState {
            format: FORMAT,
            ..state.clone()
        };
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(&state).map_err(|e| io_err(&path)(e.into()))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(&json).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err(&self.dir))
    }

    /// Takes the state directory's lock for the life of the returned value. A second agent
    /// gets [`StateError::Locked`] naming the holder's pid.
    pub fn lock(&self) -> Result<LoadLock, StateError> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        if !try_lock_exclusive(&file).map_err(io_err(&path))? {
            let mut holder = String::new();
            file.read_to_string(&mut holder).map_err(io_err(&path))?;
            let holder = match holder.trim() {
                "" => "unknown".to_owned(),
                pid => pid.to_owned(),
            };
            return Err(StateError::Locked { path, holder });
        }
        file.set_len(0).map_err(io_err(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        Ok(LoadLock { _file: file })
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor the caller owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Held while this agent may load; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LoadLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn an_io_error_names_its_cause_once() {
        let e = io_err(Path::new("/run/kdump-agent/lock"))(io::Error::from_raw_os_error(30));
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "/run/kdump-agent/lock: Read-only file system (os error 30)"
        );
    }

    /// A state directory that does not exist yet, two levels down in a temporary directory.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/kdump-agent");
        (tmp, dir)
    }

    #[test]
    fn a_recipe_keeps_its_origin_and_since_while_it_stays_the_same() {
        let flags = LoadRecipe {
            kernel: "/boot/vmlinuz".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            source: RecipeSource::Flags,
        };
        let first = RecipeRecord::taking_over(&flags, None, 100);
        assert_eq!((first.source.as_str(), first.since), ("flags", Some(100)));
        // Restarted with the same flags: still since 100.
        assert_eq!(RecipeRecord::taking_over(&flags, Some(&first), 200), first);
        // Taken from the state directory: the record as it was, origin included.
        let kept = first.to_recipe();
        assert_eq!(RecipeRecord::taking_over(&kept, Some(&first), 300), first);
        // Another command line, or the same files from another source, starts now.
        let changed = LoadRecipe {
            cmdline: "console=ttyS1".into(),
            ..flags.clone()
        };
        assert_eq!(
            RecipeRecord::taking_over(&changed, Some(&first), 400).since,
            Some(400)
        );
        let config = LoadRecipe {
            source: RecipeSource::KdumpTools("/etc/default/kdump-tools".into()),
            ..flags
        };
        let from_config = RecipeRecord::taking_over(&config, Some(&first), 500);
        assert_eq!(
            (from_config.source.as_str(), from_config.since),
            ("config /etc/default/kdump-tools", Some(500))
        );
        assert!(from_config.same_files(&first));
    }

    fn sample() -> PersistedState {
        PersistedState {
            format: 0,
            recipe: Some(RecipeRecord {
                kernel: "/boot/vmlinuz-6.1.0-47-amd64".into(),
                initrd: Some("/boot/initrd.img-6.1.0-47-amd64".into()),
                cmdline: "console=ttyS0 irqpoll nr_cpus=1 reset_devices".into(),
                source: "flags".into(),
                since: Some(1_794_999_000),
            }),
            last_load: Some(LoadRecord {
                at_unix_seconds: 1_795_000_000,
                result: "success".into(),
                reason: "ram-changed".into(),
                duration_seconds: 0.84,
            }),
            loaded_header: Some(vec![
                RangeRecord {
                    start: 0x1000,
                    end: 0x9_efff,
                },
                RangeRecord {
                    start: 0x10_0000,
                    end: 0x2fff_ffff,
                },
            ]),
            loaded_header_verified: true,
            last_good: None,
        }
    }

    #[test]
    fn the_state_round_trips_and_no_temporary_file_is_left() {
        let (_tmp, scratch) = scratch();
        let dir = StateDir::open(&scratch).unwrap();
        assert_eq!(
            fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(dir.read().unwrap(), None);
        dir.write(&sample()).unwrap();
        let read = dir.read().unwrap().unwrap();
        assert_eq!(
            read,
            PersistedState {
                format: FORMAT,
                ..sample()
            }
        );
        let second = PersistedState {
            last_good: read.recipe.clone(),
            ..read
        };
        dir.write(&second).unwrap();
        assert_eq!(dir.read().unwrap(), Some(second.clone()));
        let ram = RangeRecord::to_ram(second.loaded_header.as_ref().unwrap()).unwrap();
        assert_eq!(ram.total_bytes(), 0x9_e000 + 0x2ff0_0000);
        assert_eq!(
            RangeRecord::all(&ram),
            second.loaded_header.clone().unwrap()
        );
        assert_eq!(
            RangeRecord::to_ram(&[RangeRecord { start: 2, end: 1 }]),
            None
        );
        let recipe = second.recipe.unwrap().to_recipe();
        assert_eq!(recipe.source, RecipeSource::Persisted);
        assert_eq!(RecipeRecord::from(&recipe).source, "state directory");
        // A file written before `since` existed reads, without it.
        fs::write(
            dir.path().join(STATE_FILE),
            r#"{"format":1,"recipe":{"kernel":"/k","initrd":null,"cmdline":"","source":"flags"},"last_load":null,"loaded_header":null,"loaded_header_verified":false,"last_good":null}"#,
        )
        .unwrap();
        let old = dir.read().unwrap().unwrap().recipe.unwrap();
        assert_eq!((old.source.as_str(), old.since), ("flags", None));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE]);
        assert_eq!(
            fs::metadata(dir.path().join(STATE_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn a_corrupt_state_file_names_file_line_and_column() {
        let (_tmp, scratch) = scratch();
        let dir = StateDir::open(&scratch).unwrap();
        fs::write(
            dir.path().join(STATE_FILE),
            "{\n  \"format\": 1,\n  \"recipe\": nope\n}\n",
        )
        .unwrap();
        let err = dir.read().unwrap_err().to_string();
        let expect = format!(
            "{}:3:14: expected ident",
            dir.path().join(STATE_FILE).display()
        );
        assert_eq!(err, expect);
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_state_file_of_another_format_is_ignored() {
        let (_tmp, scratch) = scratch();
        let dir = StateDir::open(&scratch).unwrap();
        fs::write(dir.path().join(STATE_FILE), "{\"format\": 99}").unwrap();
        assert_eq!(dir.read().unwrap(), None);
    }

    #[test]
    fn a_second_agent_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let (_tmp, scratch) = scratch();
        let first = StateDir::open(&scratch).unwrap();
        let held = first.lock().unwrap();
        // flock belongs to the open file description: a second open conflicts as another
        // process would.
        let second = StateDir::open(&scratch).unwrap();
        let err = second.lock().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} is held by pid {} (another kdump-agent is running); stop it or use another --state-dir",
                scratch.join(LOCK_FILE).display(),
                std::process::id()
            )
        );
        drop(held);
        let again = second.lock().unwrap();
        drop(again);
    }

    #[test]
    fn the_lock_is_held_against_other_processes() {
        let (_tmp, scratch) = scratch();
        let dir = StateDir::open(&scratch).unwrap();
        let lock_path = dir.path().join(LOCK_FILE);
        let _held = dir.lock().unwrap();
        let status = std::process::Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(&lock_path)
            .arg("true")
            .status()
            .expect("flock(1) from util-linux");
        assert_eq!(status.code(), Some(1), "another process got the lock");
    }
}
