//! What a TLS peer presents: `spiffe_id_of` and `verify_svid` on certificate DER (as the leaf,
//! and as an intermediate under it), and a federation peer's root as a `TrustBundles` entry.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mesh_core::identity::{TrustBundles, Usage, generate_ca, spiffe_id_of, verify_svid};
use mesh_proto::{ClusterName, TrustDomain};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const NOW: u64 = 1_750_000_000;

static BUNDLES: LazyLock<Option<(TrustDomain, TrustBundles)>> = LazyLock::new(|| {
    let td = TrustDomain::new("east.mesh").ok()?;
    let ca = generate_ca(&ClusterName::new("east").ok()?, &td, NOW).ok()?;
    let root = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).ok()?;
    let mut bundles = TrustBundles::new();
    bundles.insert_der(td.clone(), vec![root]).ok()?;
    Some((td, bundles))
});

fuzz_target!(|data: &[u8]| {
    let Some((td, bundles)) = BUNDLES.as_ref() else {
        return;
    };
    let _ = spiffe_id_of(data);
    let cert = CertificateDer::from(data);
    let _ = verify_svid(std::slice::from_ref(&cert), bundles, Usage::Server, NOW);
    let _ = verify_svid(&[cert.clone(), cert.clone()], bundles, Usage::Client, NOW);
    let _ = TrustBundles::new().insert_der(td.clone(), vec![cert.into_owned()]);
});
