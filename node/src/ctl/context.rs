//! The meshctl context file: named connection settings (API addresses, CA fingerprint pin,
//! token), like a kubeconfig. Kept at `$MESHCTL_CONFIG` or `~/.config/meshfed/meshctl.json`,
//! mode 0600 because it holds tokens.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::Conn;

/// Environment variable naming the context file.
pub const CONFIG_ENV: &str = "MESHCTL_CONFIG";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContextFile {
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    pub api: Vec<String>,
    pub ca_fingerprint: String,
    #[serde(default)]
    pub token: Option<String>,
}

pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os(CONFIG_ENV) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config/meshfed/meshctl.json")
}

pub fn load() -> anyhow::Result<ContextFile> {
    let p = path();
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not a valid context file", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ContextFile::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

pub fn save(f: &ContextFile) -> anyhow::Result<()> {
    crate::paths::write_atomic(&path(), &serde_json::to_vec_pretty(f)?, 0o600)
}

/// Merge: explicit flags and environment win over the selected context.
pub fn resolve(name: Option<&str>, flags: Conn) -> anyhow::Result<Conn> {
    let file = load()?;
    let chosen = name.map(str::to_owned).or(file.current.clone());
    let ctx = match &chosen {
        Some(n) => match file.contexts.get(n) {
            Some(c) => Some(c.clone()),
            None if name.is_some() => anyhow::bail!(
                "no context named {n:?} in {}; create it with `meshctl context set {n} ...`",
                path().display()
            ),
            None => None,
        },
        None => None,
    };
    let ctx = ctx.unwrap_or_default();
    Ok(Conn {
        api: if flags.api.is_empty() {
            ctx.api
        } else {
            flags.api
        },
        ca_fingerprint: flags
            .ca_fingerprint
            .or((!ctx.ca_fingerprint.is_empty()).then_some(ctx.ca_fingerprint)),
        token: flags.token.or(ctx.token),
    })
}

pub fn set(name: &str, c: Context, make_current: bool) -> anyhow::Result<()> {
    let mut f = load()?;
    f.contexts.insert(name.to_owned(), c);
    if make_current || f.current.is_none() {
        f.current = Some(name.to_owned());
    }
    save(&f)
}

pub fn use_context(name: &str) -> anyhow::Result<()> {
    let mut f = load()?;
    if !f.contexts.contains_key(name) {
        let known: Vec<&String> = f.contexts.keys().collect();
        anyhow::bail!("no context named {name:?}; known contexts: {known:?}");
    }
    f.current = Some(name.to_owned());
    save(&f)
}
