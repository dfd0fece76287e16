//! Builders for meshfed's rustls configs: TLS 1.3 only, on the ring provider named explicitly,
//! so nothing depends on a process-default crypto provider.
//!
//! This file turns PEM into configs. It does not decide which peers are acceptable; the
//! verifiers in `tls.rs` do, and callers pass them in.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;

use super::IdentityError;

/// A TLS 1.3 server config on the ring provider. `cert_chain_pem` must be the leaf followed by
/// its CA certificate: the full chain is served so `PinnedCaServerVerifier` can see the CA.
/// `client_verifier: None` means no client authentication.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, IdentityError> {
    let chain = cert_chain(cert_chain_pem, "server certificate chain")?;
    if chain.len() < 2 {
        return Err(IdentityError::Pem {
            what: "server certificate chain",
            reason: "give the leaf followed by its CA certificate, not the leaf alone".into(),
        });
    }
    let key = private_key(key_pem)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| IdentityError::Tls { source })?;
    let builder = match client_verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| IdentityError::Tls { source })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3 client config on the ring provider, presenting `client_cert` (chain PEM, key PEM)
/// when given.
pub fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    client_cert: Option<(&str, &str)>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, IdentityError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| IdentityError::Tls { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some((chain_pem, key_pem)) => builder
            .with_client_auth_cert(
                cert_chain(chain_pem, "client certificate chain")?,
                private_key(key_pem)?,
            )
            .map_err(|source| IdentityError::Tls { source })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn cert_chain(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(IdentityError::Pem {
            what,
            reason: "no CERTIFICATE section".into(),
        });
    }
    Ok(chain)
}

pub(super) fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| IdentityError::Pem {
        what: "private key",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use mesh_proto::{ClusterName, NodeName, SpiffeId, TrustDomain};

    use super::*;
    use crate::identity::{
        PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier, TrustBundles, generate_ca,
        generate_csr, sign_svid,
    };

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn configs_build_tls13_with_alpn_and_servers_need_the_full_chain() {
        let td = TrustDomain::new("east.mesh").unwrap();
        let ca = generate_ca(&ClusterName::new("east").unwrap(), &td, NOW).unwrap();
        let mut bundles = TrustBundles::new();
        bundles.insert_pem(td.clone(), &ca.cert_pem).unwrap();
        let bundles = Arc::new(bundles);
        let id = SpiffeId::control(&td, &NodeName::new("c1").unwrap());
        let kc = generate_csr(&id).unwrap();
        let svid = sign_svid(&ca, &kc.csr_pem, &id, 3600, NOW).unwrap();
        let (chain, key) = (format!("{}{}", svid.cert_pem, ca.cert_pem), kc.key_pem);
        let client_v = SpiffeClientVerifier::new(bundles.clone(), PeerPolicy::AnyKnown, true);
        let server = server_config(&chain, &key, Some(client_v), &[b"mesh/1"]).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"mesh/1".to_vec()]);
        let leaf_only = chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap();
        assert!(matches!(
            server_config(leaf_only, &key, None, &[]),
            Err(IdentityError::Pem {
                what: "server certificate chain",
                ..
            })
        ));
        assert!(matches!(
            server_config(&chain, "no key", None, &[]),
            Err(IdentityError::Pem {
                what: "private key",
                ..
            })
        ));
        let server_v = SpiffeServerVerifier::new(bundles.clone(), PeerPolicy::AnyKnown);
        let client = client_config(server_v, Some((&chain, &key)), &[b"mesh/1"]).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"mesh/1".to_vec()]);
        assert!(client.client_auth_cert_resolver.has_certs());
    }
}
