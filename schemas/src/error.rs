use crate::validate::ValidationError;

/// Errors of the data contract: framing, encoding, decoding, validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("record too short for the Confluent wire format: {len} bytes, at least 5 needed")]
    TooShort { len: usize },
    #[error("not the Confluent wire format: magic byte {0:#04x}, expected 0x00")]
    BadMagic(u8),
    #[error("cannot encode {kind} as Avro: {detail}")]
    Encode { kind: &'static str, detail: String },
    #[error("cannot decode {kind} from Avro: {detail}")]
    Decode { kind: &'static str, detail: String },
    #[error("{count} bytes left over after decoding {kind}: not a {kind} record")]
    TrailingBytes { kind: &'static str, count: usize },
    #[error("malformed Confluent Protobuf message-index array: {0}")]
    BadMessageIndex(&'static str),
    #[error("message index {index:?} names no event type in dho/v1/events.proto")]
    UnknownMessageIndex { index: Vec<i32> },
    #[error("invalid record: {0}")]
    Invalid(#[from] ValidationError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
