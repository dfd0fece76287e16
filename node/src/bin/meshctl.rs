//! `meshctl`: the meshfed operator CLI.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mesh_node::ctl::{self, Conn, Format, context};
use mesh_proto::api::CredentialRequest;

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Operate a meshfed mesh")]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct ConnArgs {
    /// Context to use from the context file (default: the current one).
    #[arg(long, global = true, env = "MESHCTL_CONTEXT")]
    context: Option<String>,
    /// Control API address(es), overriding the context.
    #[arg(long, global = true, env = "MESHFED_API", value_delimiter = ',')]
    api: Vec<String>,
    /// Bearer token, overriding the context.
    #[arg(long, global = true, env = "MESHFED_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA fingerprint to pin (sha256:...), overriding the context.
    #[arg(long, global = true, env = "MESHFED_CA_FINGERPRINT")]
    ca_fingerprint: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the control plane: members, leader, term, commit index, CA.
    Status {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Create or update resources from YAML (multi-document), a directory, or - for stdin.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Validate and show what would change; store nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show how the live resources differ from files (exit 1 if they differ).
    Diff {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List resources of a kind, or show one.
    Get {
        /// HTTPRoute, TrafficPolicy, AuthorizationPolicy, FailoverPolicy, ServiceExport, WorkloadEndpoint (plurals and short names work: endpoints, we).
        kind: String,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Per agent: the config version it applied (SYNCED or STALE against the store), the age of
    /// its last report, and its earliest SVID expiry.
    ProxyStatus {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// The LAN gossip pool as a control node sees it: node, address, status (alive, suspect,
    /// failed, left), role, cluster, generation/incarnation.
    Members {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Gossip keyring rotation: install, then use, then remove.
    Gossip {
        #[command(subcommand)]
        cmd: GossipCmd,
    },
    /// Delete one resource.
    Delete {
        kind: String,
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Manage control-plane voters.
    Control {
        #[command(subcommand)]
        cmd: ControlCmd,
    },
    /// Issue credentials.
    Credential {
        #[command(subcommand)]
        cmd: CredentialCmd,
    },
    /// Manage meshctl contexts (API address, CA pin, token).
    Context {
        #[command(subcommand)]
        cmd: ContextCmd,
    },
}

#[derive(Subcommand)]
enum GossipCmd {
    /// Manage the gossip keyring (stored in Raft).
    Keyring {
        #[command(subcommand)]
        cmd: KeyringArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Table, global = true)]
        output: Format,
    },
}

#[derive(Subcommand)]
enum KeyringArgs {
    /// Add a key every member accepts (generated unless --key is given).
    Install {
        /// base64url of 32 bytes.
        #[arg(long)]
        key: Option<String>,
    },
    /// Seal with key ID from now on.
    Use { id: u32 },
    /// Drop key ID (not the one in use).
    Remove { id: u32 },
    /// List key ids.
    List,
}

#[derive(Subcommand)]
enum ControlCmd {
    /// Remove a voter by node id (see `meshctl status`).
    Remove { node_id: u64 },
    /// Promote a joined node to voter (joining does this itself; use after an interrupted join).
    Add { node_id: u64 },
}

#[derive(Subcommand)]
enum CredentialCmd {
    /// Create an agent credential bound to one node and the services it may serve.
    Create {
        #[arg(long)]
        node: String,
        #[arg(long = "service", value_delimiter = ',', required = true)]
        services: Vec<String>,
        /// Lifetime in seconds (0 = no expiry).
        #[arg(long, default_value_t = 0)]
        ttl_secs: u64,
    },
}

#[derive(Subcommand)]
enum ContextCmd {
    /// Create or replace a context and make it current.
    Set {
        name: String,
        #[arg(long = "api", value_delimiter = ',', required = true)]
        api_addrs: Vec<String>,
        #[arg(long = "ca-fingerprint", required = true)]
        fingerprint: String,
        #[arg(long = "token")]
        tok: Option<String>,
    },
    /// Make a context current.
    Use { name: String },
    /// List contexts.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let flags = Conn {
        api: cli.conn.api,
        ca_fingerprint: cli.conn.ca_fingerprint,
        token: cli.conn.token,
    };
    let conn = || context::resolve(cli.conn.context.as_deref(), flags.clone());
    match cli.cmd {
        Cmd::Status { output } => ctl::status(&conn()?, output).await?,
        Cmd::Apply {
            files,
            dry_run,
            output,
        } => ctl::apply(&conn()?, &files, dry_run, output).await?,
        Cmd::Diff { files } => return Ok(u8::from(ctl::diff(&conn()?, &files).await?)),
        Cmd::Get {
            kind,
            name,
            namespace,
            output,
        } => {
            ctl::get(
                &conn()?,
                &kind,
                name.as_deref(),
                namespace.as_deref(),
                output,
            )
            .await?
        }
        Cmd::ProxyStatus { output } => ctl::proxy_status(&conn()?, output).await?,
        Cmd::Members { output } => ctl::gossip::members(&conn()?, output).await?,
        Cmd::Gossip {
            cmd: GossipCmd::Keyring { cmd, output },
        } => {
            use ctl::gossip::KeyringCmd;
            let cmd = match cmd {
                KeyringArgs::Install { key } => KeyringCmd::Install { key },
                KeyringArgs::Use { id } => KeyringCmd::Use { id },
                KeyringArgs::Remove { id } => KeyringCmd::Remove { id },
                KeyringArgs::List => KeyringCmd::List,
            };
            ctl::gossip::keyring(&conn()?, cmd, output).await?
        }
        Cmd::Delete {
            kind,
            name,
            namespace,
        } => ctl::delete(&conn()?, &kind, &name, &namespace).await?,
        Cmd::Control {
            cmd: ControlCmd::Remove { node_id },
        } => {
            conn()?
                .client()?
                .remove_member(node_id)
                .await
                .map_err(ctl::explain)?;
            println!("node {node_id} removed from the voters");
        }
        Cmd::Control {
            cmd: ControlCmd::Add { node_id },
        } => {
            conn()?
                .client()?
                .add_member(node_id)
                .await
                .map_err(ctl::explain)?;
            println!("node {node_id} is a voter");
        }
        Cmd::Credential {
            cmd:
                CredentialCmd::Create {
                    node,
                    services,
                    ttl_secs,
                },
        } => {
            let r = conn()?
                .client()?
                .create_credential(&CredentialRequest {
                    node,
                    services,
                    ttl_secs,
                })
                .await
                .map_err(ctl::explain)?;
            eprintln!("agent credential (shown once; only its hash is stored):");
            println!("{}", r.token);
        }
        Cmd::Context { cmd } => context_cmd(cmd)?,
    }
    Ok(0)
}

fn context_cmd(cmd: ContextCmd) -> anyhow::Result<()> {
    match cmd {
        ContextCmd::Set {
            name,
            api_addrs,
            fingerprint,
            tok,
        } => {
            if !fingerprint.starts_with("sha256:") {
                anyhow::bail!(
                    "--ca-fingerprint must look like sha256:<hex>, as printed by `meshd control --bootstrap`"
                );
            }
            context::set(
                &name,
                context::Context {
                    api: api_addrs,
                    ca_fingerprint: fingerprint,
                    token: tok,
                },
                true,
            )?;
            println!(
                "context {name} saved to {} and made current",
                context::path().display()
            );
        }
        ContextCmd::Use { name } => {
            context::use_context(&name)?;
            println!("switched to context {name}");
        }
        ContextCmd::List { output } => {
            let f = context::load()?;
            let rows: Vec<serde_json::Value> = f
                .contexts
                .iter()
                .map(|(n, c)| serde_json::json!({"name": n, "current": f.current.as_deref() == Some(n), "api": c.api, "caFingerprint": c.ca_fingerprint}))
                .collect();
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Yaml => print!("{}", serde_saphyr::to_string(&rows)?),
                _ => {
                    for (n, c) in &f.contexts {
                        let mark = if f.current.as_deref() == Some(n) {
                            "*"
                        } else {
                            " "
                        };
                        println!("{mark} {n}\t{}\t{}", c.api.join(","), c.ca_fingerprint);
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mesh_node::install_crypto_provider();
    mesh_node::block_on_main(false, async { run(cli).await })
}
