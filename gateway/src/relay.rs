//! The relay: copies opaque bytes both ways between two streams with one bounded buffer per
//! direction, until both directions reach EOF or either fails. Flow control is the streams'
//! own (QUIC stream windows, TCP): a slow reader stops the copy, nothing queues.
//!
//! The relay never parses what it copies. The optional [`RelayTap`] sees each chunk after it
//! was read, so tests can prove a gateway only ever handles ciphertext.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where in a gateway a chunk was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TapPoint {
    /// Local side, sidecar → peer gateway (after the outer TLS is removed).
    LocalOutbound,
    /// Local side, peer gateway → sidecar.
    LocalInbound,
    /// Remote side, peer gateway → endpoint.
    RemoteToEndpoint,
    /// Remote side, endpoint → peer gateway.
    RemoteFromEndpoint,
}

/// Observes relayed bytes. For tests and diagnostics; must not block.
pub trait RelayTap: Send + Sync {
    fn observe(&self, point: TapPoint, bytes: &[u8]);
}

/// Bytes copied in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Copied {
    pub(crate) a_to_b: u64,
    pub(crate) b_to_a: u64,
}

/// Copies `a ⇄ b` until both directions finish. An EOF on one side is passed on as a write
/// shutdown (QUIC: FIN) on the other, so half-closed protocols keep working.
pub(crate) async fn relay<A, B>(
    a: A,
    b: B,
    buffer_bytes: usize,
    tap: Option<(&dyn RelayTap, TapPoint, TapPoint)>,
) -> std::io::Result<Copied>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (tap_ab, tap_ba) = match tap {
        Some((t, ab, ba)) => (Some((t, ab)), Some((t, ba))),
        None => (None, None),
    };
    let (a_to_b, b_to_a) = tokio::try_join!(
        copy_one_way(&mut ar, &mut bw, buffer_bytes, tap_ab),
        copy_one_way(&mut br, &mut aw, buffer_bytes, tap_ba),
    )?;
    Ok(Copied { a_to_b, b_to_a })
}

async fn copy_one_way<R, W>(
    r: &mut R,
    w: &mut W,
    buffer_bytes: usize,
    tap: Option<(&dyn RelayTap, TapPoint)>,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer_bytes.max(1)];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        if let Some((t, point)) = tap {
            t.observe(point, &buf[..n]);
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        total += n as u64;
    }
}
