//! Swift v1 ("tempauth"/"swauth") authentication: the user and key are sent
//! as headers to the auth URL, which answers with the storage URL and a
//! token. Keystone (v2/v3) is not spoken here; its users pass
//! SWIFT_ENDPOINT and SWIFT_TOKEN instead.

use super::location::SwiftV1Auth;
use anyhow::{anyhow, Context, Result};

pub async fn v1(auth: &SwiftV1Auth) -> Result<(String, String)> {
    let response = reqwest::Client::new()
        .get(&auth.url)
        .header("X-Auth-User", &auth.user)
        .header("X-Auth-Key", &auth.key)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("Swift auth at {}: cannot reach it", auth.url))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(anyhow!(
            "Swift auth at {}: user {:?} was refused ({status}): check the user name and key",
            auth.url,
            auth.user
        ));
    }
    if !status.is_success() {
        return Err(anyhow!("Swift auth at {}: answered {status}", auth.url));
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match (header("x-storage-url"), header("x-auth-token")) {
        (Some(url), Some(token)) => Ok((url, token)),
        _ => Err(anyhow!(
            "Swift auth at {}: the answer has no X-Storage-Url / X-Auth-Token (is this a v1 auth URL?)",
            auth.url
        )),
    }
}
