//! The CA's CSR signer on what a requester sends: `check_csr` on PEM text, then `sign_svid`
//! (which decodes and verifies the CSR again) with the cluster CA. The first byte picks whether
//! the rest is PEM text or DER to be wrapped in PEM, so the DER parser is reached directly.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use mesh_core::identity::{Requester, check_csr, generate_ca, sign_svid};
use mesh_proto::command::CaMaterial;
use mesh_proto::{ClusterName, ServiceName, SpiffeId, TrustDomain};

const NOW: u64 = 1_750_000_000;

struct Ca {
    td: TrustDomain,
    ca: CaMaterial,
    id: SpiffeId,
}

static CA: LazyLock<Option<Ca>> = LazyLock::new(|| {
    let td = TrustDomain::new("east.mesh").ok()?;
    let ca = generate_ca(&ClusterName::new("east").ok()?, &td, NOW).ok()?;
    let id = SpiffeId::workload(&td, "default", &ServiceName::new("api").ok()?);
    Some(Ca { td, ca, id })
});

fuzz_target!(|data: &[u8]| {
    let (Some(ca), Some((&mode, rest))) = (CA.as_ref(), data.split_first()) else {
        return;
    };
    let pem = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    };
    let asked = check_csr(&pem, &ca.td, &Requester::Operator);
    let _ = sign_svid(&ca.ca, &pem, asked.as_ref().unwrap_or(&ca.id), 3600, NOW);
});
