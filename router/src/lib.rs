//! The consent-first routing service.
