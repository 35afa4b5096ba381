//! Frames on an agent stream: a 4-byte big-endian length, then one prost
//! message of that many bytes. A frame longer than the reader's limit is
//! refused before any of it is read, and a frame within it is read into
//! memory as its bytes arrive: a peer that claims a length and sends
//! nothing more costs the reader nothing. The limit is the caller's: far
//! lower where the peer is not yet authenticated
//! ([`MAX_UNAUTHENTICATED`]) than on a session with a known node.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side sends or accepts by default: a snapshot
/// of a node's pods and what they reference stays far below it.
pub const MAX_FRAME: usize = 64 << 20;

/// The largest frame read from a peer not yet authenticated (a joiner's
/// request for the CA or a certificate, or a master's answer before the
/// joiner trusts it): a CSR, a token, a CA certificate fit many times over.
pub const MAX_UNAUTHENTICATED: usize = 64 << 10;

/// The most a read sets aside before any of a frame's bytes arrive; past
/// that the buffer grows with what is actually read.
const FIRST_READ: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Write `msg` as one frame.
pub async fn write<M: Message, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &M,
) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut buf)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    w.write_all(&buf).await?;
    Ok(())
}

/// Read one frame; `Ok(None)` when the stream ended cleanly between frames.
pub async fn read<M: Message + Default, R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<M>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Not `vec![0; len]`: the length is the peer's claim, not yet a fact.
    let mut buf = Vec::with_capacity(len.min(FIRST_READ));
    let got = (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if got < len {
        return Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the stream ended {got} bytes into a frame of {len}"),
        )));
    }
    Ok(Some(M::decode(buf.as_slice())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{AgentRequest, CaRequest};

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let msg = AgentRequest {
            request: Some(crate::agent::agent_request::Request::Ca(CaRequest {})),
        };
        write(&mut a, &msg).await.unwrap();
        let got: AgentRequest = read(&mut b, MAX_FRAME).await.unwrap().unwrap();
        assert_eq!(got, msg);

        a.write_all(&(1000u32).to_be_bytes()).await.unwrap();
        let err = read::<AgentRequest, _>(&mut b, 100).await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 1000,
                    max: 100
                }
            ),
            "{err}"
        );

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        let err = read::<AgentRequest, _>(&mut b, 100).await.unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");

        drop(a);
        assert!(read::<AgentRequest, _>(&mut b, 100)
            .await
            .unwrap()
            .is_none());
    }

    /// The length is checked before any of the body is read: the reader
    /// is left just past the header.
    #[tokio::test]
    async fn a_frame_over_the_cap_is_refused_before_its_body_is_read() {
        let mut bytes = (100u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7u8; 100]);
        let mut r: &[u8] = &bytes;
        let err = read::<AgentRequest, _>(&mut r, 50).await.unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len: 100, max: 50 }),
            "{err}"
        );
        assert_eq!(r.len(), 100, "nothing of the body was read");
    }

    /// A frame cut short is an error, not a shorter message.
    #[tokio::test]
    async fn a_frame_cut_short_is_an_error() {
        let msg = AgentRequest {
            request: Some(crate::agent::agent_request::Request::Ca(CaRequest {})),
        };
        let mut whole = Vec::new();
        write(&mut whole, &msg).await.unwrap();
        let claimed = (whole.len() as u32 - 4 + 10).to_be_bytes();
        whole[..4].copy_from_slice(&claimed);
        let err = read::<AgentRequest, _>(&mut whole.as_slice(), MAX_FRAME)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err}"
        );
    }
}
