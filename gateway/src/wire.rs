//! Reading and writing the tunnel's framing on any async stream: the length-prefixed preamble
//! (bounded by `MAX_PREAMBLE_BYTES`, under a deadline) and the one-byte status.
//!
//! The shapes and the decode are `mesh_proto::tunnel`'s; this file only does the I/O around
//! them and maps a timeout or a short read to a malformed preamble.

use std::time::Duration;

use mesh_proto::tunnel::{MAX_PREAMBLE_BYTES, Preamble, PreambleError, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one framed preamble within `deadline`. I/O failures and timeouts are `Malformed`:
/// the caller answers with a status either way (if the stream still takes it).
pub(crate) async fn read_preamble<R: AsyncRead + Unpin>(
    r: &mut R,
    deadline: Duration,
) -> Result<Preamble, PreambleError> {
    let read = async {
        let mut header = [0u8; 4];
        r.read_exact(&mut header).await.map_err(io_malformed)?;
        let len = Preamble::body_len(header)?;
        let mut body = [0u8; MAX_PREAMBLE_BYTES];
        let body = &mut body[..len];
        r.read_exact(body).await.map_err(io_malformed)?;
        Preamble::decode(body)
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err(PreambleError::Malformed {
            reason: format!("no complete preamble within {deadline:?}"),
        }),
    }
}

/// Reads the peer's status byte within `deadline`; `None` on timeout, EOF or an unknown byte.
pub(crate) async fn read_status<R: AsyncRead + Unpin>(
    r: &mut R,
    deadline: Duration,
) -> Option<Status> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(deadline, r.read_exact(&mut b)).await {
        Ok(Ok(_)) => Status::from_byte(b[0]),
        _ => None,
    }
}

pub(crate) async fn write_status<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: Status,
) -> std::io::Result<()> {
    w.write_all(&[status.to_byte()]).await?;
    w.flush().await
}

fn io_malformed(e: std::io::Error) -> PreambleError {
    PreambleError::Malformed {
        reason: format!("stream ended inside the preamble: {e}"),
    }
}
