//! `--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format, the file
//! every exporter reads (and `promtool check web-config` validates).
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;

/// The file as exporter-toolkit reads it; keys it does not know are errors, as there.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(rename = "http_server_config")]
    _http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for compatibility: the agent speaks HTTP/1.1 only, which Prometheus scrapes.
    #[serde(rename = "http2")]
    _http2: Option<bool>,
}

/// What the HTTP server enforces: TLS (if configured) and basic auth (if users are listed);
/// the default is plain HTTP for anyone.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: Option<BasicAuth>,
}

impl WebConfig {
    /// Reads and validates `path`; an error is one line naming the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let named = |what: String| anyhow::anyhow!("--web.config.file {}: {what}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| named(e.to_string()))?
        };
        // exporter-toolkit resolves relative paths against the file's own directory.
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = file
            .tls_server_config
            .map(|t| tls(&t, dir).map_err(|e| named(format!("tls_server_config: {e}"))))
            .transpose()?;
        let mut users = BTreeMap::new();
        for (user, hash) in file.basic_auth_users {
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                named(format!(
                    "basic_auth_users.{user}: not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 {user}`"
                ))
            })?;
            users.insert(user, hash);
        }
        Ok(Self {
            tls,
            auth: (!users.is_empty()).then(|| BasicAuth {
                users,
                verified: Mutex::new(HashSet::new()),
            }),
        })
    }
}

/// The versions rustls offers, oldest first, with their exporter-toolkit names.
const VERSIONS: [(&str, &SupportedProtocolVersion); 2] = [("TLS12", &TLS12), ("TLS13", &TLS13)];

/// Position of `name` in [`VERSIONS`].
fn version(name: &str, key: &str) -> anyhow::Result<usize> {
    match VERSIONS.iter().position(|(n, _)| *n == name) {
        Some(i) => Ok(i),
        None => anyhow::bail!("{key} {name:?}: rustls supports TLS12 and TLS13"),
    }
}

fn tls(t: &TlsFile, dir: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let file = |key: &str, p: &Option<PathBuf>| -> anyhow::Result<PathBuf> {
        p.as_ref()
            .map(|p| dir.join(p))
            .ok_or_else(|| anyhow::anyhow!("{key} is missing"))
    };
    let cert_file = file("cert_file", &t.cert_file)?;
    let key_file = file("key_file", &t.key_file)?;
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cert_file {}: {e}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "cert_file {}: no PEM certificate in it",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| anyhow::anyhow!("key_file {}: {e}", key_file.display()))?;
    let min = version(t.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = version(t.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    let versions: Vec<&'static SupportedProtocolVersion> = VERSIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| (min..=max).contains(i))
        .map(|(_, (_, v))| *v)
        .collect();
    anyhow::ensure!(!versions.is_empty(), "min_version is above max_version");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = || -> anyhow::Result<Arc<RootCertStore>> {
        let path = file("client_ca_file", &t.client_ca_file)
            .map_err(|_| anyhow::anyhow!("client_auth_type {auth_type} needs client_ca_file"))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&path)
            .map_err(|e| anyhow::anyhow!("client_ca_file {}: {e}", path.display()))?
        {
            let cert =
                cert.map_err(|e| anyhow::anyhow!("client_ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("client_ca_file {}: {e}", path.display()))?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "client_ca_file {}: no PEM certificate in it",
            path.display()
        );
        Ok(Arc::new(roots))
    };
    let builder = match auth_type {
        "NoClientCert" => {
            anyhow::ensure!(
                t.client_ca_file.is_none(),
                "client_ca_file is set but client_auth_type is NoClientCert (as exporter-toolkit, refused)"
            );
            builder.with_no_client_auth()
        }
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider)
                .allow_unauthenticated()
                .build()?,
        ),
        "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider).build()?,
        ),
        "RequestClientCert" | "RequireAnyClientCert" => anyhow::bail!(
            "client_auth_type {auth_type}: not supported (the agent verifies every client certificate it asks for); use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        ),
        other => anyhow::bail!(
            "client_auth_type {other:?}: one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
        ),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("cert_file and key_file: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `basic_auth_users`: user -> bcrypt hash.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// `Authorization` values already verified: bcrypt costs tens of milliseconds a check, and
    /// Prometheus sends the same one on every scrape (exporter-toolkit caches them too).
    verified: Mutex<HashSet<String>>,
}

/// Room for every scraper's credentials; the cache starts over when full.
const VERIFIED_CAPACITY: usize = 64;

impl BasicAuth {
    /// Whether `authorization` (the header's value) names a user with the right password.
    pub async fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        if self.cached(value) {
            return true;
        }
        let Some((user, password)) = value
            .strip_prefix("Basic ")
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
            })
        else {
            return false;
        };
        let Some(hash) = self.users.get(&user).cloned() else {
            return false;
        };
        // bcrypt is slow by design: off the runtime's one thread.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(value.to_owned());
        }
        ok
    }

    fn cached(&self, value: &str) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<WebConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, text).unwrap();
        WebConfig::load(&path)
    }

    fn err(text: &str) -> String {
        load(text).err().expect("should fail").to_string()
    }

    #[test]
    fn empty_file_is_plain_http_without_auth() {
        let c = load("").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none());
    }

    #[test]
    fn bad_files_name_the_key() {
        assert!(err("tls_server_config:\n  key_file: k\n").contains("cert_file is missing"));
        assert!(err("nonsense: 1\n").contains("unknown field `nonsense`"));
        assert!(
            err("basic_auth_users:\n  alice: plain\n")
                .contains("basic_auth_users.alice: not a bcrypt hash")
        );
        assert!(err("tls_server_config:\n  cert_file: c\n  key_file: k\n").contains("cert_file "));
    }

    #[tokio::test]
    async fn basic_auth_checks_the_bcrypt_hash() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let c = load(&format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
        let auth = c.auth.unwrap();
        let header = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert!(auth.allows(Some(&header("alice:s3cret"))).await);
        assert!(auth.allows(Some(&header("alice:s3cret"))).await);
        assert!(!auth.allows(Some(&header("alice:wrong"))).await);
        assert!(!auth.allows(Some(&header("bob:s3cret"))).await);
        assert!(!auth.allows(Some("Bearer x")).await);
        assert!(!auth.allows(None).await);
    }
}
