//! The gossip calls of the API client: join info (agents), members and keyring (operators).

use std::time::Duration;

use http::Method;
use mesh_proto::gossip::{GossipJoinInfo, KeyringRequest, KeyringResponse, MembersResponse};

use super::{ApiClient, ClientError};

impl ApiClient {
    /// The keyring and seeds; long-polls up to `wait` while the keyring's ids equal `known`.
    pub async fn gossip_join_info(
        &self,
        known: &[u32],
        wait: Duration,
    ) -> Result<GossipJoinInfo, ClientError> {
        let known: Vec<String> = known.iter().map(u32::to_string).collect();
        let path = format!(
            "/v1/gossip?known={}&wait_ms={}",
            known.join(","),
            wait.as_millis()
        );
        self.call_with_timeout(
            Method::GET,
            &path,
            None::<&()>,
            Some(wait + Duration::from_secs(10)),
        )
        .await
    }

    /// The answering control node's view of the pool (operator).
    pub async fn gossip_members(&self) -> Result<MembersResponse, ClientError> {
        self.call(Method::GET, "/v1/gossip/members", None::<&()>)
            .await
    }

    /// Change the keyring (operator).
    pub async fn gossip_keyring(
        &self,
        req: &KeyringRequest,
    ) -> Result<KeyringResponse, ClientError> {
        self.call(Method::POST, "/v1/gossip/keyring", Some(req))
            .await
    }

    /// The keyring's ids, the sealing one first (operator).
    pub async fn gossip_keyring_list(&self) -> Result<KeyringResponse, ClientError> {
        self.call(Method::GET, "/v1/gossip/keyring", None::<&()>)
            .await
    }
}
