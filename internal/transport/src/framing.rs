//! Wire format: a 4-byte big-endian length then that many bytes of UTF-8 JSON, and the Hello frame
//! that marks a connection as coming from a peer.

use bytes::Bytes;
use tokio_util::codec::LengthDelimitedCodec;

pub use crate::security::handshake::HandshakeFrame;

/// Size of the length prefix preceding each frame payload.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The codec used on every connection, peer or client. The default builder layout is exactly the wire
/// format (u32 big-endian length, no adjustment, prefix stripped on read); only the limit is configured.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// The first frame of a peer connection: who the sender says it is, and (with a cluster secret)
/// its handshake nonce in hex. `security::handshake` decides whether to believe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node_id: u64,
    pub nonce: Option<String>,
}

/// The payload of an unauthenticated Hello frame `{"type":"Hello","node_id":N}`.
pub fn encode_hello(node_id: u64) -> Bytes {
    HandshakeFrame::Hello {
        node_id,
        nonce: None,
    }
    .encode()
}

/// The Hello if `frame` is one, `None` for anything else (which makes the connection a client
/// connection).
pub fn parse_hello(frame: &[u8]) -> Option<Hello> {
    match HandshakeFrame::decode(frame)? {
        HandshakeFrame::Hello { node_id, nonce } => Some(Hello { node_id, nonce }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn hello_roundtrip() {
        let id = |f: &[u8]| parse_hello(f).map(|h| h.node_id);
        assert_eq!(id(&encode_hello(7)), Some(7));
        assert_eq!(id(&encode_hello(u64::MAX)), Some(u64::MAX));
        let with_nonce = parse_hello(br#"{"type":"Hello","node_id":2,"nonce":"ab"}"#).unwrap();
        assert_eq!(with_nonce.nonce.as_deref(), Some("ab"));
        assert_eq!(&encode_hello(3)[..], br#"{"type":"Hello","node_id":3}"#);
    }

    #[test]
    fn non_hello_frames_are_not_hello() {
        for frame in [
            &b""[..],
            b"garbage",
            b"{}",
            br#"{"type":"Get","key":"a"}"#,
            br#"{"type":"Hello"}"#,
            br#"{"type":"Hello","node_id":-1}"#,
            br#"{"type":"Hello","node_id":"2"}"#,
            br#"{"type":"Auth","proof":"00"}"#,
            b"[1,2]",
        ] {
            assert_eq!(
                parse_hello(frame),
                None,
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn codec_layout_is_u32_big_endian_prefix() {
        let mut c = codec(1024);
        let mut buf = BytesMut::new();
        c.encode(Bytes::from_static(b"abc"), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 3, b'a', b'b', b'c']);
        let frame = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame[..], b"abc");
    }

    #[test]
    fn codec_rejects_oversized_frames() {
        let mut c = codec(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
        assert!(c.decode(&mut buf).is_err());
    }
}
