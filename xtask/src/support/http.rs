//! HTTP on loopback (ureq).
use std::time::Duration;

use anyhow::{Context as _, Result};

/// HTTP client for loopback: no proxy, short timeouts, non-2xx answers returned, not errors.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET `url`: (status, body).
pub fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String)> {
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    Ok((response.status().as_u16(), body))
}
