//! The agent's status report for `meshctl proxy-status`: the config version it has applied and
//! when each local SVID expires, sent to `POST /v1/agents/status`.
//!
//! ```text
//!  watch_forever ─► watch<u64> applied version ─┐
//!  SvidSlot::validity (read every second)       ┼─► report_forever ─► POST /v1/agents/status
//!  30 s since the last accepted report          ┘     (at most one a second; failures back off)
//! ```
//!
//! A report is sent when what it says changes (a new config version, a renewed SVID) and
//! otherwise every [`REPORT_PERIOD`], so an operator can tell a live agent from a stale record.
//! The control plane keeps reports outside the versioned store, so acknowledging a version never
//! creates a new one. This module decides nothing and is off the data path.

use std::sync::Arc;
use std::time::Duration;

use mesh_proto::api::AgentStatusReport;
use mesh_proto::command::CertExpiry;
use tokio::sync::watch;
use tokio::time::Instant;

use super::identity::WorkloadSvid;
use crate::client::ApiClient;

/// Longest time between two reports of an unchanged status.
pub(crate) const REPORT_PERIOD: Duration = Duration::from_secs(30);
/// How often the SVIDs are looked at for a renewal.
const CERT_POLL: Duration = Duration::from_secs(1);
/// Shortest time between two reports.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest pause between two attempts while the control plane is unreachable.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Report this agent's status forever: on change and every [`REPORT_PERIOD`].
pub(crate) async fn report_forever(
    client: Arc<ApiClient>,
    mut applied: watch::Receiver<u64>,
    svids: Vec<WorkloadSvid>,
) {
    let mut last: Option<(AgentStatusReport, Instant)> = None;
    let mut delay = Duration::from_secs(1);
    loop {
        let report = AgentStatusReport {
            config_version: *applied.borrow_and_update(),
            certs: svids
                .iter()
                .map(|s| CertExpiry {
                    service: s.service.clone(),
                    expires_unix: s.slot.validity().1,
                })
                .collect(),
        };
        let due = last
            .as_ref()
            .is_none_or(|(sent, at)| *sent != report || at.elapsed() >= REPORT_PERIOD);
        if due {
            match client.report_status(&report).await {
                Ok(ack) => {
                    tracing::debug!(
                        config_version = report.config_version,
                        store_version = ack.store_version,
                        "status reported"
                    );
                    last = Some((report, Instant::now()));
                    delay = Duration::from_secs(1);
                    tokio::time::sleep(MIN_INTERVAL).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot report status to the control plane");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
            continue;
        }
        // Wake on a new applied version, or after CERT_POLL to look at the SVIDs again. A
        // closed channel (the watch task ended) must not turn this into a busy loop.
        if let Ok(Err(_)) = tokio::time::timeout(CERT_POLL, applied.changed()).await {
            tokio::time::sleep(CERT_POLL).await;
        }
    }
}
