//! The Confluent wire format: magic byte 0, the schema id as 4 bytes big-endian, the body.
//! For Protobuf a message-index array sits between the id and the body: the path to the
//! message type in the `.proto` file, as zig-zag varints (a count, then each index), where
//! the common `[0]` is abbreviated to the single byte 0x00.

use crate::error::{Error, Result};

pub const MAGIC: u8 = 0;
pub const HEADER_LEN: usize = 5;

/// Prepends the Confluent header to an encoded body.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    frame_into(schema_id, &mut out);
    out.extend_from_slice(body);
    out
}

/// Writes the header into `out`, for encoders that append the body in place.
pub fn frame_into(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a framed record into schema id and body, checking the length first.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8])> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::TooShort { len: bytes.len() });
    }
    if bytes[0] != MAGIC {
        return Err(Error::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// A Confluent Protobuf record split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtobufFrame<'a> {
    pub schema_id: u32,
    /// Path to the message type in the schema's file: `[0]` is its first top-level message.
    pub message_index: Vec<i32>,
    /// The Protobuf-encoded message.
    pub body: &'a [u8],
}

/// Prepends the Confluent Protobuf header (magic, id, message index) to an encoded body.
/// An empty `message_index` is written as `[0]`, as Confluent's serializers do.
pub fn frame_protobuf(schema_id: u32, message_index: &[i32], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 1 + message_index.len() + body.len());
    frame_protobuf_into(schema_id, message_index, &mut out);
    out.extend_from_slice(body);
    out
}

/// Writes the Protobuf header into `out`, for encoders that append the body in place.
pub fn frame_protobuf_into(schema_id: u32, message_index: &[i32], out: &mut Vec<u8>) {
    frame_into(schema_id, out);
    if message_index.is_empty() || message_index == [0] {
        out.push(0);
        return;
    }
    // A Vec cannot hold more than isize::MAX elements, so the count fits unless the caller
    // builds a path longer than any .proto file nests; saturate rather than wrap.
    write_zigzag(i32::try_from(message_index.len()).unwrap_or(i32::MAX), out);
    for &index in message_index {
        write_zigzag(index, out);
    }
}

/// Splits a framed Protobuf record, checking lengths before reading: a corrupt count cannot
/// make the decoder allocate more than the record's own length.
pub fn unframe_protobuf(bytes: &[u8]) -> Result<ProtobufFrame<'_>> {
    let (schema_id, mut rest) = unframe(bytes)?;
    let count = read_zigzag(&mut rest)?;
    let message_index = match usize::try_from(count) {
        Err(_) => return Err(Error::BadMessageIndex("negative count")),
        Ok(0) => vec![0],
        // Each index takes at least one byte.
        Ok(n) if n > rest.len() => {
            return Err(Error::BadMessageIndex("count exceeds the record length"));
        }
        Ok(n) => {
            let mut indexes = Vec::with_capacity(n);
            for _ in 0..n {
                let index = read_zigzag(&mut rest)?;
                if index < 0 {
                    return Err(Error::BadMessageIndex("negative index"));
                }
                indexes.push(index);
            }
            indexes
        }
    };
    Ok(ProtobufFrame {
        schema_id,
        message_index,
        body: rest,
    })
}

fn write_zigzag(value: i32, out: &mut Vec<u8>) {
    let mut v = ((value << 1) ^ (value >> 31)) as u32;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A 32-bit zig-zag varint, as Confluent's `ByteUtils.readVarint`: at most 5 bytes.
fn read_zigzag(input: &mut &[u8]) -> Result<i32> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some((&byte, rest)) = input.split_first() else {
            return Err(Error::BadMessageIndex("truncated varint"));
        };
        *input = rest;
        if i == 4 && byte > 0x0f {
            return Err(Error::BadMessageIndex("varint exceeds 32 bits"));
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i32) ^ -((value & 1) as i32));
        }
    }
    Err(Error::BadMessageIndex("varint exceeds 32 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_and_foreign_records_are_refused() {
        assert!(matches!(unframe(&[]), Err(Error::TooShort { len: 0 })));
        assert!(matches!(
            unframe(&[0, 0, 0, 1]),
            Err(Error::TooShort { len: 4 })
        ));
        assert!(matches!(
            unframe(b"{\"json\":1}"),
            Err(Error::BadMagic(b'{'))
        ));
    }

    #[test]
    fn protobuf_message_index_matches_the_documented_bytes() {
        let header = [0, 0, 0, 0, 7];
        for (index, encoded) in [
            (&[0][..], &[0x00][..]),
            (&[][..], &[0x00][..]),
            (&[1][..], &[0x02, 0x02][..]),
            (&[0, 2][..], &[0x04, 0x00, 0x04][..]),
        ] {
            let framed = frame_protobuf(7, index, b"body");
            assert_eq!(&framed[..5], &header);
            assert_eq!(&framed[5..framed.len() - 4], encoded, "{index:?}");
            let parsed = unframe_protobuf(&framed).unwrap();
            let expected = if index.is_empty() { &[0][..] } else { index };
            assert_eq!(parsed.message_index, expected);
            assert_eq!(parsed.body, b"body");
        }
    }

    #[test]
    fn malformed_protobuf_headers_are_refused() {
        let bad = |rest: &[u8]| {
            let mut bytes = vec![0, 0, 0, 0, 1];
            bytes.extend_from_slice(rest);
            unframe_protobuf(&bytes).map(|frame| frame.message_index)
        };
        assert!(matches!(
            unframe_protobuf(&[0, 0, 0]),
            Err(Error::TooShort { len: 3 })
        ));
        assert!(matches!(
            bad(&[]),
            Err(Error::BadMessageIndex("truncated varint"))
        ));
        assert!(matches!(
            bad(&[0x01]),
            Err(Error::BadMessageIndex("negative count"))
        ));
        // A count of 1000 with two bytes after it: refused before allocating.
        assert!(matches!(
            bad(&[0xd0, 0x0f, 0x00, 0x00]),
            Err(Error::BadMessageIndex("count exceeds the record length"))
        ));
        assert!(matches!(
            bad(&[0x02, 0x01]),
            Err(Error::BadMessageIndex("negative index"))
        ));
        assert!(matches!(
            bad(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(Error::BadMessageIndex("varint exceeds 32 bits"))
        ));
        assert!(matches!(
            bad(&[0x02, 0x80]),
            Err(Error::BadMessageIndex("truncated varint"))
        ));
    }

    proptest! {
        #[test]
        fn protobuf_frame_round_trip(
            id in any::<u32>(),
            index in proptest::collection::vec(0i32..=i32::MAX, 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let framed = frame_protobuf(id, &index, &body);
            let parsed = unframe_protobuf(&framed).unwrap();
            prop_assert_eq!(parsed.schema_id, id);
            let expected = if index.is_empty() { vec![0] } else { index };
            prop_assert_eq!(parsed.message_index, expected);
            prop_assert_eq!(parsed.body, &body[..]);
        }

        #[test]
        fn zigzag_varints_round_trip(value in any::<i32>()) {
            let mut out = vec![];
            write_zigzag(value, &mut out);
            prop_assert!(out.len() <= 5);
            let mut input = &out[..];
            prop_assert_eq!(read_zigzag(&mut input).unwrap(), value);
            prop_assert!(input.is_empty());
        }

        #[test]
        fn unframe_protobuf_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..32)) {
            // A valid Avro-style header, so the random part reaches the message index.
            let mut bytes = vec![0, 0, 0, 0, 1];
            bytes.extend_from_slice(&tail);
            let body_len = unframe_protobuf(&bytes).map(|frame| frame.body.len());
            prop_assert!(body_len.is_err() || body_len.unwrap() < bytes.len());
        }

        #[test]
        fn frame_unframe_round_trip(id in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let framed = frame(id, &body);
            let (got_id, got_body) = unframe(&framed).unwrap();
            prop_assert_eq!(got_id, id);
            prop_assert_eq!(got_body, &body[..]);
        }

        #[test]
        fn unframe_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = unframe(&bytes);
        }
    }
}
