//! On-disk layout of a control node's data directory, and the node identity file that marks a
//! completed bootstrap or join.
//!
//! ```text
//! <data-dir>/node.json      name, node id, cluster, trust domain, addresses (written last)
//! <data-dir>/tls/ca.pem     cluster root CA certificate
//! <data-dir>/tls/node.pem   this node's control SVID followed by the CA certificate
//! <data-dir>/tls/node.key   its private key (mode 0600)
//! <data-dir>/raft/          sled database: Raft log, vote, applied state, snapshot
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Identity of this control node, persisted once bootstrap or join has completed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFile {
    pub name: String,
    pub node_id: u64,
    pub cluster: String,
    pub trust_domain: String,
    pub raft_addr: String,
    pub api_addr: String,
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn node_file(&self) -> PathBuf {
        self.root.join("node.json")
    }
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }
    pub fn ca_pem(&self) -> PathBuf {
        self.root.join("tls/ca.pem")
    }
    pub fn cert_pem(&self) -> PathBuf {
        self.root.join("tls/node.pem")
    }
    pub fn key_pem(&self) -> PathBuf {
        self.root.join("tls/node.key")
    }

    /// The node file if this directory holds a completed bootstrap or join.
    pub fn load_node(&self) -> anyhow::Result<Option<NodeFile>> {
        match fs::read(self.node_file()) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!("{} is corrupt: {e}", self.node_file().display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read {}: {e}",
                self.node_file().display()
            )),
        }
    }

    /// True if a previous bootstrap or join started here but did not finish.
    pub fn has_partial_state(&self) -> bool {
        !self.node_file().exists() && (self.raft_dir().exists() || self.key_pem().exists())
    }

    pub fn save_node(&self, node: &NodeFile) -> anyhow::Result<()> {
        write_atomic(&self.node_file(), &serde_json::to_vec_pretty(node)?, 0o644)
    }

    pub fn save_tls(&self, ca_pem: &str, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        fs::create_dir_all(self.root.join("tls"))?;
        fs::set_permissions(self.root.join("tls"), fs::Permissions::from_mode(0o700))?;
        write_atomic(&self.ca_pem(), ca_pem.as_bytes(), 0o644)?;
        write_atomic(&self.cert_pem(), chain_pem.as_bytes(), 0o644)?;
        write_atomic(&self.key_pem(), key_pem.as_bytes(), 0o600)
    }

    /// (CA PEM, chain PEM, key PEM).
    pub fn load_tls(&self) -> anyhow::Result<(String, String, String)> {
        let read = |p: PathBuf| {
            fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        Ok((
            read(self.ca_pem())?,
            read(self.cert_pem())?,
            read(self.key_pem())?,
        ))
    }
}

/// Write via a temp file, fsync, rename, fsync the directory: a crash leaves the old file or
/// the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}
