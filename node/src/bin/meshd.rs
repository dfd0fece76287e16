//! `meshd`: the one daemon of a meshfed host. It runs the `control` role, the `agent` role (the
//! sidecar) or the `gateway` role (east-west). `demo-app` is a test app, not a role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mesh_node::control::{self, Bootstrap, ControlOptions, Join, RaftTiming};
use mesh_node::token::JoinToken;
use mesh_node::{agent, demo_app, gateway};
use mesh_proto::{ClusterName, NodeName, TrustDomain};

#[derive(Parser)]
#[command(
    name = "meshd",
    version,
    about = "meshfed daemon: control node, agent or gateway"
)]
struct Cli {
    /// Log as JSON lines instead of plain text.
    #[arg(long, global = true, env = "MESHFED_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run a control node: Raft member, cluster CA, config store and API.
    Control(ControlArgs),
    /// Run the sidecar agent of this host: SVIDs, mTLS inbound and outbound listeners, metrics.
    Agent(AgentArgs),
    /// Run the east-west gateway of this cluster: QUIC to peer gateways, tunnels from sidecars.
    Gateway(GatewayArgs),
    /// Run a tiny HTTP app that echoes what it saw as JSON (for tests and demos).
    DemoApp(DemoAppArgs),
}

#[derive(Args)]
struct AgentArgs {
    /// This host's name, as in the agent credential (`meshctl credential create --node NAME`).
    #[arg(long, env = "MESHFED_NODE_NAME")]
    name: String,
    /// Where SVIDs, the CA certificate and the last good config are cached.
    #[arg(
        long,
        env = "MESHFED_DATA_DIR",
        default_value = "/var/lib/meshfed/agent"
    )]
    data_dir: PathBuf,
    /// API address(es) of the control nodes, comma-separated (optional with an intro token,
    /// which carries them).
    #[arg(long, alias = "join", env = "MESHFED_CONTROL", value_delimiter = ',')]
    control: Vec<String>,
    /// The cluster CA fingerprint (sha256:...), printed at bootstrap (optional with an intro
    /// token, which carries it).
    #[arg(long, env = "MESHFED_CA_FINGERPRINT")]
    ca_fingerprint: Option<String>,
    /// File holding an agent credential (`meshctl credential create`) or a single-use intro
    /// token (`meshctl enroll token`), redeemed once and then kept in the data dir.
    #[arg(long, env = "MESHFED_TOKEN_FILE")]
    token_file: PathBuf,
    /// YAML file listing the local services and their upstreams.
    #[arg(long, alias = "service", env = "MESHFED_SERVICES")]
    services: PathBuf,
    /// Address of the /metrics and /ready endpoints (loopback only).
    #[arg(long, env = "MESHFED_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Lifetime to request for each workload SVID, in seconds; renewed at half of it.
    #[arg(long, default_value_t = 24 * 3600)]
    svid_ttl_secs: u64,
    /// Deadline for an upstream or local app to send response headers, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    request_timeout_ms: u64,
    /// Deadline for connecting to an upstream sidecar or the local app, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    connect_timeout_ms: u64,
    /// UDP address of this host's gossip member [default: the first service's inbound IP,
    /// port 7946]. Seeds (the control nodes' gossip addresses) come from the control plane.
    #[arg(long, env = "MESHFED_GOSSIP_ADDR")]
    gossip_addr: Option<SocketAddr>,
}

#[derive(Args)]
struct GatewayArgs {
    /// This gateway's name; its identity is spiffe://<td>/mesh/gateway/<name>.
    #[arg(long, env = "MESHFED_NODE_NAME")]
    name: String,
    /// Where the gateway's SVID and the CA certificate are cached.
    #[arg(
        long,
        env = "MESHFED_DATA_DIR",
        default_value = "/var/lib/meshfed/gateway"
    )]
    data_dir: PathBuf,
    /// API address(es) of the control nodes, comma-separated.
    #[arg(long, env = "MESHFED_CONTROL", value_delimiter = ',', required = true)]
    control: Vec<String>,
    /// The cluster CA fingerprint (sha256:...), printed at bootstrap.
    #[arg(long, env = "MESHFED_CA_FINGERPRINT")]
    ca_fingerprint: String,
    /// File holding an operator token (it may obtain gateway identities).
    #[arg(long, env = "MESHFED_TOKEN_FILE")]
    token_file: PathBuf,
    /// UDP address of the QUIC endpoint peer gateways connect to.
    #[arg(long, env = "MESHFED_GATEWAY_LISTEN", default_value = "0.0.0.0:7600")]
    listen: SocketAddr,
    /// TCP address local sidecars open their tunnels to (outer mTLS, then the preamble).
    #[arg(long, env = "MESHFED_TUNNEL_ADDR", default_value = "0.0.0.0:7601")]
    tunnel_addr: SocketAddr,
    /// YAML file: peers [{trust_domain, address, ca_pem_file}] and exports [{name, endpoints}].
    #[arg(long, env = "MESHFED_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Lifetime to request for the gateway SVID, in seconds; renewed at half of it.
    #[arg(long, default_value_t = 24 * 3600)]
    svid_ttl_secs: u64,
}

fn gateway_options(a: GatewayArgs) -> anyhow::Result<gateway::GatewayOptions> {
    Ok(gateway::GatewayOptions {
        name: NodeName::new(a.name).context("--name")?,
        data_dir: a.data_dir,
        control: a.control,
        ca_fingerprint: a.ca_fingerprint,
        token_file: a.token_file,
        listen: a.listen,
        tunnel_addr: a.tunnel_addr,
        config_file: a.config,
        svid_ttl: Duration::from_secs(a.svid_ttl_secs),
    })
}

#[derive(Args)]
struct DemoAppArgs {
    /// Address to serve plain HTTP/1.1 on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The app name reported in every answer.
    #[arg(long)]
    name: String,
    /// Answer this percentage of requests (0-100, spread evenly) with 503, for exercising
    /// retries and outlier detection. `/stats` reports what was served.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    fail_percent: u8,
    /// Serve opaque TCP instead of HTTP: greet each connection with the app name and a
    /// newline, then echo what it sends.
    #[arg(long)]
    tcp: bool,
}

fn agent_options(a: AgentArgs) -> anyhow::Result<agent::AgentOptions> {
    Ok(agent::AgentOptions {
        name: NodeName::new(a.name).context("--name")?,
        data_dir: a.data_dir,
        control: a.control,
        ca_fingerprint: a.ca_fingerprint,
        token_file: a.token_file,
        services_file: a.services,
        admin_addr: a.admin_addr,
        svid_ttl: Duration::from_secs(a.svid_ttl_secs),
        gossip_addr: a.gossip_addr,
        limits: agent::Limits {
            request_timeout: Duration::from_millis(a.request_timeout_ms),
            connect_timeout: Duration::from_millis(a.connect_timeout_ms),
            ..agent::Limits::default()
        },
    })
}

#[derive(Args)]
struct ControlArgs {
    /// This node's name, unique in the cluster (its identity is spiffe://<td>/mesh/control/<name>).
    #[arg(long, env = "MESHFED_NODE_NAME")]
    name: String,
    /// Where the Raft log, state and certificates live.
    #[arg(
        long,
        env = "MESHFED_DATA_DIR",
        default_value = "/var/lib/meshfed/control"
    )]
    data_dir: PathBuf,
    /// Address for Raft RPCs from other control nodes (mTLS, control identities only).
    #[arg(long, env = "MESHFED_RAFT_ADDR", default_value = "127.0.0.1:7001")]
    raft_addr: SocketAddr,
    /// Address for the HTTPS API (meshctl, agents, gateways, other control nodes).
    #[arg(long, env = "MESHFED_API_ADDR", default_value = "127.0.0.1:7443")]
    api_addr: SocketAddr,
    /// Create a new cluster with this node as its first member (needs --cluster and --trust-domain).
    #[arg(long, requires_all = ["cluster", "trust_domain"], conflicts_with = "join_token")]
    bootstrap: bool,
    /// Cluster name, with --bootstrap (e.g. east).
    #[arg(long)]
    cluster: Option<String>,
    /// SPIFFE trust domain, with --bootstrap (e.g. east.mesh).
    #[arg(long)]
    trust_domain: Option<String>,
    /// Join an existing cluster with the join token printed by the bootstrap node.
    #[arg(long, env = "MESHFED_JOIN_TOKEN")]
    join_token: Option<String>,
    /// API address(es) of existing control nodes; defaults to those in the join token.
    #[arg(long = "join", value_delimiter = ',')]
    join_addrs: Vec<String>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Minimum election timeout in milliseconds. A follower starts an election after the leader
    /// lease (= the maximum) plus a random timeout in [min, max] without hearing a leader.
    #[arg(long, default_value_t = 250)]
    election_min_ms: u64,
    /// Lifetime of this node's control SVID in seconds (renewed at half of it; 10 s to 7 days).
    #[arg(long, default_value_t = mesh_core::identity::MAX_SVID_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(10..=604_800))]
    svid_ttl_secs: u64,
    /// Maximum election timeout in milliseconds (also the leader lease).
    #[arg(long, default_value_t = 400)]
    election_max_ms: u64,
    /// UDP address of this node's gossip member [default: the Raft IP, port 7946].
    #[arg(long, env = "MESHFED_GOSSIP_ADDR")]
    gossip_addr: Option<SocketAddr>,
}

fn control_options(a: ControlArgs) -> anyhow::Result<ControlOptions> {
    let bootstrap = if a.bootstrap {
        Some(Bootstrap {
            cluster: ClusterName::new(a.cluster.unwrap_or_default()).context("--cluster")?,
            trust_domain: TrustDomain::new(a.trust_domain.unwrap_or_default())
                .context("--trust-domain")?,
        })
    } else {
        None
    };
    let join = a
        .join_token
        .map(|t| -> anyhow::Result<Join> {
            Ok(Join {
                token: JoinToken::decode(&t).context("--join-token")?,
                addrs: a.join_addrs.clone(),
            })
        })
        .transpose()?;
    Ok(ControlOptions {
        name: NodeName::new(a.name).context("--name")?,
        data_dir: a.data_dir,
        raft_addr: a.raft_addr,
        api_addr: a.api_addr,
        bootstrap,
        join,
        svid_ttl_secs: a.svid_ttl_secs,
        gossip_addr: a
            .gossip_addr
            .unwrap_or_else(|| SocketAddr::new(a.raft_addr.ip(), mesh_node::gossip::DEFAULT_PORT)),
        timing: RaftTiming {
            heartbeat_ms: a.heartbeat_ms,
            election_min_ms: a.election_min_ms,
            election_max_ms: a.election_max_ms,
        },
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mesh_node::install_crypto_provider();
    mesh_node::init_logging(cli.log_json);
    mesh_node::block_on_main(true, async {
        match cli.role {
            Role::Control(a) => control::run(control_options(a)?).await?,
            Role::Agent(a) => agent::run(agent_options(a)?).await?,
            Role::Gateway(a) => gateway::run(gateway_options(a)?).await?,
            Role::DemoApp(a) => {
                demo_app::run(demo_app::DemoAppOptions {
                    listen: a.listen,
                    name: a.name,
                    fail_percent: a.fail_percent,
                    tcp: a.tcp,
                })
                .await?
            }
        }
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
