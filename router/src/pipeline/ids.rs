//! Delivery ids: deterministic, so a batch routed again produces the same ids and the
//! consumer SDK drops the repeats. Made once per delivery on the hot path, hence written
//! into buffers instead of formatted.

use dho_schemas::model::SourcePosition;

/// The namespace of delivery ids (UUID v5 of source position and subscriber).
const DELIVERY_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1f_4c2e_9d3b_4e8a_a5c7_1b2d_3e4f_5a6b);

/// `Uuid::new_v5(&DELIVERY_ID_NAMESPACE, name)`, with a SHA-1 that uses the CPU's SHA
/// instructions where it has them (uuid's own is portable code: 4% of the router's CPU).
fn uuid_v5(name: &[u8]) -> uuid::Uuid {
    uuid_v5_of(&[name])
}

/// [`uuid_v5`] of the concatenation of `parts` (no buffer to join them in).
fn uuid_v5_of(parts: &[&[u8]]) -> uuid::Uuid {
    use sha1::Digest;
    let mut hash = sha1::Sha1::new();
    hash.update(DELIVERY_ID_NAMESPACE.as_bytes());
    for part in parts {
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The deterministic id of the delivery of a source record to a subscriber.
pub fn delivery_id(source: &SourcePosition, subscriber_id: &str) -> String {
    delivery_id_into(source, subscriber_id, &mut [0; 36]).to_string()
}

/// [`delivery_id`] written into `out` (no allocation or formatting per delivery): the
/// UUID v5 of `<topic>/<partition>/<offset>/<subscriber>`.
pub(super) fn delivery_id_into<'b>(
    source: &SourcePosition,
    subscriber_id: &str,
    out: &'b mut [u8; 36],
) -> &'b str {
    let (mut partition, mut offset) = ([0; 20], [0; 20]);
    uuid_v5_of(&[
        source.topic.as_bytes(),
        b"/",
        decimal(source.partition.into(), &mut partition),
        b"/",
        decimal(source.offset, &mut offset),
        b"/",
        subscriber_id.as_bytes(),
    ])
    .hyphenated()
    .encode_lower(out)
}

/// `value` in decimal, as `Display` writes it, in `buffer`.
fn decimal(value: i64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut rest = value.unsigned_abs();
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        start -= 1;
        buffer[start] = b'-';
    }
    &buffer[start..]
}

/// The deterministic id of an alert's delivery to a subscriber (the alert id is
/// deterministic too, so a replay produces the same delivery id), written into `out`, with
/// `name` as scratch.
pub(super) fn alert_delivery_id_into<'b>(
    alert_id: &str,
    subscriber_id: &str,
    name: &mut String,
    out: &'b mut [u8; 36],
) -> &'b str {
    use std::fmt::Write;
    name.clear();
    let _ = write!(name, "alert/{alert_id}/{subscriber_id}");
    uuid_v5(name.as_bytes()).hyphenated().encode_lower(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids written into a buffer are the ids of the contract: UUID v5 of the names below.
    #[test]
    fn delivery_ids_are_uuid_v5_of_position_and_subscriber() {
        let source = SourcePosition {
            topic: "dho.measurements".into(),
            partition: 2,
            offset: 1_234_567,
        };
        let v5 =
            |name: &str| uuid::Uuid::new_v5(&DELIVERY_ID_NAMESPACE, name.as_bytes()).to_string();
        assert_eq!(
            delivery_id(&source, "gp"),
            v5("dho.measurements/2/1234567/gp")
        );
        let mut name = String::from("left over");
        let mut out = [0; 36];
        assert_eq!(
            delivery_id_into(&source, "gp", &mut out),
            v5("dho.measurements/2/1234567/gp")
        );
        for n in [0, 7, 10, -1, -10, i64::MAX, i64::MIN, 1_000_000_000_000] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
        let far = SourcePosition {
            topic: "t".into(),
            partition: i32::MAX,
            offset: i64::MAX,
        };
        assert_eq!(
            delivery_id(&far, "s"),
            v5(&format!("t/{}/{}/s", i32::MAX, i64::MAX))
        );
        assert_eq!(
            alert_delivery_id_into("a-1", "home", &mut name, &mut out),
            v5("alert/a-1/home")
        );
        // Every length around SHA-1's 64-byte blocks and its padding boundary.
        for len in 0..200 {
            let name: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            assert_eq!(
                uuid_v5(name.as_bytes()).to_string(),
                v5(&name),
                "length {len}"
            );
        }
    }
}
