//! The router's pure core: what it knows about each patient ([`state`]), who may receive
//! an event ([`decision`]), which alerts a reading raises ([`alerts`]), on one track per
//! plan owner ([`tracks`]), what a retraction or correction of a delivered reading is
//! ([`delivered`]), whose deliveries a consent change ended ([`sharing`]) and whether a
//! consent change widens or narrows sharing ([`authority`]). Functions of their inputs and
//! the time: no Kafka, no I/O. The router (`dho-router`) does the I/O around them; these are
//! tested with unit and property tests alone.

pub mod alerts;
pub mod authority;
pub mod decision;
pub mod delivered;
pub mod sharing;
pub mod state;
pub mod tracks;
