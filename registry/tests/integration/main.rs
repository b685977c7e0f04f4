//! Integration tests against a real broker (the development stack's Apache Kafka) and a running
//! registry. One test binary, so the heavy dependencies are linked once.

mod common;
mod converter;
mod http_api;
mod restart;
