//! Publishing library, ingest gateway and device-fleet simulator.
