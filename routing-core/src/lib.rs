//! The router's pure core: what it knows about each patient ([`state`]), who may receive
//! an event ([`decision`]), which alerts a reading raises ([`alerts`]), what a retraction
//! or correction of a delivered reading is ([`delivered`]) and whose deliveries a consent
//! change ended ([`sharing`]). Functions of their inputs and the time: no Kafka, no I/O.
//! The router (`dho-router`) does the I/O around them; these are tested with unit and
//! property tests alone.

pub mod alerts;
pub mod decision;
pub mod delivered;
pub mod sharing;
pub mod state;
