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
    /// Run a federated two-cluster mesh on loopback with sample traffic, then stop every
    /// process (Ctrl-C or --duration). Exit 0 only when the mesh behaved as specified.
    Demo {
        /// How long to drive traffic, e.g. 30s; without it the demo runs until Ctrl-C.
        #[arg(long)]
        duration: Option<String>,
        /// basic, or failover (east's zone-a api is killed a third of the way in).
        #[arg(long, default_value = "basic")]
        scenario: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Check the mesh's health, `linkerd check` style (exit 1 if any check fails).
    Check {
        /// Also check every peering and its trust bundle.
        #[arg(long)]
        federation: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Enroll plain VMs: single-use intro tokens, list, revoke.
    Enroll {
        #[command(subcommand)]
        cmd: EnrollCmd,
    },
    /// Federate with peer clusters: tokens, join, list, remove.
    Federate {
        #[command(subcommand)]
        cmd: FederateCmd,
    },
}

#[derive(Subcommand)]
enum EnrollCmd {
    /// Print a single-use intro token bound to NODE and the services it may serve.
    Token {
        #[arg(long)]
        node: String,
        #[arg(long = "service", value_delimiter = ',', required = true)]
        services: Vec<String>,
        /// How long the token stays valid, e.g. 1h (at most 7 days).
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// List intro tokens: pending, enrolled or expired.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Revoke every credential of NAME.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum FederateCmd {
    /// Print a single-use token that cluster PEER redeems with `meshctl federate join`.
    Token {
        #[arg(long)]
        peer: String,
        /// How long the token stays valid, e.g. 1h, 30m (at most 7 days).
        #[arg(long, default_value = "1h")]
        expires: String,
        /// This cluster's east-west gateway addresses, to hand to the peer.
        #[arg(long = "gateway", value_delimiter = ',')]
        gateways: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Redeem a peer's token (or - to read it from stdin) and record the peering.
    Join {
        /// The `meshfed1.…` token (named apart from the global --token, the bearer).
        #[arg(value_name = "TOKEN")]
        federation_token: String,
        /// This cluster's east-west gateway addresses, to hand to the peer.
        #[arg(long = "gateway", value_delimiter = ',')]
        gateways: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// List peers: state, trust domain, exported services, gateways, last heartbeat.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// End the peering with NAME on this cluster.
    Remove { name: String },
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
    /// Create or replace a context from --api, --ca-fingerprint and --token, and make it
    /// current.
    Set { name: String },
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
        Cmd::Context { cmd } => context_cmd(cmd, &flags)?,
        Cmd::Demo {
            duration,
            scenario,
            output,
        } => return demo(duration, &scenario, output).await,
        Cmd::Check { federation, output } => {
            return Ok(u8::from(
                ctl::check::check(&conn()?, federation, output).await?,
            ));
        }
        Cmd::Enroll { cmd } => match cmd {
            EnrollCmd::Token {
                node,
                services,
                ttl,
                output,
            } => ctl::enroll::token(&conn()?, &node, services, &ttl, output).await?,
            EnrollCmd::List { output } => ctl::enroll::list(&conn()?, output).await?,
            EnrollCmd::Revoke { name } => ctl::enroll::revoke(&conn()?, &name).await?,
        },
        Cmd::Federate { cmd } => match cmd {
            FederateCmd::Token {
                peer,
                expires,
                gateways,
                output,
            } => ctl::federate::token(&conn()?, &peer, &expires, gateways, output).await?,
            FederateCmd::Join {
                federation_token,
                gateways,
                output,
            } => ctl::federate::join(&conn()?, &federation_token, gateways, output).await?,
            FederateCmd::List { output } => ctl::federate::list(&conn()?, output).await?,
            FederateCmd::Remove { name } => ctl::federate::remove(&conn()?, &name).await?,
        },
    }
    Ok(0)
}

async fn demo(duration: Option<String>, scenario: &str, output: Format) -> anyhow::Result<u8> {
    use mesh_node::demo::{DemoOptions, Scenario, run};
    let scenario = match scenario {
        "basic" => Scenario::Basic,
        "failover" => Scenario::Failover,
        other => anyhow::bail!(
            "--scenario {other:?}: unknown; use basic or failover (partition is not built yet)"
        ),
    };
    let duration = duration
        .map(|d| {
            mesh_core::config::parse_duration(&d)
                .map_err(|e| anyhow::anyhow!("--duration {d:?}: {e}"))
        })
        .transpose()?;
    if scenario == Scenario::Failover && duration.is_none() {
        anyhow::bail!("--scenario failover needs --duration (e.g. 30s)");
    }
    let json = output == Format::Json;
    let report = run(DemoOptions {
        duration,
        scenario,
        json,
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "\n{} requests, {} failed; p50 {:.1} ms, p99 {:.1} ms; server saw {}; {}",
            report.requests_total,
            report.requests_failed,
            report.p50_ms,
            report.p99_ms,
            report.peer_identity_seen.as_deref().unwrap_or("-"),
            if report.passed {
                "the mesh behaved as specified".to_owned()
            } else {
                format!("PROBLEMS: {}", report.problems.join("; "))
            }
        );
    }
    Ok(u8::from(!report.passed))
}

fn context_cmd(cmd: ContextCmd, flags: &Conn) -> anyhow::Result<()> {
    match cmd {
        ContextCmd::Set { name } => {
            let api_addrs = flags.api.clone();
            if api_addrs.is_empty() {
                anyhow::bail!("context set {name}: give the control API with --api ADDR[,ADDR...]");
            }
            let Some(fingerprint) = flags.ca_fingerprint.clone() else {
                anyhow::bail!(
                    "context set {name}: give the CA pin with --ca-fingerprint sha256:<hex>, as \
                     printed by `meshd control --bootstrap`"
                );
            };
            let tok = flags.token.clone();
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Regression: the join token's argument once shared its id with the global `--token`
    /// (the bearer), so the federation token was sent as the bearer and refused with 401.
    #[test]
    fn federate_join_keeps_the_bearer_and_the_federation_token_apart() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "--token",
            "bearer",
            "federate",
            "join",
            "meshfed1.abc",
        ])
        .unwrap();
        assert_eq!(cli.conn.token.as_deref(), Some("bearer"));
        match cli.cmd {
            Cmd::Federate {
                cmd: FederateCmd::Join {
                    federation_token, ..
                },
            } => assert_eq!(federation_token, "meshfed1.abc"),
            _ => panic!("parsed as another command"),
        }
    }
}
