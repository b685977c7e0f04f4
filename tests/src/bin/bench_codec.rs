//! Codec benchmark: encode and decode rates on one core, for Measurement and Delivery, on
//! the hub's fast path (`codec::encode` / `codec::decode`, schema-aware serde with no value
//! tree) and, in the same run, the generic apache-avro path as a baseline (`to_value` +
//! `GenericDatumWriter`, `read_value` + `from_value`). A program that prints figures, not a
//! timed test. Run it in release mode:
//!
//! ```sh
//! cargo run --release -p dho-tests --bin bench_codec
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use dho_schemas::codec::{self, AvroRecord};
use dho_schemas::fixtures;
use dho_schemas::model::{Delivery, Measurement};

/// Distinct records per run, cycled: enough to defeat caching effects of a single record.
const RECORDS: usize = 2_000;
/// Each case runs at least this long, after a warm-up.
const MIN_RUN: Duration = Duration::from_secs(2);

/// Runs `op` over every record repeatedly for at least [`MIN_RUN`]; returns records/s.
fn rate<T>(records: &[T], mut op: impl FnMut(&T)) -> f64 {
    for r in records {
        op(r);
    }
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < MIN_RUN {
        for r in records {
            op(r);
        }
        done += records.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn report(name: &str, path: &str, op: &str, per_sec: f64, avg_bytes: f64) {
    println!(
        "{name:<12} {path:<9} {op:<7} {:>12.0} records/s {:>9.1} MB/s",
        per_sec,
        per_sec * avg_bytes / 1e6
    );
}

fn bench<T: AvroRecord + PartialEq + std::fmt::Debug>(name: &str, values: &[T]) {
    let schema = T::KIND.schema();
    let encoded: Vec<Vec<u8>> = values.iter().map(|v| codec::encode(v).unwrap()).collect();
    let avg = encoded.iter().map(Vec::len).sum::<usize>() as f64 / encoded.len() as f64;
    let writer = GenericDatumWriter::builder(schema).build().unwrap();
    let reader = GenericDatumReader::builder(schema).build().unwrap();

    // Both paths must produce and accept the same bytes, or the comparison is meaningless.
    let generic = |v: &T| {
        let value = apache_avro::to_value(v).unwrap().resolve(schema).unwrap();
        let mut out = Vec::with_capacity(512);
        writer.write_value_ref(&mut out, &value).unwrap();
        out
    };
    assert_eq!(generic(&values[0]), encoded[0]);
    let read_generic = |bytes: &[u8]| {
        let value = reader.read_value(&mut &bytes[..]).unwrap();
        apache_avro::from_value::<T>(&value).unwrap()
    };
    assert_eq!(read_generic(&encoded[0]), values[0]);

    let mut buf = Vec::with_capacity(512);
    let fast_encode = rate(values, |v| {
        buf.clear();
        codec::encode_into(v, &mut buf).unwrap();
        black_box(&buf);
    });
    let generic_encode = rate(values, |v| {
        black_box(generic(v));
    });
    let fast_decode = rate(&encoded, |b| {
        black_box(codec::decode::<T>(b).unwrap());
    });
    let generic_decode = rate(&encoded, |b| {
        black_box(read_generic(b));
    });
    println!("{name}: {avg:.0} bytes per record (Avro body)");
    report(name, "fast", "encode", fast_encode, avg);
    report(name, "generic", "encode", generic_encode, avg);
    report(name, "fast", "decode", fast_decode, avg);
    report(name, "generic", "decode", generic_decode, avg);
    println!(
        "{name}: fast/generic = {:.2}x encode, {:.2}x decode",
        fast_encode / generic_encode,
        fast_decode / generic_decode
    );
}

fn main() {
    let measurements: Vec<Measurement> = (0..RECORDS)
        .map(|i| {
            let patient = fixtures::patient(i as u64);
            let at = 1_700_000_000_000 + i as i64 * 60_000;
            if i % 4 == 0 {
                fixtures::blood_pressure(&patient, 120.0 + (i % 40) as f64, 80.0, at)
            } else {
                fixtures::spo2(&patient, 88.0 + (i % 12) as f64, at)
            }
        })
        .collect();
    let deliveries: Vec<Delivery> = measurements.iter().map(fixtures::delivery_of).collect();
    println!(
        "codec benchmark: one thread (= per core), {RECORDS} distinct records cycled, \
         at least {}s per case",
        MIN_RUN.as_secs()
    );
    bench("Measurement", &measurements);
    bench("Delivery", &deliveries);
}
