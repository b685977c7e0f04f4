//! `dho-admin`'s pieces, one concern each (the program is `main.rs`): its configuration,
//! operator input checked into contract records, the changes it makes (one definition for
//! a command and a line of a bulk file), bulk application, dead-letter redrive, enrolments, and a
//! credential's recent consent changes (listed and undone).

pub mod bulk;
pub mod change;
pub mod config;
pub mod input;
pub mod redrive;
pub mod review;
