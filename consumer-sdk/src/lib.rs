//! The library care services embed to receive their deliveries.
