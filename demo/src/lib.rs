//! The demo: broker, registry, router and a simulated fleet on one machine.
