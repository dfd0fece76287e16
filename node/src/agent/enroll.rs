//! Which credential the agent speaks with, and where the control plane is: an agent
//! credential from `--token-file`, or — Consul auto-config style — an intro token redeemed
//! once for an agent credential, persisted 0600 in the data dir and reused on every restart.
//!
//! ```text
//!  <data>/enrolled.json present ─► its credential, control addresses and CA pin
//!  else token file ─┬─ meshfed-enroll1.… ─► POST /v1/enroll/redeem (pinned to the token's CA)
//!                   │                        ─► enrolled.json (0600) ─► use it
//!                   └─ an agent credential ─► use it with --control and --ca-fingerprint
//! ```
//!
//! The redeem rules are the control plane's; this file only moves the token and the answer.

use std::path::{Path, PathBuf};

use mesh_proto::ServiceName;
use mesh_proto::enroll::RedeemEnrollRequest;
use serde::{Deserialize, Serialize};

use super::{AgentError, AgentOptions};
use crate::client::{ApiClient, ClientError, Trust};
use crate::paths::write_atomic;

/// What the agent talks to the control plane with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Credential {
    pub(crate) agent_token: String,
    pub(crate) control: Vec<String>,
    pub(crate) ca_fingerprint: String,
}

fn enrolled_path(data: &Path) -> PathBuf {
    data.join("enrolled.json")
}

fn read_token(path: &Path) -> Result<String, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(AgentError::EmptyToken {
            path: path.to_owned(),
        });
    }
    Ok(token)
}

/// The credential to use, enrolling first when the token file holds an intro token.
pub(crate) async fn credential(
    opts: &AgentOptions,
    services: &[ServiceName],
) -> Result<Credential, AgentError> {
    let stored = enrolled_path(&opts.data_dir);
    if let Ok(bytes) = std::fs::read(&stored)
        && let Ok(c) = serde_json::from_slice::<Credential>(&bytes)
    {
        tracing::info!(path = %stored.display(), "using the credential this node enrolled with");
        return Ok(c);
    }
    let token = read_token(&opts.token_file)?;
    if !mesh_core::enroll::is_enroll_token(&token) {
        let ca_fingerprint = opts.ca_fingerprint.clone().ok_or(AgentError::NoControl {
            what: "--ca-fingerprint",
        })?;
        if opts.control.is_empty() {
            return Err(AgentError::NoControl { what: "--control" });
        }
        return Ok(Credential {
            agent_token: token,
            control: opts.control.clone(),
            ca_fingerprint,
        });
    }
    let intro = mesh_core::enroll::decode_token(&token).map_err(AgentError::Enroll)?;
    let control = if opts.control.is_empty() {
        intro.api.clone()
    } else {
        opts.control.clone()
    };
    let client = ApiClient::new(
        control.clone(),
        Trust::PinnedCa(intro.ca_fingerprint.clone()),
        None,
    )?;
    tracing::info!(node = %opts.name, control = ?control, "enrolling with the intro token");
    let answer = client
        .enroll_redeem(&RedeemEnrollRequest {
            secret: intro.secret.clone(),
            node: opts.name.to_string(),
            services: services.iter().map(ToString::to_string).collect(),
        })
        .await
        .map_err(|e| match e {
            ClientError::Api { error, .. } => AgentError::Enroll(error.message),
            other => AgentError::Client(other),
        })?;
    let c = Credential {
        agent_token: answer.agent_token,
        control,
        ca_fingerprint: intro.ca_fingerprint,
    };
    let bytes = serde_json::to_vec(&c).map_err(|e| AgentError::Enroll(e.to_string()))?;
    std::fs::create_dir_all(&opts.data_dir).map_err(|source| AgentError::TokenFile {
        path: opts.data_dir.clone(),
        source,
    })?;
    write_atomic(&stored, &bytes, 0o600).map_err(|e| {
        AgentError::Enroll(format!(
            "enrolled, but cannot store the credential in {}: {e}",
            stored.display()
        ))
    })?;
    tracing::info!(node = %opts.name, "enrolled; the intro token is spent and no longer needed");
    Ok(c)
}
