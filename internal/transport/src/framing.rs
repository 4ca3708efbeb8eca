//! Wire format: a 4-byte big-endian length then that many bytes of UTF-8 JSON, and the Hello frame
//! that marks a connection as coming from a peer.

use bytes::Bytes;
use serde::Deserialize;
use tokio_util::codec::LengthDelimitedCodec;

/// Size of the length prefix preceding each frame payload.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The codec used on every connection, peer or client. The default builder layout is exactly the wire
/// format (u32 big-endian length, no adjustment, prefix stripped on read); only the limit is configured.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// Only used to parse the first frame of an inbound connection.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum Handshake {
    Hello { node_id: u64 },
}

/// The payload of the Hello frame `{"type":"Hello","node_id":N}`.
///
/// Formatted by hand because it cannot fail that way, whereas a serializer returns a `Result`.
pub fn encode_hello(node_id: u64) -> Bytes {
    Bytes::from(format!("{{\"type\":\"Hello\",\"node_id\":{node_id}}}"))
}

/// Returns the sender's node id if `frame` is a Hello frame, `None` for anything else
/// (which makes the connection a client connection).
pub fn parse_hello(frame: &[u8]) -> Option<u64> {
    match serde_json::from_slice::<Handshake>(frame) {
        Ok(Handshake::Hello { node_id }) => Some(node_id),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn hello_roundtrip() {
        assert_eq!(parse_hello(&encode_hello(7)), Some(7));
        assert_eq!(parse_hello(&encode_hello(u64::MAX)), Some(u64::MAX));
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
