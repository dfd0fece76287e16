//! `meshd agent`: the sidecar of one host (DESIGN §6). For each local service it holds an
//! X.509-SVID, runs an mTLS inbound listener that authorizes and forwards to the local app, and
//! runs a plain-HTTP outbound listener per declared upstream that forwards over mTLS.
//!
//! ```text
//!  --services ─► config::load ─► ServicesConfig
//!  --token-file, --control ─► ApiClient ─► Identities::start (valid cache first, else sign)
//!                                   └─► renew_forever per service ─► SvidSlot::replace
//!  <data>/config.json ─► Policies, Discovery ◄── watch_forever (long-poll /v1/watch) ─► config.json
//!  per service: health::check_forever ─► catalog::register_forever ─► PUT /v1/catalog/<svc>
//!  report::report_forever ─► POST /v1/agents/status (applied version, SVID expiries)
//!
//!  app ─► outbound 127.0.0.1:<listen> ══ mTLS ══► peer inbound ─► authz ─► peer app
//!  admin 127.0.0.1:15000: /metrics /ready
//! ```
//!
//! This file wires the pieces and owns their limits; it makes no decision itself. Identity
//! rules, authorization, path canonicalisation, balancing and the endpoint set come from
//! `mesh-core`. The agent registers its services in the catalog and keeps the catalog's
//! endpoints in `Discovery`, but the outbound path does not read them yet (it uses the static
//! endpoints of the services file); it does not route by HTTPRoute, retry, or speak HTTP/2
//! between sidecars.

mod catalog;
mod config;
mod discovery;
mod enroll;
mod gossip;
mod health;
mod http_proxy;
mod identity;
mod inbound;
mod metrics;
mod outbound;
mod pool;
mod proxy;
mod ratelimit;
mod report;
mod tcp;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::identity::{PeerPolicy, SpiffeClientVerifier, server_config_with_slot};
use mesh_core::rng::SplitMix64;
use mesh_core::upstream::Upstream;
use mesh_proto::{NodeName, ServiceName};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use config::{
    ConfigError, HealthCheck, Probe, ServiceConfig, ServicesConfig, UpstreamConfig,
    load as load_services_file,
};
pub use identity::CertError;

use crate::client::{ApiClient, ClientError, Trust};

/// How long a client may take to send request headers; also closes idle keep-alive
/// connections, so it must stay above the pools' idle timeout.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (line and headers) read.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long one control API call retries refused connections and leader changes.
const CONTROL_RETRY_FOR: Duration = Duration::from_secs(3);
/// Most concurrent HTTP/2 streams one inbound connection carries.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Caps and deadlines of the proxies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections one listener serves at once; more are closed on accept.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// Until the response headers arrive.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Everything `meshd agent` is started with.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub name: NodeName,
    pub data_dir: PathBuf,
    /// Control API addresses.
    pub control: Vec<String>,
    /// `sha256:` fingerprint of the cluster CA, for first contact (taken from an intro token
    /// when absent).
    pub ca_fingerprint: Option<String>,
    pub token_file: PathBuf,
    pub services_file: PathBuf,
    pub admin_addr: SocketAddr,
    /// Lifetime asked for each SVID.
    pub svid_ttl: Duration,
    /// The gossip member's UDP address; `None`: the first inbound IP, port 7946.
    pub gossip_addr: Option<SocketAddr>,
    pub limits: Limits,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token file {path} is empty; put the agent credential from `meshctl credential \
         create --node NODE --service SVC` in it"
    )]
    EmptyToken { path: PathBuf },
    #[error("--admin-addr {addr} is not a loopback address; metrics are served on 127.0.0.1 only")]
    AdminNotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        addr: SocketAddr,
        what: String,
        source: std::io::Error,
    },
    #[error("control API client: {0}")]
    Client(#[from] ClientError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("cannot build the TLS config of {service}: {source}")]
    Tls {
        service: ServiceName,
        source: mesh_core::identity::IdentityError,
    },
    #[error("the system random number generator failed")]
    Rng,
    #[error(
        "{what} is missing: give it, or put an intro token from `meshctl enroll token` in \
         the token file (it carries the control addresses and the CA pin)"
    )]
    NoControl { what: &'static str },
    #[error("enrollment refused: {0}")]
    Enroll(String),
}

async fn bind(addr: SocketAddr, what: String) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind { addr, what, source })
}

/// Run the agent until SIGTERM or Ctrl-C.
pub async fn run(opts: AgentOptions) -> Result<(), AgentError> {
    let services = config::load(&opts.services_file)?;
    let names: Vec<ServiceName> = services.services.iter().map(|s| s.name.clone()).collect();
    if !metrics::admin_addr_allowed(opts.admin_addr) {
        return Err(AgentError::AdminNotLoopback {
            addr: opts.admin_addr,
        });
    }
    // Bind everything first, so a taken port is reported before any network wait.
    let admin = bind(opts.admin_addr, "the admin endpoint".into()).await?;
    let listeners = Listeners::bind(&services).await?;
    let mut tasks = JoinSet::new();
    let gossip_member: gossip::Member = Arc::new(std::sync::OnceLock::new());
    let metrics = Arc::new(metrics::Metrics::new(gossip_member.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    tasks.spawn(metrics::serve_admin(admin, metrics.clone(), ready.clone()));

    let cred = enroll::credential(&opts, &names).await?;
    let mut client = ApiClient::new(
        cred.control.clone(),
        Trust::PinnedCa(cred.ca_fingerprint.clone()),
        Some(cred.agent_token.clone()),
    )?;
    // The agent's own loops retry with backoff and log each failure; keep one call short.
    client.retry_for = CONTROL_RETRY_FOR;
    let client = Arc::new(client);
    tracing::info!(control = ?cred.control, data_dir = %opts.data_dir.display(), "agent starting; loading SVIDs");
    let ids = identity::Identities::start(&client, &opts.data_dir, &names, opts.svid_ttl).await?;
    for svid in &ids.svids {
        tasks.spawn(identity::renew_forever(
            client.clone(),
            opts.data_dir.clone(),
            svid.clone(),
            opts.svid_ttl,
            metrics.clone(),
        ));
    }

    let policies = Arc::new(watch::Policies::new(&names));
    let discovery = Arc::new(discovery::Discovery::new(&services));
    let cache = watch::cache_path(&opts.data_dir);
    let snapshot = watch::Snapshot::load(&cache).unwrap_or_default();
    policies.install(&snapshot);
    discovery.install(&snapshot);
    let (applied, applied_rx) = tokio::sync::watch::channel(snapshot.version);
    let sinks = watch::Sinks {
        policies: policies.clone(),
        discovery: discovery.clone(),
        applied,
    };
    tasks.spawn(watch::watch_forever(client.clone(), cache, sinks, snapshot));
    tasks.spawn(report::report_forever(
        client.clone(),
        applied_rx,
        ids.svids.clone(),
    ));

    let rate_limits = Arc::new(ratelimit::RateLimits::new(&names));
    tasks.spawn(ratelimit::follow_config(
        rate_limits.clone(),
        policies.subscribe(),
    ));
    let wiring = Wiring {
        ids: &ids,
        policies: &policies,
        rate_limits: &rate_limits,
        discovery: &discovery,
        metrics: &metrics,
        limits: opts.limits,
    };
    wiring.spawn_proxies(&services, listeners, &mut tasks)?;
    ready.store(true, Ordering::Release);
    // Registered once the listeners serve. Registration has its own set: it stops first on
    // shutdown, so it cannot re-register what deregistration removes.
    let mut catalog_tasks = JoinSet::new();
    let checks = catalog::spawn(&mut catalog_tasks, &client, &services, &discovery);
    let gossip = gossip::start(
        &mut tasks,
        &client,
        &opts,
        &services,
        checks,
        &discovery,
        gossip_member,
    );
    tracing::info!(
        node = %opts.name,
        trust_domain = %ids.trust_domain,
        services = ?names.iter().map(ServiceName::as_str).collect::<Vec<_>>(),
        admin = %opts.admin_addr,
        "agent running"
    );
    crate::signals::shutdown().await;
    tracing::info!("shutting down");
    gossip::leave(&gossip).await;
    catalog_tasks.abort_all();
    catalog::deregister_all(&client, &names).await;
    tasks.abort_all();
    Ok(())
}

/// Every proxy listener, bound in the order of the services file.
struct Listeners {
    inbound: Vec<TcpListener>,
    /// Per service, per upstream, flattened.
    outbound: Vec<TcpListener>,
    /// The `Host`-routing proxy listener of each service that has one.
    http_proxy: HashMap<ServiceName, Option<TcpListener>>,
}

impl Listeners {
    async fn bind(services: &ServicesConfig) -> Result<Self, AgentError> {
        let mut out = Self {
            inbound: Vec::new(),
            outbound: Vec::new(),
            http_proxy: HashMap::new(),
        };
        for s in &services.services {
            let what = format!("the inbound of {}", s.name);
            out.inbound.push(bind(s.inbound, what).await?);
            if let Some(addr) = s.http_proxy {
                let what = format!("the HTTP proxy of {}", s.name);
                out.http_proxy
                    .insert(s.name.clone(), Some(bind(addr, what).await?));
            }
            for u in &s.upstreams {
                let what = format!("upstream {} of {}", u.service, s.name);
                out.outbound.push(bind(u.listen, what).await?);
            }
        }
        Ok(out)
    }
}

/// Shared pieces the listeners are built from.
struct Wiring<'a> {
    ids: &'a identity::Identities,
    policies: &'a Arc<watch::Policies>,
    rate_limits: &'a Arc<ratelimit::RateLimits>,
    discovery: &'a Arc<discovery::Discovery>,
    metrics: &'a Arc<metrics::Metrics>,
    limits: Limits,
}

impl Wiring<'_> {
    /// Serve every inbound and outbound listener on `tasks`.
    fn spawn_proxies(
        &self,
        services: &ServicesConfig,
        listeners: Listeners,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), AgentError> {
        let mut listeners = listeners;
        let mut outbound_listeners = std::mem::take(&mut listeners.outbound).into_iter();
        // `ids.svids` is in the order of `services.services` (Identities::start keeps it).
        let per_service = services
            .services
            .iter()
            .zip(listeners.inbound)
            .zip(&self.ids.svids);
        for ((s, listener), svid) in per_service {
            tasks.spawn(inbound::serve(listener, self.inbound(s, svid)?));
            if let Some(listener) = listeners.http_proxy.get_mut(&s.name).and_then(Option::take) {
                tasks.spawn(http_proxy::serve(listener, self.http_proxy(s, svid)));
            }
            for u in &s.upstreams {
                let Some(listener) = outbound_listeners.next() else {
                    break;
                };
                let ob = self.outbound(s, svid, u)?;
                tasks.spawn(outbound::follow_config(
                    ob.clone(),
                    self.policies.subscribe(),
                ));
                tasks.spawn(outbound::serve(listener, ob));
            }
        }
        Ok(())
    }

    fn inbound(
        &self,
        s: &ServiceConfig,
        svid: &identity::WorkloadSvid,
    ) -> Result<Arc<inbound::Inbound>, AgentError> {
        let tls_err = |source| AgentError::Tls {
            service: s.name.clone(),
            source,
        };
        let verifier = SpiffeClientVerifier::new(
            self.ids.bundles.clone(),
            PeerPolicy::AnyInTrustDomain(self.ids.trust_domain.clone()),
            true,
        );
        let tls = server_config_with_slot(
            svid.slot.clone(),
            Some(verifier),
            match s.protocol {
                config::Protocol::Auto => &[pool::ALPN_H2, pool::ALPN_H1, tcp::ALPN_TCP][..],
                config::Protocol::Http => &[pool::ALPN_H2, pool::ALPN_H1][..],
                config::Protocol::Tcp => &[tcp::ALPN_TCP][..],
            },
        )
        .map_err(tls_err)?;
        Ok(Arc::new(inbound::Inbound {
            service: s.name.clone(),
            trust_domain: self.ids.trust_domain.clone(),
            app: s.app,
            tls: Arc::new(tls),
            policies: self.policies.clone(),
            rate_limits: self.rate_limits.clone(),
            metrics: self.metrics.clone(),
            app_pool: pool::Pool::new(
                pool::Connector::Plain,
                pool::PoolLimits {
                    connect_timeout: self.limits.connect_timeout,
                    // Below common app keep-alive timeouts (Node.js: 5 s).
                    idle_timeout: Duration::from_secs(4),
                    max_idle_per_endpoint: 64,
                },
            ),
            limits: self.limits,
            rng: SystemRandom::new(),
        }))
    }

    fn outbound(
        &self,
        s: &ServiceConfig,
        svid: &identity::WorkloadSvid,
        u: &UpstreamConfig,
    ) -> Result<Arc<outbound::Outbound>, AgentError> {
        self.outbound_parts(s, svid).make(&u.service, u.protocol)
    }

    fn outbound_parts(&self, s: &ServiceConfig, svid: &identity::WorkloadSvid) -> OutboundParts {
        OutboundParts {
            service: s.name.clone(),
            locality: s.locality.clone(),
            trust_domain: self.ids.trust_domain.clone(),
            discovery: self.discovery.clone(),
            bundles: self.ids.bundles.clone(),
            svid: svid.slot.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits,
        }
    }

    /// The `Host`-routing proxy of `s`: upstreams made on first use, following config.
    fn http_proxy(
        &self,
        s: &ServiceConfig,
        svid: &identity::WorkloadSvid,
    ) -> Arc<http_proxy::HttpProxy> {
        let parts = self.outbound_parts(s, svid);
        let policies = self.policies.clone();
        let make: http_proxy::MakeOutbound = Box::new(move |name| {
            let ob = parts
                .make(name, config::Protocol::Http)
                .map_err(|e| e.to_string())?;
            tokio::spawn(outbound::follow_config(ob.clone(), policies.subscribe()));
            Ok(ob)
        });
        Arc::new(http_proxy::HttpProxy {
            service: s.name.clone(),
            make,
            upstreams: Mutex::new(HashMap::new()),
            limits: self.limits,
        })
    }
}

/// What every outbound of one local service is built from (owned, so upstreams can be made
/// later, on the first request that names them).
struct OutboundParts {
    service: ServiceName,
    locality: mesh_proto::Locality,
    trust_domain: mesh_proto::TrustDomain,
    discovery: Arc<discovery::Discovery>,
    bundles: Arc<mesh_core::identity::TrustBundles>,
    svid: Arc<mesh_core::identity::SvidSlot>,
    metrics: Arc<metrics::Metrics>,
    limits: Limits,
}

impl OutboundParts {
    fn make(
        &self,
        upstream: &ServiceName,
        protocol: config::Protocol,
    ) -> Result<Arc<outbound::Outbound>, AgentError> {
        let system_rng = SystemRandom::new();
        let mut seed = [0u8; 8];
        system_rng.fill(&mut seed).map_err(|_| AgentError::Rng)?;
        Ok(Arc::new(outbound::Outbound {
            service: self.service.clone(),
            upstream: upstream.clone(),
            protocol,
            trust_domain: self.trust_domain.clone(),
            discovery: self.discovery.clone(),
            locality: self.locality.clone(),
            state: Mutex::new(Upstream::new(upstream.as_str())),
            rng: Mutex::new(SplitMix64::new(u64::from_le_bytes(seed))),
            pools: Mutex::new(HashMap::new()),
            tcp_configs: Mutex::new(HashMap::new()),
            bundles: self.bundles.clone(),
            svid: self.svid.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits,
            system_rng,
        }))
    }
}
