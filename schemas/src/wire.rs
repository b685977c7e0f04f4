//! The Confluent wire format: magic byte 0, the schema id as 4 bytes big-endian, the body.

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

    proptest! {
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
