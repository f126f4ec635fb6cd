//! The running kernel's build configuration (`/proc/config.gz`, `/boot/config-*` or Debian 14's
//! `/usr/lib/modules/*/config`), used to say
//! *why* a capability is missing (`CONFIG_KPROBES is not set`).
use std::collections::HashMap;

/// Parsed `CONFIG_*` options; lines `# CONFIG_X is not set` count as unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    options: HashMap<String, String>,
    /// Where it was read from, for messages.
    pub source: String,
}

impl KernelConfig {
    pub fn parse(text: &str, source: impl Into<String>) -> Self {
        let options = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter(|(name, _)| name.starts_with("CONFIG_"))
            .map(|(name, value)| (name.to_string(), value.trim_matches('"').to_string()))
            .collect();
        Self {
            options,
            source: source.into(),
        }
    }

    /// True for `=y` and `=m`.
    pub fn is_enabled(&self, option: &str) -> bool {
        matches!(
            self.options.get(option).map(String::as_str),
            Some("y" | "m")
        )
    }

    pub fn value(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_set_unset_and_values() {
        let c = KernelConfig::parse(
            "# comment\nCONFIG_KEXEC=y\n# CONFIG_KPROBES is not set\nCONFIG_BPF_EVENTS=m\nCONFIG_CRASH_MAX_MEMORY_RANGES=8192\nCONFIG_LOCALVERSION=\"-x\"\n",
            "test",
        );
        assert!(c.is_enabled("CONFIG_KEXEC"));
        assert!(c.is_enabled("CONFIG_BPF_EVENTS"));
        assert!(!c.is_enabled("CONFIG_KPROBES"));
        assert!(!c.is_enabled("CONFIG_MISSING"));
        assert_eq!(c.value("CONFIG_CRASH_MAX_MEMORY_RANGES"), Some("8192"));
        assert_eq!(c.value("CONFIG_LOCALVERSION"), Some("-x"));
    }
}
