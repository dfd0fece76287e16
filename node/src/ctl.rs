//! meshctl: the operator CLI. Argument parsing lives in `bin/meshctl.rs`; this module holds the
//! commands, the context file and output formatting.
//!
//! Every read command takes `-o table|wide|json|yaml`. Errors go to stderr and name what to do
//! next; the exit code is 0 on success, 1 on failure (and 1 from `diff` when there are
//! differences, as kubectl does), 2 for usage errors.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use mesh_proto::api::ApplyRequest;
use mesh_proto::resource::Kind;

use crate::client::{ApiClient, ClientError, Trust};
use crate::manifest;

pub mod check;
pub mod context;
pub mod diff;
pub mod enroll;
pub mod federate;
pub mod gossip;
pub mod output;

pub use output::Format;

/// Connection settings after merging flags, environment and the context file.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    pub api: Vec<String>,
    pub ca_fingerprint: Option<String>,
    pub token: Option<String>,
}

impl Conn {
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        if self.api.is_empty() {
            bail!(
                "no control API address; run `meshctl context set NAME --api HOST:PORT --ca-fingerprint FP --token TOKEN` or pass --api"
            );
        }
        let fp = self.ca_fingerprint.clone().context(
            "no CA fingerprint to pin; pass --ca-fingerprint (printed by `meshd control --bootstrap`) or set it in the context",
        )?;
        Ok(ApiClient::new(
            self.api.clone(),
            Trust::PinnedCa(fp),
            self.token.clone(),
        )?)
    }
}

/// Turn a client error into a message an operator can act on.
pub fn explain(e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Api { error, .. } if !error.details.is_empty() => {
            let lines: Vec<String> = error
                .details
                .iter()
                .map(|d| format!("  document {}: {}: {}", d.document, d.field, d.message))
                .collect();
            anyhow::anyhow!("{}\n{}", error.message, lines.join("\n"))
        }
        _ => anyhow::anyhow!(e),
    }
}

pub async fn status(conn: &Conn, fmt: Format) -> anyhow::Result<()> {
    let s = conn.client()?.status().await.map_err(explain)?;
    output::status(&s, fmt)
}

pub async fn apply(
    conn: &Conn,
    files: &[PathBuf],
    dry_run: bool,
    fmt: Format,
) -> anyhow::Result<()> {
    let docs = read_manifests(files)?;
    let resources = docs.documents.iter().map(|d| d.resource.clone()).collect();
    let resp = conn
        .client()?
        .apply(&ApplyRequest { resources, dry_run })
        .await
        .map_err(|e| locate_api_error(&docs, e))?;
    output::applied(&resp, fmt)
}

pub async fn diff(conn: &Conn, files: &[PathBuf]) -> anyhow::Result<bool> {
    let docs = read_manifests(files)?;
    let valid = docs.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = conn.client()?;
    let mut any = false;
    for v in valid {
        let live = match client.get(v.key.kind, &v.key.namespace, &v.key.name).await {
            Ok(r) => Some(r),
            Err(ClientError::Api { status, .. }) if status == http::StatusCode::NOT_FOUND => None,
            Err(e) => return Err(explain(e)),
        };
        any |= diff::print(&v, live.as_ref())?;
    }
    Ok(any)
}

pub async fn get(
    conn: &Conn,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    fmt: Format,
) -> anyhow::Result<()> {
    let kind = parse_kind(kind)?;
    let client = conn.client()?;
    let items = match name {
        Some(n) => vec![
            client
                .get(kind, namespace.unwrap_or("default"), n)
                .await
                .map_err(explain)?,
        ],
        None => client.list(kind, namespace).await.map_err(explain)?.items,
    };
    output::resources(kind, &items, name.is_some(), fmt)
}

/// `meshctl proxy-status`: every agent's applied config version, report age and earliest SVID
/// expiry, as the leader last recorded them.
pub async fn proxy_status(conn: &Conn, fmt: Format) -> anyhow::Result<()> {
    let r = conn.client()?.agents().await.map_err(explain)?;
    output::proxy_status(&r, fmt)
}

pub async fn delete(conn: &Conn, kind: &str, name: &str, namespace: &str) -> anyhow::Result<()> {
    let kind = parse_kind(kind)?;
    let r = conn
        .client()?
        .delete(kind, namespace, name)
        .await
        .map_err(explain)?;
    println!("{kind}/{namespace}/{name} deleted (version {})", r.version);
    Ok(())
}

pub fn parse_kind(s: &str) -> anyhow::Result<Kind> {
    Kind::parse_loose(s).with_context(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {s:?}; expected one of {}", all.join(", "))
    })
}

fn read_manifests(files: &[PathBuf]) -> anyhow::Result<manifest::Manifests> {
    if files.is_empty() {
        bail!("nothing to read: pass -f FILE, -f DIR or -f -");
    }
    let stdin = if files.iter().any(|f| f.as_os_str() == "-") {
        Some(std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?)
    } else {
        None
    };
    let docs = manifest::read_paths(files, stdin).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Validate here first, so errors carry file:line:column; the server validates again.
    docs.validate()
        .map_err(|e| anyhow::anyhow!("{e}\nnothing was applied"))?;
    Ok(docs)
}

/// Map the server's field problems back to file:line:column.
fn locate_api_error(docs: &manifest::Manifests, e: ClientError) -> anyhow::Error {
    if let ClientError::Api { error, .. } = &e
        && !error.details.is_empty()
    {
        {
            let lines: Vec<String> = error
                .details
                .iter()
                .map(|p| {
                    let l = docs.locate(p);
                    format!(
                        "{}:{}:{}: {}: {}",
                        l.file, l.line, l.column, l.field, l.message
                    )
                })
                .collect();
            return anyhow::anyhow!("{}\n{}", lines.join("\n"), error.message);
        }
    }
    explain(e)
}
