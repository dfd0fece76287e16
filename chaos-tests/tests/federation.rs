//! Federation handshake between two real control planes (issue D, DESIGN §7): `meshctl
//! federate token` on east, `meshctl federate join` on west, through the real token flow.
//!
//! Properties:
//! - after the handshake both Raft groups record the peering ACTIVE, each with the other's
//!   trust domain and CA bundle (fingerprint equal to the peer's own), never merged;
//! - a reused, expired, tampered, other-cluster or forged token is refused with a message
//!   that names the reason, and records nothing;
//! - `federate remove` ends the peering on the side it runs.
//!
//! The gateways and cross-cluster calls are not built yet; this file covers the control
//! plane's half. Reproduce: `cargo build -p mesh-node --bins && cargo test -p
//! mesh-chaos-tests --test federation -- --nocapture`.

use std::time::Duration;

use mesh_chaos_tests::control::ControlCluster;
use mesh_node::client::ClientError;
use mesh_proto::federation::{
    FederationJoinRequest, FederationToken, FederationTokenRequest, PeeringState,
};

/// Run meshctl against `cl`; (exit code, stdout, stderr).
fn meshctl(cl: &ControlCluster, args: &[&str]) -> (i32, String, String) {
    match cl.run_meshctl(args) {
        Ok(r) => r,
        Err(e) => panic!("cannot run meshctl (cargo build -p mesh-node --bins?): {e}"),
    }
}

fn refusal(r: Result<mesh_proto::federation::Peering, ClientError>) -> String {
    match r {
        Err(ClientError::Api { error, .. }) => error.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_federate_with_a_single_use_token_and_bad_tokens_are_refused() {
    let test = "two_clusters_federate_with_a_single_use_token_and_bad_tokens_are_refused";
    let mut east = ControlCluster::start(&format!("{test}-east"), 71, 3).expect("east");
    east.env.set_reproduce(
        "cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test federation -- --nocapture",
    );
    let west = ControlCluster::start(&format!("{test}-west"), 72, 1).expect("west");
    let south = ControlCluster::start(&format!("{test}-south"), 73, 1).expect("south");
    let (east_op, west_op, south_op) = (
        east.client().unwrap(),
        west.client().unwrap(),
        south.client().unwrap(),
    );

    // The real CLI flow: token on east, join on west.
    let (code, token, err) = meshctl(
        &east,
        &["federate", "token", "--peer", "c72", "--expires", "1h"],
    );
    assert_eq!(code, 0, "federate token: {err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("meshfed1."), "{token}");
    assert!(err.contains("single-use token for peer c72"), "{err}");
    let (code, out, err) = meshctl(&west, &["federate", "join", &token]);
    assert_eq!(code, 0, "federate join: {out}{err}");
    assert!(
        out.contains("peering with cluster c71 (c71.mesh) is ACTIVE"),
        "{out}"
    );

    // Both sides record the other, with the other's own CA.
    let (code, json, err) = meshctl(&east, &["federate", "list", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let east_view: mesh_proto::federation::PeerList = serde_json::from_str(&json).unwrap();
    assert_eq!(east_view.peers.len(), 1);
    let p = &east_view.peers[0];
    assert_eq!(
        (p.name.as_str(), p.trust_domain.as_str()),
        ("c72", "c72.mesh")
    );
    assert_eq!(
        p.ca_fingerprint, west.ca_fingerprint,
        "east stores west's own CA"
    );
    assert_eq!(p.state, PeeringState::Active);
    let west_view = west_op.federation_peers().await.unwrap();
    assert_eq!(west_view.peers.len(), 1);
    assert_eq!(west_view.peers[0].ca_fingerprint, east.ca_fingerprint);
    let (code, table, _) = meshctl(&west, &["federate", "list"]);
    assert_eq!(code, 0);
    assert!(table.contains("c71") && table.contains("ACTIVE"), "{table}");

    // Reused: the secret is spent.
    let again = west_op
        .federation_join(&FederationJoinRequest {
            token: token.clone(),
            gateways: vec![],
        })
        .await;
    let msg = refusal(again);
    assert!(msg.contains("already used"), "{msg}");

    // Issued for another cluster: refused by the redeemer before it dials anyone.
    let for_west = east_op
        .federation_token(&FederationTokenRequest {
            peer: "c72".into(),
            ttl_secs: 600,
            gateways: vec![],
        })
        .await
        .unwrap()
        .token;
    let msg = refusal(
        south_op
            .federation_join(&FederationJoinRequest {
                token: for_west.clone(),
                gateways: vec![],
            })
            .await,
    );
    assert!(
        msg.contains("issued by cluster c71 for peer c72, but this cluster is c73"),
        "{msg}"
    );

    // Tampered: another CA swapped in (an attacker's bundle) no longer matches the pin.
    let mut t: FederationToken = mesh_core::federation::decode_token(&for_west).unwrap();
    let rogue = mesh_core::identity::generate_ca(
        &mesh_proto::ClusterName::new("c71").unwrap(),
        &mesh_proto::TrustDomain::new("c71.mesh").unwrap(),
        mesh_node::clock::now_unix_ms() / 1000 - 60,
    )
    .unwrap();
    t.ca_pem = rogue.cert_pem;
    let msg = refusal(
        west_op
            .federation_join(&FederationJoinRequest {
                token: mesh_core::federation::encode_token(&t),
                gateways: vec![],
            })
            .await,
    );
    assert!(msg.contains("altered"), "{msg}");

    // Forged: right shape and pin, a secret east never issued.
    let mut t: FederationToken = mesh_core::federation::decode_token(&for_west).unwrap();
    t.secret = "mffed_forged".into();
    let msg = refusal(
        west_op
            .federation_join(&FederationJoinRequest {
                token: mesh_core::federation::encode_token(&t),
                gateways: vec![],
            })
            .await,
    );
    assert!(msg.contains("never issued this token"), "{msg}");

    // Expired.
    let short = east_op
        .federation_token(&FederationTokenRequest {
            peer: "c72".into(),
            ttl_secs: 1,
            gateways: vec![],
        })
        .await
        .unwrap();
    while mesh_core::federation::decode_token(&short.token)
        .map(|t| t.expires_unix_ms)
        .unwrap()
        > mesh_node::clock::now_unix_ms()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let msg = refusal(
        west_op
            .federation_join(&FederationJoinRequest {
                token: short.token,
                gateways: vec![],
            })
            .await,
    );
    assert!(msg.contains("expired at"), "{msg}");
    assert!(
        msg.contains("meshctl federate token"),
        "says what to do: {msg}"
    );

    // Nothing was recorded by the refused attempts.
    assert_eq!(south_op.federation_peers().await.unwrap().peers.len(), 0);
    assert_eq!(east_op.federation_peers().await.unwrap().peers.len(), 1);

    // Remove on west.
    let (code, out, err) = meshctl(&west, &["federate", "remove", "c71"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    assert!(west_op.federation_peers().await.unwrap().peers.is_empty());
    let (code, _, err) = meshctl(&west, &["federate", "remove", "c71"]);
    assert_eq!(code, 1);
    assert!(err.contains("no peer named c71"), "{err}");
}
